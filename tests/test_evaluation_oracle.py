"""Agreement with the official YouTube-VIS algorithm on many random small cases.

The official youtubevos cocoapi is not installable from PyPI, so the oracle below is a plain,
loop-based transcription of ``ytvos.py`` / ``ytvoseval.py`` as described in
``shared/spec/ytvis_eval.md`` (slow and obviously literal: per pair, per frame RLE merges; per
threshold, per result, per GT matching; per category/area/maxDets accumulation), adapted only where
current numpy requires (``np.float`` -> ``float``, integer ``linspace`` counts).
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cico.data.rle import encode
from cico.evaluation import STAT_NAMES, EvaluationWarning, evaluate

# ----------------------------------------------------------------------------------------------
# The oracle: official algorithm, literally.


def _ann_to_rle(seg, height, width):
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, seg["size"][0], seg["size"][1])
    return seg


def oracle(gt: dict, results: list) -> dict:
    gt = copy.deepcopy(gt)
    results = copy.deepcopy(results)
    vids = {v["id"]: v for v in gt["videos"]}
    cats = {c["id"]: c for c in gt["categories"]}
    vid_ids = sorted(vids)
    cat_ids = sorted(cats)
    vid_to_anns: dict = {}
    for ann in gt["annotations"]:
        vid_to_anns.setdefault(ann["video_id"], []).append(ann)

    # loadRes
    assert set(r["video_id"] for r in results) <= set(vids), "Results do not correspond to current coco set"
    for index, ann in enumerate(results):
        ann["areas"] = []
        for seg in ann["segmentations"]:
            ann["areas"].append(mask_utils.area(seg) if seg else None)
        ann["id"] = index + 1
        ann["iscrowd"] = 0

    # _prepare (getAnnIds: per video in vidIds order, file order, category filter)
    def load(anns_by_video, is_gt):
        out = []
        for v in vid_ids:
            for ann in anns_by_video.get(v, []):
                if ann["category_id"] in cat_ids:
                    out.append(ann)
        for ann in out:
            video = vids[ann["video_id"]]
            for i, a in enumerate(ann["segmentations"]):
                if a:
                    ann["segmentations"][i] = _ann_to_rle(a, video.get("height"), video.get("width"))
            kept = [a for a in ann["areas"] if a]
            ann["avg_area"] = 0 if len(kept) == 0 else np.array(kept).mean()
        return out

    gts = load(vid_to_anns, True)
    res_by_video: dict = {}
    for ann in results:
        res_by_video.setdefault(ann["video_id"], []).append(ann)
    dts = load(res_by_video, False)
    for g in gts:
        g["ignore"] = "iscrowd" in g and g["iscrowd"]
    gts_vc: dict = {}
    dts_vc: dict = {}
    for g in gts:
        gts_vc.setdefault((g["video_id"], g["category_id"]), []).append(g)
    for d in dts:
        dts_vc.setdefault((d["video_id"], d["category_id"]), []).append(d)

    iou_thrs = np.linspace(0.5, 0.95, 10)
    rec_thrs = np.linspace(0.0, 1.0, 101)
    max_dets = [1, 10, 100]
    area_rng = [[0**2, 1e5**2], [0**2, 128**2], [128**2, 256**2], [256**2, 1e5**2]]
    area_lbl = ["all", "small", "medium", "large"]

    def compute_iou(v, c):
        g_list = gts_vc.get((v, c), [])
        d_list = dts_vc.get((v, c), [])
        if len(g_list) == 0 and len(d_list) == 0:
            return []
        inds = np.argsort([-d["score"] for d in d_list], kind="mergesort")
        d_list = [d_list[i] for i in inds][: max_dets[-1]]
        ious = np.zeros([len(d_list), len(g_list)])
        for i, d in enumerate(d_list):
            for j, g in enumerate(g_list):
                inter = union = 0.0
                for ds, gs in zip(d["segmentations"], g["segmentations"]):
                    if ds and gs:
                        inter += mask_utils.area(mask_utils.merge([ds, gs], True))
                        union += mask_utils.area(mask_utils.merge([ds, gs], False))
                    elif not ds and gs:
                        union += mask_utils.area(gs)
                    elif ds and not gs:
                        union += mask_utils.area(ds)
                ious[i, j] = inter / union if union > 0.0 else 0.0
        return ious

    all_ious = {(v, c): compute_iou(v, c) for v in vid_ids for c in cat_ids}

    def evaluate_vid(v, c, a_rng, max_det):
        g_list = gts_vc.get((v, c), [])
        d_list = dts_vc.get((v, c), [])
        if len(g_list) == 0 and len(d_list) == 0:
            return None
        for g in g_list:
            g["_ignore"] = 1 if (g["ignore"] or g["avg_area"] < a_rng[0] or g["avg_area"] > a_rng[1]) else 0
        gtind = np.argsort([g["_ignore"] for g in g_list], kind="mergesort")
        g_list = [g_list[i] for i in gtind]
        dtind = np.argsort([-d["score"] for d in d_list], kind="mergesort")
        d_list = [d_list[i] for i in dtind[0:max_det]]
        iscrowd = [int(o["iscrowd"]) for o in g_list]
        ious = all_ious[v, c][:, gtind] if len(all_ious[v, c]) > 0 else all_ious[v, c]
        T, G, D = len(iou_thrs), len(g_list), len(d_list)
        gtm = np.zeros((T, G))
        dtm = np.zeros((T, D))
        gt_ig = np.array([g["_ignore"] for g in g_list])
        dt_ig = np.zeros((T, D))
        if not len(ious) == 0:
            for tind, t in enumerate(iou_thrs):
                for dind, d in enumerate(d_list):
                    iou = min([t, 1 - 1e-10])
                    m = -1
                    for gind, _g in enumerate(g_list):
                        if gtm[tind, gind] > 0 and not iscrowd[gind]:
                            continue
                        if m > -1 and gt_ig[m] == 0 and gt_ig[gind] == 1:
                            break
                        if ious[dind, gind] < iou:
                            continue
                        iou = ious[dind, gind]
                        m = gind
                    if m == -1:
                        continue
                    dt_ig[tind, dind] = gt_ig[m]
                    dtm[tind, dind] = g_list[m]["id"]
                    gtm[tind, m] = d["id"]
        a = np.array([d["avg_area"] < a_rng[0] or d["avg_area"] > a_rng[1] for d in d_list]).reshape((1, len(d_list)))
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
        return {"dtMatches": dtm, "dtScores": [d["score"] for d in d_list], "gtIgnore": gt_ig, "dtIgnore": dt_ig}

    eval_imgs = [evaluate_vid(v, c, a, max_dets[-1]) for c in cat_ids for a in area_rng for v in vid_ids]

    T, R, K, A, M = len(iou_thrs), len(rec_thrs), len(cat_ids), len(area_rng), len(max_dets)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    I0, A0 = len(vid_ids), len(area_rng)
    for k in range(K):
        for a in range(A):
            for m, max_det in enumerate(max_dets):
                E = [eval_imgs[k * A0 * I0 + a * I0 + i] for i in range(I0)]
                E = [e for e in E if e is not None]
                if len(E) == 0:
                    continue
                dt_scores = np.concatenate([e["dtScores"][0:max_det] for e in E])
                inds = np.argsort(-dt_scores, kind="mergesort")
                dtm = np.concatenate([e["dtMatches"][:, 0:max_det] for e in E], axis=1)[:, inds]
                dt_ig = np.concatenate([e["dtIgnore"][:, 0:max_det] for e in E], axis=1)[:, inds]
                gt_ig = np.concatenate([e["gtIgnore"] for e in E])
                npig = np.count_nonzero(gt_ig == 0)
                if npig == 0:
                    continue
                tps = np.logical_and(dtm, np.logical_not(dt_ig))
                fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
                tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                    nd = len(tp)
                    rc = tp / npig
                    pr = tp / (fp + tp + np.spacing(1))
                    q = np.zeros((R,))
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    pr = pr.tolist()
                    q = q.tolist()
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    inds = np.searchsorted(rc, rec_thrs, side="left")
                    try:
                        for ri, pi in enumerate(inds):
                            q[ri] = pr[pi]
                    except IndexError:
                        pass
                    precision[t, :, k, a, m] = np.array(q)

    def summarize(ap=1, iou_thr=None, area="all", max_det=100):
        aind = [i for i, lbl in enumerate(area_lbl) if lbl == area]
        mind = [i for i, md in enumerate(max_dets) if md == max_det]
        if ap == 1:
            s = precision
            if iou_thr is not None:
                s = s[np.where(iou_thr == iou_thrs)[0]]
            s = s[:, :, :, aind, mind]
        else:
            s = recall
            if iou_thr is not None:
                s = s[np.where(iou_thr == iou_thrs)[0]]
            s = s[:, :, aind, mind]
        return -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])

    stats = [
        summarize(1), summarize(1, iou_thr=0.5), summarize(1, iou_thr=0.75),
        summarize(1, area="small"), summarize(1, area="medium"), summarize(1, area="large"),
        summarize(0, max_det=1), summarize(0, max_det=10), summarize(0, max_det=100),
        summarize(0, area="small"), summarize(0, area="medium"), summarize(0, area="large"),
    ]  # fmt: skip
    return {"stats": dict(zip(STAT_NAMES, map(float, stats))), "precision": precision, "recall": recall}


# ----------------------------------------------------------------------------------------------
# Random cases.

SIZES = [(12, 16), (9, 11), (150, 140), (280, 270)]


def _blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A rectangle or ellipse, sometimes with a few flipped pixels; sometimes empty."""
    m = np.zeros((h, w), dtype=np.uint8)
    if rng.random() < 0.05:
        return m
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
    if rng.random() < 0.5:
        m[y0:y1, x0:x1] = 1
    else:
        yy, xx = np.ogrid[:h, :w]
        cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2 + 0.5, (x1 - x0) / 2 + 0.5
        m[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    if rng.random() < 0.3:
        n = int(rng.integers(1, 4))
        m[rng.integers(0, h, n), rng.integers(0, w, n)] ^= 1
    return m


def _perturb(rng: np.random.Generator, m: np.ndarray) -> np.ndarray:
    out = m.copy()
    choice = rng.random()
    if choice < 0.3:
        return out  # exact copy: IoU ties
    if choice < 0.6:
        n = int(rng.integers(1, max(2, m.size // 20)))
        out[rng.integers(0, m.shape[0], n), rng.integers(0, m.shape[1], n)] ^= 1
        return out
    return np.roll(out, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))


def _uncompressed(m: np.ndarray) -> dict:
    """YouTube-VIS GT style: uncompressed column-major RLE."""
    flat = np.asfortranarray(m).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(m.shape), "counts": counts}


def _polygon(m: np.ndarray) -> list:
    """A rectangle polygon around the mask's box (only used for GT, rasterised by both sides)."""
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return [[0.5, 0.5, 2.5, 0.5, 2.5, 2.5, 0.5, 2.5]]
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]


def random_case(seed: int) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    num_videos = int(rng.integers(1, 4))
    cat_ids = [1, 2, 3] if rng.random() < 0.8 else [2, 5]
    videos, annotations, results = [], [], []
    ann_id = 1 if rng.random() < 0.9 else 0
    for v in range(num_videos):
        vid = int(rng.choice([1, 2, 3, 7, 10])) + 10 * v
        h, w = SIZES[int(rng.integers(0, len(SIZES)))]
        length = int(rng.integers(2, 6))
        videos.append({"id": vid, "height": h, "width": w, "length": length})
        gt_masks = []
        for _ in range(int(rng.integers(0, 5))):
            cid = int(rng.choice(cat_ids))
            masks = [_blob(rng, h, w) if rng.random() < 0.8 else None for _ in range(length)]
            if gt_masks and rng.random() < 0.2:  # duplicate GT track: equal IoUs, the later GT wins
                cid, masks = gt_masks[-1]
            gt_masks.append((cid, masks))
            fmt = rng.random()
            segs = [
                None if m is None else (_polygon(m) if fmt < 0.15 else _uncompressed(m) if fmt < 0.7 else encode(m))
                for m in masks
            ]
            if fmt < 0.15:  # the polygon is what the GT is: rasterise it for the results to copy
                masks = [None if s is None else mask_utils.decode(_ann_to_rle(s, h, w)) for s in segs]
                gt_masks[-1] = (cid, masks)
            true_areas = [None if m is None else int(m.sum()) for m in masks]
            areas_kind = rng.random()
            if areas_kind < 0.5:
                areas = true_areas
            elif areas_kind < 0.8:  # the `areas` field decides the range, masks do not
                choices = [0, 100, 16384, 20000, 65536, 70000]
                areas = [None if a is None else float(rng.choice(choices)) for a in true_areas]
            else:
                areas = [None if a is None else int(a * rng.integers(50, 3000)) for a in true_areas]
            ann = {"id": ann_id, "video_id": vid, "category_id": cid, "segmentations": segs, "areas": areas,
                   "iscrowd": int(rng.random() < 0.15), "height": h, "width": w}  # fmt: skip
            annotations.append(ann)
            ann_id += 1
        # results: noisy copies of GT, false positives, wrong-size masks, short/long lists
        for _ in range(int(rng.integers(0, 9))):
            if gt_masks and rng.random() < 0.7:
                cid, masks = gt_masks[int(rng.integers(0, len(gt_masks)))]
                masks = [None if m is None else _perturb(rng, m) for m in masks]
                if rng.random() < 0.15:
                    cid = int(rng.choice(cat_ids))
            else:
                cid = int(rng.choice(cat_ids + [99])) if rng.random() < 0.95 else 99
                masks = [_blob(rng, h, w) if rng.random() < 0.7 else None for _ in range(length)]
            cut = rng.random()
            if cut < 0.15:
                masks = masks[: int(rng.integers(0, length))]
            elif cut < 0.25:
                masks = masks + [_blob(rng, h, w) if rng.random() < 0.5 else None for _ in range(2)]
            segs = []
            for m in masks:
                if m is not None and rng.random() < 0.05:  # a mask of another size
                    m = _blob(rng, h + 1, w)
                segs.append(None if m is None else encode(m))
            score = float(rng.choice([0.9, 0.5, 0.5, 0.3])) if rng.random() < 0.5 else float(rng.random())
            results.append({"video_id": vid, "category_id": cid, "score": score, "segmentations": segs})
    categories = [{"id": c, "name": f"class{c}"} for c in cat_ids]
    return {"videos": videos, "categories": categories, "annotations": annotations}, results


def _check(gt: dict, results: list) -> None:
    expected = oracle(gt, results)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)
        got = evaluate(gt, results)
    for name in STAT_NAMES:
        assert got.stats[name] == pytest.approx(expected["stats"][name], abs=1e-9), name
    np.testing.assert_array_equal(got.precision, expected["precision"])
    np.testing.assert_array_equal(got.recall, expected["recall"])


@pytest.mark.parametrize("seed", range(60))
def test_random_cases_match_the_official_algorithm(seed: int) -> None:
    _check(*random_case(seed))


def test_more_than_100_results_per_video_and_class() -> None:
    rng = np.random.default_rng(123)
    h, w = 10, 12
    gt_masks = [_blob(rng, h, w) for _ in range(3)]
    gt = {
        "videos": [{"id": 1, "height": h, "width": w}, {"id": 2, "height": h, "width": w}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": i + 1, "video_id": 1 + i % 2, "category_id": 1, "iscrowd": 0, "segmentations": [encode(m)],
             "areas": [int(m.sum())]}
            for i, m in enumerate(gt_masks)
        ],
    }  # fmt: skip
    results = [
        {"video_id": 1 + i % 2, "category_id": 1, "score": float(rng.choice([0.1, 0.2, 0.3])),
         "segmentations": [encode(_perturb(rng, gt_masks[i % 3]))]}
        for i in range(230)
    ]  # fmt: skip
    _check(gt, results)


def test_many_score_ties_within_and_across_videos() -> None:
    # Long runs of equal scores broken by a few higher ones: numpy's default (unstable) sort reorders
    # such ties, the official mergesort keeps file order within a video and video-id order across.
    rng = np.random.default_rng(7)
    h, w = 6, 7
    masks = {v: _blob(rng, h, w) for v in range(1, 31)}
    gt = {
        "videos": [{"id": v, "height": h, "width": w} for v in masks],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": v, "video_id": v, "category_id": 1, "iscrowd": 0, "segmentations": [encode(m)],
                         "areas": [int(m.sum())]} for v, m in masks.items()],
    }  # fmt: skip
    results = []
    for v in reversed(masks):
        hit = v % 2 == 1
        results.append({"video_id": v, "category_id": 1, "score": 0.9 if v % 7 == 0 else 0.5,
                        "segmentations": [encode(masks[v] if hit else 1 - masks[v])]})  # fmt: skip
    for i in range(40):  # video 3: 40 results, ties with a few higher scores in between
        results.append({"video_id": 3, "category_id": 1, "score": 0.8 if i % 13 == 5 else 0.5,
                        "segmentations": [encode(masks[3] if i in (4, 19, 33) else 1 - masks[3])]})  # fmt: skip
    _check(gt, results)


def test_full_resolution_video_masks() -> None:
    # 720x1280 ellipses moving over 4 frames (intersections up to ~10^5 pixels), noisy copies and
    # false positives: the integer recovery from mask.iou at real sizes, against the merge loop.
    rng = np.random.default_rng(3)
    h, w, frames = 720, 1280, 4
    yy, xx = np.ogrid[:h, :w]

    def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)

    gt = {"videos": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": []}
    results = []
    for vid in (1, 2):
        gt["videos"].append({"id": vid, "height": h, "width": w})
        for _ in range(3):
            cid = int(rng.integers(1, 3))
            cy, cx, ry, rx = rng.uniform(100, 600), rng.uniform(100, 1100), rng.uniform(20, 300), rng.uniform(20, 400)
            masks = [ellipse(cy + 9 * f, cx + 15 * f, ry, rx) for f in range(frames)]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "video_id": vid, "category_id": cid,
                                      "iscrowd": 0, "segmentations": [_uncompressed(m) for m in masks],
                                      "areas": [int(m.sum()) for m in masks]})  # fmt: skip
            for _ in range(3):
                dy, dx, s = rng.normal(0, 15), rng.normal(0, 25), rng.uniform(0.8, 1.2)
                segs = [encode(ellipse(cy + 9 * f + dy, cx + 15 * f + dx, ry * s, rx / s)) for f in range(frames)]
                results.append({"video_id": vid, "category_id": cid, "score": float(rng.random()),
                                "segmentations": segs})  # fmt: skip
        for _ in range(3):
            segs = [encode(ellipse(*rng.uniform(50, 650, 2), *rng.uniform(10, 200, 2))) for _ in range(frames)]
            results.append({"video_id": vid, "category_id": int(rng.integers(1, 3)), "score": float(rng.random()),
                            "segmentations": segs})  # fmt: skip
    _check(gt, results)
