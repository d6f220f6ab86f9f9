"""The speed headline: the reference implementation's own CPU forward against cico's default, on the same clip.

Needs a checkout of the reference implementation (MinghanLi/CiCo) that imports on this machine, given as
``--reference DIR``; nothing of it is part of cico. The README ("Speed and memory") lists what a CPU-only
machine needs: the reference imports CUDA-only extensions and helpers that the R50 forward never calls.
The checkout's files are not changed here; two of its import-time assumptions are met at run time:
``torch.cuda.current_device()`` (called at import) answers without CUDA, and the config loader's
``os.chdir`` to the author's hard-coded repository path lands in ``DIR``.

1. **Proof that the tree computes the reference.** The reference network + ``Detect`` on every golden network
   case with an R50 config (128×224) must give the golden outputs within the golden README's tolerances:
   raw outputs within 1e-4 of each tensor's max-abs, the same detections (classes, in order) with scores
   within 1e-4. A tree that fails this is not timed (exit 1).
2. **Timing**, in one process and under cico's thread policy for both, alternating the two sides round by
   round: DAVIS ``car-shadow`` frames 0-2 at 384×640 (the predictor's input; the reference's own test
   preprocessing gives the same tensor) with the golden e2e weights (``e2e_car-shadow/<config>``).

   * reference: ``CoreNet.forward``'s eval branch without its tracker (``forward_single``, the priors' repeat,
     the class activation, ``Detect``), under ``torch.no_grad`` as its ``eval.py`` runs it;
   * cico: the network as :func:`cico.load` loads it (batch norms folded, Winograd 3D convolutions) and its
     per-clip detection, under ``torch.inference_mode``.

Prints ONE JSON line: per config the wall and CPU seconds of every round, the minimum and median per side,
the detections of each side and the ratios reference / cico.
Usage: ``python benchmarks/reference_speed.py --reference DIR [--repeats 5] [--threads 2]``.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cico import threads  # noqa: E402

threads.configure()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cico.data.sources import open_source  # noqa: E402
from cico.inference.clips import Clip  # noqa: E402
from cico.inference.predictor import clip_inputs  # noqa: E402
from cico.model.checkpoint import model_from_state_dict  # noqa: E402
from cico.model.config import get_preset  # noqa: E402
from cico.model.convert import reference_to_cico  # noqa: E402
from tests.golden import network_cases, preset_name, read_manifest, read_npz, reference_state_dict  # noqa: E402

SHARED = Path(os.environ.get("CICO_SHARED_DIR", REPO.parent / "shared"))
GOLDEN = Path(os.environ.get("CICO_GOLDEN_DIR", SHARED / "golden"))
CONFIGS = ("cico_yolact_r50_yt19", "cico_condinst_r50_yt19")
RAW = ("loc", "conf", "centerness", "mask_coeff", "track", "proto")  # reference name; golden: conf -> conf_logits


@contextlib.contextmanager
def cpu_only_reference(root: Path) -> Iterator[None]:
    """Meet the reference's two import-time assumptions on a CPU-only machine, for the duration."""
    current_device, chdir = torch.cuda.current_device, os.chdir

    def to_root_if_missing(path: Any) -> None:
        chdir(path if os.path.isdir(path) else root)

    if not torch.cuda.is_available():
        torch.cuda.current_device = lambda: torch.device("cpu")  # type: ignore[assignment,return-value]
    os.chdir = to_root_if_missing
    try:
        yield
    finally:
        torch.cuda.current_device, os.chdir = current_device, chdir


class Reference:
    """The reference's ``CoreNet`` built through its own config loader."""

    def __init__(self, root: Path) -> None:
        self.root = root
        sys.path.insert(0, str(root))
        with cpu_only_reference(root):
            from configs._base_.models import cfg  # the reference's process-global default config
            from configs.load_config import load_config
            from CoreNet import CoreNet
        self._defaults, self._cfg, self._load_config, self._corenet = cfg.clone(), cfg, load_config, CoreNet

    def build(self, config: str, state: dict[str, torch.Tensor]) -> Any:  # the reference's CoreNet
        # load_config merges into the global node: start each model from the defaults
        self._cfg.clear()
        self._cfg.update(self._defaults.clone())
        cwd = os.getcwd()
        try:
            with cpu_only_reference(self.root):
                cfg = self._load_config(str(self.root / "configs" / "CiCo" / f"{config}.py")).clone()
        finally:
            os.chdir(cwd)
        cfg.SOLVER.NUM_CLIP_FRAMES = cfg.TEST.NUM_CLIP_FRAMES = 3  # eval.py's defaults
        cfg.display = False
        with cpu_only_reference(self.root):
            model = self._corenet(cfg)
        model.load_state_dict(state, strict=True)
        model.eval()  # the reference's train() override returns None
        return model

    @staticmethod
    def detect(model: Any, clip: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
        """``CoreNet.forward``'s eval branch up to ``Detect`` for ``clip [T, 3, H, W]``: (raw outputs, detections)."""
        with torch.no_grad():
            _, out = model.forward_single(clip)
            clips = clip.shape[0] // model.clip_frames
            out["priors"] = out["priors"].repeat(clips, 1, 1)
            out["prior_levels"] = out["prior_levels"].repeat(clips, 1)
            raw = dict(out)
            out["conf"] = (out["conf"].sigmoid() if model.cfg.MODEL.CLASS_HEADS.USE_FOCAL_LOSS
                           else out["conf"].softmax(dim=-1))
            return raw, model.Detect(model, out)


def golden_check(reference: Reference, case: Path) -> dict[str, float]:
    """The reference tree on one golden network case: each output's difference over its tolerance (≤ 1 passes)."""
    manifest = read_manifest(case)
    expected = read_npz(case / "outputs.npz")
    model = reference.build(preset_name(manifest), reference_state_dict(manifest))
    raw, detections = reference.detect(model, torch.from_numpy(read_npz(case / "input.npz")["x"]))
    found = detections[0]
    scale = manifest["output_max_abs"]
    report = {}
    for name in RAW:
        key = "conf_logits" if name == "conf" else name
        difference = np.abs(raw[name].numpy().astype(np.float64) - expected[key]).max()
        report[key] = float(difference / (1e-4 * scale[key]))
    classes = found["class"].numpy() if "class" in found else np.zeros(0, np.int64)
    if not np.array_equal(classes, expected["det_class"]):
        raise SystemExit(f"{case.name}: the reference tree finds classes {classes.tolist()}, the golden case "
                         f"{expected['det_class'].tolist()}: it is not the reference")
    scores = found["score"].numpy() if "score" in found else np.zeros(0, np.float32)
    report["det_score"] = float(np.abs(scores - expected["det_score"]).max(initial=0.0) / 1e-4)
    failed = [key for key, ratio in report.items() if not ratio <= 1]
    if failed:
        raise SystemExit(f"{case.name}: the reference tree is off the golden outputs in {', '.join(failed)}: "
                         "it is not the reference")
    return {key: round(ratio, 4) for key, ratio in report.items()}


def _timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    detections = fn()
    return detections, time.perf_counter() - wall, time.process_time() - cpu


def _side(rounds: list[tuple[int, float, float]]) -> dict[str, Any]:
    walls, cpus = [w for _, w, _ in rounds], [c for _, _, c in rounds]
    return {"wall_s": [round(w, 3) for w in walls], "cpu_s": [round(c, 3) for c in cpus],
            "min_s": round(min(walls), 3), "median_s": round(statistics.median(walls), 3),
            "cpu_min_s": round(min(cpus), 3), "detections": sorted({n for n, _, _ in rounds})}


def compare(reference: Reference, config: str, repeats: int, conf_bias_shift: float = 0.0) -> dict[str, Any]:
    """Interleaved timing of both sides on the first ``car-shadow`` clip at 384×640 (``conf_bias_shift`` added
    to the class bias of both: more candidates pass the score threshold, a crowded clip's detection load)."""
    e2e = GOLDEN / "e2e_car-shadow"
    state = reference_state_dict(read_manifest(e2e / config))
    state["prediction_layers.conf_layer.bias"] = state["prediction_layers.conf_layer.bias"] + conf_bias_shift
    theirs = reference.build(config, state)
    ours = model_from_state_dict(get_preset(config), reference_to_cico(state)).eval().fold_batch_norm()
    (video,) = open_source(e2e / "frames")
    frames = list(itertools.islice(video.frames(), 3))
    clip = clip_inputs([Clip(0, [0, 1, 2], frames, [])], ours.config)[0]  # [1, 3, 3, 384, 640]

    def run_reference() -> int:
        found = reference.detect(theirs, clip[0])[1][0]
        return int(found["score"].numel()) if "score" in found else 0

    def run_cico() -> int:
        with torch.inference_mode():
            return len(ours(clip).detections[0])

    sides = {"reference": run_reference, "cico": run_cico}
    for fn in sides.values():  # warm-up: oneDNN primitives, TorchScript, the allocator
        fn()
    rounds: dict[str, list[tuple[int, float, float]]] = {name: [] for name in sides}
    for i in range(repeats):
        for name in (list(sides) if i % 2 == 0 else list(reversed(sides))):
            rounds[name].append(_timed(sides[name]))
    entry = {name: _side(r) for name, r in rounds.items()}
    ref, cico = entry["reference"], entry["cico"]
    entry["speedup_min"] = round(ref["min_s"] / cico["min_s"], 3)
    entry["speedup_median"] = round(ref["median_s"] / cico["median_s"], 3)
    entry["cpu_speedup_min"] = round(ref["cpu_min_s"] / cico["cpu_min_s"], 3)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of the reference implementation")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--conf-bias-shift", type=float, default=0.0,
                        help="added to the class bias of both networks, for a crowded clip's detection load")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = Reference(args.reference.resolve())
    checks = {case.name: golden_check(reference, case) for case in network_cases(GOLDEN)
              if preset_name(read_manifest(case)) in CONFIGS}
    if not checks:
        raise SystemExit(f"no golden network case with an R50 config in {GOLDEN}")
    results = {config: compare(reference, config, args.repeats, args.conf_bias_shift) for config in args.configs}
    print(json.dumps({
        "benchmark": "reference_speed", "device": "cpu", "threads": args.threads, "dtype": "float32",
        "input": [1, 3, 3, 384, 640], "clip": "DAVIS car-shadow frames 0-2", "weights": "golden e2e recipe",
        "repeats": args.repeats, "conf_bias_shift": args.conf_bias_shift,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "golden_check_diff_over_tolerance": checks, "configs": results, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
