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
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convolution import ClipConv3d, WinogradConv2d

Region = tuple[int, int, int, int]
"""A window ``(y0, y1, x0, x1)`` of a feature map, half-open, in cells."""


def _tower(num_layers: int, channels: int, clip_frames: int | None) -> nn.Sequential:
    """``num_layers × (conv 3×3[×3] + ReLU)``: 3D (:class:`ClipConv3d`) when ``clip_frames`` is given."""
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        conv = (ClipConv3d(channels, channels, clip_frames) if clip_frames is not None
                else WinogradConv2d(channels, channels))
        layers += [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _tower_levels(tower: nn.Sequential, levels: list[Tensor]) -> list[Tensor]:
    """``tower`` applied to every level, its convolutions to all levels in one call (``forward_levels``)."""
    for layer in tower:
        levels = (layer.forward_levels(levels) if isinstance(layer, (ClipConv3d, WinogradConv2d))
                  else [layer(x) for x in levels])
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

        def final(channels: int) -> WinogradConv2d:
            return WinogradConv2d(in_channels, num_anchors * channels)

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

    @property
    def receptive_margin(self) -> int:
        """How far (in cells) the box, mask and track outputs at a location see: one cell per 3×3 layer on the
        deeper of the two paths (tower + final layer)."""
        return max(sum(isinstance(layer, ClipConv3d) for layer in tower)
                   for tower in (self.bbox_extra, self.track_extra)) + 1

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Apply the head to every level ``[B·T, F, h_l, w_l]`` and concatenate the anchors.

        Returns:
            loc ``[B·T, N, 4T]``, conf ``[B·T, N, C or C+1]`` (logits), centerness ``[B·T, N, 1]`` (sigmoid),
            mask_coeff ``[B·T, N, D]`` (tanh), track ``[B·T, N, E]`` (L2-normalised).
        """
        loc, centerness, mask_coeff, track = self.forward_box_track(features)
        return loc, self.forward_conf(features), centerness, mask_coeff, track

    def forward_conf(self, features: list[Tensor]) -> Tensor:
        """The class branch alone: conf ``[B·T, N, C or C+1]`` (logits) of every anchor."""
        logits = self.conf_layer.forward_levels(_tower_levels(self.conf_extra, features))
        return torch.cat([self._flatten(x, self.num_logits) for x in logits], dim=1)

    def forward_box_track(self, features: list[Tensor], regions: Sequence[Region | None] | None = None
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The box, centerness, mask and track branches: loc ``[B·T, N, 4T]``, centerness ``[B·T, N, 1]``,
        mask_coeff ``[B·T, N, D]``, track ``[B·T, N, E]``.

        ``regions`` (one per level) limits them to the anchors of a window ``(y0, y1, x0, x1)`` of each level
        (``None``: none of the level's): the towers then run on the window grown by
        :attr:`receptive_margin` (clipped to the map), which gives the window's outputs exactly as on the whole
        map, and every other anchor's outputs are NaN. ``regions=None``: every anchor.
        """
        if regions is None:
            regions = [(0, x.shape[-2], 0, x.shape[-1]) for x in features]
        margin = self.receptive_margin
        crops, inner = [], []
        for x, region in zip(features, regions):
            if region is not None:
                y0, y1, x0, x1 = region
                h, w = x.shape[-2:]
                top, left = max(y0 - margin, 0), max(x0 - margin, 0)
                crops.append(x[:, :, top:min(y1 + margin, h), left:min(x1 + margin, w)])
                inner.append((y0 - top, y1 - top, x0 - left, x1 - left))
        box_xs = _tower_levels(self.bbox_extra, crops)
        track_xs = _tower_levels(self.track_extra, crops)
        channels = (4 * self.clip_frames, 1, self.mask_param_dim, self.track_dim)
        frames, anchors = features[0].shape[0], self.num_anchors
        computed = iter(zip(*(layer.forward_levels(box_xs) for layer in
                              (self.bbox_layer, self.centerness_layer, self.mask_layer)),
                            self.track_layer.forward_levels(track_xs), inner))
        outputs: list[list[Tensor]] = [[], [], [], []]
        for x, region in zip(features, regions):
            h, w = x.shape[-2:]
            if region is None:
                for out, k in zip(outputs, channels):
                    out.append(x.new_full((frames, h * w * anchors, k), math.nan))
                continue
            *maps, (i0, i1, j0, j1) = next(computed)
            for out, y, k in zip(outputs, maps, channels):
                if region == (0, h, 0, w):  # the whole level: the crop is the map
                    out.append(self._flatten(y, k))
                    continue
                y0, y1, x0, x1 = region
                full = x.new_full((frames, h, w, anchors * k), math.nan)
                full[:, y0:y1, x0:x1] = y.permute(0, 2, 3, 1)[:, i0:i1, j0:j1]
                out.append(full.view(frames, -1, k))
        loc, centerness, mask_coeff, track = (torch.cat(out, dim=1) for out in outputs)
        return loc, centerness.sigmoid(), mask_coeff.tanh(), F.normalize(track, dim=-1)
