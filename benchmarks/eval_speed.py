"""Speed of the YouTube-VIS metric on a YouTube-VIS-2019-val-sized synthetic case.

Default case: 300 videos x 36 frames at 720x1280, 40 categories, 10 GT tracks and 100 result tracks
per video. GT objects are ellipses with wobbly outlines moving across the frame (small, medium and
large ones), sometimes absent; results are noisy copies of the GT (shifted, rescaled, sometimes the
wrong class) plus false positives. GT masks are uncompressed RLE (as in the official annotation
files), results compressed RLE strings (as models write them). Masks are built as run lengths
directly from the per-column extent of each shape, so generation is fast.

Prints one JSON line: sizes, generation time, evaluation wall and CPU time (CPU time is the fairer
number on a shared machine), and with ``--from-files`` the same for ``cico.evaluation.evaluate`` on
the written JSON files, parsing included.

``--tracking`` also times the evaluation with the tracking metrics (HOTA, CLEAR, Identity), side by
side with the plain one, and reports the ratio. ``--vs-trackeval`` writes the files and compares the
CPU time of the whole ``cico evaluate GT RESULTS --tracking`` command with TrackEval's YouTubeVIS
evaluation of HOTA, CLEAR and Identity on the same files (each in its own process, imports and
parsing included; ``--repeats`` runs of each, alternately, with the ratios of the minima and of the
medians); e.g. the 30-video case with about 2400 result tracks:

    python benchmarks/eval_speed.py [--videos 300] [--frames 36] [--from-files] [--tracking]
    python benchmarks/eval_speed.py --videos 30 --results-per-video 80 --vs-trackeval [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from cico.evaluation import EvaluationWarning, evaluate

HEIGHT, WIDTH = 720, 1280
NUM_CATEGORIES = 40


def shape_counts(rng: np.random.Generator, cx, cy, rx, ry) -> list[list[int] | None]:
    """Uncompressed column-major RLE counts of one wobbly ellipse per frame (``None`` if off-frame).

    ``cx, cy, rx, ry`` are ``[F]`` arrays; rows are kept inside ``[1, HEIGHT-1)`` so that every
    column's run is surrounded by background.
    """
    frames = len(cx)
    x0 = np.clip(np.ceil(cx - rx), 0, WIDTH - 1).astype(np.int64)
    x1 = np.clip(np.floor(cx + rx), 0, WIDTH - 1).astype(np.int64)
    ncol = np.maximum(x1 - x0 + 1, 0)
    frame = np.repeat(np.arange(frames), ncol)
    start = np.concatenate([[0], np.cumsum(ncol)[:-1]])
    x = x0[frame] + np.arange(frame.size) - start[frame]
    half = ry[frame] * np.sqrt(np.clip(1 - ((x - cx[frame]) / rx[frame]) ** 2, 0, None))
    phase = rng.uniform(0, 2 * np.pi, (frames, 2))
    wobble = 0.06 * ry[frame]
    top = np.clip(np.round(cy[frame] - half + wobble * np.sin(x / 9 + phase[frame, 0])), 1, HEIGHT - 1).astype(np.int64)
    bot = np.clip(np.round(cy[frame] + half + wobble * np.sin(x / 7 + phase[frame, 1])), 1, HEIGHT - 1).astype(np.int64)
    keep = bot > top
    frame, x, top, bot = frame[keep], x[keep], top[keep], bot[keep]
    out: list[list[int] | None] = []
    bounds = np.searchsorted(frame, np.arange(frames + 1))
    for f in range(frames):
        lo, hi = bounds[f], bounds[f + 1]
        if lo == hi:
            out.append(None)
            continue
        edges = np.empty(2 * (hi - lo) + 2, dtype=np.int64)
        edges[0], edges[-1] = 0, HEIGHT * WIDTH
        edges[1:-1:2] = x[lo:hi] * HEIGHT + top[lo:hi]
        edges[2:-1:2] = x[lo:hi] * HEIGHT + bot[lo:hi]
        out.append(np.diff(edges).tolist())
    return out


def motion(rng: np.random.Generator, frames: int, radius: float) -> tuple[np.ndarray, ...]:
    """Centre and radii ``[F]`` of an object drifting across the frame and slowly changing size."""
    t = np.arange(frames)
    cx = rng.uniform(0.1, 0.9) * WIDTH + rng.normal(0, 6) * t
    cy = rng.uniform(0.15, 0.85) * HEIGHT + rng.normal(0, 3) * t
    aspect = rng.uniform(0.6, 1.6)
    scale = 1 + rng.normal(0, 0.004) * t
    return cx, cy, radius * aspect * scale, radius / aspect * scale


def make_case(num_videos: int, frames: int, gt_per_video: int, res_per_video: int, seed: int) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    videos, annotations, results = [], [], []
    for v in range(1, num_videos + 1):
        videos.append({"id": v, "width": WIDTH, "height": HEIGHT, "length": frames,
                       "file_names": [f"{v:05d}/{f:05d}.jpg" for f in range(frames)]})  # fmt: skip
        video_cats = rng.choice(np.arange(1, NUM_CATEGORIES + 1), size=int(rng.integers(1, 4)), replace=False)
        gt_params = []
        for _ in range(gt_per_video):
            cid = int(rng.choice(video_cats))
            sizes = [rng.uniform(15, 70), rng.uniform(75, 140), rng.uniform(150, 260)]  # small, medium, large
            radius = float(rng.choice(sizes, p=[0.4, 0.35, 0.25]))
            params = motion(rng, frames, radius)
            counts = shape_counts(rng, *params)
            absent = rng.random(frames) < 0.08
            segs = [
                None if c is None or gone else {"size": [HEIGHT, WIDTH], "counts": c} for c, gone in zip(counts, absent)
            ]
            areas = [None if s is None else int(sum(s["counts"][1::2])) for s in segs]
            boxes = [None if s is None else [0.0, 0.0, 0.0, 0.0] for s in segs]
            annotations.append({"id": len(annotations) + 1, "video_id": v, "category_id": cid, "iscrowd": 0,
                                "height": HEIGHT, "width": WIDTH, "length": 1, "segmentations": segs,
                                "areas": areas, "bboxes": boxes})  # fmt: skip
            gt_params.append((cid, params, absent))
        for r in range(res_per_video):
            if r < 3 * gt_per_video:  # three noisy copies of each GT track
                cid, (cx, cy, rx, ry), absent = gt_params[r % gt_per_video]
                noise = rng.uniform(0.0, 0.25)
                cx = cx + rng.normal(0, noise * 40) + rng.normal(0, 2, frames)
                cy = cy + rng.normal(0, noise * 40) + rng.normal(0, 2, frames)
                rx, ry = rx * rng.uniform(1 - noise, 1 + noise), ry * rng.uniform(1 - noise, 1 + noise)
                if rng.random() < 0.1:
                    cid = int(rng.integers(1, NUM_CATEGORIES + 1))
                score = float(rng.uniform(0.3, 0.95) * (1 - noise))
                absent = absent ^ (rng.random(frames) < 0.05)
            else:  # false positive
                cid = int(rng.choice(video_cats)) if rng.random() < 0.6 else int(rng.integers(1, NUM_CATEGORIES + 1))
                cx, cy, rx, ry = motion(rng, frames, float(rng.uniform(15, 120)))
                score = float(rng.uniform(0.01, 0.5))
                absent = rng.random(frames) < (0.5 if rng.random() < 0.3 else 0.05)
            counts = shape_counts(rng, cx, cy, rx, ry)
            present = [f for f, c in enumerate(counts) if c is not None and not absent[f]]
            segs: list[dict | None] = [None] * frames
            if present:
                uncompressed = [{"size": [HEIGHT, WIDTH], "counts": counts[f]} for f in present]
                rles = mask_utils.frPyObjects(uncompressed, HEIGHT, WIDTH)
                for f, rle in zip(present, rles):
                    segs[f] = {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}
            results.append({"video_id": v, "category_id": cid, "score": score, "segmentations": segs})
    categories = [{"id": c, "name": f"class{c:02d}", "supercategory": "object"} for c in range(1, NUM_CATEGORIES + 1)]
    gt = {"info": {}, "licenses": [], "videos": videos, "categories": categories, "annotations": annotations}
    return gt, results


_TRACKEVAL = """
import sys, trackeval
config = trackeval.Evaluator.get_default_eval_config()
config.update(USE_PARALLEL=False, PRINT_RESULTS=False, PRINT_CONFIG=False, TIME_PROGRESS=False, OUTPUT_SUMMARY=False,
              OUTPUT_DETAILED=False, PLOT_CURVES=False, BREAK_ON_ERROR=True, DISPLAY_LESS_PROGRESS=True)
root = sys.argv[1]
dataset = trackeval.datasets.YouTubeVIS({"GT_FOLDER": root + "/gt/", "TRACKERS_FOLDER": root + "/trackers/",
                                         "SPLIT_TO_EVAL": "bench", "PRINT_CONFIG": False,
                                         "OUTPUT_FOLDER": root + "/out"})
metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
           trackeval.metrics.Identity({"PRINT_CONFIG": False})]
out, _ = trackeval.Evaluator(config).evaluate([dataset], metrics)
res = out["YouTubeVIS"]["bench"]["COMBINED_SEQ"]["cls_comb_cls_av"]
print("RESULT", res["HOTA"]["HOTA"].mean(), res["Identity"]["IDF1"])
"""


def _child_cpu(command: list[str]) -> tuple[float, float, str]:
    """CPU seconds (user + system) and wall seconds of a child process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall, run.stdout


def versus_trackeval(gt: dict, results: list, repeats: int) -> dict:
    """CPU time of ``cico evaluate --tracking`` and of TrackEval (HOTA, CLEAR, Identity) on the same files,
    each run ``repeats`` times, alternately (so that load changes on a shared machine hit both alike)."""
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir = Path(tmp, "gt", "youtube_vis_bench")
        tracker_dir = Path(tmp, "trackers", "youtube_vis_bench", "bench", "data")
        gt_dir.mkdir(parents=True)
        tracker_dir.mkdir(parents=True)
        gt_path, res_path = gt_dir / "gt.json", tracker_dir / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        cico_runs, te_runs = [], []
        for _ in range(repeats):
            cico_runs.append(_child_cpu(
                [sys.executable, "-m", "cico", "evaluate", str(gt_path), str(res_path), "--tracking", "--json"]))
            te_runs.append(_child_cpu([sys.executable, "-c", _TRACKEVAL, tmp]))
    line = json.loads(cico_runs[0][2].strip().splitlines()[-1])
    hota, idf1 = (float(v) for v in te_runs[0][2].split("RESULT")[-1].split())
    cico_cpu, te_cpu = [r[0] for r in cico_runs], [r[0] for r in te_runs]
    return {
        "repeats": repeats,
        "cico_evaluate_tracking_cpu_s": [round(c, 2) for c in cico_cpu],
        "trackeval_cpu_s": [round(c, 2) for c in te_cpu],
        "cico_evaluate_tracking_wall_s_min": round(min(r[1] for r in cico_runs), 2),
        "trackeval_wall_s_min": round(min(r[1] for r in te_runs), 2),
        "cpu_ratio_cico_over_trackeval_min": round(min(cico_cpu) / min(te_cpu), 3),
        "cpu_ratio_cico_over_trackeval_median": round(statistics.median(cico_cpu) / statistics.median(te_cpu), 3),
        "cpu_ratio_per_pair": [round(c / t, 3) for c, t in zip(cico_cpu, te_cpu)],
        "HOTA_cico": line["tracking"]["class_avg"]["HOTA"], "HOTA_trackeval": hota,
        "IDF1_cico": line["tracking"]["class_avg"]["IDF1"], "IDF1_trackeval": idf1,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--gt-per-video", type=int, default=10)
    parser.add_argument("--results-per-video", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command with --vs-trackeval")
    parser.add_argument("--from-files", action="store_true", help="also time evaluation from written JSON files")
    parser.add_argument("--tracking", action="store_true", help="also time the evaluation with tracking metrics")
    parser.add_argument("--vs-trackeval", action="store_true",
                        help="compare the CPU time of 'cico evaluate --tracking' with TrackEval's on written files")
    args = parser.parse_args()

    start = time.perf_counter()
    gt, results = make_case(args.videos, args.frames, args.gt_per_video, args.results_per_video, args.seed)
    generate_s = time.perf_counter() - start

    warnings.simplefilter("ignore", EvaluationWarning)
    start, cpu = time.perf_counter(), time.process_time()
    metric = evaluate(gt, results)
    evaluate_s, evaluate_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    report = {
        "benchmark": "eval_speed",
        "videos": args.videos,
        "frames": args.frames,
        "size": [HEIGHT, WIDTH],
        "gt_tracks": len(gt["annotations"]),
        "result_tracks": len(results),
        "result_masks": sum(s is not None for r in results for s in r["segmentations"]),
        "generate_s": round(generate_s, 2),
        "evaluate_s": round(evaluate_s, 2),
        "evaluate_cpu_s": round(evaluate_cpu_s, 2),
        "AP": round(metric.stats["AP"], 4),
        "AP50": round(metric.stats["AP50"], 4),
    }
    if args.tracking:
        start, cpu = time.perf_counter(), time.process_time()
        tracked = evaluate(gt, results, tracking=True)
        report["evaluate_tracking_s"] = round(time.perf_counter() - start, 2)
        report["evaluate_tracking_cpu_s"] = round(time.process_time() - cpu, 2)
        start, cpu = time.perf_counter(), time.process_time()  # the plain one again, right beside it
        evaluate(gt, results)
        plain_cpu = (evaluate_cpu_s + time.process_time() - cpu) / 2
        report["evaluate_cpu_s_mean_of_2"] = round(plain_cpu, 2)
        report["tracking_overhead"] = round(report["evaluate_tracking_cpu_s"] / plain_cpu - 1, 3)
        assert tracked.tracking is not None
        report["HOTA"] = round(tracked.tracking.class_avg["HOTA"], 4)
        report["IDF1"] = round(tracked.tracking.class_avg["IDF1"], 4)
    if args.vs_trackeval:
        report.update(versus_trackeval(gt, results, args.repeats))
    if args.from_files:
        with tempfile.TemporaryDirectory() as tmp:
            gt_path, res_path = Path(tmp, "gt.json"), Path(tmp, "results.json")
            gt_path.write_text(json.dumps(gt))
            res_path.write_text(json.dumps(results))
            report["results_json_mb"] = round(res_path.stat().st_size / 2**20, 1)
            del gt, results
            start, cpu = time.perf_counter(), time.process_time()
            evaluate(gt_path, res_path)
            report["evaluate_from_files_s"] = round(time.perf_counter() - start, 2)
            report["evaluate_from_files_cpu_s"] = round(time.process_time() - cpu, 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
