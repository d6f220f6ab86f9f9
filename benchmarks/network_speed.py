"""CPU speed of the CiCo network: frames/s of the network alone and of network + detection.

One 3-frame clip at 384×640 (DAVIS ``car-shadow`` frames 0-2 from the golden set, reference preprocessing),
R50-Yolact and R50-CondInst with the golden e2e weights (``e2e_car-shadow/<model>/manifest.json``: the
synthetic recipe whose class bias is tuned for 384×640, so detection sees a realistic 5-13 detections rather
than the degenerate output of random weights). Float32, eval mode, ``torch.inference_mode``.

cico's strategies run the network as :func:`cico.load` loads it, batch norms folded into the convolutions.
The 3D convolutions are timed in each strategy (:mod:`cico.model.convolution`), interleaved so that load
changes on a shared machine hit all alike; reported is the minimum over repeats, as wall-clock seconds and as
process CPU seconds (the latter hardly moves with other load, since idle OpenMP threads sleep):

* ``reference``: ``F.conv3d`` on the ``[B, C, T, H, W]`` cube, NCHW activations, direct 2D convolutions, batch
  norms as layers of their own (the reference's computation);
* ``conv3d_cl``: ``F.conv3d``, channels_last direct 2D convolutions;
* ``taps_cl``: one 2D conv per temporal tap, skipping the zero-padded taps, channels_last direct 2D convolutions;
* ``winograd_cl``: Winograd F(4x4, 3x3) per tap, summed in the transformed domain, and for the heads' and FPN's
  2D 3×3 convolutions, channels_last (cico's default for float32 CPU inference).

"Network" is ``forward_raw``: every anchor's outputs. "Network + detection" is the eval-mode ``forward`` of the
default, which runs the box and track branches only around the detection candidates
(:meth:`cico.model.network.CiCo.forward_raw` with ``candidates_for``), as the predictor does.

Prints ONE JSON line. Usage: ``python benchmarks/network_speed.py [--threads 2] [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: no spinning on a shared CPU

import cv2  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from golden import read_manifest, reference_state_dict  # noqa: E402

from cico.inference.clips import Clip  # noqa: E402
from cico.inference.predictor import clip_inputs  # noqa: E402
from cico.model.checkpoint import model_from_state_dict  # noqa: E402
from cico.model.config import get_preset  # noqa: E402
from cico.model.convert import reference_to_cico  # noqa: E402
from cico.model.convolution import set_implementations  # noqa: E402
from cico.model.network import CiCo  # noqa: E402

STRATEGIES = {  # name -> (ClipConv3d implementation, WinogradConv2d implementation, memory format)
    "reference": ("conv3d", "direct", torch.contiguous_format),
    "conv3d_cl": ("conv3d", "direct", torch.channels_last),
    "taps_cl": ("taps", "direct", torch.channels_last),
    "winograd_cl": ("winograd", "winograd", torch.channels_last),
}
DEFAULT = "winograd_cl"  # what "auto" picks here


def _configure(model: CiCo, strategy: str) -> None:
    conv3d, conv2d, memory_format = STRATEGIES[strategy]
    set_implementations(model, conv3d=conv3d, conv2d=conv2d)
    model.set_memory_format(memory_format)


def _time(fn, repeats: int) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds of each of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--golden", type=Path, default=REPO.parent / "shared" / "golden")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["cico_yolact_r50_yt19", "cico_condinst_r50_yt19"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    e2e = args.golden / "e2e_car-shadow"
    frames = [cv2.imread(str(e2e / "frames" / f"{i:05d}.png")) for i in range(3)]
    config = get_preset(args.models[0])  # the reference presets share the test size and normalisation
    clip = clip_inputs([Clip(0, [0, 1, 2], frames, [])], config)[0]  # [1, 3, 3, 384, 640], the predictor's input
    frames_per_clip = clip.shape[1]

    results = {}
    for name in args.models:
        state = reference_to_cico(reference_state_dict(read_manifest(e2e / name)))
        model = model_from_state_dict(get_preset(name), state).eval()
        per_frame: dict[str, list[tuple[float, float]]] = {s: [] for s in args.strategies}
        # cico's paths run the network as cico.load loads it (batch norms folded); the reference's keeps them
        folded = model_from_state_dict(get_preset(name), state).eval().fold_batch_norm()

        def network(strategy: str, model=model, folded=folded) -> CiCo:
            chosen = model if strategy == "reference" else folded
            _configure(chosen, strategy)
            return chosen

        with torch.inference_mode():
            for strategy in args.strategies:  # warm-up (oneDNN primitives, Winograd kernels, allocator)
                _time(functools.partial(network(strategy).forward_raw, clip), args.warmup)
            for _ in range(args.repeats):
                for strategy in args.strategies:
                    timed = _time(functools.partial(network(strategy).forward_raw, clip), 1)
                    per_frame[strategy] += [(w / frames_per_clip, c / frames_per_clip) for w, c in timed]
            forward = functools.partial(network(DEFAULT), clip)
            _time(forward, args.warmup)
            full = [(w / frames_per_clip, c / frames_per_clip) for w, c in _time(forward, args.repeats)]
            detections = len(forward().detections[0])
        wall = {s: min(w for w, _ in v) for s, v in per_frame.items()}
        cpu = {s: min(c for _, c in v) for s, v in per_frame.items()}
        entry = {
            "network_fps": round(1 / wall[DEFAULT], 3),
            "network_s_per_frame": round(wall[DEFAULT], 4),
            "network_s_per_frame_median": round(statistics.median(w for w, _ in per_frame[DEFAULT]), 4),
            "network_cpu_s_per_frame": round(cpu[DEFAULT], 4),
            "network_detect_fps": round(1 / min(w for w, _ in full), 3),
            "network_detect_s_per_frame": round(min(w for w, _ in full), 4),
            "network_detect_cpu_s_per_frame": round(min(c for _, c in full), 4),
            "detections": detections,
            "strategies_s_per_frame": {s: round(v, 4) for s, v in wall.items()},
            "strategies_cpu_s_per_frame": {s: round(v, 4) for s, v in cpu.items()},
        }
        if "reference" in wall:
            entry["speedup_vs_reference"] = round(wall["reference"] / wall[DEFAULT], 3)
            entry["cpu_speedup_vs_reference"] = round(cpu["reference"] / cpu[DEFAULT], 3)
        results[name] = entry
    winner = min(args.strategies, key=lambda s: sum(results[m]["strategies_s_per_frame"][s] for m in results))
    print(json.dumps({
        "benchmark": "network_speed", "device": "cpu", "threads": args.threads, "dtype": "float32",
        "input": [1, frames_per_clip, 3, 384, 640], "repeats": args.repeats, "timing": "min over repeats",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "weights": "golden e2e recipe (conf bias tuned for 384x640), DAVIS car-shadow frames 0-2",
        "models": results, "fastest_strategy": winner, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
