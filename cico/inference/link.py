"""Cross-clip linking: the reference's clip-to-clip tracker (``Track_TF``).

Each clip's detections are matched to the tracks of the previous clips with a MaskTrack-R-CNN style
score (embedding similarity, detection score, mask IoU, box IoU, same label), computed as matrices:

* with overlapping frames (the previous clip's frame ids meet the current ones, e.g. overlap O = 1),
  mask and box IoU are flag-weighted means over the overlapping frame pairs, with doubled weights;
* without, box IoU compares the current first-frame box with the previous last-frame box, and mask IoU
  the current masks with the previous tracks' masks re-generated on the current prototypes.

A "new object" column ``0.5 + c0·s + (c1 + c2)·d + c3`` (``d = 0.3``, halved for small objects) competes
with the tracks; the best column wins, a detection whose best track was already taken by a better
detection is dropped (a quirk of the reference, reproduced). Tracks that are not matched are propagated
by the "Naive tracker": masks re-generated on the current prototypes with the stored coefficients
(crop = previous circumscribed box ×1.2, no minimum size; CondInst's Gaussian map from the previous
circumscribed box), score ×0.9^T, box tube := the last box repeated. A track is output while it was
detected in the last ``max(3, 15 // T)`` clips, its score is above 0.1 and some frame of its mask has more
than 3 pixels.

Track ids are the rows of the reference's state; rows are only ever appended, so memory and the work per
clip grow with the number of tracks ever created in the video. ``LinkConfig.retire_after`` (off by
default) bounds both for long videos and live streams: a track lost for more clips than that leaves the
memory for good (its id is not reused); this differs from the reference only when such a track would have
been matched again. When a clip has no detection, nothing is propagated and the stored frame ids go stale,
as in the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from ..model.box_coder import center_size
from ..model.masks import MaskHead, clip_masks, mask_iou
from ..structures import Instances


@dataclass(frozen=True)
class LinkConfig:
    """Parameters of the linking (reference values).

    Attributes:
        match_coeff: weights ``(c0, c1, c2, c3)`` of detection score, mask IoU, box IoU and same label;
            ``c1`` and ``c2`` are doubled when the clips overlap.
        new_object_iou: the "new object" column's dummy IoU ``d``.
        small_object_area: ``d`` is halved for detections whose mean box ``w·h`` (normalised) is below this.
        score_thresh: a track is output only with a score above this.
        min_mask_pixels: ... and only if some frame of its mask has more pixels than this.
        iou_flag_pixels: a frame enters the mask/box IoU means only if both masks have more pixels than this.
        decay: score factor per frame for a propagated (unmatched) track: ``score *= decay ** T``.
        propagate_crop: crop enlargement of propagated masks around the previous circumscribed box.
        max_lost_clips: a track is output while detected within this many clips; ``None`` means the
            reference's ``max(3, 15 // T)``.
        retire_after: forget a track once it has not been detected for more than this many clips (it is
            then never matched, propagated or output again); ``None`` (the reference) keeps every track.
    """

    match_coeff: tuple[float, float, float, float] = (0.1, 0.5, 0.5, 0.3)
    new_object_iou: float = 0.3
    small_object_area: float = 0.1
    score_thresh: float = 0.1
    min_mask_pixels: int = 3
    iou_flag_pixels: int = 2
    decay: float = 0.9
    propagate_crop: float = 1.2
    max_lost_clips: int | None = None
    retire_after: int | None = None

    def __post_init__(self) -> None:
        if self.retire_after is not None and self.retire_after < 1:
            raise ValueError(f"retire_after must be >= 1 or None, got {self.retire_after}")


class ClipTracker:
    """Links per-clip detections into tracks across the clips of one video.

    Call it once per clip, in order; ``is_first`` (the clip starting at frame 0) resets the memory.

    Its memory, ``state``, holds one row per track (every track ever created in the video, unless
    retired) with the masks binarised at 0.5 (all that matching needs); ``frame_ids`` are the ``T``
    frame ids (cyclic padding included) that the state's boxes and masks refer to.

    Args:
        mask_head: ``"yolact"`` or ``"condinst"``: how propagated masks are re-generated.
        clip_frames: ``T``.
        config: linking parameters (reference defaults).
    """

    def __init__(self, mask_head: MaskHead, clip_frames: int, config: LinkConfig | None = None) -> None:
        self.mask_head = mask_head
        self.clip_frames = clip_frames
        self.config = config or LinkConfig()
        self.max_lost_clips = (self.config.max_lost_clips if self.config.max_lost_clips is not None
                               else max(3, 15 // clip_frames))
        self.state: Instances | None = None
        self.frame_ids: Tensor | None = None
        self.next_id = 0

    def reset(self) -> None:
        """Forget every track (a new video starts)."""
        self.state = None
        self.frame_ids = None
        self.next_id = 0

    def __call__(self, dets: Instances, frame_ids: Sequence[int], is_first: bool) -> Instances:
        """Link the detections of one clip.

        Args:
            dets: the clip's detections.
            frame_ids: the ``T`` frame ids of the clip, cyclic padding included (``[6, 7, 6]``).
            is_first: the clip starts the video.

        Returns:
            The tracks reported for this clip, in increasing id order, with their mask probabilities.
        """
        if is_first:
            self.reset()
        ids = torch.as_tensor(list(frame_ids), dtype=torch.int64, device=dets.scores.device)
        if self.state is None or self.frame_ids is None:
            return self._start(dets, ids)
        state = self.state
        state.tracked_mask += 1
        if len(dets) == 0:  # as the reference: nothing propagated, frame ids left stale
            self._retire()
            return dets
        n, m = len(dets), len(state)
        c0, c1, c2, c3 = self.config.match_coeff
        pairs = (self.frame_ids[:, None] == ids[None, :]).nonzero()
        det_bin = dets.masks > 0.5
        if len(pairs):
            c1, c2 = 2 * c1, 2 * c2
            prev_t, cur_t = pairs.unbind(1)
            det_masks = det_bin[:, cur_t].transpose(0, 1)  # [P, n, h, w]
            prev_masks = state.masks[:, prev_t].transpose(0, 1)  # [P, m, h, w]
            flag = self._flags(det_masks, prev_masks)
            box_ious = torch.stack([box_iou(dets.boxes[:, c], state.boxes[:, p]) for p, c in pairs.tolist()])
            biou = _flagged_mean(box_ious, flag)
            miou = _flagged_mean(mask_iou(det_masks, prev_masks), flag)
            propagated = self._propagate(state, dets.proto)
        else:
            last_boxes = state.boxes[:, -1]
            propagated = self._propagate(state, dets.proto)
            biou = box_iou(dets.boxes[:, 0], last_boxes)
            det_masks = det_bin.transpose(0, 1)  # [T, n, h, w]
            prev_masks = (propagated > 0.5).transpose(0, 1)  # [T, m, h, w]
            miou = _flagged_mean(mask_iou(det_masks, prev_masks), self._flags(det_masks, prev_masks))

        sizes = center_size(dets.boxes)[..., 2:].mean(1)  # [n, 2] mean w, h over the clip
        dummy = torch.full((n, 1), self.config.new_object_iou, dtype=dets.scores.dtype, device=ids.device)
        dummy[sizes.prod(-1) < self.config.small_object_area] *= 0.5
        similarity = torch.cat([torch.full_like(dummy, 0.5), (dets.track @ state.track.t() + 1) / 2], dim=1)
        same_label = (dets.labels[:, None] == state.labels[None, :]).to(dummy.dtype)
        scores = (similarity + c0 * dets.scores[:, None] + c1 * torch.cat([dummy, miou], dim=1)
                  + c2 * torch.cat([dummy, biou], dim=1) + c3 * torch.cat([torch.ones_like(dummy), same_label], 1))
        likelihood, best = scores.max(dim=1)

        # Greedy de-duplication by decreasing likelihood: the first detection claiming a track wins it,
        # the others that wanted it are dropped (neither matched nor new).
        order = torch.sort(likelihood, descending=True, stable=True).indices
        claimed = best[order]
        rank = torch.arange(n, device=ids.device)
        first = torch.full((m + 1,), n, dtype=torch.int64, device=ids.device)
        first = first.scatter_reduce(0, claimed, rank, reduce="amin")
        wins = (claimed > 0) & (first[claimed] == rank)
        win_det, win_track = order[wins], claimed[wins] - 1
        new = (best == 0).nonzero().flatten()

        probs = self._update(state, dets, propagated, new, win_det, win_track)
        self.frame_ids = ids
        state = self.state
        keep = ((state.tracked_mask <= self.max_lost_clips) & (state.scores > self.config.score_thresh)
                & ((probs > 0.5).flatten(2).sum(-1) > self.config.min_mask_pixels).any(dim=1))
        output = state.replace(masks=probs, proto=dets.proto)[keep]
        self._retire()
        return output

    def _start(self, dets: Instances, frame_ids: Tensor) -> Instances:
        """First clip (or first clip with detections): every detection starts a track and is output."""
        n = len(dets)
        if n == 0:
            return dets
        output = dets.replace(ids=torch.arange(n, device=frame_ids.device),
                              tracked_mask=torch.zeros(n, dtype=torch.int64, device=frame_ids.device))
        self.next_id = n
        self.state = output.replace(masks=dets.masks > 0.5).clone()
        self.frame_ids = frame_ids
        return output

    def _retire(self) -> None:
        """Forget the tracks lost for more than ``retire_after`` clips (when set)."""
        limit = self.config.retire_after
        state = self.state
        if limit is not None and state is not None and bool((state.tracked_mask > limit).any()):
            self.state = state[state.tracked_mask <= limit]

    def _flags(self, masks_a: Tensor, masks_b: Tensor) -> Tensor:
        """``[P, n, m]``: both masks of a pair have more than ``iou_flag_pixels`` pixels in that frame."""
        area_a = masks_a.flatten(2).sum(-1) > self.config.iou_flag_pixels
        area_b = masks_b.flatten(2).sum(-1) > self.config.iou_flag_pixels
        return area_a[:, :, None] & area_b[:, None, :]

    def _propagate(self, state: Instances, proto: Tensor) -> Tensor:
        """The Naive tracker: move every track to the current clip; returns its masks ``[m, T, h, w]``."""
        masks = clip_masks(self.mask_head, proto, state.mask_coeff.to(proto.dtype),
                           state.boxes_cir.to(proto.dtype), self.config.propagate_crop, None)
        state.scores = state.scores * self.config.decay ** self.clip_frames
        state.boxes_cir = state.boxes[:, -1].clone()
        state.boxes = state.boxes[:, -1:].repeat(1, self.clip_frames, 1)
        return masks.to(state.scores.dtype)

    def _update(self, state: Instances, dets: Instances, propagated: Tensor, new: Tensor, win_det: Tensor,
                win_track: Tensor) -> Tensor:
        """Append the new detections, overwrite the matched tracks; returns all tracks' mask probabilities."""
        added = dets[new].replace(ids=self.next_id + torch.arange(len(new), device=new.device),
                                  tracked_mask=torch.zeros(len(new), dtype=torch.int64, device=new.device))
        self.next_id += len(new)
        probs = torch.cat([propagated, dets.masks[new].to(propagated.dtype)])
        probs[win_track] = dets.masks[win_det].to(propagated.dtype)
        merged = Instances.cat([state, added.replace(masks=added.masks > 0.5)])
        matched = dets[win_det]
        for name in ("labels", "scores", "boxes", "boxes_cir", "track", "mask_coeff", "prior_levels",
                     "centerness"):
            getattr(merged, name)[win_track] = getattr(matched, name)
        merged.tracked_mask[win_track] = 0
        merged.masks = probs > 0.5
        self.state = merged
        return probs


def _flagged_mean(values: Tensor, flag: Tensor) -> Tensor:
    """Mean of ``values [P, n, m]`` over the flagged pairs of frames, 0 where none is flagged."""
    return (values * flag).sum(0) / flag.sum(0).clamp(min=1)
