"""The reference's feature pyramid: P3-P5 top-down from C3-C5, P6/P7 by stride-2 convs.

* ``lat_layers``: 1×1 convs on the *reversed* inputs (``lat_layers.0`` acts on C5);
* top-down: bilinear upsampling to the lateral's size (``align_corners=False``, ``size=`` so odd sizes
  work) and a sum;
* ``pred_layers``: 3×3 convs each followed by ReLU (``pred_layers.0`` gives P5);
* ``downsample_layers``: P6 = conv(P5) and P7 = conv(P6), 3×3 stride 2, with **no** ReLU.

torchvision's ``FeaturePyramidNetwork`` differs (nearest upsampling, no ReLU, a ReLU inside
``LastLevelP6P7``), so this is a small plain module.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .convolution import WinogradConv2d


class FPN(nn.Module):
    """Feature pyramid with ``num_downsample`` extra stride-2 levels.

    Args:
        in_channels: channels of the inputs, finest first (C3, C4, C5).
        out_channels: width ``F`` of every pyramid level.
        num_downsample: extra levels after the coarsest input (2: P6, P7).
    """

    def __init__(self, in_channels: list[int], out_channels: int, num_downsample: int = 2) -> None:
        super().__init__()
        self.lat_layers = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in reversed(in_channels))
        self.pred_layers = nn.ModuleList(WinogradConv2d(out_channels, out_channels) for _ in in_channels)
        self.downsample_layers = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(num_downsample))
        self.out_channels = out_channels

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """``[C3, C4, C5]`` -> ``[P3, P4, P5, P6, P7]``, each ``[N, F, h_l, w_l]``."""
        levels: list[Tensor] = []
        x: Tensor | None = None
        for lat_layer, feature in zip(self.lat_layers, reversed(features)):
            lateral = lat_layer(feature)
            if x is not None:
                lateral = lateral + F.interpolate(x, size=feature.shape[-2:], mode="bilinear", align_corners=False)
            x = lateral
            levels.append(x)
        outputs = [F.relu(pred(level)) for pred, level in zip(self.pred_layers, levels)][::-1]
        for down in self.downsample_layers:
            outputs.append(down(outputs[-1]))
        return outputs
