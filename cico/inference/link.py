"""Cross-clip linking: the reference's clip-to-clip tracker (``Track_TF``, spec §5.3).

Each clip's detections are matched to the tracks of the previous clips with a MaskTrack-R-CNN style
score (embedding similarity, detection score, mask IoU, box IoU, same label), computed as matrices:

* with overlapping frames (the previous clip's frame ids meet the current ones, e.g. overlap O = 1),
  mask and box IoU are flag-weighted means over the overlapping frame pairs, with doubled weights;
* without, box IoU compares the current first-frame box with the previous last-frame box, and mask IoU
  the current masks with the previous tracks' masks re-generated on the current prototypes.

A "new object" column ``0.5 + c0·s + (c1 + c2)·d + c3`` (``d = 0.3``, halved for small objects) competes
with the tracks; the best column wins, a detection whose best track was already taken by a better
detection is dropped (★ quirk 13). Tracks that are not matched are propagated by the "Naive tracker":
masks re-generated on the current prototypes with the stored coefficients (crop = previous circumscribed
box ×1.2, no minimum size; CondInst's Gaussian map from the previous circumscribed box), score ×0.9^T, box
tube := the last box repeated. A track is output while it was detected in the last ``max(3, 15 // T)``
clips, its score is above 0.1 and some frame of its mask has more than 3 pixels.

Track ids are the rows of the reference's state; rows are only ever appended, so memory and the work per
clip grow with the number of tracks ever created in the video. ``LinkConfig.retire_after`` (off by
default) bounds both for long videos and live streams: a track lost for more clips than that leaves the
memory for good (its id is not reused); this differs from the reference only when such a track would have
been matched again. When a clip has no detection, nothing is propagated and the stored frame ids go stale
(★ quirk 13), as in the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from ..model.box_coder import center_size
from ..model.masks import MaskHead, clip_masks, mask_iou
from ..model.outputs import ClipDetections


@dataclass(frozen=True)
class LinkConfig:
    """Parameters of the linking (reference values, spec §1.3 and §5.3).

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


@dataclass
class TrackState:
    """The tracker's memory: one row per track (every track ever created in the video, unless retired).

    Attributes:
        ids: ``[m]`` int64 track ids (the row index as long as no track was retired).
        labels: ``[m]`` int64 1-based class labels.
        scores: ``[m]`` scores (decayed while the track is propagated).
        boxes: ``[m, T, 4]`` box tubes, normalised x1y1x2y2 on the padded canvas.
        boxes_cir: ``[m, 4]`` circumscribed boxes.
        masks: ``[m, T, h4, w4]`` bool, the masks binarised at 0.5 (all that matching needs).
        track: ``[m, E]`` track embeddings.
        mask_coeff: ``[m, D]`` mask coefficients / dynamic parameters.
        tracked_mask: ``[m]`` int64, clips since the track was last detected.
        frame_ids: ``[T]`` int64 frame ids (cyclic padding included) that ``boxes``/``masks`` refer to.
    """

    ids: Tensor
    labels: Tensor
    scores: Tensor
    boxes: Tensor
    boxes_cir: Tensor
    masks: Tensor
    track: Tensor
    mask_coeff: Tensor
    tracked_mask: Tensor
    frame_ids: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, rows: Tensor) -> None:
        """Keep only ``rows`` (a bool mask or indices) of every per-track field."""
        for name in ("ids", "labels", "scores", "boxes", "boxes_cir", "masks", "track", "mask_coeff",
                     "tracked_mask"):
            setattr(self, name, getattr(self, name)[rows])


@dataclass
class TrackedClip:
    """The tracker's output for one clip: the tracks it reports, in increasing id order.

    Attributes:
        ids: ``[k]`` int64 track ids.
        labels: ``[k]`` int64 1-based labels.
        scores: ``[k]`` scores.
        boxes: ``[k, T, 4]`` box tubes (normalised, padded canvas).
        boxes_cir: ``[k, 4]`` circumscribed boxes.
        masks: ``[k, T, h4, w4]`` mask probabilities at prototype resolution.
        tracked_mask: ``[k]`` int64 clips since last detected (0: detected in this clip).
    """

    ids: Tensor
    labels: Tensor
    scores: Tensor
    boxes: Tensor
    boxes_cir: Tensor
    masks: Tensor
    tracked_mask: Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class ClipTracker:
    """Links per-clip detections into tracks across the clips of one video (spec §5.3).

    Call it once per clip, in order; ``is_first`` (the clip starting at frame 0) resets the memory.

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
        self.state: TrackState | None = None
        self.next_id = 0

    def reset(self) -> None:
        """Forget every track (a new video starts)."""
        self.state = None
        self.next_id = 0

    def __call__(self, dets: ClipDetections, frame_ids: Sequence[int], is_first: bool) -> TrackedClip:
        """Link the detections of one clip.

        Args:
            dets: the clip's detections.
            frame_ids: the ``T`` frame ids of the clip, cyclic padding included (``[6, 7, 6]``).
            is_first: the clip starts the video.

        Returns:
            The tracks reported for this clip.
        """
        if is_first:
            self.reset()
        ids = torch.as_tensor(list(frame_ids), dtype=torch.int64, device=dets.scores.device)
        if self.state is None:
            return self._start(dets, ids)
        state = self.state
        state.tracked_mask += 1
        if len(dets) == 0:  # ★ nothing propagated, frame ids left stale
            self._retire()
            return _empty_output(dets)
        n, m = len(dets), len(state)
        c0, c1, c2, c3 = self.config.match_coeff
        pairs = (state.frame_ids[:, None] == ids[None, :]).nonzero()
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
            propagated = self._propagate(dets.proto)
        else:
            last_boxes = state.boxes[:, -1]
            propagated = self._propagate(dets.proto)
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

        probs = self._update(dets, propagated, new, win_det, win_track)
        state.frame_ids = ids
        keep = ((state.tracked_mask <= self.max_lost_clips) & (state.scores > self.config.score_thresh)
                & ((probs > 0.5).flatten(2).sum(-1) > self.config.min_mask_pixels).any(dim=1))
        output = TrackedClip(state.ids[keep], state.labels[keep], state.scores[keep], state.boxes[keep],
                             state.boxes_cir[keep], probs[keep], state.tracked_mask[keep])
        self._retire()
        return output

    def _start(self, dets: ClipDetections, frame_ids: Tensor) -> TrackedClip:
        """First clip (or first clip with detections): every detection starts a track and is output."""
        n = len(dets)
        if n == 0:
            return _empty_output(dets)
        tracked = torch.zeros(n, dtype=torch.int64, device=frame_ids.device)
        ids = torch.arange(n, device=frame_ids.device)
        self.next_id = n
        self.state = TrackState(ids, dets.labels.clone(), dets.scores.clone(), dets.boxes.clone(),
                                dets.boxes_cir.clone(), dets.masks > 0.5, dets.track.clone(),
                                dets.mask_coeff.clone(), tracked, frame_ids)
        return TrackedClip(ids.clone(), dets.labels, dets.scores, dets.boxes, dets.boxes_cir, dets.masks,
                           tracked.clone())

    def _retire(self) -> None:
        """Forget the tracks lost for more than ``retire_after`` clips (when set)."""
        limit = self.config.retire_after
        if limit is not None and bool((self.state.tracked_mask > limit).any()):
            self.state.select(self.state.tracked_mask <= limit)

    def _flags(self, masks_a: Tensor, masks_b: Tensor) -> Tensor:
        """``[P, n, m]``: both masks of a pair have more than ``iou_flag_pixels`` pixels in that frame."""
        area_a = masks_a.flatten(2).sum(-1) > self.config.iou_flag_pixels
        area_b = masks_b.flatten(2).sum(-1) > self.config.iou_flag_pixels
        return area_a[:, :, None] & area_b[:, None, :]

    def _propagate(self, proto: Tensor) -> Tensor:
        """The Naive tracker: move every track to the current clip; returns its masks ``[m, T, h, w]``."""
        state = self.state
        masks = clip_masks(self.mask_head, proto, state.mask_coeff.to(proto.dtype),
                           state.boxes_cir.to(proto.dtype), self.config.propagate_crop, None)
        state.scores = state.scores * self.config.decay ** self.clip_frames
        state.boxes_cir = state.boxes[:, -1].clone()
        state.boxes = state.boxes[:, -1:].repeat(1, self.clip_frames, 1)
        return masks.to(state.scores.dtype)

    def _update(self, dets: ClipDetections, propagated: Tensor, new: Tensor, win_det: Tensor,
                win_track: Tensor) -> Tensor:
        """Append the new detections, overwrite the matched tracks; returns all tracks' mask probabilities."""
        state = self.state
        tracked = torch.zeros(len(dets), dtype=torch.int64, device=new.device)
        state.ids = torch.cat([state.ids, self.next_id + torch.arange(len(new), device=new.device)])
        self.next_id += len(new)
        rows = {"labels": dets.labels, "scores": dets.scores, "boxes": dets.boxes, "boxes_cir": dets.boxes_cir,
                "track": dets.track, "mask_coeff": dets.mask_coeff, "tracked_mask": tracked}
        for name, values in rows.items():
            merged = torch.cat([getattr(state, name), values[new]])
            merged[win_track] = values[win_det]
            setattr(state, name, merged)
        probs = torch.cat([propagated, dets.masks[new].to(propagated.dtype)])
        probs[win_track] = dets.masks[win_det].to(propagated.dtype)
        state.masks = probs > 0.5
        return probs


def _flagged_mean(values: Tensor, flag: Tensor) -> Tensor:
    """Mean of ``values [P, n, m]`` over the flagged pairs of frames, 0 where none is flagged."""
    return (values * flag).sum(0) / flag.sum(0).clamp(min=1)


def _empty_output(dets: ClipDetections) -> TrackedClip:
    """A :class:`TrackedClip` with no track, shaped like ``dets``."""
    none = torch.zeros(0, dtype=torch.int64, device=dets.scores.device)
    return TrackedClip(none, dets.labels[:0], dets.scores[:0], dets.boxes[:0], dets.boxes_cir[:0],
                       dets.masks[:0], none.clone())
