"""Typed structures that flow from the network to detection, linking and the losses.

Conventions (spec §2, §5.2): clips are clip-major (frame ``t`` of clip ``b`` is row ``b*T + t``);
boxes are ``(x1, y1, x2, y2)`` normalised to the *padded* network input; class labels are 1-based
(label ``c`` is logit channel ``c-1`` for sigmoid classifiers, channel ``c`` for softmax ones,
where channel 0 is the background).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class HeadOutputs:
    """Raw network outputs for ``B`` clips of ``T`` frames, ``N`` anchors per frame.

    Attributes:
        loc: ``[B*T, N, 4*T]`` encoded box tube of every anchor: channels ``t*4 + (dx, dy, dw, dh)``.
        conf: ``[B*T, N, C]`` (sigmoid) or ``[B*T, N, C+1]`` (softmax) class logits.
        centerness: ``[B*T, N, 1]`` after sigmoid.
        mask_coeff: ``[B*T, N, D]`` after tanh (Yolact coefficients or CondInst dynamic parameters).
        track: ``[B*T, N, E]`` L2-normalised track embeddings.
        priors: ``[N, 4]`` anchors ``(cx, cy, w, h)`` normalised to the padded input.
        prior_levels: ``[N]`` FPN level index (0 = P3) of each anchor.
        proto: ``[B, h4, w4, T, D']`` clip prototypes (Yolact) or mask features (CondInst), input/4.
    """

    loc: Tensor
    conf: Tensor
    centerness: Tensor
    mask_coeff: Tensor
    track: Tensor
    priors: Tensor
    prior_levels: Tensor
    proto: Tensor


@dataclass
class ClipDetections:
    """The detections of one clip (spec §5.2), sorted by raw class score, descending.

    Attributes:
        labels: ``[k]`` int64, 1-based class labels.
        scores: ``[k]`` raw class probabilities (not rescored by centerness).
        boxes: ``[k, T, 4]`` box tube, normalised x1y1x2y2 on the padded canvas, not clipped.
        boxes_cir: ``[k, 4]`` circumscribed box over the T frames.
        masks: ``[k, T, h4, w4]`` mask probabilities at prototype resolution, zero outside the crop.
        track: ``[k, E]`` track embedding of each detection's source anchor.
        mask_coeff: ``[k, D]`` mask coefficients / dynamic parameters of the source anchor.
        prior_levels: ``[k]`` FPN level of the source anchor.
        proto: ``[h4, w4, T, D']`` the clip's prototypes (the tracker re-uses them).
    """

    labels: Tensor
    scores: Tensor
    boxes: Tensor
    boxes_cir: Tensor
    masks: Tensor
    track: Tensor
    mask_coeff: Tensor
    prior_levels: Tensor
    proto: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class CiCoOutputs:
    """What the network's ``forward`` returns for ``B`` clips.

    Attributes:
        head: the raw outputs (all the losses need).
        detections: in eval mode, one :class:`ClipDetections` per clip; ``None`` in training mode.
    """

    head: HeadOutputs
    detections: list[ClipDetections] | None = None
