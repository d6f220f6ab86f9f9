"""The CiCo training losses, computed from :class:`~cico.model.outputs.HeadOutputs`.

Terms, with the reference's names (``multibox_loss.py`` keys) in brackets:

* ``box`` [B]: smooth-L1 (β=1) of the encoded tubes, mean over the ``n_P·T`` boxes of the sum over 4.
* ``box_diou`` [BIoU]: ``1 − DIoU`` of the decoded boxes, mean over ``T`` then over positives.
* ``centerness`` [center]: BCE of the centerness against the mean DIoU of the tube (a target in
  ``[−1, 1]``, kept unclamped as in the reference).
* ``class`` [C_focal / C]: sigmoid focal loss (α 0.25, γ 2) over all non-neutral anchors divided by
  ``n_P``, or softmax cross-entropy over positives and 3:1 hard negatives (OVIS configs).
* ``track`` [T]: pairwise BCE of the track embeddings of a clip's positives (same object or not).
* ``mask`` [M_bce]: clip-level BCE of the cropped masks over all ``T`` frames, normalised by the
  circumscribed box area and weighted by ``0.9^|Δt|`` around the positive's frame.

Every term is multiplied by its weight. A batch without positives (or without objects) is normal:
terms with nothing to average are zeros that stay connected to the graph, so ``backward`` works
(the reference crashes there). The classification sum is divided by ``max(n_P, 1)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import distance_box_iou_loss, sigmoid_focal_loss

from ..model.box_coder import circumscribed, decode
from ..model.config import ModelConfig
from ..model.masks import MaskHead, clip_masks
from ..model.outputs import HeadOutputs
from .matcher import ClipTargets, MatchConfig, match_batch

__all__ = ["LossConfig", "CiCoLoss", "diou_loss", "centerness_bce", "track_pair_loss", "box_area_pixels"]


@dataclass
class LossConfig:
    """Loss settings; the defaults are the reference YouTube-VIS values.

    Attributes:
        focal_alpha, focal_gamma: focal-loss parameters.
        negpos_ratio: hard negatives per positive for the softmax classifier.
        class_weight, box_weight, diou_weight, center_weight, track_weight: loss weights.
        mask_weight: ``MASK_HEADS.LOSS_ALPHA``; the mask term is scaled by ``mask_weight·min(T, 5)``.
        mask_crop_factor, mask_crop_min: crop of the circumscribed GT box (×1.5, sides ≥ 0.1).
        temporal_decay: the ``0.9^|Δt|`` frame weights of the mask loss.
        clamp_centerness_target: the reference's centerness target (mean DIoU) can be negative, which
            makes the BCE unbounded below (down to the −100 log clamp) and drives the centerness of badly
            localised positives to 0. ``True`` clamps the target to ``[0, 1]`` (a fix; off by default).
        match: the matcher's thresholds and quirks.
    """

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    negpos_ratio: int = 3
    class_weight: float = 5.0
    box_weight: float = 1.0
    diou_weight: float = 1.0
    center_weight: float = 1.0
    track_weight: float = 5.0
    mask_weight: float = 6.125
    mask_crop_factor: float = 1.5
    mask_crop_min: float = 0.1
    temporal_decay: float = 0.9
    clamp_centerness_target: bool = False
    match: MatchConfig = field(default_factory=MatchConfig)


def diou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """``1 − DIoU`` per box pair, with the reference's min/max sorting of the coordinates.

    ``torchvision.ops.distance_box_iou_loss`` is the same formula as the reference's ``DIoU_loss``
    (fvcore's: ``iou = inter/(union+eps)``, ``1 − iou + d²/(c²+eps)``); the reference first sorts each
    box's coordinates so that ``x1 <= x2`` and ``y1 <= y2``.

    Args:
        pred, target: ``[..., 4]`` x1y1x2y2 boxes.

    Returns:
        ``[...]`` the loss of each pair.
    """

    def _sorted(boxes: Tensor) -> Tensor:
        x = torch.stack([boxes[..., 0], boxes[..., 2]], dim=-1)
        y = torch.stack([boxes[..., 1], boxes[..., 3]], dim=-1)
        return torch.stack([x.amin(-1), y.amin(-1), x.amax(-1), y.amax(-1)], dim=-1)

    shape = pred.shape[:-1]
    loss = distance_box_iou_loss(_sorted(pred).reshape(-1, 4), _sorted(target).reshape(-1, 4), eps=eps)
    return loss.reshape(shape)


def centerness_bce(prob: Tensor, target: Tensor) -> Tensor:
    """``−[t·log p + (1 − t)·log(1 − p)]`` for targets anywhere in ``[−1, 1]`` (no clamp).

    ``F.binary_cross_entropy`` rejects targets outside ``[0, 1]``; the same value (log clamped at −100,
    as PyTorch does) is ``t·BCE(p, 1) + (1 − t)·BCE(p, 0)``, which keeps PyTorch's safe gradients.

    Args:
        prob: ``[n]`` probabilities.
        target: ``[n]`` targets.

    Returns:
        ``[n]`` element-wise loss.
    """
    ones, zeros = torch.ones_like(prob), torch.zeros_like(prob)
    neg_log_p = F.binary_cross_entropy(prob, ones, reduction="none")
    neg_log_q = F.binary_cross_entropy(prob, zeros, reduction="none")
    return target * neg_log_p + (1 - target) * neg_log_q


def track_pair_loss(embeddings: Tensor, objects: Tensor) -> Tensor:
    """Pairwise track loss of one clip: BCE of ``s = (e·eᵀ + 1)/2`` against "same object".

    Args:
        embeddings: ``[n, E]`` L2-normalised embeddings of the clip's positives.
        objects: ``[n]`` the object (annotation) each positive is matched to.

    Returns:
        Scalar mean over all ``n×n`` pairs, the diagonal included; logs clamped at ``1e-10``.
    """
    sim = (embeddings @ embeddings.t() + 1) / 2
    same = (objects[:, None] == objects[None, :]).to(sim.dtype)
    loss = -(same * sim.clamp(min=1e-10).log() + (1 - same) * (1 - sim).clamp(min=1e-10).log())
    return loss.mean()


def box_area_pixels(boxes: Tensor, height: int, width: int) -> Tensor:
    """Area in pixels of normalised boxes as the reference's crop sees them (padding 0, floor).

    Args:
        boxes: ``[n, 4]`` normalised x1y1x2y2.

    Returns:
        ``[n]`` ``max(x2 − x1, 1)·max(y2 − y1, 1)`` with each side floored to whole pixels.
    """
    x = (boxes[:, 0::2].clamp(0, 1) * width).floor()
    y = (boxes[:, 1::2].clamp(0, 1) * height).floor()
    w = (x.amax(1) - x.amin(1)).clamp(min=1)
    h = (y.amax(1) - y.amin(1)).clamp(min=1)
    return w * h


def _graph_zero(*tensors: Tensor) -> Tensor:
    """A zero that depends on ``tensors`` (so backward and DDP reach them) whatever their values."""
    zero = tensors[0].flatten()[:0].sum()
    for t in tensors[1:]:
        zero = zero + t.flatten()[:0].sum()
    return zero


class CiCoLoss(nn.Module):
    """Matches a batch and returns the weighted loss terms (their plain sum is the training loss).

    Args:
        num_classes: ``C``, foreground classes.
        mask_kind: ``"yolact"`` (prototype coefficients) or ``"condinst"`` (dynamic mask head).
        focal: sigmoid focal classification (YouTube-VIS); ``False``: softmax with OHEM (OVIS).
        cfg: weights and settings (the reference's by default).
    """

    def __init__(self, num_classes: int, mask_kind: MaskHead = "yolact", focal: bool = True,
                 cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.num_classes, self.mask_kind, self.focal = num_classes, mask_kind, focal
        self.cfg = cfg or LossConfig()

    @classmethod
    def for_model(cls, config: ModelConfig, cfg: LossConfig | None = None) -> CiCoLoss:
        """The loss of a network configuration (classes, mask head, sigmoid or softmax classifier)."""
        return cls(config.num_classes, config.mask_head, config.classifier == "sigmoid", cfg)

    def forward(self, head: HeadOutputs, boxes: list[Tensor], masks: list[Tensor],
                labels: list[Tensor]) -> dict[str, Tensor]:
        """Compute every loss term.

        Args:
            head: raw outputs for ``B`` clips of ``T`` frames (any dtype; computed in float32).
            boxes: per clip ``[n_b, T, 4]`` normalised GT tubes, absent frames all-zero.
            masks: per clip ``[n_b, T, Hp, Wp]`` 0/1 GT masks on the padded input.
            labels: per clip ``[n_b]`` 1-based labels.

        Returns:
            ``{"box", "box_diou", "centerness", "class", "track", "mask"}`` scalar tensors.
        """
        with torch.autocast(device_type=head.loc.device.type, enabled=False):
            head = HeadOutputs(**{k: (v.float() if v.is_floating_point() else v)
                                  for k, v in vars(head).items()})
            targets = match_batch(boxes, labels, head.priors, loc_pred=head.loc, cfg=self.cfg.match)
            losses = self._box_terms(head, targets)
            losses["class"] = self._class_term(head, targets)
            losses["track"] = self._track_term(head, targets, len(boxes))
            losses["mask"] = self._mask_term(head, targets, masks)
        return losses

    # -- terms ----------------------------------------------------------------------------------

    def _box_terms(self, head: HeadOutputs, targets: ClipTargets) -> dict[str, Tensor]:
        cfg = self.cfg
        pos = targets.positive
        n_pos = int(pos.sum())
        if n_pos == 0:
            zero = _graph_zero(head.loc, head.centerness)
            return {"box": zero, "box_diou": zero.clone(), "centerness": zero.clone()}
        T = head.loc.shape[-1] // 4
        loc_p = head.loc[pos]  # [n_P, 4T]
        loc_t = targets.loc[pos]
        box = F.smooth_l1_loss(loc_p, loc_t, reduction="sum", beta=1.0) / (n_pos * T)

        priors = head.priors[pos.nonzero()[:, 1]][:, None, :]  # [n_P, 1, 4]
        box_p = decode(loc_p.reshape(n_pos, T, 4), priors)
        box_t = decode(loc_t.reshape(n_pos, T, 4), priors)
        per_pos = diou_loss(box_p, box_t).mean(dim=1)  # [n_P]
        target = (1 - per_pos).detach()
        if cfg.clamp_centerness_target:
            target = target.clamp(0, 1)
        center = centerness_bce(head.centerness[pos][:, 0], target).mean()
        return {"box": box * cfg.box_weight, "box_diou": per_pos.mean() * cfg.diou_weight,
                "centerness": center * cfg.center_weight}

    def _class_term(self, head: HeadOutputs, targets: ClipTargets) -> Tensor:
        cfg = self.cfg
        conf_t = targets.labels
        n_pos = int((conf_t > 0).sum())
        if self.focal:
            keep = conf_t >= 0
            logits = head.conf[keep]  # [M, C]
            onehot = F.one_hot(conf_t[keep], self.num_classes + 1)[:, 1:].to(logits.dtype)
            loss = sigmoid_focal_loss(logits, onehot, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma,
                                      reduction="sum")
            return loss / max(n_pos, 1) * cfg.class_weight
        conf = head.conf.reshape(-1, head.conf.shape[-1])
        flat_t = conf_t.reshape(-1)
        if n_pos == 0:
            return _graph_zero(conf)
        with torch.no_grad():  # rank negatives by their most confident foreground probability
            hardness = F.softmax(conf, dim=1)[:, 1:].amax(dim=1)
            hardness[flat_t != 0] = 0
            num_neg = min(cfg.negpos_ratio * n_pos, flat_t.numel() - 1)
            chosen = torch.zeros_like(flat_t, dtype=torch.bool)
            chosen[hardness.topk(num_neg).indices] = True
            train = (flat_t > 0) | (chosen & (flat_t == 0))
        return F.cross_entropy(conf[train], flat_t[train]) * cfg.class_weight

    def _track_term(self, head: HeadOutputs, targets: ClipTargets, num_clips: int) -> Tensor:
        T = head.loc.shape[-1] // 4
        total = _graph_zero(head.track)
        for b in range(num_clips):
            rows = slice(b * T, (b + 1) * T)
            pos = targets.positive[rows]
            if pos.any():
                total = total + track_pair_loss(head.track[rows][pos], targets.matched[rows][pos])
        return total / num_clips * self.cfg.track_weight

    def _mask_term(self, head: HeadOutputs, targets: ClipTargets, masks: list[Tensor]) -> Tensor:
        cfg = self.cfg
        T = head.loc.shape[-1] // 4
        h4, w4 = head.proto.shape[1:3]
        total = _graph_zero(head.mask_coeff, head.proto)
        decay_t = torch.arange(T, device=head.loc.device)
        for b, gt_masks in enumerate(masks):
            rows = slice(b * T, (b + 1) * T)
            pos = targets.positive[rows]  # [T, N]
            if not pos.any():
                continue
            frame_p, anchor_p = pos.nonzero(as_tuple=True)
            obj_p = targets.matched[rows][frame_p, anchor_p]
            coeff = head.mask_coeff[rows][frame_p, anchor_p]  # [n_p, D]
            gt_small = F.interpolate(gt_masks.to(head.proto.dtype), size=(h4, w4), mode="bilinear",
                                     align_corners=False) > 0.5  # [n_obj, T, h4, w4]
            mask_t = gt_small[obj_p].to(head.proto.dtype)
            box_cir = circumscribed(targets.boxes[b][obj_p])  # [n_p, 4]
            pred = clip_masks(self.mask_kind, head.proto[b], coeff, box_cir,
                              cfg.mask_crop_factor, cfg.mask_crop_min)  # [n_p, T, h4, w4]
            bce = F.binary_cross_entropy(pred, mask_t, reduction="none").sum(dim=(2, 3))  # [n_p, T]
            bce = bce / box_area_pixels(box_cir, h4, w4)[:, None]
            weight = cfg.temporal_decay ** (decay_t[None, :] - frame_p[:, None]).abs().to(bce.dtype)
            per_pos = (weight * bce).sum(dim=1) / weight.sum(dim=1)
            total = total + per_pos.mean()
        return total / len(masks) * cfg.mask_weight * min(T, 5)
