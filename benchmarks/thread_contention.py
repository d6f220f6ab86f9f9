"""Thread policies under contention: ``cico predict`` alone, beside a busy Python loop, beside another torch program.

Workload: ``cico predict`` (a fresh process each run, so the policy applies from start-up) of a ``--frames``-frame
360x640 mp4 of moving shapes (``cico.commands.benchmark.moving_shapes``) with the shipped demo model
(``tiny_yolact``); ``--weights`` runs another checkpoint or an ONNX export instead. Reported: the wall seconds of
the whole command, min over ``--repeats``.

Policies (environment of the ``cico predict`` process; cico never overrides what is set):

* ``libgomp``: ``GOMP_SPINCOUNT=300000``, libgomp's own default (what cico did before it had a policy);
* ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once);
* ``spin10k``: ``GOMP_SPINCOUNT=10000``;
* ``cico``: nothing set, cico's default (:mod:`cico.threads`: ``GOMP_SPINCOUNT=1000``).

Loads: ``alone``; ``busy``: one ``while True: pass`` Python process; ``torch``: another torch program with its
own 2-thread pool multiplying 256x256 matrices in a loop (libgomp defaults). On a 2-core machine the fair share
is 1.5x beside the busy loop and 2x beside the torch program.

Prints one JSON line per (policy, load) and a last line with the slowdown ratios.
Usage: ``python benchmarks/thread_contention.py [--frames 90] [--repeats 2]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = {"libgomp": {"GOMP_SPINCOUNT": "300000"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "spin10k": {"GOMP_SPINCOUNT": "10000"}, "cico": {}}
LOADS = {
    "alone": None,
    "busy": "while True: pass",
    "torch": "import torch\ntorch.set_num_threads(2)\na = torch.randn(256, 256)\nwhile True: a @ a",
}
OURS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "THP_MEM_ALLOC_ENABLE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--weights", default=None, help="default: the shipped demo model")
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from cico.commands.benchmark import write_moving_shapes
    from cico.demo import shipped_weights

    weights = args.weights or str(shipped_weights("demo"))
    base = {k: v for k, v in os.environ.items() if k not in OURS}
    base["PYTHONPATH"] = str(REPO)
    seconds: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        video = write_moving_shapes(Path(tmp) / "shapes.mp4", args.frames, (360, 640))
        command = [sys.executable, "-m", "cico", "predict", "--weights", weights, str(video), "--out",
                   str(Path(tmp) / "out"), "--quiet"]
        for load_name, load_code in LOADS.items():
            for repeat in range(args.repeats):
                for policy in args.policies.split(","):  # interleaved: drifting background load hits all alike
                    other = None
                    if load_code is not None:
                        other = subprocess.Popen([sys.executable, "-c", load_code], env=base)
                        time.sleep(1.0)
                    try:
                        start = time.perf_counter()
                        subprocess.run(command, env={**base, **POLICIES[policy]}, check=True, capture_output=True)
                        elapsed = time.perf_counter() - start
                    finally:
                        if other is not None:
                            other.kill()
                            other.wait()
                    key = (policy, load_name)
                    seconds[key] = min(seconds.get(key, float("inf")), elapsed)
                    print(json.dumps({"policy": policy, "load": load_name, "repeat": repeat,
                                      "seconds": round(elapsed, 3), "load_avg_1min": round(os.getloadavg()[0], 2)}),
                          flush=True)
    ratios = {policy: {"alone_s": round(seconds[policy, "alone"], 3),
                       "busy_x": round(seconds[policy, "busy"] / seconds[policy, "alone"], 2),
                       "torch_x": round(seconds[policy, "torch"] / seconds[policy, "alone"], 2),
                       "alone_vs_libgomp": round(seconds[policy, "alone"] / seconds["libgomp", "alone"], 3)
                       if ("libgomp", "alone") in seconds else None}
              for policy in args.policies.split(",")}
    print(json.dumps({"summary": ratios, "frames": args.frames, "weights": weights}))


if __name__ == "__main__":
    main()
