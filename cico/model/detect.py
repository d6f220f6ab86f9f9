"""Per-clip detection: candidate selection, three cheap filters, clip masks and per-class Fast NMS
(the reference's ``Detect`` with ``fast_nms``).

For each clip, every anchor of every frame is a candidate (index ``t*N + n``) that predicts a whole
tube of ``T`` boxes, one class distribution, one centerness, one set of mask parameters and one
track embedding. Detection keeps the confident ones, drops near-duplicates and implausible boxes
and masks, then runs Fast NMS per class on a clip-level IoU mixing box, circumscribed-box and mask
IoU. The output of each clip is an :class:`~cico.structures.Instances` sorted by raw score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchvision.ops import box_iou

from ..structures import Instances
from .box_coder import center_size, circumscribed, decode_tubes, tube_iou
from .masks import MaskHead, clip_masks, mask_iou
from .outputs import HeadOutputs

Classifier = Literal["sigmoid", "softmax"]


@dataclass(frozen=True)
class DetectConfig:
    """Detection thresholds (the reference values).

    Attributes:
        score_thresh: a candidate needs a max class probability above this; in NMS the
            centerness-rescored class score must also exceed it (the "second threshold").
        nms_iou_thresh: Fast NMS suppresses a candidate whose clip IoU with a higher-ranked one of
            the same class exceeds this.
        detections_per_frame: pre-NMS candidate limit per frame; the clip limit is
            ``min(detections_per_frame * T, max_candidates)`` (300 for T = 3).
        max_candidates: cap of the clip's candidate limit.
        top_k: overrides the clip candidate limit when set.
        duplicate_iou_thresh: Filter 1 drops a candidate whose ``0.5 mean_t IoU_t + 0.5 IoU_cir``
            with a better-rescored candidate (any class) exceeds this.
        min_mask_area: Filter 3 and the NMS frame flags need more than this many mask pixels
            (``> 0.5``) at prototype resolution.
        min_mask_cover: Filter 3 needs, in some frame, mask area / box area above this.
        coincident_mask_iou: two masks overlapping more than this in any flagged frame count as
            the same object (mask IoU := 1).
        yolact_crop_factor: Yolact masks are cropped to box_cir enlarged by this (1.1 at test).
        condinst_crop_factor: CondInst masks are cropped to box_cir enlarged by this (1.5).
        crop_min_size: minimum width/height of the enlarged crop box (normalised units).
        fix_nms_cir_permutation: the reference permutes the rows of the
            circumscribed-box IoU into each class's score order but leaves its columns in candidate
            order, so NMS compares a candidate with the wrong circumscribed box. ``False``
            reproduces this for numerical equivalence; ``True`` permutes both axes (the intended
            behaviour).
    """

    score_thresh: float = 0.1
    nms_iou_thresh: float = 0.5
    detections_per_frame: int = 100
    max_candidates: int = 300
    top_k: int | None = None
    duplicate_iou_thresh: float = 0.9
    min_mask_area: float = 5.0
    min_mask_cover: float = 0.1
    coincident_mask_iou: float = 0.9
    yolact_crop_factor: float = 1.1
    condinst_crop_factor: float = 1.5
    crop_min_size: float = 0.1
    fix_nms_cir_permutation: bool = False

    def candidate_limit(self, clip_frames: int) -> int:
        """Pre-NMS candidates kept per clip of ``clip_frames`` frames."""
        if self.top_k is not None:
            return self.top_k
        return min(self.detections_per_frame * clip_frames, self.max_candidates)

    def crop_factor(self, mask_head: MaskHead) -> float:
        """Test-time enlargement of the mask crop box for ``mask_head``."""
        return self.yolact_crop_factor if mask_head == "yolact" else self.condinst_crop_factor


@torch.no_grad()
def detect(
    outputs: HeadOutputs,
    *,
    classifier: Classifier,
    mask_head: MaskHead,
    config: DetectConfig | None = None,
) -> list[Instances]:
    """Turn raw head outputs into per-clip detections.

    Args:
        outputs: raw outputs for ``B`` clips of ``T`` frames (``conf`` holds logits).
        classifier: ``"sigmoid"`` (focal-loss models, ``C`` logits) or ``"softmax"`` (``C + 1``
            logits, channel 0 = background, dropped).
        mask_head: ``"yolact"`` or ``"condinst"``.
        config: thresholds; defaults to the reference values.

    Returns:
        One :class:`~cico.structures.Instances` per clip, sorted by raw class score (descending). A candidate
        may appear under several classes. Computed with autocast disabled, in the outputs' dtype
        promoted to at least float32 (bf16/fp16 head outputs give float32 detections).
    """
    config = config or DetectConfig()
    if classifier not in ("sigmoid", "softmax"):
        raise ValueError(f"unknown classifier {classifier!r}; expected 'sigmoid' or 'softmax'")
    if mask_head not in ("yolact", "condinst"):
        raise ValueError(f"unknown mask head {mask_head!r}; expected 'yolact' or 'condinst'")
    num_clips = outputs.proto.shape[0]
    clip_frames = outputs.loc.shape[-1] // 4
    if outputs.loc.shape[0] != num_clips * clip_frames:
        raise ValueError(
            f"loc has {outputs.loc.shape[0]} frames, expected {num_clips} clips x {clip_frames} frames"
        )
    # Thresholds sit close to the scores: detect in at least float32, also inside an autocast region.
    with torch.autocast(device_type=outputs.loc.device.type, enabled=False):
        outputs = outputs.to_dtype(torch.promote_types(outputs.loc.dtype, torch.float32))
        probs = class_probabilities(outputs.conf, classifier)
        return [
            _detect_clip(outputs, probs, b, clip_frames, mask_head, config) for b in range(num_clips)
        ]


def class_probabilities(conf: Tensor, classifier: Classifier) -> Tensor:
    """Class probabilities ``[..., C]`` of logits ``conf`` (the softmax background channel dropped), in at least
    float32 and outside autocast, as detection scores them."""
    with torch.autocast(device_type=conf.device.type, enabled=False):
        conf = conf.to(torch.promote_types(conf.dtype, torch.float32))
        if classifier == "sigmoid":
            return torch.sigmoid(conf)
        return torch.softmax(conf, dim=-1)[..., 1:]


def candidate_index(clip_probs: Tensor, clip_frames: int, config: DetectConfig) -> Tensor:
    """The candidates of one clip: indices ``t·N + n`` into its pooled class probabilities ``[T·N, C]`` whose
    max probability passes ``score_thresh``, the ``candidate_limit`` most probable if more do."""
    max_probs = clip_probs.amax(dim=-1)
    index = torch.nonzero(max_probs > config.score_thresh).flatten()
    limit = config.candidate_limit(clip_frames)
    if index.numel() > limit:
        order = max_probs[index].sort(descending=True, stable=True).indices
        index = index[order[:limit]]
    return index


def _select_candidates(
    outputs: HeadOutputs, probs: Tensor, clip: int, clip_frames: int, config: DetectConfig
) -> Instances:
    """Pool the clip's ``T*N`` anchors, threshold the max probability, keep the top ``top_k``.

    The candidates' ``scores`` are ``[n, C]`` (every class), their masks not computed yet."""
    frames = slice(clip * clip_frames, (clip + 1) * clip_frames)
    num_priors = outputs.priors.shape[0]

    def pooled(x: Tensor) -> Tensor:
        return x[frames].reshape(clip_frames * num_priors, -1)

    clip_probs = pooled(probs)
    index = candidate_index(clip_probs, clip_frames, config)
    anchor = index % num_priors
    boxes = decode_tubes(pooled(outputs.loc)[index], outputs.priors[anchor])
    probs = clip_probs[index]
    proto = outputs.proto[clip]
    n = index.numel()
    return Instances(
        labels=probs.argmax(dim=-1) + 1,
        scores=probs,
        boxes=boxes,
        boxes_cir=circumscribed(boxes),
        masks=proto.new_zeros(n, clip_frames, 0, 0),
        track=pooled(outputs.track)[index],
        mask_coeff=pooled(outputs.mask_coeff)[index],
        prior_levels=outputs.prior_levels.reshape(-1)[anchor],
        centerness=pooled(outputs.centerness)[index].mean(dim=-1),
        ids=torch.full((n,), -1, dtype=torch.int64, device=index.device),
        tracked_mask=torch.zeros(n, dtype=torch.int64, device=index.device),
        proto=proto,
    )


def _detect_clip(
    outputs: HeadOutputs,
    probs: Tensor,
    clip: int,
    clip_frames: int,
    mask_head: MaskHead,
    config: DetectConfig,
) -> Instances:
    cand = _select_candidates(outputs, probs, clip, clip_frames, config)
    proto = cand.proto

    # Rank by centerness-rescored max score; every pairwise matrix below uses this order.
    rescored = cand.centerness * cand.scores.amax(dim=-1)
    cand = cand[rescored.sort(descending=True, stable=True).indices]

    # Filter 1: near-duplicates of a better candidate (any class).
    frame_iou = tube_iou(cand.boxes, cand.boxes)  # [T, n, n]
    cir_iou = box_iou(cand.boxes_cir, cand.boxes_cir)  # [n, n]
    dup_iou = (0.5 * frame_iou.mean(0) + 0.5 * cir_iou).triu(diagonal=1)
    not_dup = _max_over_higher_ranked(dup_iou) <= config.duplicate_iou_thresh
    # Filter 2: the box centre lies strictly inside the image in enough frames.
    centres = center_size(cand.boxes)[..., :2]
    inside = ((centres > 0) & (centres < 1)).all(dim=-1).sum(dim=-1) >= max(clip_frames // 2, 1)
    keep = torch.nonzero(not_dup & inside).flatten()
    cand, frame_iou, cir_iou = cand[keep], frame_iou[:, keep][:, :, keep], cir_iou[keep][:, keep]

    # Filter 3: masks neither empty nor a small part of their box.
    masks = clip_masks(
        mask_head, proto, cand.mask_coeff, cand.boxes_cir, config.crop_factor(mask_head), config.crop_min_size
    )
    h, w = masks.shape[-2:]
    binary = masks > 0.5
    area = _pixel_counts(binary)  # [n, T]
    box_wh = center_size(cand.boxes)[..., 2:]
    cover = area.to(masks.dtype) / (h * w) / (box_wh[..., 0] * box_wh[..., 1])
    keep = torch.nonzero(
        (area > config.min_mask_area).any(dim=-1) & (cover > config.min_mask_cover).any(dim=-1)
    ).flatten()
    # The mask tensors are large: they stay unfiltered and are indexed through ``keep``.
    cand, area = cand[keep], area[keep]
    frame_iou, cir_iou = frame_iou[:, keep][:, :, keep], cir_iou[keep][:, keep]

    index, labels = _fast_nms(cand, binary, keep, area, frame_iou, cir_iou, config)
    scores = cand.scores[index, labels]
    order = scores.sort(descending=True, stable=True).indices
    index, labels = index[order], labels[order]
    return cand[index].replace(labels=labels + 1, scores=scores[order], masks=masks[keep[index]])


def _pixel_counts(binary: Tensor, chunk: int = 32) -> Tensor:
    """``[n, T]`` int64 pixel counts of ``binary [n, T, h, w]``, a few candidates at a time: a boolean sum
    first copies its input as int64, 8x the masks' size."""
    if binary.shape[0] <= chunk:
        return binary.sum(dim=(-1, -2))
    return torch.cat([part.sum(dim=(-1, -2)) for part in binary.split(chunk)])


def _max_over_higher_ranked(iou: Tensor) -> Tensor:
    """Column-wise max of an upper-triangular ``[n, n]`` matrix (0 for the first / no rows)."""
    if iou.shape[0] == 0:
        return iou.new_zeros(0)
    return iou.amax(dim=0)


def _fast_nms(
    cand: Instances,
    binary: Tensor,
    mask_index: Tensor,
    area: Tensor,
    frame_iou: Tensor,
    cir_iou: Tensor,
    config: DetectConfig,
) -> tuple[Tensor, Tensor]:
    """Per-class Fast NMS on the clip IoU ``0.25 BIoU + 0.25 BIoU_cir + 0.5 MIoU``.

    Args:
        cand: ``n`` candidates in rescored order.
        binary: ``[n', T, h, w]`` binarised masks (``> 0.5``), candidate ``i`` owning row
            ``mask_index[i]``; ``area``: ``[n, T]`` the candidates' mask pixel counts.
        frame_iou: ``[T, n, n]`` per-frame box IoU; ``cir_iou``: ``[n, n]`` circumscribed-box IoU.

    Returns:
        ``(candidate index, 0-based class)`` of the kept detections, class-major, each class in its
        rescored order.
    """
    device = cand.scores.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    rescores = cand.centerness[None, :] * cand.scores.t()  # [C, n]
    # Only candidates above the score threshold in some class take part: in a class's ranking every
    # candidate ranked above one that passes the threshold passes it too.
    involved = (rescores > config.score_thresh).any(dim=0)
    if not involved.any():
        return empty, empty
    rescores, order = rescores.sort(dim=1, descending=True, stable=True)
    num_above = (rescores > config.score_thresh).sum(dim=1)  # [C], a prefix of each ranking
    sub = torch.nonzero(involved).flatten()
    local = torch.full(involved.shape, -1, dtype=torch.long, device=device)
    local[sub] = torch.arange(sub.numel(), device=device)

    # Frame-flag-weighted box and mask IoU, computed once for all involved candidates.
    flag_t = (area[sub] > config.min_mask_area).t()  # [T, s]
    flag = flag_t[:, :, None] & flag_t[:, None, :]  # [T, s, s]
    num_flags = flag.sum(dim=0).clamp(min=1)
    box_iou_f = (frame_iou[:, sub][:, :, sub] * flag).sum(dim=0) / num_flags
    binary = binary[mask_index[sub]]  # [s, T, h, w]
    # Frame by frame: mask_iou counts pixels in float32, a copy 4x the size of the boolean masks.
    miou_t = torch.stack([mask_iou(frame, frame) for frame in binary.unbind(1)]).to(box_iou_f.dtype)  # [T, s, s]
    miou = (miou_t * flag).sum(dim=0) / num_flags
    miou[((miou_t > config.coincident_mask_iou) & flag).any(dim=0)] = 1.0

    kept_index, kept_class = [], []
    for c in torch.nonzero(num_above).flatten().tolist():
        ranked = order[c, : int(num_above[c])]  # candidate indices, best first
        loc = local[ranked]
        cols = ranked if config.fix_nms_cir_permutation else torch.arange(ranked.numel(), device=device)
        iou = 0.5 * box_iou_f[loc][:, loc] + 0.5 * cir_iou[ranked][:, cols]
        iou = iou * 0.5 + miou[loc][:, loc] * 0.5
        keep = iou.triu(diagonal=1).amax(dim=0) <= config.nms_iou_thresh
        kept_index.append(ranked[keep])
        kept_class.append(torch.full_like(ranked[keep], c))
    return torch.cat(kept_index), torch.cat(kept_class)
