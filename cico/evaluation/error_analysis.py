"""Where the missing AP goes: a TIDE-style error analysis for video instance segmentation.

In the spirit of TIDE (Bolya et al., ECCV 2020), adapted to video tracks. Every result the AP sees
(the top 100 per video and category, as the official metric) is matched with the official greedy
matching at video IoU 0.5 (``t_f``); each false positive gets one error type, tried in this order,
with the background threshold ``t_b = 0.1``:

* duplicate: IoU >= t_f with a GT of its class already matched by a higher-scoring result;
* classification: IoU >= t_f with a GT of another class;
* localisation: t_b <= IoU < t_f with a GT of its class (the masks or their extent in time are off);
* both: t_b <= IoU < t_f with a GT of another class only;
* background: IoU < t_b with every GT.

A GT track matched by no result and targeted by no classification or localisation error is missed.
For tracking, the per-frame CLEAR matching (IoU 0.5 per frame) finds ID switches (a GT object
followed by more than one result track) and fragmentations (a GT object tracked, lost and tracked
again while still visible).

Each error type is reported as the AP50 recovered by fixing it alone with an oracle, the rest as is:
a classification error's result takes the GT's class and matches it, a localisation error's result
matches its GT perfectly (either is dropped when that GT is matched by a higher-scoring result, as a
fixed duplicate would be), duplicates, "both" errors and background results are dropped, missed GT
tracks are removed from the GT; for ID switches the result tracks that followed one GT object are
merged into one track (at each frame the mask of the result matched there, elsewhere the most-matched
result's, the highest score), and for fragmentations the most-matched result gets the GT mask in the
frames where the object was lost between its first and last match. The AP is recomputed with the
official accumulation (101 recall points) after each fix; the numbers are the differences.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..data.rle import areas as rle_areas
from .loading import Track
from .video_iou import video_iou
from .ytvis import (
    AREA_RANGES,
    IOU_THRESHOLDS,
    MAX_DETS,
    EvaluationDetails,
    VideoRecord,
    arrays_of,
    greedy_match,
    summarize,
)

FOREGROUND_IOU = 0.5
BACKGROUND_IOU = 0.1
DETECTION_ERRORS = ("classification", "localisation", "both", "duplicate", "background", "missed")
TRACKING_ERRORS = ("id_switch", "fragmentation")
ERROR_TYPES = DETECTION_ERRORS + TRACKING_ERRORS


@dataclass(frozen=True)
class ErrorAnalysis:
    """AP50 and the AP50 recovered by fixing each error type (fractions), with the number of errors."""

    ap50: float
    recovered: dict[str, float]
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"AP50": self.ap50, "recovered_AP50": self.recovered, "counts": self.counts,
                "thresholds": {"foreground_iou": FOREGROUND_IOU, "background_iou": BACKGROUND_IOU}}

    def text(self) -> str:
        lines = [(f"Error analysis (TIDE-style, video IoU; AP50 {100 * self.ap50:.1f}): AP50 points recovered"
                  " by fixing each error type alone")]
        for name in ERROR_TYPES:
            lines.append(f"  {name:<15} {100 * self.recovered[name]:+6.2f}   ({self.counts[name]} errors)")
        return "\n".join(lines)


@dataclass
class _Entries:
    """The results of one (video, category) as the AP50 sees them."""

    scores: list[float]
    tp: list[bool]
    ignored: list[bool]
    num_gt: int


def _match(ious: np.ndarray, gts: Sequence[Track]) -> np.ndarray:
    """Official greedy matching at IoU 0.5, area "all": the matched GT index of each result, or -1."""
    crowd = np.array([g.iscrowd for g in gts], dtype=bool)
    order = np.argsort(crowd, kind="mergesort")
    match = greedy_match(ious[:, order], crowd[order].tolist(), crowd[order].tolist())[0]
    return np.where(match >= 0, order[np.maximum(match, 0)], -1) if len(gts) else match


def _entries(dts: Sequence[Track], gts: Sequence[Track], ious: np.ndarray) -> tuple[_Entries, np.ndarray]:
    match = _match(ious, gts)
    crowd = np.array([g.iscrowd for g in gts], dtype=bool)
    hit = match >= 0
    ignored = hit & crowd[np.maximum(match, 0)] if len(gts) else hit
    entries = _Entries([d.score for d in dts], (hit & ~ignored).tolist(), ignored.tolist(), int((~crowd).sum()))
    return entries, match


def _ap50(categories: list[int], pairs: dict[tuple[int, int], _Entries]) -> float:
    """Official AP at IoU 0.5, area all, 100 results per (video, category), of the given matchings."""
    records: dict[int, list[VideoRecord]] = defaultdict(list)
    shape = (len(AREA_RANGES), len(IOU_THRESHOLDS))
    for (_, cid), e in sorted(pairs.items()):
        order = np.argsort([-s for s in e.scores], kind="mergesort")[: MAX_DETS[-1]]
        tp, ign = np.array(e.tp, dtype=bool)[order], np.array(e.ignored, dtype=bool)[order]
        records[cid].append(VideoRecord(np.array(e.scores, dtype=np.float64)[order],
                                         np.broadcast_to(tp | ign, shape + tp.shape).copy(),
                                         np.broadcast_to(ign, shape + ign.shape).copy(),
                                         np.full(len(AREA_RANGES), e.num_gt)))
    precision, recall = arrays_of(categories, records)
    return summarize(precision, recall, True, FOREGROUND_IOU, "all", MAX_DETS[-1])


def analyse_errors(details: EvaluationDetails) -> ErrorAnalysis:
    """The error analysis of an evaluation run with ``tracking=True, details=True``."""
    truth = details.truth
    categories = list(truth.categories)
    base: dict[tuple[int, int], _Entries] = {}
    matches: dict[tuple[int, int], np.ndarray] = {}
    for key, pair in details.pairs.items():
        base[key], matches[key] = _entries(pair.dts, pair.gts, pair.ious)

    # Classify the false positives, video by video (cross-class IoUs need every GT of the video).
    kind: dict[tuple[int, int, int], str] = {}  # (video, category, result row) -> error type
    target: dict[tuple[int, int, int], tuple[int, int]] = {}  # -> (category, GT index) it should match
    videos = sorted({vid for vid, _ in details.pairs})
    for vid in videos:
        keys = [k for k in details.pairs if k[0] == vid]
        fps = [(k, d) for k in keys for d in np.flatnonzero(matches[k] < 0).tolist()]
        video_gts = [(k[1], j, g) for k in keys for j, g in enumerate(details.pairs[k].gts) if not g.iscrowd]
        if not fps:
            continue
        cross = video_iou([details.pairs[k].dts[d] for k, d in fps], [g for _, _, g in video_gts],
                          details.zip_truncation)[0]
        gt_cid = np.array([c for c, _, _ in video_gts], dtype=np.int64)
        for row, (k, d) in enumerate(fps):
            ious = cross[row]
            same = gt_cid == k[1]
            best_same = int(np.argmax(np.where(same, ious, -1))) if same.any() else -1
            iou_same = ious[best_same] if best_same >= 0 else 0.0
            other = ~same
            best_other = int(np.argmax(np.where(other, ious, -1))) if other.any() else -1
            iou_other = ious[best_other] if best_other >= 0 else 0.0
            if iou_same >= FOREGROUND_IOU:
                kind[vid, k[1], d] = "duplicate"
            elif iou_other >= FOREGROUND_IOU:
                kind[vid, k[1], d] = "classification"
                target[vid, k[1], d] = (int(gt_cid[best_other]), video_gts[best_other][1])
            elif iou_same >= BACKGROUND_IOU:
                kind[vid, k[1], d] = "localisation"
                target[vid, k[1], d] = (k[1], video_gts[best_same][1])
            elif iou_other >= BACKGROUND_IOU:
                kind[vid, k[1], d] = "both"
            else:
                kind[vid, k[1], d] = "background"

    matched_gts = {(k[0], k[1], int(j)) for k, m in matches.items() for j in m[m >= 0].tolist()}
    targeted = {(vid, c, j) for (vid, _, _), (c, j) in target.items()}
    missed = [(k[0], k[1], j) for k, pair in details.pairs.items() for j, g in enumerate(pair.gts)
              if not g.iscrowd and (k[0], k[1], j) not in matched_gts and (k[0], k[1], j) not in targeted]

    counts = {name: sum(1 for v in kind.values() if v == name) for name in DETECTION_ERRORS}
    counts["missed"] = len(missed)
    ap50 = _ap50(categories, base)
    recovered = {name: _ap50(categories, _fix_detections(base, kind, target, matches, name)) - ap50
                 for name in ("classification", "localisation", "both", "duplicate", "background")}
    fixed = _copy(base)
    for vid, cid, _ in missed:
        fixed[vid, cid].num_gt -= 1
    recovered["missed"] = _ap50(categories, fixed) - ap50
    switched, fragmented = _tracking_fixes(details, base)
    counts["id_switch"], counts["fragmentation"] = switched[1], fragmented[1]
    recovered["id_switch"] = _ap50(categories, switched[0]) - ap50
    recovered["fragmentation"] = _ap50(categories, fragmented[0]) - ap50
    return ErrorAnalysis(ap50, recovered, counts)


def _copy(pairs: dict[tuple[int, int], _Entries]) -> dict[tuple[int, int], _Entries]:
    return {k: _Entries(list(e.scores), list(e.tp), list(e.ignored), e.num_gt) for k, e in pairs.items()}


def _fix_detections(base, kind, target, matches, name: str) -> dict[tuple[int, int], _Entries]:
    """The matchings with every error of one detection type fixed by the oracle."""
    fixed = _copy(base)
    drop: dict[tuple[int, int], set[int]] = defaultdict(set)
    claimed: set[tuple[int, int, int]] = set()
    errors = sorted((k for k, v in kind.items() if v == name), key=lambda k: -base[k[0], k[1]].scores[k[2]])
    for vid, cid, d in errors:
        drop[vid, cid].add(d)
        if name not in ("classification", "localisation"):
            continue
        t_cid, j = target[vid, cid, d]
        key = (vid, t_cid)
        taken = key in matches and j in matches[key].tolist()
        if taken or (vid, t_cid, j) in claimed:
            continue  # the GT already has its result: this one would be a duplicate
        claimed.add((vid, t_cid, j))
        entries = fixed.setdefault(key, _Entries([], [], [], 0))
        entries.scores.append(base[vid, cid].scores[d])
        entries.tp.append(True)
        entries.ignored.append(False)
    for key, rows in drop.items():
        e = fixed[key]
        keep = [i for i in range(len(base[key].scores)) if i not in rows]
        # Entries appended above sit after the original rows: keep them.
        extra = list(range(len(base[key].scores), len(e.scores)))
        idx = keep + extra
        fixed[key] = _Entries([e.scores[i] for i in idx], [e.tp[i] for i in idx], [e.ignored[i] for i in idx],
                              e.num_gt)
    return fixed


def _track(like: Track, rles: list, score: float, track_id: int) -> Track:
    """A result track built from per-frame RLEs (``None`` = absent)."""
    present = [f for f, r in enumerate(rles) if r is not None]
    areas = np.zeros(len(rles), dtype=np.int64)
    sizes = np.zeros((len(rles), 2), dtype=np.int64)
    if present:
        areas[present] = rle_areas([rles[f] for f in present])
        sizes[present] = [rles[f]["size"] for f in present]
    nonzero = areas[areas > 0]
    avg = float(nonzero.sum()) / nonzero.size if nonzero.size else 0.0
    return Track(track_id, like.video_id, like.category_id, score, False, avg, rles, areas, sizes)


def _tracking_fixes(details: EvaluationDetails, base: dict[tuple[int, int], _Entries]):
    """Matchings with ID switches fixed (merged tracks) and with fragmentations fixed (gaps filled),
    each with the number of GT tracks concerned."""
    by_pair: dict[tuple[int, int], list[Track]] = defaultdict(list)
    for t in details.results:
        by_pair[t.video_id, t.category_id].append(t)
    switched, fragmented = _copy(base), _copy(base)
    n_switched = n_fragmented = 0
    for key, m in details.matches.items():
        if m.frames.size == 0 or key not in details.pairs:
            continue
        gts, all_dts = details.pairs[key].gts, by_pair[key]
        merged: list[Track] = []
        removed: set[int] = set()
        filled: dict[int, list] = {}
        for g in np.unique(m.gts).tolist():
            sel = m.gts == g
            frames, dts = m.frames[sel], m.dts[sel]
            ids, hits = np.unique(dts, return_counts=True)
            main = int(ids[np.argmax(hits)])
            length = max(len(all_dts[i].rles) for i in ids)
            if ids.size > 1:  # ID switch: merge the results that followed this object
                n_switched += 1
                rles = list(all_dts[main].rles) + [None] * (length - len(all_dts[main].rles))
                for f, d in zip(frames.tolist(), dts.tolist()):
                    rles[f] = all_dts[d].rles[f]
                merged.append(_track(all_dts[main], rles, max(all_dts[i].score for i in ids), -len(merged) - 1))
                removed.update(ids.tolist())
            gt = gts[g]
            visible = [f for f in range(int(frames.min()), int(frames.max()) + 1)
                       if f < len(gt.rles) and gt.rles[f] is not None]
            gaps = sorted(set(visible) - set(frames.tolist()))
            if gaps:  # fragmentation: the most-matched result gets the GT mask where the object was lost
                n_fragmented += 1
                rles = filled.get(main, list(all_dts[main].rles))
                rles += [None] * (max(len(gt.rles), len(rles)) - len(rles))
                for f in gaps:
                    rles[f] = gt.rles[f]
                filled[main] = rles
        if merged:
            dts = [d for i, d in enumerate(all_dts) if i not in removed] + merged
            switched[key] = _rematch(dts, gts, details.zip_truncation)
        if filled:
            dts = [_track(d, filled[i], d.score, d.id) if i in filled else d for i, d in enumerate(all_dts)]
            fragmented[key] = _rematch(dts, gts, details.zip_truncation)
    return (switched, n_switched), (fragmented, n_fragmented)


def _rematch(dts: list[Track], gts: list[Track], zip_truncation: bool) -> _Entries:
    order = np.argsort([-d.score for d in dts], kind="mergesort")[: MAX_DETS[-1]]
    dts = [dts[i] for i in order]
    return _entries(dts, gts, video_iou(dts, gts, zip_truncation)[0])[0]
