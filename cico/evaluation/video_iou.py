"""Exact spatio-temporal (video) mask IoU of the official YouTube-VIS metric, vectorised.

The official ``computeIoU`` loops over every (result, GT) pair and every frame, merging RLEs:
``IoU = sum_f |D_f & G_f| / sum_f |D_f | G_f|`` over the frames both segmentation lists cover.
Here one ``pycocotools.mask.iou`` call per frame gives every pair's ``I/U`` in double; with the
integer areas ``a_d``, ``a_g`` the integer intersection is recovered exactly as
``I = round(iou * (a_d + a_g) / (1 + iou))`` -- the exact value is ``I`` since ``a_d + a_g = U + I``;
each of the four floating-point steps adds a relative error of at most ``2**-53`` and ``I < 2**32``,
so the computed value is within ``1e-5`` of the integer -- and the sums run in int64:

* a frame where both masks exist and have the same size adds ``I`` and ``a_d + a_g - I``;
* a frame where both exist with different sizes adds nothing (the official ``rleMerge`` returns an
  empty mask) -- it is detected from the sizes, since ``mask.iou`` only flags it when the boxes
  overlap;
* a frame where one side exists adds its area to the union, through per-track prefix sums up to
  ``min(L_d, L_g)`` (the official ``zip`` truncation) or ``max(L_d, L_g)`` (the fix).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .loading import Track


@dataclass(frozen=True)
class SizeMismatch:
    """Frames where a result and a GT mask both exist but differ in size (they count as empty)."""

    frames: int
    example: str


def _stack(tracks: Sequence[Track], frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-track areas ``[N, F]``, sizes ``[N, F, 2]`` (zero-padded to ``F`` frames) and lengths ``[N]``."""
    areas = np.zeros((len(tracks), frames), dtype=np.int64)
    sizes = np.zeros((len(tracks), frames, 2), dtype=np.int64)
    lengths = np.zeros(len(tracks), dtype=np.int64)
    for i, track in enumerate(tracks):
        n = len(track.rles)
        areas[i, :n] = track.areas
        sizes[i, :n] = track.sizes
        lengths[i] = n
    return areas, sizes, lengths


@dataclass(frozen=True)
class FrameIoU:
    """Mask IoU of the result and GT tracks present in one frame (the tracking metrics' similarity).

    Attributes:
        frame: frame index.
        dts, gts: ``[d]``, ``[g]`` indices (into the track lists given) of the tracks present.
        iou: ``[d, g]`` float64 mask IoU, 0 where the two masks differ in size.
        same: ``[d, g]`` bool, the two masks have the same size; ``None`` when all do.
    """

    frame: int
    dts: np.ndarray
    gts: np.ndarray
    iou: np.ndarray
    same: np.ndarray | None


def frame_ious(dts: Sequence[Track], gts: Sequence[Track]) -> list[FrameIoU]:
    """One ``pycocotools.mask.iou`` call per frame where both sides have a mask (frames in order)."""
    if not dts or not gts:
        return []
    frames = max(max(len(t.rles) for t in dts), max(len(t.rles) for t in gts))
    _, size_d, _ = _stack(dts, frames)
    _, size_g, _ = _stack(gts, frames)
    present_d, present_g = size_d[:, :, 0] > 0, size_g[:, :, 0] > 0
    # Every mask of one size (the usual case): no per-frame size comparison is needed.
    sizes = np.concatenate([size_d[present_d], size_g[present_g]])
    uniform = bool((sizes == sizes[:1]).all()) if sizes.size else True
    both = np.flatnonzero(present_d.any(0) & present_g.any(0))
    # Indices of the tracks present in each frame, from one nonzero over [F, N] each.
    frame_d, track_d = np.nonzero(present_d.T)
    frame_g, track_g = np.nonzero(present_g.T)
    bounds_d = np.searchsorted(frame_d, np.arange(frames + 1))
    bounds_g = np.searchsorted(frame_g, np.arange(frames + 1))
    rles_d = [t.rles for t in dts]
    rles_g = [t.rles for t in gts]
    out = []
    for f in both.tolist():
        di = track_d[bounds_d[f] : bounds_d[f + 1]]
        gi = track_g[bounds_g[f] : bounds_g[f + 1]]
        iou = np.asarray(
            mask_utils.iou([rles_d[i][f] for i in di.tolist()], [rles_g[j][f] for j in gi.tolist()], [0] * gi.size)
        ).reshape(di.size, gi.size)
        if uniform:
            same = None
        else:
            same = (size_d[di, f][:, None, :] == size_g[gi, f][None, :, :]).all(-1)
            if same.all():
                same = None
            else:
                iou = np.where(same, iou, 0.0)
        out.append(FrameIoU(f, di, gi, iou, same))
    return out


def video_iou(
    dts: Sequence[Track],
    gts: Sequence[Track],
    zip_truncation: bool = True,
    frames: Sequence[FrameIoU] | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, SizeMismatch | None]:
    """Video mask IoU of every (result, GT) pair of one (video, category).

    Args:
        dts: ``D`` result tracks, in the order wanted for the rows.
        gts: ``G`` GT tracks.
        zip_truncation: official behaviour: only the frames both segmentation lists cover count.
            ``False`` counts every frame of either list (a missing frame = an absent object).
        frames: the per-frame IoUs already computed by :func:`frame_ious` for ``gts`` and a longer
            result list of which ``dts`` is the sub-list ``rows`` (``[D]`` indices into it).

    Returns:
        ``ious`` ``[D, G]`` float64, bit-identical to the official loop (crowd GT uses the plain
        IoU, as officially), and the frames with mismatched mask sizes, if any.
    """
    num_d, num_g = len(dts), len(gts)
    if num_d == 0 or num_g == 0:
        return np.zeros((num_d, num_g)), None
    if frames is None:
        frames, rows = frame_ious(dts, gts), None
    num_f = max(max(len(t.rles) for t in dts), max(len(t.rles) for t in gts))
    area_d, size_d, len_d = _stack(dts, num_f)
    area_g, size_g, len_g = _stack(gts, num_f)
    # Row of each track of the longer list in `dts`, -1 where it is not there.
    position = None
    if rows is not None:
        position = np.full(int(rows.max()) + 1 if rows.size else 0, -1, dtype=np.int64)
        position[rows] = np.arange(rows.size)

    # Sum of both sides' areas over the counted frames, from prefix sums: [D, G].
    cum_d = np.zeros((num_d, num_f + 1), dtype=np.int64)
    cum_g = np.zeros((num_g, num_f + 1), dtype=np.int64)
    np.cumsum(area_d, axis=1, out=cum_d[:, 1:])
    np.cumsum(area_g, axis=1, out=cum_g[:, 1:])
    span = (np.minimum if zip_truncation else np.maximum).outer(len_d, len_g)
    area_sum = np.take_along_axis(cum_d, span, axis=1) + cum_g[np.arange(num_g)[None, :], span]

    inter = np.zeros((num_d, num_g), dtype=np.int64)
    lost = np.zeros((num_d, num_g), dtype=np.int64)  # a_d + a_g of mismatched-size frames
    mismatched, example = 0, ""
    for frame in frames:
        f, di, gi, iou, same = frame.frame, frame.dts, frame.gts, frame.iou, frame.same
        if position is not None:
            inside = di < position.size
            keep = np.flatnonzero(inside)
            keep = keep[position[di[keep]] >= 0]
            if keep.size == 0:
                continue
            di, iou = position[di[keep]], iou[keep]
            same = None if same is None else same[keep]
        pair_area = area_d[di, f][:, None] + area_g[gi, f][None, :]
        if same is not None and not same.all():
            lost[di[:, None], gi[None, :]] += np.where(same, 0, pair_area)
            if not mismatched:
                d, g = np.argwhere(~same)[0]
                d_size, g_size = "x".join(map(str, size_d[di[d], f])), "x".join(map(str, size_g[gi[g], f]))
                example = (
                    f"video {dts[di[d]].video_id} frame {f}: result {dts[di[d]].id} is {d_size},"
                    f" GT {gts[gi[g]].id} is {g_size}"
                )
            mismatched += int((~same).sum())
        inter[di[:, None], gi[None, :]] += np.rint(iou * pair_area / (1.0 + iou)).astype(np.int64)

    union = area_sum - inter - lost
    ious = np.divide(inter, union, out=np.zeros((num_d, num_g)), where=union > 0)
    return ious, (SizeMismatch(mismatched, example) if mismatched else None)
