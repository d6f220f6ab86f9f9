"""The clip-level prediction head, CPH, and the clip 3D convolution it shares with the mask head.

One set of weights is applied to every FPN level. Three towers of ``conv 3×3 + ReLU`` (no normalisation):

* ``bbox_extra``: 3×3×3 convs over the clip (zero padding in time at the clip ends); feeds the box tube,
  centerness and mask-parameter layers;
* ``conf_extra``: 2D 3×3 convs per frame; feeds the class logits;
* ``track_extra``: 3×3×3 convs over the clip; feeds the track embedding.

Final 2D 3×3 layers, with ``A`` anchors per location: ``bbox_layer`` (``A·4T``: every anchor of every frame
predicts the boxes of all ``T`` frames), ``centerness_layer`` (``A``, sigmoid), ``conf_layer`` (``A·C`` or
``A·(C+1)`` logits), ``mask_layer`` (``A·D``, tanh) and ``track_layer`` (``A·E``, L2-normalised).

Clips stay frame-major ``[B·T, F, h, w]`` throughout (frame ``t`` of clip ``b`` at row ``b·T + t``):
:class:`~cico.model.convolution.ClipConv3d` computes the 3D convolutions on that layout directly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convolution import ClipConv3d


def _tower(num_layers: int, channels: int, clip_frames: int | None) -> nn.Sequential:
    """``num_layers × (conv 3×3[×3] + ReLU)``: 3D (:class:`ClipConv3d`) when ``clip_frames`` is given."""
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        conv = (ClipConv3d(channels, channels, clip_frames) if clip_frames is not None
                else nn.Conv2d(channels, channels, 3, padding=1))
        layers += [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _tower_levels(tower: nn.Sequential, levels: list[Tensor]) -> list[Tensor]:
    """``tower`` applied to every level, its 3D convs to all levels in one call
    (:meth:`~cico.model.convolution.ClipConv3d.forward_levels`)."""
    for layer in tower:
        levels = layer.forward_levels(levels) if isinstance(layer, ClipConv3d) else [layer(x) for x in levels]
    return levels


class ClipPredictionHead(nn.Module):
    """The clip prediction head shared over the FPN levels.

    Args:
        in_channels: FPN width ``F``.
        num_anchors: anchors per location ``A``.
        clip_frames: ``T``.
        num_logits: class logits per anchor (``C``, or ``C + 1`` with a background class).
        mask_param_dim: mask coefficients / dynamic parameters per anchor ``D``.
        track_dim: track embedding size ``E``.
        box_tower_layers, class_tower_layers, track_tower_layers: depth of each tower.
        prior_prob: initial foreground probability of a sigmoid classifier (``None``: softmax, zero bias).
    """

    def __init__(self, in_channels: int, num_anchors: int, clip_frames: int, num_logits: int,
                 mask_param_dim: int, track_dim: int, box_tower_layers: int = 4, class_tower_layers: int = 4,
                 track_tower_layers: int = 4, prior_prob: float | None = 0.01) -> None:
        super().__init__()
        self.clip_frames, self.num_anchors = clip_frames, num_anchors
        self.num_logits, self.mask_param_dim, self.track_dim = num_logits, mask_param_dim, track_dim
        self.prior_prob = prior_prob

        def final(channels: int) -> nn.Conv2d:
            return nn.Conv2d(in_channels, num_anchors * channels, 3, padding=1)

        self.bbox_layer = final(4 * clip_frames)
        self.centerness_layer = final(1)
        self.conf_layer = final(num_logits)
        self.track_layer = final(track_dim)
        self.mask_layer = final(mask_param_dim)
        self.bbox_extra = _tower(box_tower_layers, in_channels, clip_frames)
        self.conf_extra = _tower(class_tower_layers, in_channels, None)
        self.track_extra = _tower(track_tower_layers, in_channels, clip_frames)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation: Xavier-uniform weights, zero biases, and the focal
        prior ``-log((1 - p) / p)`` on the class bias of a sigmoid classifier."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, ClipConv3d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.prior_prob is not None and self.conf_layer.bias is not None:
            nn.init.constant_(self.conf_layer.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def _flatten(self, x: Tensor, channels: int) -> Tensor:
        """``[B·T, A·k, h, w]`` (channel ``a·k + j``) -> ``[B·T, h·w·A, k]`` (anchor order y, x, a)."""
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, channels)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Apply the head to every level ``[B·T, F, h_l, w_l]`` and concatenate the anchors.

        Returns:
            loc ``[B·T, N, 4T]``, conf ``[B·T, N, C or C+1]`` (logits), centerness ``[B·T, N, 1]`` (sigmoid),
            mask_coeff ``[B·T, N, D]`` (tanh), track ``[B·T, N, E]`` (L2-normalised).
        """
        outputs: list[list[Tensor]] = [[], [], [], [], []]
        box_xs = _tower_levels(self.bbox_extra, features)
        track_xs = _tower_levels(self.track_extra, features)
        for x, box_x, track_x in zip(features, box_xs, track_xs):
            conf_x = self.conf_extra(x)
            level = (
                self._flatten(self.bbox_layer(box_x), 4 * self.clip_frames),
                self._flatten(self.conf_layer(conf_x), self.num_logits),
                self._flatten(self.centerness_layer(box_x), 1),
                self._flatten(self.mask_layer(box_x), self.mask_param_dim),
                self._flatten(self.track_layer(track_x), self.track_dim),
            )
            for out, value in zip(outputs, level):
                out.append(value)
        loc, conf, centerness, mask_coeff, track = (torch.cat(out, dim=1) for out in outputs)
        return loc, conf, centerness.sigmoid(), mask_coeff.tanh(), F.normalize(track, dim=-1)
