"""The official YouTube-VIS video mask AP/AR (youtubevos/cocoapi ``YTVOSeval``), reproduced exactly.

``evaluate(gt, results)`` gives the same 12 summary numbers as ``YTVOSeval.evaluate() /
accumulate() / summarize()`` of the official ``ytvoseval.py`` on any input the official code accepts,
quirks included: ``zip`` truncation of the frame lists, masks of another
size counting as empty, crowd GT with the plain IoU, GT area from the ``areas`` field, stable
mergesort ordering, at most 100 results per (video, category) before the IoU, GT id 0 never a true
positive, the later GT winning an IoU tie, closed area intervals and the ``eps`` that makes a perfect
AP 0.9999999999999998. Where the official code crashes (empty results, a result on an unknown
video, malformed files) this one evaluates or raises a one-line :class:`~cico.errors.CicoError`.

The video IoU is vectorised (:mod:`cico.evaluation.video_iou`); the greedy matching runs only on
the results that reach a threshold; accumulation is numpy over all IoU thresholds at once.
"""
from __future__ import annotations

import gc
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .loading import GroundTruth, Track, load_ground_truth, load_results
from .tracking import Counts as TrackingCounts
from .tracking import SequenceMatches, TrackingResult, class_average, evaluate_sequence
from .video_iou import frame_ious, video_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # [T] .50:.05:.95
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # [R] 0:.01:1
MAX_DETS = (1, 10, 100)  # [M] per (video, category)
AREA_RANGES: dict[str, tuple[float, float]] = {  # [A] closed intervals on the track's mean area
    "all": (0.0**2, 1e5**2),
    "small": (0.0**2, 128.0**2),
    "medium": (128.0**2, 256.0**2),
    "large": (256.0**2, 1e5**2),
}
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# (AP?, IoU threshold or None for all, area label, maxDets) per summary number, as `_summarizeDets`.
_STAT_SPECS = (
    (True, None, "all", 100), (True, 0.5, "all", 100), (True, 0.75, "all", 100),
    (True, None, "small", 100), (True, None, "medium", 100), (True, None, "large", 100),
    (False, None, "all", 1), (False, None, "all", 10), (False, None, "all", 100),
    (False, None, "small", 100), (False, None, "medium", 100), (False, None, "large", 100),
)  # fmt: skip


class EvaluationWarning(UserWarning):
    """Something in the input that the official metric handles surprisingly (GT id 0, ...)."""


@dataclass(frozen=True)
class EvaluationResult:
    """The official YouTube-VIS metric of one results set.

    Attributes:
        stats: the 12 summary numbers keyed by :data:`STAT_NAMES` (-1 where undefined).
        per_class_ap: category id -> AP .50:.95, all areas, 100 dets (-1 where the class has no GT).
        category_names: category id -> name, in ascending id order (the ``K`` axis below).
        precision: ``[T=10, R=101, K, A=4, M=3]`` precision at each IoU threshold, recall
            threshold, category, area range and maxDets (-1 = undefined), as official ``eval['precision']``.
        recall: ``[T, K, A, M]`` maximal recall, as official ``eval['recall']``.
        tracking: the tracking metrics (HOTA, CLEAR, Identity) of every result track, when asked.
        tracking_thresholded: the same on the result tracks whose score reaches a threshold, when asked.
        details: what breakdowns and the error analysis need, when asked.
    """

    stats: dict[str, float]
    per_class_ap: dict[int, float]
    category_names: dict[int, str]
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)
    tracking: TrackingResult | None = None
    tracking_thresholded: TrackingResult | None = None
    details: EvaluationDetails | None = field(default=None, repr=False)

    def summary(self) -> str:
        """The 12 numbers in the familiar COCO summary lines."""
        lines = []
        for name, (is_ap, iou, area, max_dets) in zip(STAT_NAMES, _STAT_SPECS):
            title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
            iou_text = f"{IOU_THRESHOLDS[0]:0.2f}:{IOU_THRESHOLDS[-1]:0.2f}" if iou is None else f"{iou:0.2f}"
            lines.append(
                f" {title:<18} {kind} @[ IoU={iou_text:<9} | area={area:>6s} | maxDets={max_dets:>3d} ]"
                f" = {self.stats[name]:0.3f}"
            )
        return "\n".join(lines)

    def per_class_table(self, columns: int = 3) -> str:
        """Per-category AP (.50:.95, all areas, 100 dets) as a plain-text table, ``-`` = no GT."""
        cells = [
            (name, "-" if self.per_class_ap[cid] < 0 else f"{100 * self.per_class_ap[cid]:.1f}")
            for cid, name in self.category_names.items()
        ]
        width = max([len(name) for name, _ in cells] + [8])
        header = " | ".join(f"{'category':<{width}} | {'AP':>5}" for _ in range(min(columns, len(cells))))
        rows = [header, "-" * len(header)]
        for start in range(0, len(cells), columns):
            rows.append(" | ".join(f"{name:<{width}} | {ap:>5}" for name, ap in cells[start : start + columns]))
        return "\n".join(rows)


@dataclass(frozen=True)
class PairData:
    """The AP evaluation of one (video, category).

    Attributes:
        dts: the results the AP sees, in score order (at most 100).
        gts: the GT tracks, in file order.
        ious: ``[D, G]`` video IoU.
        record: the matching of every area range and IoU threshold.
    """

    dts: list[Track]
    gts: list[Track]
    ious: np.ndarray
    record: VideoRecord


@dataclass(frozen=True)
class EvaluationDetails:
    """Everything computed on the way to the 12 numbers, for breakdowns and error analysis.

    Attributes:
        truth: the ground truth.
        results: the results of GT categories, in file order.
        pairs: (video id, category id) -> its AP evaluation, for every pair with GT or results.
        matches: (video id, category id) -> CLEAR's per-frame matches (with tracking only).
        zip_truncation, gt_id_zero_never_matches: the options the AP was computed with.
    """

    truth: GroundTruth
    results: list[Track]
    pairs: dict[tuple[int, int], PairData]
    matches: dict[tuple[int, int], SequenceMatches]
    zip_truncation: bool
    gt_id_zero_never_matches: bool

    def stats(self, videos: Iterable[int] | None = None) -> tuple[dict[str, float], dict[int, float]]:
        """The 12 numbers and per-class AP on a subset of the videos (all when ``None``)."""
        keep = None if videos is None else set(videos)
        records: dict[int, list[VideoRecord]] = defaultdict(list)
        for (vid, cid), pair in sorted(self.pairs.items()):
            if keep is None or vid in keep:
                records[cid].append(pair.record)
        category_ids = list(self.truth.categories)
        return _summary(*arrays_of(category_ids, records), category_ids)


@dataclass
class VideoRecord:
    """The official ``evaluateVid`` output of one (video, category), for all area ranges.

    ``D`` results (score order, at most 100), ``A`` area ranges, ``T`` thresholds.
    """

    scores: np.ndarray  # [D]
    matched: np.ndarray  # [A, T, D] bool: dtMatches != 0
    ignored: np.ndarray  # [A, T, D] bool: dtIgnore
    num_gt: np.ndarray  # [A] int: non-ignored GT tracks


def greedy_match(ious: np.ndarray, gt_ignore: list[bool], gt_crowd: list[bool]) -> np.ndarray:
    """Official COCO greedy matching, per IoU threshold; returns the matched GT index ``[T, D]`` or -1.

    ``ious`` is ``[D, G]`` with results in score order and GT with the ignored ones last. A result
    whose best IoU is below a threshold cannot change anything at it, so only the others are scanned.
    """
    num_d, num_g = ious.shape
    match = np.full((len(IOU_THRESHOLDS), num_d), -1, dtype=np.int64)
    if num_d == 0 or num_g == 0:
        return match
    best_per_dt = ious.max(axis=1)
    rows = ious.tolist()
    for t, thr in enumerate(IOU_THRESHOLDS.tolist()):
        start = min(thr, 1 - 1e-10)
        taken = [False] * num_g
        out = match[t]
        for d in np.flatnonzero(best_per_dt >= start).tolist():
            row, best, m = rows[d], start, -1
            for g in range(num_g):
                if taken[g] and not gt_crowd[g]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                    break
                if row[g] < best:
                    continue
                best, m = row[g], g
            if m > -1:
                taken[m] = True
                out[d] = m
    return match


def _evaluate_video(
    ious: np.ndarray, dts: Sequence[Track], gts: Sequence[Track], gt_id_zero_never_matches: bool
) -> VideoRecord:
    """``evaluateVid`` for every area range of one (video, category); ``dts`` in score order."""
    num_a, num_t = len(AREA_RANGES), len(IOU_THRESHOLDS)
    matched = np.zeros((num_a, num_t, len(dts)), dtype=bool)
    ignored = np.zeros((num_a, num_t, len(dts)), dtype=bool)
    num_gt = np.zeros(num_a, dtype=np.int64)
    gt_area = np.array([g.avg_area for g in gts], dtype=np.float64)
    gt_crowd = np.array([g.iscrowd for g in gts], dtype=bool)
    gt_ids = np.array([g.id for g in gts], dtype=np.int64)
    dt_area = np.array([d.avg_area for d in dts], dtype=np.float64)
    matches: dict[bytes, np.ndarray] = {}  # the matching depends on the area range only through gt_ignore
    for a, (lo, hi) in enumerate(AREA_RANGES.values()):
        gt_ignore = gt_crowd | (gt_area < lo) | (gt_area > hi)
        order = np.argsort(gt_ignore, kind="mergesort")
        key = gt_ignore.tobytes()
        if key not in matches:
            matches[key] = greedy_match(ious[:, order], gt_ignore[order].tolist(), gt_crowd[order].tolist())
        match = matches[key]
        is_match = match >= 0
        # dtMatches holds the GT id, so a match to id 0 reads as "unmatched" (official quirk).
        matched_id = np.where(is_match, gt_ids[order][match], 0) if len(gts) else np.zeros_like(match)
        dt_matches = (matched_id != 0) if gt_id_zero_never_matches else is_match
        matched_ignore = is_match & gt_ignore[order][match] if len(gts) else is_match
        outside = (dt_area < lo) | (dt_area > hi)
        matched[a] = dt_matches
        ignored[a] = matched_ignore | (~dt_matches & outside[None, :])
        num_gt[a] = np.count_nonzero(~gt_ignore)
    return VideoRecord(np.array([d.score for d in dts], dtype=np.float64), matched, ignored, num_gt)


def _accumulate(records: list[VideoRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Official ``accumulate`` of one category over its videos (in video-id order).

    Returns precision ``[T, R, A, M]`` and recall ``[T, A, M]`` (-1 where there is no GT).
    """
    num_t, num_r, num_a, num_m = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((num_t, num_r, num_a, num_m))
    recall = -np.ones((num_t, num_a, num_m))
    if not records:
        return precision, recall
    scores = np.concatenate([r.scores for r in records])
    rank = np.concatenate([np.arange(r.scores.size) for r in records])
    matched = np.concatenate([r.matched for r in records], axis=2)  # [A, T, N]
    ignored = np.concatenate([r.ignored for r in records], axis=2)
    num_gt = np.sum([r.num_gt for r in records], axis=0)  # [A]
    # One stable sort serves every maxDets: the official per-maxDets concatenation is a subsequence.
    order = np.argsort(-scores, kind="mergesort")
    for m, max_det in enumerate(MAX_DETS):
        keep = order[rank[order] < max_det]
        for a in range(num_a):
            if num_gt[a] == 0:
                continue
            dtm, dtig = matched[a][:, keep], ignored[a][:, keep]
            tp = np.cumsum(dtm & ~dtig, axis=1).astype(np.float64)
            fp = np.cumsum(~dtm & ~dtig, axis=1).astype(np.float64)
            num_d = keep.size
            rc = tp / num_gt[a]
            pr = tp / (fp + tp + np.spacing(1))
            recall[:, a, m] = rc[:, -1] if num_d else 0
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # monotone from the right
            for t in range(num_t):
                idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                inside = idx < num_d
                precision[t, inside, a, m] = pr[t, idx[inside]]
                precision[t, ~inside, a, m] = 0.0
    return precision, recall


def summarize(
    precision: np.ndarray, recall: np.ndarray, is_ap: bool, iou: float | None, area: str, max_dets: int
) -> float:
    """Official ``summarize``: mean of the defined entries of one slice, -1 if none."""
    aind = [i for i, label in enumerate(AREA_RANGES) if label == area]
    mind = [i for i, m in enumerate(MAX_DETS) if m == max_dets]
    s = precision if is_ap else recall
    if iou is not None:
        s = s[np.where(iou == IOU_THRESHOLDS)[0]]
    s = s[:, :, :, aind, mind] if is_ap else s[:, :, aind, mind]
    return float(np.mean(s[s > -1])) if np.any(s > -1) else -1.0


def arrays_of(category_ids: list[int], records: Mapping[int, list[VideoRecord]]) -> tuple[np.ndarray, np.ndarray]:
    """Precision ``[T, R, K, A, M]`` and recall ``[T, K, A, M]`` of the records of each category."""
    precision = -np.ones((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(category_ids), len(AREA_RANGES),
                          len(MAX_DETS)))
    recall = -np.ones((len(IOU_THRESHOLDS), len(category_ids), len(AREA_RANGES), len(MAX_DETS)))
    for k, cid in enumerate(category_ids):
        precision[:, :, k], recall[:, k] = _accumulate(records.get(cid, []))
    return precision, recall


def _summary(
    precision: np.ndarray, recall: np.ndarray, category_ids: list[int]
) -> tuple[dict[str, float], dict[int, float]]:
    """The 12 numbers and per-class AP (.50:.95, all areas, 100 dets) of accumulated arrays."""
    stats = {name: summarize(precision, recall, *spec) for name, spec in zip(STAT_NAMES, _STAT_SPECS)}
    per_class: dict[int, float] = {}
    for k, cid in enumerate(category_ids):
        s = precision[:, :, k, 0, -1]
        per_class[cid] = float(np.mean(s[s > -1])) if np.any(s > -1) else -1.0
    return stats, per_class


def evaluate(
    gt: str | Path | Mapping[str, Any],
    results: str | Path | Sequence[Mapping[str, Any]],
    *,
    zip_truncation: bool = True,
    gt_id_zero_never_matches: bool = True,
    tracking: bool = False,
    track_score_thresh: float | None = None,
    details: bool = False,
) -> EvaluationResult:
    """Score YouTube-VIS / OVIS results with the official video mask AP/AR.

    Args:
        gt: ground-truth JSON path, or its parsed dict.
        results: results JSON path (or a CodaLab ``.zip`` holding ``results.json``), or the parsed
            list: ``{"video_id", "category_id", "score", "segmentations": [RLE or polygon or null]}``
            entries or :class:`cico.outputs.results.Track` objects.
        zip_truncation: official quirk (default): a pair's IoU only covers the frames both
            segmentation lists have, so a result shorter than the video is not penalised for the
            frames it lacks. ``False`` treats the missing frames as "object absent".
        gt_id_zero_never_matches: official quirk (default): a result matched to a GT track whose id
            is 0 counts as a false positive (a warning is issued). ``False`` counts it as a match.
        tracking: also compute the tracking metrics (:mod:`cico.evaluation.tracking`), from the
            same per-frame IoUs.
        track_score_thresh: also compute the tracking metrics on the results scoring at least this.
        details: keep what breakdowns and the error analysis need (:class:`EvaluationDetails`).

    Returns:
        The 12 numbers, per-class AP and the precision/recall arrays.

    Raises:
        CicoError: malformed ground truth or results, or a result on a video the GT does not have.
    """
    with _gc_paused():
        return _evaluate(gt, results, zip_truncation, gt_id_zero_never_matches, tracking or track_score_thresh
                         is not None, track_score_thresh, details)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: parsing and indexing build millions of acyclic objects
    (a YouTube-VIS-sized results file holds ~1M RLE dicts), and the collector's repeated scans of
    them would cost about a third of the run. Its previous state is restored."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _evaluate(
    gt: str | Path | Mapping[str, Any],
    results: str | Path | Sequence[Mapping[str, Any]],
    zip_truncation: bool,
    gt_id_zero_never_matches: bool,
    tracking: bool,
    track_score_thresh: float | None,
    keep_details: bool,
) -> EvaluationResult:
    truth: GroundTruth = load_ground_truth(gt)
    tracks, dropped = load_results(results, truth)
    if dropped:
        warnings.warn(
            f"ignored {sum(dropped.values())} result(s) whose category is not in the ground truth"
            f" (category ids {sorted(dropped)[:10]})",
            EvaluationWarning,
            stacklevel=3,
        )
    gts_of: dict[tuple[int, int], list[Track]] = defaultdict(list)
    dts_of: dict[tuple[int, int], list[Track]] = defaultdict(list)
    for track in truth.tracks:
        gts_of[track.video_id, track.category_id].append(track)
    for track in tracks:
        dts_of[track.video_id, track.category_id].append(track)
    if gt_id_zero_never_matches and any(t.id == 0 and not t.iscrowd for t in truth.tracks):
        warnings.warn(
            "a ground-truth track has id 0: as in the official metric, no result can be a true positive"
            " for it (pass gt_id_zero_never_matches=False to count it)",
            EvaluationWarning,
            stacklevel=3,
        )

    category_ids = list(truth.categories)
    records: dict[int, list[VideoRecord]] = defaultdict(list)
    pairs: dict[tuple[int, int], PairData] = {}
    track_counts: dict[tuple[int, int], TrackingCounts] = {}
    thresholded_counts: dict[tuple[int, int], TrackingCounts] = {}
    matches: dict[tuple[int, int], SequenceMatches] = {}
    mismatched_frames, mismatch_example = 0, ""
    for cid in category_ids:
        for vid in truth.video_ids:
            gts, all_dts = gts_of.get((vid, cid), []), dts_of.get((vid, cid), [])
            if not gts and not all_dts:
                continue
            order = np.argsort([-d.score for d in all_dts], kind="mergesort")[: MAX_DETS[-1]]
            dts = [all_dts[i] for i in order]
            if tracking:  # one per-frame IoU computation serves both metrics
                frames = frame_ious(all_dts, gts)
                ious, mismatch = video_iou(dts, gts, zip_truncation, frames, order)
                length = truth.videos[vid].length if vid in truth.videos else None
                length = length or max(len(t.rles) for t in gts + all_dts)
                track_counts[vid, cid], matches[vid, cid] = evaluate_sequence(gts, all_dts, frames, length)
                if track_score_thresh is not None:
                    keep = np.array([d.score >= track_score_thresh for d in all_dts], dtype=bool)
                    thresholded_counts[vid, cid] = evaluate_sequence(gts, all_dts, frames, length, keep)[0]
            else:
                ious, mismatch = video_iou(dts, gts, zip_truncation)
            if mismatch is not None:
                mismatch_example = mismatch_example or mismatch.example
                mismatched_frames += mismatch.frames
            record = _evaluate_video(ious, dts, gts, gt_id_zero_never_matches)
            records[cid].append(record)
            if keep_details:
                pairs[vid, cid] = PairData(dts, gts, ious, record)
    if mismatched_frames:
        warnings.warn(
            f"{mismatched_frames} (result, GT) frame pairs have masks of different sizes and count as empty,"
            f" as in the official metric (e.g. {mismatch_example})",
            EvaluationWarning,
            stacklevel=3,
        )

    precision, recall = arrays_of(category_ids, records)
    stats, per_class = _summary(precision, recall, category_ids)
    return EvaluationResult(
        stats, per_class, dict(truth.categories), precision, recall,
        _tracking_result(track_counts, category_ids, None) if tracking else None,
        _tracking_result(thresholded_counts, category_ids, track_score_thresh) if track_score_thresh is not None
        else None,
        EvaluationDetails(truth, tracks, pairs, matches, zip_truncation, gt_id_zero_never_matches) if keep_details
        else None,
    )


def _tracking_result(
    counts: dict[tuple[int, int], TrackingCounts], category_ids: list[int], threshold: float | None
) -> TrackingResult:
    per_class_counts = {cid: TrackingCounts() for cid in category_ids}
    for (_, cid), part in counts.items():
        per_class_counts[cid] += part
    return TrackingResult(
        class_average(list(per_class_counts.values())),
        TrackingCounts.total(per_class_counts.values()).scores(),
        {cid: c.scores() for cid, c in per_class_counts.items()},
        counts,
        threshold,
    )
