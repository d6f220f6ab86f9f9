"""CPU inference paths side by side: speed, accuracy cost and agreement with float32, one JSON line per path.

Models and inputs:

* ``r50_yolact`` / ``r50_condinst``: the presets with the golden e2e weights (``e2e_car-shadow/<model>/manifest.json``
  of the golden set, imported with ``cico convert``), at their test size 384x640 on the DAVIS ``car-shadow`` frames
  (480x854) of ``shared/data/davis2016_mini``;
* ``tiny``: the shipped demo model (``tiny_yolact``, 128x224 input) on the same frames.

Paths: ``torch_fp32`` (float32, the Winograd 3D and head 2D convolutions: the default), ``torch_fp32_taps``
(float32, exact per-tap 3D and direct 2D convolutions), ``torch_bf16`` (bf16 autocast; only where the CPU has
native bf16, AVX512-BF16 or AMX),
``ort_fp32`` (``cico export`` + ONNX Runtime, CPU provider) and ``ort_int8`` (that export through
``onnxruntime.quantization.quantize_dynamic``, int8 weights, activations quantised per run).

Per path: ``network_s`` = min over ``--repeats`` of the network + per-clip detection on the first clip
(``VideoPredictor.detect_clips``, after one warm-up; repeats interleaved across the paths),
``network_fps`` = ``(T - 1) / network_s`` (new frames per clip at overlap 1); ``e2e_fps`` = the first
``--frames`` frames through the whole predictor (preprocessing, network,
detection, linking, masks at full size, RLE). For the R50 models ``agreement``: the per-clip detections of the
e2e run against ``torch_fp32``'s, matched by class with mean box-tube IoU >= 0.5 (matched / max of both counts),
with the largest score difference of the matched pairs and the final tracks' agreement. For ``tiny`` ``ap``: the
YouTube-VIS mask AP on the held-out demo set (``cico.demo.DemoData``: 48 synthetic videos, seed 2026, never
trained on). With ``--memory`` also the peak RSS of one R50-Yolact clip per path, each in a fresh process.

The thread policy is cico's default (:mod:`cico.threads`) unless the environment says otherwise.
Usage: ``python benchmarks/inference_paths.py --work DIR [--models r50_yolact,r50_condinst,tiny]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cico import threads  # noqa: E402

threads.configure()

import torch  # noqa: E402

from cico.cli import main as cico_main  # noqa: E402
from cico.data.sources import open_source  # noqa: E402
from cico.inference.onnx_runtime import OnnxClipNetwork, load_network  # noqa: E402
from cico.inference.predictor import VideoPredictor  # noqa: E402
from cico.model.box_coder import tube_iou  # noqa: E402
from cico.model.convolution import set_implementations  # noqa: E402

SHARED = Path(os.environ.get("CICO_SHARED_DIR", REPO.parent / "shared"))
GOLDEN = Path(os.environ.get("CICO_GOLDEN_DIR", SHARED / "golden"))
VIDEO = SHARED / "data" / "davis2016_mini" / "JPEGImages" / "car-shadow"
MODELS = {"r50_yolact": "cico_yolact_r50_yt19", "r50_condinst": "cico_condinst_r50_yt19", "tiny": None}
PATHS = ("torch_fp32", "torch_fp32_taps", "torch_bf16", "ort_fp32", "ort_int8")


def native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def weights_of(model: str, work: Path) -> Path:
    """The cico checkpoint of ``model`` (golden e2e weights converted once, or the shipped demo model)."""
    if MODELS[model] is None:
        from cico.demo import shipped_weights

        return shipped_weights("demo")
    path = work / f"{model}.pth"
    if not path.exists():
        from tests.golden import read_manifest, write_reference_checkpoint

        reference = write_reference_checkpoint(read_manifest(GOLDEN / "e2e_car-shadow" / MODELS[model]),
                                               work / f"{model}_reference.pth")
        assert cico_main(["convert", str(reference), str(path), "--preset", MODELS[model]]) == 0
    return path


def onnx_of(model: str, work: Path, int8: bool) -> Path:
    """The ONNX export of ``model`` (and its dynamic int8 quantisation), made once."""
    fp32 = work / f"{model}.onnx"
    if not fp32.exists():
        assert cico_main(["export", "--weights", str(weights_of(model, work)), "--out", str(fp32)]) == 0
    if not int8:
        return fp32
    path = work / f"{model}.int8.onnx"
    if not path.exists():
        import onnx
        from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

        # constant-fold first: the 3D convolutions' per-tap kernels are slices of their weights in the export
        folded = work / f"{model}.folded.onnx"
        quant_pre_process(str(fp32), str(folded), skip_symbolic_shape=True)
        quantize_dynamic(str(folded), str(path), weight_type=QuantType.QInt8)
        quantized, source = onnx.load(str(path)), onnx.load(str(fp32), load_external_data=False)
        if not quantized.metadata_props:  # the cico metadata travels with the weights
            quantized.metadata_props.extend(source.metadata_props)
            onnx.save(quantized, str(path))
    return path


def predictor_of(model: str, path: str, work: Path) -> VideoPredictor:
    if path.startswith("ort_"):
        return VideoPredictor(OnnxClipNetwork(onnx_of(model, work, path == "ort_int8")))
    network = load_network(weights_of(model, work))  # as cico predict loads it
    if path == "torch_fp32_taps":  # no Winograd anywhere
        set_implementations(network, conv3d="taps", conv2d="direct")
    return VideoPredictor(network, amp="bf16" if path == "torch_bf16" else None)


def first_frames(work: Path, frames: int) -> Path:
    """A folder with symlinks to the first ``frames`` frames of the DAVIS video."""
    folder = work / f"{VIDEO.name}_{frames}"
    if not folder.exists():
        folder.mkdir(parents=True)
        for source in sorted(VIDEO.glob("*.jpg"))[:frames]:
            (folder / source.name).symlink_to(source)
    return folder


def time_networks(predictors: dict[str, VideoPredictor], repeats: int) -> dict[str, tuple[float, int, list[int]]]:
    """Per path: min seconds of network + detection on the video's first clip (repeats interleaved across the
    paths, so that a changing background load hits all alike, after one warm-up each), its detections, the
    input shape."""
    (video,) = open_source(VIDEO)
    clips = {name: next(iter(predictor_clips(p, video))) for name, p in predictors.items()}
    counts = {name: len(p.detect_clips(clips[name])[0]) for name, p in predictors.items()}
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(repeats):
        for name, predictor in predictors.items():
            start = time.perf_counter()
            predictor.detect_clips(clips[name])
            times[name].append(time.perf_counter() - start)
    return {name: (min(times[name]), counts[name], list(clips[name].shape)) for name in predictors}


def predictor_clips(predictor: VideoPredictor, video):
    """The network inputs ``[1, T, 3, H, W]`` of the video's clips, as the predictor prepares them."""
    from cico.inference.clips import split_clips
    from cico.inference.predictor import clip_inputs

    cache: dict = {}
    for clip in split_clips(video.frames(), predictor.config.clip_frames, predictor.overlap):
        inputs, _, cache = clip_inputs([clip], predictor.config, cache)
        yield inputs


def run_e2e(predictor: VideoPredictor, folder: Path) -> tuple[float, list, list]:
    (video,) = open_source(folder)
    detections = []
    start = time.perf_counter()
    tracks = predictor.predict_video(video, on_clip=lambda c: detections.append(c.detections))
    return video.length / (time.perf_counter() - start), detections, tracks


def agreement(ours: list, reference: list) -> dict:
    """Per-clip detections of a path against float32's: class-matched pairs of mean tube IoU >= 0.5."""
    matched = total = 0
    worst = 0.0
    for a, b in zip(ours, reference):
        total += max(len(a), len(b))
        used: set[int] = set()
        for i in range(len(b)):
            best, best_j = 0.5, None
            for j in range(len(a)):
                if j in used or a.labels[j] != b.labels[i]:
                    continue
                iou = float(tube_iou(a.boxes[j:j + 1], b.boxes[i:i + 1]).mean())
                if iou >= best:
                    best, best_j = iou, j
            if best_j is not None:
                used.add(best_j)
                matched += 1
                worst = max(worst, abs(float(a.scores[best_j]) - float(b.scores[i])))
    return {"detections_matched": round(matched / total, 4) if total else 1.0, "fp32_detections":
            sum(len(b) for b in reference), "max_score_diff": round(worst, 6)}


def tracks_agreement(ours: list, reference: list) -> float:
    """Fraction of float32's tracks with a same-class track of mean frame mask IoU >= 0.5."""
    import numpy as np

    def iou(a, b) -> float:
        values = []
        for m, n in zip(a.masks, b.masks):  # None: absent in that frame
            m, n = (np.zeros((1, 1), bool) if x is None else x for x in (m, n))
            union = np.logical_or(m, n).sum()
            values.append(1.0 if union == 0 else np.logical_and(m, n).sum() / union)
        return float(np.mean(values))

    used: set[int] = set()
    found = 0
    for track in reference:
        for j, other in enumerate(ours):
            if j not in used and other.category_id == track.category_id and iou(other, track) >= 0.5:
                used.add(j)
                found += 1
                break
    return round(found / len(reference), 4) if reference else 1.0


def held_out_ap(predictor: VideoPredictor, work: Path) -> float:
    from cico.data.annotations import load_annotations
    from cico.data.sources import dataset_videos
    from cico.data.synthetic import make_synthetic
    from cico.demo import DemoData
    from cico.evaluation import evaluate
    from cico.outputs.writer import predict_to_dir

    data = DemoData()
    ann = work / "heldout" / "instances.json"
    if not ann.exists():
        ann = make_synthetic(work / "heldout", data.videos, data.frames, data.size, seed=data.seed,
                             classes=data.classes, max_objects=data.max_objects, overwrite=True, workers=1)
    annotations = load_annotations(ann)
    videos = dataset_videos(annotations, ann.parent / "JPEGImages")
    ids = [annotations.category_id_of(label) for label in range(1, annotations.num_classes + 1)]
    out = work / "heldout_out"
    summary = predict_to_dir(predictor, videos, out, category_ids=ids, progress=False)
    return round(evaluate(ann, summary.results).stats["AP"], 4)


def memory_child(path: str, work: Path) -> None:
    """One R50-Yolact clip (network + detection) in this fresh process; prints its peak RSS in MB."""
    predictor = predictor_of("r50_yolact", path, work)
    (video,) = open_source(VIDEO)
    predictor.detect_clips(next(iter(predictor_clips(predictor, video))))
    # VmHWM, not ru_maxrss: the latter survives fork + exec, so a child would report its parent's peak
    peak_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    print(json.dumps({"model": "r50_yolact", "path": path, "peak_rss_mb": round(peak_kb / 1024, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for converted weights, exports, data")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8, help="frames of the end-to-end run")
    parser.add_argument("--network-only", action="store_true", help="only the network timings (no e2e, AP, agreement)")
    parser.add_argument("--memory", action="store_true", help="also the peak RSS of one R50-Yolact clip per path")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.memory_child:
        memory_child(args.memory_child, args.work)
        return
    paths = [p for p in args.paths.split(",") if p != "torch_bf16" or native_bf16()]
    folder = first_frames(args.work, args.frames)
    common = {"threads": torch.get_num_threads(), "policy": threads.current_policy().__dict__}
    for model in args.models.split(","):
        weights_of(model, args.work)  # conversions and exports first, so that timings do not overlap with them
        for path in ("ort_fp32", "ort_int8"):
            if path in paths:
                onnx_of(model, args.work, path == "ort_int8")
        predictors = {path: predictor_of(model, path, args.work) for path in paths}
        load = round(os.getloadavg()[0], 2)
        network = time_networks(predictors, args.repeats)
        reference_dets, reference_tracks = None, None
        for path, predictor in predictors.items():
            network_s, count, shape = network[path]
            record = {**common, "load_avg_1min": [load, round(os.getloadavg()[0], 2)], "model": model, "path": path,
                      "input": shape, "network_s": round(network_s, 4),
                      "network_fps": round((predictor.config.clip_frames - 1) / network_s, 4),
                      "detections_first_clip": count}
            if args.network_only:
                print(json.dumps(record), flush=True)
                continue
            e2e_fps, detections, tracks = run_e2e(predictor, folder)
            record.update(e2e_frames=args.frames, e2e_fps=round(e2e_fps, 4))
            if path == "torch_fp32":
                reference_dets, reference_tracks = detections, tracks
            if model != "tiny" and reference_dets is not None:
                record.update(agreement(detections, reference_dets),
                              tracks_matched=tracks_agreement(tracks, reference_tracks))
            if model == "tiny":
                record["heldout_ap"] = held_out_ap(predictor, args.work)
            print(json.dumps(record), flush=True)
        del predictors
    if args.memory:
        for path in paths:
            done = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--memory-child", path],
                                  capture_output=True, text=True, check=True)
            print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
