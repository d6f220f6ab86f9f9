"""Breakdowns that explain a number: AP and the tracking metrics per class, object size, video length,
occlusion level and video.

Groups of videos are scored by accumulating only their videos' matchings (the AP's per-video records,
the tracking metrics' per-video counts), so every group number is the official metric on that subset.

* Object size: the metric's own small/medium/large AP (GT and results outside the range ignored).
  The tracking metrics have no per-size numbers: TrackEval's protocol has no ignore regions.
* Video length: thirds of the videos by frame count (short/medium/long, boundaries printed), and
  the YouTube-VIS 2022 long-video split when the GT marks videos ``"long_video": true``.
* Occlusion: the OVIS paper's mean bounding-box overlap ratio (MBOR). In a frame with GT boxes
  ``B_1..B_n`` (from the GT masks) the overlap ratio is the area covered by at least two boxes over
  the area covered by at least one, ``|U_{i<j} (B_i & B_j)| / |U_i B_i|`` (0 with one box); a
  video's MBOR is the mean over its frames with at least one box. Levels as in the paper:
  slight (MBOR <= 0.25), moderate (0.25 < MBOR <= 0.5), heavy (MBOR > 0.5).
* Per video: AP (over the classes it has) and ID switches, worst AP first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .loading import GroundTruth
from .tracking import Counts, combine
from .ytvis import EvaluationResult

OCCLUSION_LEVELS = (("slight", 0.0, 0.25), ("moderate", 0.25, 0.5), ("heavy", 0.5, float("inf")))
GROUP_TRACKING_KEYS = ("HOTA", "AssA", "IDF1", "MOTA", "IDSW")


@dataclass(frozen=True)
class Group:
    """One subset of the videos and its numbers (``AP`` -1 where the subset has no GT)."""

    name: str
    videos: list[int]
    ap: float
    ap50: float
    tracking: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "videos": len(self.videos), "AP": self.ap, "AP50": self.ap50,
                "tracking": self.tracking}


@dataclass(frozen=True)
class VideoRow:
    """One video's line of the per-video table."""

    video_id: int
    name: str
    length: int
    gt_tracks: int
    ap: float
    idsw: int
    hota: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Breakdown:
    """All breakdowns of one evaluation."""

    per_class: list[dict[str, Any]]
    by_size: dict[str, float]
    by_length: list[Group]
    by_long_split: list[Group]
    by_occlusion: list[Group]
    per_video: list[VideoRow]
    mbor: dict[int, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "per_class": self.per_class, "by_size": self.by_size,
            "by_length": [g.to_json() for g in self.by_length],
            "by_long_split": [g.to_json() for g in self.by_long_split],
            "by_occlusion": [g.to_json() for g in self.by_occlusion],
            "per_video": [r.to_json() for r in self.per_video],
            "occlusion_definition": "video MBOR: mean over frames of |area covered by >=2 GT boxes| / "
                                    "|area covered by >=1 GT box|; slight <= 0.25 < moderate <= 0.5 < heavy",
        }  # fmt: skip

    def text(self) -> str:
        """Plain-text tables for the terminal."""
        lines = ["Per class (AP in %, tracking class scores in %, IDSW count):",
                 f"  {'class':<20} {'AP':>6} {'HOTA':>6} {'IDF1':>6} {'IDSW':>5}"]
        for row in self.per_class:
            ap = "-" if row["AP"] < 0 else f"{100 * row['AP']:.1f}"
            lines.append(f"  {row['name'][:20]:<20} {ap:>6} {100 * row['HOTA']:>6.1f} {100 * row['IDF1']:>6.1f}"
                         f" {row['IDSW']:>5d}")
        lines.append("By object size (AP in %): " + ", ".join(
            f"{k} {'-' if v < 0 else f'{100 * v:.1f}'}" for k, v in self.by_size.items()))
        for title, groups in (("video length", self.by_length), ("YouTube-VIS 2022 long-video split",
                                                                  self.by_long_split),
                              ("occlusion (MBOR)", self.by_occlusion)):
            if not groups:
                continue
            lines.append(f"By {title}:")
            for g in groups:
                ap = "-" if g.ap < 0 else f"{100 * g.ap:.1f}"
                lines.append(f"  {g.name:<28} {len(g.videos):>4} videos  AP {ap:>5}  "
                             f"HOTA {100 * g.tracking['HOTA']:.1f}"
                             f"  IDF1 {100 * g.tracking['IDF1']:.1f}  IDSW {int(g.tracking['IDSW'])}")
        lines.append("Per video, worst AP first (AP in %):")
        lines.append(f"  {'video':<24} {'frames':>6} {'GT':>4} {'AP':>6} {'IDSW':>5} {'HOTA':>6}")
        for r in self.per_video:
            ap = "-" if r.ap < 0 else f"{100 * r.ap:.1f}"
            lines.append(f"  {r.name[:24]:<24} {r.length:>6} {r.gt_tracks:>4} {ap:>6} {r.idsw:>5} {100 * r.hota:>6.1f}")
        return "\n".join(lines)


def video_mbor(truth: GroundTruth) -> dict[int, float]:
    """Mean bounding-box overlap ratio of every GT video (0 for a video without GT masks)."""
    boxes_of: dict[int, dict[int, list[np.ndarray]]] = {vid: {} for vid in truth.video_ids}
    for track in truth.tracks:
        present = [f for f, rle in enumerate(track.rles) if rle is not None]
        if not present:
            continue
        boxes = mask_utils.toBbox([track.rles[f] for f in present]).reshape(-1, 4)
        for f, box in zip(present, boxes):
            if box[2] > 0 and box[3] > 0:
                boxes_of[track.video_id].setdefault(f, []).append(box)
    out = {}
    for vid, frames in boxes_of.items():
        ratios = [_overlap_ratio(np.array(b)) for b in frames.values()]
        out[vid] = float(np.mean(ratios)) if ratios else 0.0
    return out


def _overlap_ratio(boxes: np.ndarray) -> float:
    """``[N, 4]`` xywh boxes -> area covered by >= 2 boxes / area covered by >= 1, on the grid of box edges."""
    if len(boxes) < 2:
        return 0.0
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    xs, ys = np.unique(np.concatenate([x0, x1])), np.unique(np.concatenate([y0, y1]))
    cx = (xs[:-1] + xs[1:]) / 2  # cell centres
    cy = (ys[:-1] + ys[1:]) / 2
    inside_x = (cx[None, :] > x0[:, None]) & (cx[None, :] < x1[:, None])  # [N, X]
    inside_y = (cy[None, :] > y0[:, None]) & (cy[None, :] < y1[:, None])  # [N, Y]
    cover = np.einsum("nx,ny->yx", inside_x.astype(np.int64), inside_y.astype(np.int64))
    cell = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    union = float(cell[cover >= 1].sum())
    return float(cell[cover >= 2].sum()) / union if union > 0 else 0.0


def _occlusion_level(mbor: float) -> str:
    return next(name for name, lo, hi in OCCLUSION_LEVELS if (lo < mbor <= hi) or (lo == 0 and mbor <= hi))


def breakdown(result: EvaluationResult) -> Breakdown:
    """Every breakdown of an evaluation run with ``tracking=True, details=True``."""
    details, tracking = result.details, result.tracking
    if details is None or tracking is None:
        raise ValueError("breakdown() needs evaluate(..., tracking=True, details=True)")
    truth = details.truth
    categories = list(truth.categories)
    counts = tracking.counts

    def group(name: str, videos: list[int]) -> Group:
        stats, _ = details.stats(videos)
        scores = combine(counts, categories, videos)["class_avg"]
        return Group(name, videos, stats["AP"], stats["AP50"], {k: scores[k] for k in GROUP_TRACKING_KEYS})

    per_class = []
    for cid, name in truth.categories.items():
        scores = tracking.per_class[cid]
        per_class.append({"category_id": cid, "name": name, "AP": result.per_class_ap[cid],
                          **{k: scores[k] for k in GROUP_TRACKING_KEYS}})

    lengths = {vid: _length(truth, vid) for vid in truth.video_ids}
    by_length: list[Group] = []
    if truth.video_ids:
        # Thirds by length; videos of equal length stay in one group (so a group may be empty and dropped).
        ranked = sorted(lengths[v] for v in truth.video_ids)
        cuts = (ranked[(len(ranked) - 1) // 3], ranked[(2 * len(ranked) - 1) // 3])
        for label, lo, hi in (("short", -1, cuts[0]), ("medium", cuts[0], cuts[1]), ("long", cuts[1], ranked[-1])):
            part = [v for v in truth.video_ids if lo < lengths[v] <= hi]
            if part:
                low, high = min(lengths[v] for v in part), max(lengths[v] for v in part)
                span = f"{low} frames" if low == high else f"{low}-{high} frames"
                by_length.append(group(f"{label} ({span})", part))
        if len(by_length) == 1:  # every video has the same length
            by_length = [group(f"all ({by_length[0].name.split('(')[1]}", by_length[0].videos)]
    marked = [v for v in truth.video_ids if v in truth.videos and truth.videos[v].long_video]
    by_long = []
    if marked:
        by_long = [group("long videos (marked)", marked),
                   group("other videos", [v for v in truth.video_ids if v not in set(marked)])]

    mbor = video_mbor(truth)
    by_occlusion = []
    for level, lower, upper in OCCLUSION_LEVELS:
        videos = [v for v in truth.video_ids if _occlusion_level(mbor[v]) == level]
        bounds = (f"<= {upper:g}" if lower == 0 else f"> {lower:g}" if upper == float("inf")
                  else f"{lower:g}-{upper:g}")
        by_occlusion.append(group(f"{level} (MBOR {bounds})", videos))

    gt_count: dict[int, int] = {}
    for t in truth.tracks:
        gt_count[t.video_id] = gt_count.get(t.video_id, 0) + 1
    by_video: dict[int, Counts] = {vid: Counts() for vid in truth.video_ids}
    for (vid, _), video_counts in counts.items():
        by_video[vid] += video_counts
    rows = []
    for vid in truth.video_ids:
        stats, _ = details.stats([vid])
        video_counts = by_video[vid]
        name = truth.videos[vid].name if vid in truth.videos else str(vid)
        rows.append(VideoRow(vid, name, lengths[vid], gt_count.get(vid, 0), stats["AP"], int(video_counts.idsw),
                             video_counts.scores()["HOTA"]))
    rows.sort(key=lambda r: (r.ap if r.ap >= 0 else 2.0, -r.idsw, r.video_id))
    by_size = {"small": result.stats["APs"], "medium": result.stats["APm"], "large": result.stats["APl"]}
    return Breakdown(per_class, by_size, by_length, by_long, by_occlusion, rows, mbor)


def _length(truth: GroundTruth, vid: int) -> int:
    meta = truth.videos.get(vid)
    if meta is not None and meta.length is not None:
        return meta.length
    return max((len(t.rles) for t in truth.tracks if t.video_id == vid), default=0)
