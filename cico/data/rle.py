"""Run-length encoded masks (COCO RLE through pycocotools).

YouTube-VIS files hold one segmentation per frame as a polygon list, an uncompressed RLE
(``counts`` a list of ints) or a compressed RLE (``counts`` a string); ``None``, ``[]`` and ``{}``
mean the object is absent in that frame.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

RLE = dict[str, Any]


def to_rle(segmentation: Any, height: int, width: int) -> RLE | None:
    """Compressed RLE of one frame's segmentation, or ``None`` when the object is absent.

    Polygons are rasterised at ``height`` x ``width`` and their parts unioned; an uncompressed RLE
    keeps its own ``size``; a compressed RLE is returned as is (``counts`` as bytes or str).
    """
    if not segmentation:
        return None
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        # pycocotools stores counts as uint32: NumPy 2 refuses a run outside that range, NumPy 1 wraps it
        if any(isinstance(c, (int, float)) and not 0 <= c < 2**32 for c in segmentation["counts"]):
            raise ValueError("RLE counts must be run lengths in [0, 2**32)")
        return mask_utils.frPyObjects(segmentation, *segmentation["size"])
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        return segmentation
    raise ValueError(f"not a polygon list or RLE: {type(segmentation).__name__}")


def encode(mask: np.ndarray) -> RLE:
    """Compressed RLE (``counts`` as str, JSON-ready) of a binary mask ``[H, W]``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode(rle: RLE) -> np.ndarray:
    """Binary mask ``[H, W]`` (uint8) of a compressed RLE (``counts`` str or bytes)."""
    if isinstance(rle["counts"], str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle)


# pycocotools' area() makes its output with a uint8 count: NumPy 2 raises OverflowError beyond 255 masks
_AREA_BATCH = 255


def areas(rles: Sequence[RLE]) -> np.ndarray:
    """``[N]`` int64 foreground pixel counts of compressed RLEs (``counts`` str or bytes), any ``N``.

    Raises what pycocotools raises for a malformed RLE (``ValueError``, ``TypeError``, ``KeyError``, ...).
    """
    out = np.zeros(len(rles), dtype=np.int64)
    for start in range(0, len(rles), _AREA_BATCH):
        part = list(rles[start : start + _AREA_BATCH])
        out[start : start + len(part)] = mask_utils.area(part)
    return out


def area(rle: RLE) -> int:
    """Number of foreground pixels of a compressed RLE."""
    if isinstance(rle["counts"], str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return int(mask_utils.area(rle))
