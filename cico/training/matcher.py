"""Ground-truth preparation and anchor assignment for CiCo clips.

The reference's ``match_clip`` is per-frame SSD/Yolact IoU matching whose regression target is the
whole box tube: anchor ``a`` of frame ``t`` is matched against the objects' boxes *at frame t*, and a
positive anchor regresses the matched object's ``T`` boxes, each encoded against that one anchor.

Reference behaviour reproduced by default:

* every anchor's best overlap is multiplied by 1.05 (the "small object" test is always true for
  ``T <= 5``), so the effective thresholds are ``0.5/1.05 = 0.476`` (positive) and
  ``0.4/1.05 = 0.381`` (negative);
* the forced-match loop stalls: once the object with the highest remaining IoU fails the forcing test,
  no later object of that frame is forced.

Both are offered fixed through :class:`MatchConfig` (``boost_all_objects=False``,
``forced_match_stall=False``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

from ..model.box_coder import encode, point_form

__all__ = ["MatchConfig", "ClipTargets", "supplement_absent_boxes", "match_clip", "match_batch"]


@dataclass
class MatchConfig:
    """Thresholds of the clip matcher (``cfg.MODEL.*_IoU_THRESHOLD`` and the hard-coded constants).

    Attributes:
        positive_threshold: overlap at or above which an anchor is positive (before the boost, 0.5).
        negative_threshold: overlap below which an anchor is negative (0.4).
        small_object_boost: factor on the best overlap of anchors matched to "small" objects (1.05).
        small_object_area: normalised box area below which a frame counts as small (0.01).
        boost_all_objects: reference quirk (default ``True``): for ``T <= 5`` the small-object test is
            ``count >= min(len(range)//2, 1) = 0``, always true, so every anchor is boosted. ``False``
            boosts only anchors whose object is small in at least one frame of the matching range.
        forced_match_stall: reference quirk (default ``True``): when the object with the highest
            remaining IoU fails the forcing test, nothing is marked and the same object is picked
            again on every remaining iteration. ``False`` retires that object and goes on.
        motion_window_frames: clips longer than this use the circumscribed box of the frame and its
            neighbours (IoU > 0.5) as the matching box (reference: ``T > 5``).
    """

    positive_threshold: float = 0.5
    negative_threshold: float = 0.4
    small_object_boost: float = 1.05
    small_object_area: float = 0.01
    boost_all_objects: bool = True
    forced_match_stall: bool = True
    motion_window_frames: int = 5

    @property
    def neutral_overlap(self) -> float:
        """Overlap given to anchors that match several objects (0.45, the mean of the thresholds)."""
        return (self.positive_threshold + self.negative_threshold) / 2

    @property
    def forced_min_overlap(self) -> float:
        """The forcing test's floor on the anchor's best overlap (0.225 = neutral / 2)."""
        return self.neutral_overlap / 2


@dataclass
class ClipTargets:
    """Per-anchor targets of ``B`` clips of ``T`` frames (rows are clip-major, ``k = b*T + t``).

    Attributes:
        labels: ``[B*T, N]`` int64: ``-1`` neutral, ``0`` background, ``c >= 1`` positive of class c.
        matched: ``[B*T, N]`` int64 index of the matched object inside its clip (valid where
            ``labels > 0``; filled for every anchor like the reference's ``idx_t``).
        loc: ``[B*T, N, 4*T]`` SSD-encoded box tube of the matched object (meaningful at positives).
        boxes: per clip ``[n, T, 4]`` ground-truth tubes after absent-frame supplementation.
    """

    labels: Tensor
    matched: Tensor
    loc: Tensor
    boxes: list[Tensor]

    @property
    def positive(self) -> Tensor:
        """``[B*T, N]`` bool mask of positive anchors."""
        return self.labels > 0


def supplement_absent_boxes(boxes: Tensor) -> Tensor:
    """Fill the frames where an object is absent with its box at the nearest present frame.

    A frame is absent when its box has ``w <= 0`` or ``h <= 0``. Ties between an earlier and a later
    frame at the same distance go to the earlier one. Objects absent from every frame are unchanged.

    Args:
        boxes: ``[n, T, 4]`` x1y1x2y2 tubes.

    Returns:
        ``[n, T, 4]`` a new tensor; masks are not supplemented (they stay empty).
    """
    n, T = boxes.shape[:2]
    if n == 0:
        return boxes.clone()
    present = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])  # [n, T]
    frames = torch.arange(T, device=boxes.device)
    distance = (frames[:, None] - frames[None, :]).abs()  # [T(target), T(source)]
    # absent sources are pushed beyond any real distance; argmin keeps the first (earlier) minimum
    cost = distance[None] + (~present)[:, None, :] * (T + 1)  # [n, T, T]
    nearest = cost.argmin(dim=2)  # [n, T]
    filled = torch.gather(boxes, 1, nearest[..., None].expand(n, T, 4))
    keep = present | ~present.any(dim=1, keepdim=True)
    return torch.where(keep[..., None], boxes, filled)


def _matching_boxes(boxes: Tensor, cfg: MatchConfig) -> tuple[Tensor, Tensor]:
    """The box each object is matched with at every frame, and its small-object flag.

    Args:
        boxes: ``[n, T, 4]`` supplemented tubes.

    Returns:
        ``([T, n, 4] matching boxes, [T, n] bool small flags)``.
    """
    n, T = boxes.shape[:2]
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # [n, T]
    small = area < cfg.small_object_area
    if T <= cfg.motion_window_frames:
        # ind_range = [t]: the frame's own box; the reference's small test is count >= 0
        return boxes.transpose(0, 1), small.transpose(0, 1)
    matching = boxes.clone()
    small_count = small.long().clone()
    range_len = torch.ones(T, dtype=torch.long, device=boxes.device)
    for t in range(T):
        for s in (t - 1, t + 1):
            if not 0 <= s < T:
                continue
            range_len[t] += 1
            small_count[:, t] += small[:, s].long()
            iou = box_iou(boxes[:, t], boxes[:, s]).diagonal()  # [n]
            union = torch.cat([torch.minimum(matching[:, t, :2], boxes[:, s, :2]),
                               torch.maximum(matching[:, t, 2:], boxes[:, s, 2:])], dim=1)
            matching[:, t] = torch.where((iou > 0.5)[:, None], union, matching[:, t])
    is_small = small_count >= torch.clamp(range_len // 2, max=1)
    return matching.transpose(0, 1), is_small.transpose(0, 1)


def _assign_frames(overlaps: Tensor, valid: Tensor, cfg: MatchConfig) -> tuple[Tensor, Tensor]:
    """Best overlaps with multi-match neutralisation and forced matches, for ``T`` frames at once.

    Args:
        overlaps: ``[T, n, N]`` IoU of every object's matching box with every anchor.
        valid: ``[T, n]`` bool, the objects present at each frame.

    Returns:
        ``([T, N] best overlap, [T, N] best object index)`` before the small-object boost.
    """
    T, n, N = overlaps.shape
    frames = torch.arange(T, device=overlaps.device)
    overlaps = torch.where(valid[..., None], overlaps, overlaps.new_full((), -1.0))
    best_overlap, best_idx = overlaps.max(dim=1)  # [T, N]
    multiple = (overlaps > cfg.positive_threshold).sum(dim=1) > 1
    best_overlap = torch.where(multiple, best_overlap.new_full((), cfg.neutral_overlap), best_overlap)

    remaining = valid.sum(dim=1)  # [T] forced-match iterations per frame (the reference loops n_valid)
    active = remaining > 0
    for _ in range(n):
        if not bool(active.any()):
            break
        prior_overlap, prior_idx = overlaps.max(dim=2)  # [T, n]
        obj = prior_overlap.argmax(dim=1)  # [T]
        anchor = prior_idx[frames, obj]  # [T]
        force = (best_overlap[frames, anchor] >= cfg.forced_min_overlap) | (
            best_overlap.max(dim=1).values < cfg.positive_threshold)
        force &= active
        f = frames[force]
        best_overlap[f, anchor[force]] = 2.0
        best_idx[f, anchor[force]] = obj[force]
        overlaps[f, obj[force], :] = -1.0
        overlaps[f, :, anchor[force]] = -1.0
        remaining = remaining - active.long()
        if cfg.forced_match_stall:
            active &= force  # a failed frame picks the same object forever: nothing more happens
        else:
            failed = frames[active & ~force]
            overlaps[failed, obj[active & ~force], :] = -1.0  # retire the object, go on
        active &= remaining > 0
    return best_overlap, best_idx


def match_clip(boxes: Tensor, labels: Tensor, priors: Tensor,
               cfg: MatchConfig | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Assign the anchors of every frame of one clip.

    Args:
        boxes: ``[n, T, 4]`` supplemented x1y1x2y2 tubes (normalised to the padded input).
        labels: ``[n]`` 1-based class labels.
        priors: ``[N, 4]`` anchors ``(cx, cy, w, h)``.
        cfg: thresholds and quirks; the reference's when ``None``.

    Returns:
        ``labels_t [T, N]`` (-1 neutral, 0 negative, c positive), ``matched [T, N]`` object indices and
        ``loc_t [T, N, 4T]`` encoded tubes of the matched objects.
    """
    cfg = cfg or MatchConfig()
    n, T = boxes.shape[:2]
    N = priors.shape[0]
    if n == 0:
        return (labels.new_full((T, N), -1), labels.new_zeros((T, N)),
                priors.new_zeros((T, N, 4 * T)))
    match_boxes, small = _matching_boxes(boxes, cfg)  # [T, n, 4], [T, n]
    valid = (match_boxes[..., 2] > match_boxes[..., 0]) & (match_boxes[..., 3] > match_boxes[..., 1])
    anchors = point_form(priors)  # not clamped
    overlaps = box_iou(match_boxes.reshape(T * n, 4), anchors).reshape(T, n, N)
    best_overlap, best_idx = _assign_frames(overlaps, valid, cfg)

    if cfg.boost_all_objects:
        best_overlap = best_overlap * cfg.small_object_boost
    else:
        boosted = torch.gather(small, 1, best_idx)
        best_overlap = torch.where(boosted, best_overlap * cfg.small_object_boost, best_overlap)

    conf = labels[best_idx].clone()  # [T, N]
    conf[best_overlap < cfg.positive_threshold] = -1
    conf[best_overlap < cfg.negative_threshold] = 0
    conf[~valid.any(dim=1)] = -1  # a frame without objects: everything neutral

    tubes = boxes[best_idx]  # [T, N, T', 4]
    loc = encode(tubes, priors[None, :, None, :].expand_as(tubes)).reshape(T, N, 4 * T)
    return conf, best_idx, loc


def match_batch(boxes: list[Tensor], labels: list[Tensor], priors: Tensor,
                loc_pred: Tensor | None = None, cfg: MatchConfig | None = None) -> ClipTargets:
    """Supplement absent frames and match every clip of a batch.

    Args:
        boxes: per clip ``[n_b, T, 4]`` ground-truth tubes (absent frames are all-zero boxes).
        labels: per clip ``[n_b]`` 1-based labels.
        priors: ``[N, 4]`` anchors.
        loc_pred: optional ``[B*T, N, 4T]`` predictions; positives whose prediction is not finite are
            made neutral, like positives whose target is not finite.
        cfg: matcher settings.

    Returns:
        The batch's :class:`ClipTargets`.
    """
    supplemented = [supplement_absent_boxes(b) for b in boxes]
    per_clip = [match_clip(b, lab, priors, cfg) for b, lab in zip(supplemented, labels)]
    conf = torch.cat([c for c, _, _ in per_clip])
    matched = torch.cat([m for _, m, _ in per_clip])
    loc = torch.cat([clip_loc for _, _, clip_loc in per_clip])
    bad = ~torch.isfinite(loc).all(dim=-1)
    if loc_pred is not None:
        bad |= ~torch.isfinite(loc_pred.detach()).all(dim=-1)
    conf = torch.where((conf > 0) & bad, conf.new_full((), -1), conf)
    return ClipTargets(labels=conf, matched=matched, loc=loc, boxes=supplemented)
