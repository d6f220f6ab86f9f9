"""Each quirk of the official YouTube-VIS metric (spec ytvis_eval.md §7) on a hand-made case.

Expected numbers are worked out in the comments. ``EPS_ONE = 1/(1+eps)`` is the precision of a
single true positive (``tp / (tp + fp + np.spacing(1))``), hence the famous perfect AP.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from pycocotools import mask as mask_utils

from cico.data.rle import encode
from cico.evaluation import EvaluationWarning, evaluate
from cico.evaluation.loading import Track
from cico.evaluation.video_iou import video_iou

EPS_ONE = 1.0 / (1.0 + np.spacing(1))  # 0.9999999999999998
H, W = 8, 10


def box(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def seg(m: np.ndarray | None) -> dict | None:
    return None if m is None else encode(m)


def gt_file(tracks: list[dict], videos: tuple[int, ...] = (1,), categories: tuple[int, ...] = (1,)) -> dict:
    """GT with the given tracks: dicts with ``masks`` and optional id/video/category/iscrowd/areas."""
    annotations = []
    for i, t in enumerate(tracks):
        masks = t["masks"]
        annotations.append({
            "id": t.get("id", i + 1), "video_id": t.get("video", 1), "category_id": t.get("cat", 1),
            "iscrowd": t.get("iscrowd", 0), "segmentations": [seg(m) for m in masks],
            "areas": t.get("areas", [None if m is None else int(m.sum()) for m in masks]),
        })  # fmt: skip
    return {
        "videos": [{"id": v, "height": H, "width": W, "length": 3} for v in videos],
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
        "annotations": annotations,
    }


def result(masks: list, score: float = 0.9, video: int = 1, cat: int = 1) -> dict:
    return {"video_id": video, "category_id": cat, "score": score, "segmentations": [seg(m) for m in masks]}


def quiet_evaluate(gt, results, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)
        return evaluate(gt, results, **kwargs)


def ap_at(res, threshold_index: int) -> np.ndarray:
    """Precision over the 101 recall thresholds, one IoU threshold, class 0, area all, 100 dets."""
    return res.precision[threshold_index, :, 0, 0, 2]


A = box(1, 5, 1, 5)  # 16 pixels


def test_perfect_prediction_gives_the_famous_ap() -> None:
    res = quiet_evaluate(gt_file([{"masks": [A, A]}]), [result([A, A])])
    assert EPS_ONE == 0.9999999999999998
    # AP averages 10 x 101 copies of 1/(1+eps): 0.9999999999999998; AP50 averages 101 copies, and
    # numpy's sum of those rounds to 0.9999999999999999 (the official code calls the same np.mean).
    assert res.stats["AP"] == 0.9999999999999998 and res.stats["APs"] == 0.9999999999999998
    assert res.stats["AP50"] == res.stats["AP75"] == 0.9999999999999999 == np.mean(np.full(101, EPS_ONE))
    assert res.stats["AR1"] == 1.0 and res.stats["ARm"] == -1.0 and res.stats["APl"] == -1.0


def test_zip_truncation_ignores_frames_beyond_the_shorter_list() -> None:
    gt = gt_file([{"masks": [A, A]}])
    # [A] covers only frame 0 -> IoU 16/16 = 1.0; [A, null, null] also covers frame 1 -> 16/32 = 0.5.
    short = quiet_evaluate(gt, [result([A])])
    padded = quiet_evaluate(gt, [result([A, None, None])])
    assert short.stats["AP"] == EPS_ONE
    assert padded.stats["AP50"] == 0.9999999999999999  # IoU 0.5 passes the closed 0.5 threshold
    assert padded.stats["AP75"] == 0.0
    assert padded.stats["AP"] == pytest.approx(EPS_ONE / 10, abs=1e-12)  # only 1 of 10 thresholds
    # The documented fix counts the missing frame as "absent": IoU 0.5 as well.
    fixed = quiet_evaluate(gt, [result([A])], zip_truncation=False)
    assert fixed.stats["AP"] == padded.stats["AP"]


def _track(masks: list, id_: int = 1) -> Track:
    rles = [None if m is None else encode(m) for m in masks]
    areas = np.array([0 if m is None else int(m.sum()) for m in masks], dtype=np.int64)
    sizes = np.array([[0, 0] if m is None else list(m.shape) for m in masks], dtype=np.int64).reshape(-1, 2)
    return Track(id_, 1, 1, 1.0, False, 0.0, rles, areas, sizes)


def test_masks_of_another_size_add_nothing_to_intersection_or_union() -> None:
    other_overlapping = box(1, 5, 1, 5, h=H + 1)  # boxes overlap: mask.iou says -1
    other_disjoint = box(6, 8, 7, 9, h=H + 1)  # boxes do not overlap: mask.iou says 0
    gt = [_track([A, A, A, None])]
    # frame 0: 16/16; frames 1, 2: sizes differ -> nothing; frame 3: only the result -> union += 4
    dt_masks = [A, other_overlapping, other_disjoint, box(0, 2, 0, 2, h=H + 1)]
    dt = [_track(dt_masks)]
    ious, mismatch = video_iou(dt, gt)
    assert ious[0, 0] == 16 / 20
    assert mismatch is not None and mismatch.frames == 2
    # Through the metric: the warning, and IoU 0.8 -> TP up to threshold 0.8 (7 of 10 thresholds).
    with pytest.warns(EvaluationWarning, match="different sizes"):
        res = evaluate(gt_file([{"masks": [A, A, A, None]}]), [result(dt_masks)])
    assert res.stats["AP"] == pytest.approx(0.7 * EPS_ONE, abs=1e-12)
    # Only size-mismatched frames in common: union 0 -> IoU 0.
    ious, _ = video_iou([_track([other_overlapping])], [_track([A])])
    assert ious[0, 0] == 0.0


def test_integer_intersection_recovery_is_exact_on_large_masks() -> None:
    rng = np.random.default_rng(0)
    h, w = 720, 1280
    yy, xx = np.ogrid[:h, :w]
    masks = []
    for _ in range(12):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(5, 700), rng.uniform(5, 1300)
        masks.append((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8))
    masks.append(np.ones((h, w), dtype=np.uint8))
    dts = [_track([m], i) for i, m in enumerate(masks)]
    ious, _ = video_iou(dts, dts)
    for i, d in enumerate(masks):
        for j, g in enumerate(masks):
            inter = int(np.logical_and(d, g).sum())
            union = int(np.logical_or(d, g).sum())
            assert ious[i, j] == (inter / union if union else 0.0)


def test_crowd_gt_uses_the_plain_iou_and_absorbs_results() -> None:
    person = box(0, 2, 0, 2)  # 4 px
    crowd = box(3, 8, 0, 10)  # 50 px
    gt = gt_file([{"masks": [person]}, {"masks": [crowd], "iscrowd": 1}])
    # Results inside the crowd with plain IoU >= 0.95 are matched to it, so ignored (many can be).
    absorbed = [result([crowd], 0.95), result([crowd], 0.94), result([person], 0.9)]
    assert quiet_evaluate(gt, absorbed).stats["AP"] == EPS_ONE
    # A result inside the crowd but covering 10 of its 50 px: intersection over its own area is 1
    # (COCO's crowd rule would ignore it) but the plain IoU is 0.2 -> a false positive ranked first:
    # precision 1/2 at recall 1 for every threshold -> AP 0.5.
    inside = [result([box(3, 4, 0, 10)], 0.95), result([person], 0.9)]
    assert quiet_evaluate(gt, inside).stats["AP"] == 0.5


def test_a_match_to_a_regular_gt_is_not_traded_for_an_ignored_one() -> None:
    # Crowd C (20 px) covers person P (16 px); the result R = C has IoU 0.8 with P and 1.0 with C.
    # Up to threshold 0.80 R matches P and the scan stops at the first ignored GT: a TP. From 0.85
    # on P is out of reach and R matches the crowd: ignored, so no TP at all.
    person, crowd = box(0, 4, 0, 4), box(0, 4, 0, 5)
    gt = gt_file([{"masks": [crowd], "iscrowd": 1}, {"masks": [person]}])
    res = quiet_evaluate(gt, [result([crowd])])
    for t in range(7):
        np.testing.assert_array_equal(ap_at(res, t), np.full(101, EPS_ONE))
    for t in range(7, 10):
        np.testing.assert_array_equal(ap_at(res, t), np.zeros(101))


def test_area_ranges_use_the_areas_field_with_closed_intervals() -> None:
    # The masks are 16 px (small) but the `areas` field says 16384 = 128**2: both small and medium.
    res = quiet_evaluate(gt_file([{"masks": [A, A], "areas": [16384, 16384]}]), [result([A, A])])
    assert res.stats["APs"] == EPS_ONE and res.stats["APm"] == EPS_ONE and res.stats["APl"] == -1.0
    # 16385: medium only. The result (16 px, small) is matched to a GT ignored in "small": ignored.
    res = quiet_evaluate(gt_file([{"masks": [A, A], "areas": [16385, 16385]}]), [result([A, A])])
    assert res.stats["APs"] == -1.0 and res.stats["APm"] == EPS_ONE
    # Mean of the non-null, non-zero entries: (30000 + 10000) / 2 = 20000 -> medium only.
    res = quiet_evaluate(gt_file([{"masks": [A, A], "areas": [0, None, 30000, 10000]}]), [result([A, A])])
    assert res.stats["APs"] == -1.0 and res.stats["APm"] == EPS_ONE
    # 65536 = 256**2 is both medium and large.
    res = quiet_evaluate(gt_file([{"masks": [A], "areas": [65536]}]), [result([A])])
    assert res.stats["APm"] == EPS_ONE and res.stats["APl"] == EPS_ONE
    # Without an `areas` field the mask areas are used: 16 px -> small.
    gt = gt_file([{"masks": [A]}])
    del gt["annotations"][0]["areas"]
    res = quiet_evaluate(gt, [result([A])])
    assert res.stats["APs"] == EPS_ONE and res.stats["APm"] == -1.0


def test_unmatched_results_outside_an_area_range_are_ignored() -> None:
    # GT medium (by its areas field); a 16-px FP is small: an FP for "all" and "medium" ranking, but
    # ignored in "medium" because its own area is outside the range.
    gt = gt_file([{"masks": [A], "areas": [20000]}])
    res = quiet_evaluate(gt, [result([box(6, 8, 6, 8)], 0.95), result([A], 0.9)])
    assert res.stats["AP"] == 0.5
    assert res.stats["APm"] == EPS_ONE


def test_at_most_100_results_per_video_and_class_before_the_iou() -> None:
    gt = gt_file([{"masks": [A]}])
    junk = [result([box(6, 8, 6, 8)], 0.9) for _ in range(100)]
    cut = quiet_evaluate(gt, junk + [result([A], 0.1)])  # the perfect one is the 101st: dropped
    assert cut.stats["AP"] == 0.0 and cut.stats["AR100"] == 0.0
    kept = quiet_evaluate(gt, junk[:99] + [result([A], 0.1)])  # 100th: kept, precision 1/100
    assert kept.stats["AR100"] == 1.0 and kept.stats["AR10"] == 0.0 and kept.stats["AR1"] == 0.0
    assert kept.stats["AP"] == pytest.approx(0.01, abs=1e-15)


def test_score_ties_keep_file_order_within_a_video() -> None:
    gt = gt_file([{"masks": [A]}])
    miss, hit = result([box(6, 8, 6, 8)], 0.5), result([A], 0.5)
    assert quiet_evaluate(gt, [miss, hit]).stats["AP"] == 0.5  # FP first: precision 1/2
    assert quiet_evaluate(gt, [hit, miss]).stats["AP"] == EPS_ONE


def test_many_score_ties_keep_file_order() -> None:
    # 40 tied results and a higher one among them (numpy's default sort would reorder the ties):
    # stable order = the 0.9 FP, then 19 FPs, then the TP -> precision 1/21 at recall 1.
    gt = gt_file([{"masks": [A]}])
    results = [result([box(6, 8, 6, 8)], 0.5) for _ in range(40)]
    results[19] = result([A], 0.5)
    results.insert(30, result([box(6, 8, 6, 8)], 0.9))
    res = quiet_evaluate(gt, results)
    for t in range(10):
        np.testing.assert_array_equal(ap_at(res, t), np.full(101, 1 / 21))
    # Across 20 videos (one GT each): the TPs of videos 11-20 come first in the file, but videos
    # are concatenated in id order and ties keep that order: the 0.9 FP, 10 FPs, then 10 TPs ->
    # precision 10/21 at recall 10/20, for the recall thresholds 0..0.5.
    videos = tuple(range(1, 21))
    gt = gt_file([{"masks": [A], "video": v} for v in videos], videos=videos)
    results = [result([A], 0.5, video=v) for v in range(11, 21)]
    results += [result([box(6, 8, 6, 8)], 0.5, video=v) for v in range(1, 11)]
    results.insert(5, result([box(6, 8, 6, 8)], 0.9, video=15))
    res = quiet_evaluate(gt, results)
    for t in range(10):
        np.testing.assert_array_equal(ap_at(res, t), np.r_[np.full(51, 10 / 21), np.zeros(50)])


def test_score_ties_across_videos_follow_video_id_order() -> None:
    gt = gt_file([{"masks": [A], "video": 1}, {"masks": [A], "video": 2}], videos=(1, 2))
    # In the file the video-2 FP comes first, but accumulation concatenates videos by id: the
    # video-1 TP ranks first -> precision [1/(1+eps), 1/2], recall [.5, .5] -> 51 of 101 recall
    # thresholds at 1/(1+eps); file order would give 51 at 0.5.
    res = quiet_evaluate(gt, [result([box(6, 8, 6, 8)], 0.5, video=2), result([A], 0.5, video=1)])
    expected = np.r_[np.full(51, EPS_ONE), np.zeros(50)]
    for t in range(10):
        np.testing.assert_array_equal(ap_at(res, t), expected)


def test_equal_iou_goes_to_the_later_gt() -> None:
    core = box(1, 3, 1, 6)  # 10 px
    gt_a = core.copy()
    gt_a[5, 0] = 1  # 11 px: IoU(core, A) = 10/11
    gt_b = core.copy()
    gt_b[6, 9] = 1  # 11 px: IoU(core, B) = 10/11, IoU(B, A) = 10/12
    gt = gt_file([{"masks": [gt_a]}, {"masks": [gt_b]}])
    res = quiet_evaluate(gt, [result([core], 0.9), result([gt_b], 0.8)])
    # The first result ties A and B and takes the later one, B. The second (B itself) then only has
    # A at 10/12 = 0.83: a TP up to threshold 0.80, an FP at 0.85 and 0.90. (If the earlier GT won
    # the tie, both would be TPs up to 0.90.) At 0.95 only the second one matches B.
    for t in range(7):
        np.testing.assert_array_equal(ap_at(res, t), np.ones(101))
    for t in (7, 8):
        np.testing.assert_array_equal(ap_at(res, t), np.r_[np.full(51, EPS_ONE), np.zeros(50)])
    np.testing.assert_array_equal(ap_at(res, 9), np.r_[np.full(51, 0.5), np.zeros(50)])


def test_gt_id_zero_is_never_a_true_positive() -> None:
    gt = gt_file([{"masks": [A], "id": 0}])
    with pytest.warns(EvaluationWarning, match="id 0"):
        res = evaluate(gt, [result([A])])
    assert res.stats["AP"] == 0.0 and res.stats["AR100"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvaluationWarning)  # no warning when the fix is asked for
        fixed = evaluate(gt, [result([A])], gt_id_zero_never_matches=False)
    assert fixed.stats["AP"] == EPS_ONE


def test_empty_results_evaluate_to_zero_where_gt_exists() -> None:
    gt = gt_file([{"masks": [A], "cat": 1}], categories=(1, 2))
    res = evaluate(gt, [])
    assert res.stats["AP"] == 0.0 and res.stats["APs"] == 0.0 and res.stats["AR100"] == 0.0
    assert res.stats["APm"] == -1.0 and res.stats["APl"] == -1.0 and res.stats["ARl"] == -1.0
    assert res.per_class_ap == {1: 0.0, 2: -1.0}


def test_results_of_unknown_categories_are_dropped_with_a_warning() -> None:
    gt = gt_file([{"masks": [A]}])
    with pytest.warns(EvaluationWarning, match=r"not in the ground truth.*\[7\]"):
        res = evaluate(gt, [result([box(6, 8, 6, 8)], 0.99, cat=7), result([A])])
    assert res.stats["AP"] == EPS_ONE


def test_gt_without_iscrowd_is_not_crowd() -> None:
    gt = gt_file([{"masks": [A]}])
    del gt["annotations"][0]["iscrowd"]
    assert quiet_evaluate(gt, [result([A])]).stats["AP"] == EPS_ONE


def test_uncompressed_rle_and_polygons_in_results() -> None:
    gt = gt_file([{"masks": [A, A]}])
    polygon = [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]
    rasterised = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, H, W)))
    compressed = quiet_evaluate(gt, [result([A, rasterised])]).stats
    uncompressed = {"size": [H, W], "counts": _runs(A)}
    other = {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [uncompressed, polygon]}
    assert quiet_evaluate(gt, [other]).stats == compressed


def _runs(m: np.ndarray) -> list[int]:
    flat = m.reshape(-1, order="F")
    bounds = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]
    counts = np.diff(bounds).tolist()
    return ([0] + counts) if flat[0] else counts


def test_results_from_a_file_and_from_a_codalab_zip(tmp_path: Path) -> None:
    from cico.outputs.codalab import write_submission

    gt = gt_file([{"masks": [A]}])
    results = [result([A])]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    write_submission(results, tmp_path / "sub.zip")
    for source in ("results.json", "sub.zip"):
        assert quiet_evaluate(tmp_path / "gt.json", tmp_path / source).stats["AP"] == EPS_ONE


def _gt_as_results(gt: dict) -> list[dict]:
    """The GT tracks as a results list with compressed-RLE strings, as a model would write them."""
    from cico.data.rle import to_rle

    sizes = {v["id"]: (v["height"], v["width"]) for v in gt["videos"]}
    out = []
    for ann in gt["annotations"]:
        segs = []
        for s in ann["segmentations"]:
            rle = to_rle(s, *sizes[ann["video_id"]])
            counts = None if rle is None else rle["counts"]
            if rle is not None:
                rle = {"size": list(rle["size"]), "counts": counts if isinstance(counts, str) else counts.decode()}
            segs.append(rle)
        out.append({"video_id": ann["video_id"], "category_id": ann["category_id"], "score": 0.9,
                    "segmentations": segs})  # fmt: skip
    return out


def test_davis_gt_against_itself() -> None:
    gt = json.loads((SHARED / "data/davis2016_mini/instances.json").read_text())
    results = _gt_as_results(gt)
    res = evaluate(gt, results)
    # person and bird have one track each: precision 1/(1+eps). dog and car have two: the second TP
    # gives 2/(2+eps), which rounds to exactly 1.0, and precision is made monotone -> 1.0.
    assert res.per_class_ap == {1: EPS_ONE, 2: 1.0, 3: 1.0, 4: EPS_ONE}
    assert res.stats["AR1"] == res.stats["AR100"] == 1.0
    assert res.stats["AP"] >= EPS_ONE and res.stats["APl"] == -1.0
    # Video by video (one track each) the perfect AP is the famous 0.9999999999999998.
    for video in gt["videos"]:
        one = {**gt, "videos": [video], "annotations": [a for a in gt["annotations"] if a["video_id"] == video["id"]]}
        mine = [r for r in results if r["video_id"] == video["id"]]
        assert evaluate(one, mine).stats["AP"] == EPS_ONE


def test_ovis_gt_against_itself() -> None:
    gt = json.loads((SHARED / "data/ovis_annotation_sample/annotations_train.json").read_text())
    results = _gt_as_results(gt)
    res = evaluate(gt, results)
    # 10 fish tracks, all found: AP 1.0 (see the DAVIS test); AR1 = 1 of 10 tracks.
    assert res.stats["AP"] == 1.0 and res.stats["AR1"] == 0.1 and res.stats["AR10"] == 1.0
    assert res.per_class_ap[19] == 1.0 and res.per_class_ap[1] == -1.0
    single = {**gt, "annotations": gt["annotations"][:1]}
    assert evaluate(single, results[:1]).stats["AP"] == EPS_ONE


def test_prediction_tracks_are_accepted_as_results() -> None:
    from cico.inference.tracks import Track as PredictedTrack

    track = PredictedTrack(video_id=1, track_id=0, category_id=1, category_name="c1", score=0.7,
                           segmentations=[seg(A), None])  # fmt: skip
    assert evaluate(gt_file([{"masks": [A]}]), [track]).stats["AP"] == EPS_ONE


def test_a_video_longer_than_255_frames() -> None:
    # pycocotools' area() fails on more than 255 masks at once under NumPy 2 (a uint8 size buffer);
    # long videos (OVIS, the YouTube-VIS 2022 long-video split) have tracks that long.
    frames = 300
    masks = [box(1, 5, 1 + f % 4, 5 + f % 4) for f in range(frames)]
    gt = gt_file([{"masks": masks}])
    gt["videos"][0]["length"] = frames
    half = [m if f < 150 else None for f, m in enumerate(masks)]
    res = quiet_evaluate(gt, [result(masks), result(half, score=0.5)], tracking=True)
    assert res.stats["AP"] == EPS_ONE
    assert res.tracking is not None and res.tracking.class_avg["IDSW"] == 0
    assert res.tracking.class_avg["CLR_FP"] == 150


def test_the_hungarian_solver_is_scipys() -> None:
    from scipy.optimize import linear_sum_assignment

    from cico.evaluation.tracking import hungarian_solver

    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 5), (5, 1), (3, 7), (7, 3), (12, 12)]:
        for _ in range(20):
            cost = rng.integers(0, 3, size=shape).astype(np.float64)  # many ties: the same tie-breaking
            for ours, theirs in zip(hungarian_solver()(cost), linear_sum_assignment(cost)):
                assert np.array_equal(ours, theirs)


def test_the_hungarian_solver_loads_without_all_of_scipy_optimize() -> None:
    import importlib.machinery
    import subprocess
    import sys

    import scipy

    folder = Path(scipy.__file__).parent / "optimize"
    if not any((folder / f"_lsap{s}").is_file() for s in importlib.machinery.EXTENSION_SUFFIXES):
        pytest.skip("this SciPy's solver is not a module of its own")
    code = ("import sys; from cico.evaluation.tracking import hungarian_solver; hungarian_solver();"
            "print('scipy.optimize' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
