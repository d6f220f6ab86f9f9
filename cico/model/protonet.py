"""The clip-level mask head, CMH / "ProtoNet".

1. ``mask_refine``: per source level P3, P4, P5 a 3×3 conv + BN + ReLU; the sum
   ``refine(P3) + aligned_bilinear(refine(P4), 2) + aligned_bilinear(refine(P5), 4)`` at stride 8;
2. ``proto_net``: three 3×3×3 convs over the clip, each + BN + ReLU, then a ×2 spatial upsampling
   (the reference's trilinear ``(1, 2, 2)``, ``align_corners=True``: exact per-frame bilinear since the
   temporal size is unchanged) and ReLU: stride 4;
3. ``proto_conv``: 3×3 conv + BN + ReLU, 1×1 conv to ``D'`` channels; then ReLU.

Output layout ``proto [B, h4, w4, T, D']``: Yolact prototypes (``D' = 32``) or CondInst mask features
(``D' = 8``). Clips stay frame-major ``[B·T, C, h, w]``, so the reference's BatchNorm3d is a BatchNorm2d over
the frames (the same statistics and the same state-dict entries).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .convolution import ClipConv3d, WinogradConv2d


def aligned_bilinear(x: Tensor, factor: int) -> Tensor:
    """CondInst's aligned bilinear upsampling of ``x [N, C, h, w]`` by an integer ``factor``.

    Replicate-pad right/bottom by one, resize with ``align_corners=True`` to ``factor·size + 1``,
    replicate-pad left/top by ``factor // 2``, crop to ``factor·size``.
    """
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[:, :, :factor * h, :factor * w]


def _conv_bn_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class ClipProtoNet(nn.Module):
    """Clip prototypes from P3-P5.

    Args:
        in_channels: FPN width ``F``.
        channels: width of ``proto_net`` / ``proto_conv``.
        mask_dim: output channels ``D'``.
        clip_frames: ``T``.
        num_levels: source levels (P3, P4, P5).
        num_3d_layers: 3D conv layers in ``proto_net``.
    """

    def __init__(self, in_channels: int, channels: int, mask_dim: int, clip_frames: int, num_levels: int = 3,
                 num_3d_layers: int = 3) -> None:
        super().__init__()
        self.clip_frames = clip_frames
        self.mask_refine = nn.ModuleList(
            nn.Sequential(*_conv_bn_relu(WinogradConv2d(in_channels, in_channels), in_channels))
            for _ in range(num_levels))
        layers: list[nn.Module] = []
        for i in range(num_3d_layers):
            layers += _conv_bn_relu(ClipConv3d(in_channels if i == 0 else channels, channels, clip_frames), channels)
        layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), nn.ReLU(inplace=True)]
        self.proto_net = nn.Sequential(*layers)
        self.proto_conv = nn.Sequential(*_conv_bn_relu(WinogradConv2d(channels, channels), channels),
                                        nn.Conv2d(channels, mask_dim, 1))

    def conv_norm_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """``(parent, conv name, norm name)`` of every convolution followed by a batch norm."""
        blocks = [*self.mask_refine, self.proto_net, self.proto_conv]
        return [(block, str(i - 1), str(i)) for block in blocks for i, layer in enumerate(block)
                if i > 0 and isinstance(layer, nn.BatchNorm2d)]

    def forward(self, features: list[Tensor]) -> Tensor:
        """``features``: P3, P4, P5 ``[B·T, F, h_l, w_l]`` (stride 8, 16, 32) -> ``proto [B, h4, w4, T, D']``."""
        x = self.mask_refine[0](features[0])
        for level in range(1, len(self.mask_refine)):
            x = x + aligned_bilinear(self.mask_refine[level](features[level]), 2 ** level)
        x = F.relu(self.proto_conv(self.proto_net(x)))
        return x.unflatten(0, (-1, self.clip_frames)).permute(0, 3, 4, 1, 2)
