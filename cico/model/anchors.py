"""Anchors ("priors") of the clip prediction head.

Every location of every FPN level gets one anchor per aspect ratio, 3 cells large:
``cx = (x + 0.5) / w_l``, ``cy = (y + 0.5) / h_l``, ``w = 3·sqrt(ar) / w_l``, ``h = 3 / sqrt(ar) / h_l``,
normalised to the padded input and not clipped. Order: level P3 -> P7, then row ``y``, column ``x``,
aspect ratio (``[1, 0.5, 2]`` in the presets), matching the head's flattened outputs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

ANCHOR_CELLS = 3.0
"""Anchor side in feature-map cells (the reference's ``scale / scale_level0 · 3``)."""


def make_anchors(feature_sizes: list[tuple[int, int]], aspect_ratios: tuple[float, ...], *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Anchors for feature maps of the given ``(h, w)`` sizes.

    Computed in float64 (like the reference's Python floats) and cast once.

    Returns:
        priors: ``[N, 4]`` ``(cx, cy, w, h)``, ``N = A · Σ h_l·w_l``.
        levels: ``[N]`` int64 level index (0 = P3).
    """
    priors, levels = [], []
    ratios = torch.tensor([math.sqrt(a) for a in aspect_ratios], dtype=torch.float64, device=device)
    num = len(aspect_ratios)
    for level, (h, w) in enumerate(feature_sizes):
        cy = (torch.arange(h, dtype=torch.float64, device=device) + 0.5) / h
        cx = (torch.arange(w, dtype=torch.float64, device=device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        boxes = torch.stack((
            grid_x[..., None].expand(h, w, num),
            grid_y[..., None].expand(h, w, num),
            (ANCHOR_CELLS * ratios / w).expand(h, w, num),
            (ANCHOR_CELLS / ratios / h).expand(h, w, num),
        ), dim=-1)
        priors.append(boxes.reshape(-1, 4))
        levels.append(torch.full((h * w * num,), level, dtype=torch.int64, device=device))
    return torch.cat(priors).to(dtype), torch.cat(levels)


class AnchorGenerator(nn.Module):
    """Anchors for a list of feature maps, cached per (sizes, device, dtype).

    Args:
        aspect_ratios: anchor aspect ratios (w/h) in their order at every location.
    """

    def __init__(self, aspect_ratios: tuple[float, ...]) -> None:
        super().__init__()
        self.aspect_ratios = tuple(aspect_ratios)
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per location."""
        return len(self.aspect_ratios)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Anchors for ``features`` (``[N, F, h_l, w_l]`` each): ``priors [N, 4]`` in the features' device and
        floating dtype (float32 for integer or low-precision inputs keeps the anchors exact enough), and
        ``levels [N]``."""
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        device = features[0].device
        dtype = torch.float64 if features[0].dtype == torch.float64 else torch.float32
        key = (tuple(sizes), device, dtype)
        if key not in self._cache:
            if len(self._cache) >= 16:
                self._cache.clear()
            self._cache[key] = make_anchors(sizes, self.aspect_ratios, device=device, dtype=dtype)
        return self._cache[key]


def anchor_regions(anchors: Tensor, feature_sizes: list[tuple[int, int]],
                   num_anchors: int) -> list[tuple[int, int, int, int] | None]:
    """Per level, the smallest window ``(y0, y1, x0, x1)`` (half-open, in cells) holding the locations of the
    given anchor indices ``[k]`` (into the ``N`` anchors of ``feature_sizes``, in the order above); ``None`` for
    a level without any."""
    regions: list[tuple[int, int, int, int] | None] = []
    start = 0
    for h, w in feature_sizes:
        end = start + h * w * num_anchors
        cells = (anchors[(anchors >= start) & (anchors < end)] - start) // num_anchors
        if cells.numel() == 0:
            regions.append(None)
        else:
            ys, xs = cells // w, cells % w
            regions.append((int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1))
        start = end
    return regions
