"""Box conversions and the SSD box coding CiCo uses for its anchor tubes.

Boxes are normalised to the padded network input. ``x1y1x2y2`` is "point form", ``cxcywh`` is
"centre-size" form. Every function broadcasts over leading dimensions and keeps the input's device
and dtype, so the same helpers serve detection, linking and the losses.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

Variances = tuple[float, float]
DEFAULT_VARIANCES: Variances = (0.1, 0.2)


def point_form(boxes: Tensor) -> Tensor:
    """``[..., 4]`` ``(cx, cy, w, h)`` to ``(x1, y1, x2, y2)``."""
    return torch.cat((boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2), dim=-1)


def center_size(boxes: Tensor) -> Tensor:
    """``[..., 4]`` ``(x1, y1, x2, y2)`` to ``(cx, cy, w, h)``."""
    return torch.cat(((boxes[..., 2:] + boxes[..., :2]) / 2, boxes[..., 2:] - boxes[..., :2]), dim=-1)


def encode(boxes: Tensor, priors: Tensor, variances: Variances = DEFAULT_VARIANCES) -> Tensor:
    """Encode point-form ``boxes`` against centre-size ``priors`` (the regression target).

    ``(cx - p_cx) / (v0 p_w)``, ``(cy - p_cy) / (v0 p_h)``, ``log(w / p_w) / v1``, ``log(h / p_h) / v1``.

    Args:
        boxes: ``[..., 4]`` x1y1x2y2.
        priors: ``[..., 4]`` cxcywh, broadcastable against ``boxes``.

    Returns:
        ``[..., 4]`` encoded offsets; ``encode(decode(loc, p), p) == loc`` up to rounding.
    """
    g_cxcy = ((boxes[..., :2] + boxes[..., 2:]) / 2 - priors[..., :2]) / (variances[0] * priors[..., 2:])
    g_wh = torch.log((boxes[..., 2:] - boxes[..., :2]) / priors[..., 2:]) / variances[1]
    return torch.cat((g_cxcy, g_wh), dim=-1)


def decode(loc: Tensor, priors: Tensor, variances: Variances = DEFAULT_VARIANCES) -> Tensor:
    """Decode SSD offsets ``loc [..., 4]`` against centre-size ``priors [..., 4]`` into x1y1x2y2.

    Follows the reference's arithmetic: ``x1 = cx - w/2`` then ``x2 = x1 + w``.
    """
    cxcy = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    wh = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    x1y1 = cxcy - wh / 2
    return torch.cat((x1y1, x1y1 + wh), dim=-1)


def decode_tubes(loc: Tensor, priors: Tensor, variances: Variances = DEFAULT_VARIANCES) -> Tensor:
    """Decode the box tube every anchor predicts for all ``T`` frames of its clip.

    Args:
        loc: ``[..., N, 4T]`` with channels ``t*4 + (dx, dy, dw, dh)``.
        priors: ``[N, 4]`` cxcywh anchors.

    Returns:
        ``[..., N, T, 4]`` x1y1x2y2 boxes.
    """
    tubes = loc.unflatten(-1, (loc.shape[-1] // 4, 4))
    return decode(tubes, priors.unsqueeze(-2), variances)


def circumscribed(boxes: Tensor) -> Tensor:
    """The box enclosing a tube: ``[..., T, 4]`` x1y1x2y2 to ``[..., 4]``.

    As in the reference, the minimum (maximum) runs over *all* x and y coordinates of the tube, so
    the result is well ordered even for boxes whose corners are swapped.
    """
    xs = boxes[..., 0::2].flatten(-2)
    ys = boxes[..., 1::2].flatten(-2)
    return torch.stack((xs.amin(-1), ys.amin(-1), xs.amax(-1), ys.amax(-1)), dim=-1)


def tube_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Per-frame pairwise IoU of two sets of tubes: ``[n, T, 4]`` x ``[m, T, 4]`` to ``[T, n, m]``."""
    return torch.stack([box_iou(boxes_a[:, t], boxes_b[:, t]) for t in range(boxes_a.shape[1])])
