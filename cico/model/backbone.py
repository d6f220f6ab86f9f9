"""Backbones returning the C3, C4, C5 feature maps (strides 8, 16, 32).

* :class:`ResNetBackbone`: torchvision's ResNet-18/50/101 body (stem + 4 stages, no pooling head) with
  trainable ``BatchNorm2d`` as in the reference, or ``FrozenBatchNorm2d`` on request. Module names follow
  the reference (``conv1``, ``bn1``, ``layer.{0..3}``) so its state dicts load unchanged.
  :meth:`ResNetBackbone.conv_norm_pairs` names its ``conv -> norm`` pairs (for inference folding).
* :class:`SwinBackbone`: Swin-T built from timm's blocks with the reference's settings (the mmdet
  detection Swin: embed 96, depths [2, 2, 6, 2], heads [3, 6, 12, 24], window 7, qkv bias, patch norm,
  drop-path linspace(0, 0.2), per-stage output LayerNorms ``norm0..norm3``) and any input size.

Swin and arbitrary input sizes: the detection Swin zero-pads each block's input to a multiple of the
window *before* the cyclic shift and builds the shifted-window mask (-100) on the padded size. timm's
block shifts first and pads afterwards, which mixes padding into different windows whenever a size is not
a multiple of 7, so :class:`SwinBlock` overrides just that step.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock, window_partition, window_reverse
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50, resnet101
from torchvision.models.resnet import conv1x1
from torchvision.ops import FrozenBatchNorm2d

from .config import ModelConfig

_RESNETS = {"resnet18": resnet18, "resnet50": resnet50, "resnet101": resnet101}


class ResNetBackbone(nn.Module):
    """A torchvision ResNet body returning ``[C3, C4, C5]``.

    Args:
        name: ``resnet18``, ``resnet50`` or ``resnet101``.
        frozen_bn: use ``FrozenBatchNorm2d`` (fixed statistics and affine) instead of ``BatchNorm2d``.
        width: stem/first-stage width (64: torchvision's network); other values build the same layout
            from torchvision's blocks with stage widths ``width·(1, 2, 4, 8)``.
    """

    def __init__(self, name: str, frozen_bn: bool = False, width: int = 64) -> None:
        super().__init__()
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        net = _RESNETS[name](weights=None, norm_layer=norm)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        expansion = 1 if name == "resnet18" else 4
        if width != 64:
            self._narrow(width, norm)
        self.out_channels: list[int] = [2 * width * expansion, 4 * width * expansion, 8 * width * expansion]

    def _narrow(self, width: int, norm: type[nn.Module]) -> None:
        """Rebuild stem and stages at ``width·(1, 2, 4, 8)`` with the same blocks, names and init."""
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = norm(width)
        inplanes = width
        for i, stage in enumerate(self.layer):
            assert isinstance(stage, nn.Sequential)
            block: Any = type(stage[0])
            planes, stride = width * 2 ** i, 1 if i == 0 else 2
            out = planes * block.expansion
            downsample = (None if stride == 1 and inplanes == out
                          else nn.Sequential(conv1x1(inplanes, out, stride), norm(out)))
            blocks = [block(inplanes, planes, stride, downsample, norm_layer=norm)]
            blocks += [block(out, planes, norm_layer=norm) for _ in range(len(stage) - 1)]
            self.layer[i] = nn.Sequential(*blocks)
            inplanes = out
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def conv_norm_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """``(parent, conv name, norm name)`` of every convolution followed by a batch norm."""
        pairs: list[tuple[nn.Module, str, str]] = [(self, "conv1", "bn1")]
        for stage in self.layer:
            for block in stage.children():
                pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(block, f"conv{i}")]
                downsample = getattr(block, "downsample", None)
                if isinstance(downsample, nn.Sequential):
                    pairs.append((downsample, "0", "1"))
        return pairs

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x [N, 3, H, W]`` -> ``[C3 [N, c3, H/8, W/8], C4 [.., H/16, W/16], C5 [.., H/32, W/32]]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for stage in self.layer:
            x = stage(x)
            features.append(x)
        return features[1:]


class SwinBlock(SwinTransformerBlock):
    """timm's Swin block with the detection Swin's window handling: pad to a window multiple, then shift.

    The input ``[N, H, W, C]`` (after ``norm1``) is zero-padded bottom/right to multiples of the window,
    rolled by ``-shift`` on the padded map, attended per window with the -100 shifted-window mask of the
    padded size, rolled back and cropped. Windows and shifts are never shrunk for small maps.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(always_partition=True, dynamic_mask=True)
        super().__init__(*args, **kwargs)
        # the reference stores this constant in its state dicts
        index = self.attn.relative_position_index
        assert isinstance(index, Tensor)
        self.attn.register_buffer("relative_position_index", index, persistent=True)

    def _attn(self, x: Tensor) -> Tensor:
        _, height, width, channels = x.shape
        win_h, win_w = self.window_size
        x = F.pad(x, (0, 0, 0, (win_w - width % win_w) % win_w, 0, (win_h - height % win_h) % win_h))
        padded_h, padded_w = x.shape[1:3]
        shift = self.shift_size
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_area, channels)
        windows = self.attn(windows, mask=self.get_attn_mask(x))
        x = window_reverse(windows.view(-1, win_h, win_w, channels), self.window_size, padded_h, padded_w)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :height, :width]


class SwinStage(nn.Module):
    """One detection-Swin stage: its blocks, then (except for the last stage) a patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, drop_path: list[float],
                 downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim=dim, input_resolution=(window_size, window_size), num_heads=num_heads,
                      window_size=window_size, shift_size=0 if i % 2 == 0 else window_size // 2,
                      mlp_ratio=4.0, qkv_bias=True, drop_path=drop_path[i])
            for i in range(depth))
        self.downsample = PatchMerging(dim=dim) if downsample else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``x [N, H, W, C]`` -> (stage output ``[N, H, W, C]``, merged ``[N, ⌈H/2⌉, ⌈W/2⌉, 2C]`` or None)."""
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else None)


class SwinBackbone(nn.Module):
    """Swin-T as in the reference (the mmdet detection implementation), returning ``[C3, C4, C5]``.

    The input is zero-padded to a multiple of 4 for the patch embedding; any size works. The output norms
    ``norm0..norm3`` are all built like the reference's, ``norm0`` is unused (kept for its state dict and
    parameter count, and frozen so that distributed training sees no unused trainable parameter).
    """

    def __init__(self, embed_dim: int = 96, depths: tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: tuple[int, ...] = (3, 6, 12, 24), window_size: int = 7,
                 drop_path_rate: float = 0.2) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size=None, patch_size=4, in_chans=3, embed_dim=embed_dim,
                                      norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False,
                                      dynamic_img_pad=True)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(SwinStage(dims[i], depth, num_heads[i], window_size, rates[start:start + depth],
                                         downsample=i < len(depths) - 1))
        for i, dim in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
        self.norm0.requires_grad_(False)
        self.out_channels: list[int] = dims[1:]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x [N, 3, H, W]`` -> ``[C3 [N, 192, ⌈H/8⌉, ⌈W/8⌉], C4 [N, 384, ..], C5 [N, 768, ..]]``."""
        # outputs keep the input's memory format (the NHWC tokens are already channels_last)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        x = self.patch_embed(x)
        features = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x)
            if i > 0:
                out = getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2)
                features.append(out.contiguous(memory_format=memory_format))
        return features


def build_backbone(config: ModelConfig) -> ResNetBackbone | SwinBackbone:
    """The backbone named by ``config.backbone``."""
    if config.backbone == "swin_t":
        return SwinBackbone(drop_path_rate=config.drop_path_rate)
    return ResNetBackbone(config.backbone, frozen_bn=config.frozen_bn, width=config.backbone_width)
