"""The network's outputs: raw head outputs (what the losses and detection read) and the forward's result.

Conventions: clips are clip-major (frame ``t`` of clip ``b`` is row ``b*T + t``);
boxes are ``(x1, y1, x2, y2)`` normalised to the *padded* network input; class labels are 1-based
(label ``c`` is logit channel ``c-1`` for sigmoid classifiers, channel ``c`` for softmax ones,
where channel 0 is the background).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..structures import Instances


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

    def to_dtype(self, dtype: torch.dtype) -> HeadOutputs:
        """The outputs with every floating-point tensor in ``dtype`` (``prior_levels`` stays integer)."""
        return HeadOutputs(**{f.name: value.to(dtype) if value.is_floating_point() else value
                              for f in dataclasses.fields(self) for value in [getattr(self, f.name)]})


@dataclass
class CiCoOutputs:
    """What the network's ``forward`` returns for ``B`` clips.

    Attributes:
        head: the raw outputs (all the losses need).
        detections: in eval mode, one :class:`~cico.structures.Instances` per clip; ``None`` in training mode.
    """

    head: HeadOutputs
    detections: list[Instances] | None = None
