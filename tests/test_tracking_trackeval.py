"""The tracking metrics equal TrackEval's (``trackeval`` 1.3.0, YouTubeVIS + HOTA/CLEAR/Identity) to 1e-6.

Generated GT/result pairs cover many videos and classes, frames where objects are absent, crowd GT,
classes without GT, videos without results, many false positives, near and exact duplicates, and ID
switches built in on purpose (a result that jumps from one object to another, an object split over
two results). TrackEval reads them from the folder layout its YouTubeVIS class expects.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cico.evaluation import evaluate
from cico.evaluation.tracking import CLEAR_KEYS, HOTA_KEYS, IDENTITY_KEYS

trackeval = pytest.importorskip("trackeval")  # test-only dependency

NUM_CLASSES = 5


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)


def _uncompressed(mask: np.ndarray) -> dict:
    """Uncompressed column-major RLE, as official YouTube-VIS GT files hold."""
    flat = np.asfortranarray(mask).flatten(order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change]))
    counts = counts[counts > 0] if flat[0] == 0 else np.concatenate([[0], counts[counts > 0]])
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _compressed(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def make_pair(seed: int, num_videos: int = 14) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    videos, annotations, results = [], [], []
    for v in range(1, num_videos + 1):
        h, w, length = int(rng.integers(20, 36)), int(rng.integers(28, 48)), int(rng.integers(3, 12))
        videos.append({"id": v, "height": h, "width": w, "length": length,
                       "file_names": [f"vid{v:03d}/{f:05d}.jpg" for f in range(length)]})  # fmt: skip
        objects = []  # per object: class, [T] masks (None = absent)
        for _ in range(int(rng.integers(0, 5))):
            cid = int(rng.integers(1, NUM_CLASSES))  # class NUM_CLASSES never has GT
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            vy, vx = rng.normal(0, 1.5, 2)
            ry, rx = rng.uniform(3, h / 2), rng.uniform(3, w / 2)
            masks = []
            for t in range(length):
                m = _ellipse(h, w, cy + vy * t, cx + vx * t, ry, rx)
                masks.append(None if (m.sum() == 0 or rng.random() < 0.15) else m)
            objects.append((cid, masks))
            crowd = int(rng.random() < 0.12)
            annotations.append({
                "id": len(annotations) + 1, "video_id": v, "category_id": cid, "iscrowd": crowd,
                "height": h, "width": w, "length": length,
                "segmentations": [None if m is None else _uncompressed(m) for m in masks],
                "areas": [None if m is None else int(m.sum()) for m in masks],
                "bboxes": [None] * length,
            })  # fmt: skip

        def jitter(mask: np.ndarray | None, amount: int) -> np.ndarray | None:
            if mask is None:
                return None
            shifted = np.roll(mask, (int(rng.integers(-amount, amount + 1)), int(rng.integers(-amount, amount + 1))),
                              axis=(0, 1))
            return shifted if shifted.any() else None

        def add(cid: int, masks: list, score: float | None = None, v: int = v) -> None:
            results.append({"video_id": v, "category_id": cid, "score": float(rng.random() if score is None else score),
                            "segmentations": [None if m is None else _compressed(m) for m in masks]})

        if v % 7 == 0:
            continue  # a video without results
        for cid, masks in objects:
            add(cid if rng.random() > 0.1 else int(rng.integers(1, NUM_CLASSES + 1)),
                [jitter(m, 2) if rng.random() > 0.1 else None for m in masks])
            if rng.random() < 0.3:  # a near duplicate
                add(cid, [jitter(m, 3) for m in masks])
            if rng.random() < 0.15:  # an exact duplicate
                results.append(dict(results[-1], score=float(rng.random())))
            if rng.random() < 0.3:  # the object split over two results: an ID switch
                cut = int(rng.integers(1, length))
                add(cid, [m if t < cut else None for t, m in enumerate(masks)])
                add(cid, [m if t >= cut else None for t, m in enumerate(masks)])
        same_class = [(i, j) for i in range(len(objects)) for j in range(len(objects))
                      if i < j and objects[i][0] == objects[j][0]]
        for i, j in same_class:  # a result jumping from one object to another halfway
            cut = length // 2
            add(objects[i][0], [objects[i][1][t] if t < cut else objects[j][1][t] for t in range(length)])
        for _ in range(int(rng.integers(2, 9))):  # false positives, some with no mask at all
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            m = _ellipse(h, w, cy, cx, rng.uniform(2, 8), rng.uniform(2, 8))
            present = rng.random(length) < 0.7
            add(int(rng.integers(1, NUM_CLASSES + 1)), [m if p and m.any() else None for p in present])
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, NUM_CLASSES + 1)]
    return {"videos": videos, "categories": categories, "annotations": annotations}, results


def run_trackeval(tmp_path: Path, gt: dict, results: list) -> dict:
    """TrackEval's combined-class results ``{"cls_comb_cls_av": {...}, "cls_comb_det_av": {...}}``."""
    gt_dir = tmp_path / "gt" / "youtube_vis_test"
    tracker_dir = tmp_path / "trackers" / "youtube_vis_test" / "cico" / "data"
    gt_dir.mkdir(parents=True)
    tracker_dir.mkdir(parents=True)
    (gt_dir / "gt.json").write_text(json.dumps(gt))
    (tracker_dir / "results.json").write_text(json.dumps(results))
    eval_config = trackeval.Evaluator.get_default_eval_config()
    eval_config.update({"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
                        "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False,
                        "BREAK_ON_ERROR": True, "DISPLAY_LESS_PROGRESS": True})  # fmt: skip
    dataset_config = {"GT_FOLDER": f"{tmp_path / 'gt'}/", "TRACKERS_FOLDER": f"{tmp_path / 'trackers'}/",
                      "SPLIT_TO_EVAL": "test", "PRINT_CONFIG": False, "OUTPUT_FOLDER": str(tmp_path / "out")}
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
               trackeval.metrics.Identity({"PRINT_CONFIG": False})]
    evaluator = trackeval.Evaluator(eval_config)
    output, _ = evaluator.evaluate([trackeval.datasets.YouTubeVIS(dataset_config)], metrics)
    combined = output["YouTubeVIS"]["cico"]["COMBINED_SEQ"]
    out = {}
    for key in ("cls_comb_cls_av", "cls_comb_det_av"):
        res = combined[key]
        values = {k: float(np.mean(res["HOTA"][k])) for k in HOTA_KEYS}
        values.update({k: float(res["CLEAR"][k]) for k in CLEAR_KEYS})
        values.update({k: float(res["Identity"][k]) for k in IDENTITY_KEYS})
        out[key] = values
    out["per_class"] = {name: {k: float(np.mean(combined[name]["HOTA"][k])) for k in HOTA_KEYS}
                        | {k: float(combined[name]["CLEAR"][k]) for k in CLEAR_KEYS}
                        | {k: float(combined[name]["Identity"][k]) for k in IDENTITY_KEYS}
                        for name in combined if name.startswith("class")}  # fmt: skip
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tracking_metrics_equal_trackeval(tmp_path: Path, seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    gt, results = make_pair(seed)
    assert any(a["iscrowd"] for a in gt["annotations"]), "the generated case must hold crowd GT"
    mine = evaluate(json.loads(json.dumps(gt)), json.loads(json.dumps(results)), tracking=True).tracking
    reference = run_trackeval(tmp_path, gt, results)
    capsys.readouterr()  # TrackEval's progress prints
    assert mine is not None
    assert reference["cls_comb_det_av"]["IDSW"] > 0, "the generated case must hold ID switches"
    for ours, theirs in ((mine.class_avg, reference["cls_comb_cls_av"]), (mine.det_avg, reference["cls_comb_det_av"])):
        assert set(ours) == set(theirs)
        for key in theirs:
            assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    for cid, scores in mine.per_class.items():
        for key, value in reference["per_class"][f"class{cid}"].items():
            assert scores[key] == pytest.approx(value, abs=1e-6), (cid, key)


def test_score_threshold_equals_trackeval_on_the_kept_results(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    gt, results = make_pair(3, num_videos=8)
    result = evaluate(gt, results, tracking=True, track_score_thresh=0.4)
    reference = run_trackeval(tmp_path, gt, [r for r in results if r["score"] >= 0.4])
    capsys.readouterr()
    assert result.tracking_thresholded is not None and result.tracking_thresholded.score_threshold == 0.4
    for key, value in reference["cls_comb_det_av"].items():
        assert result.tracking_thresholded.det_avg[key] == pytest.approx(value, abs=1e-6), key
    assert result.tracking is not None
    assert result.tracking.det_avg["CLR_FP"] > result.tracking_thresholded.det_avg["CLR_FP"]
