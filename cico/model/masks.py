"""Clip-level instance masks from prototypes: Yolact linear combination, CondInst dynamic
convolutions with the Gaussian relative-coordinate map, and the box crop.

Everything is vectorised over instances, works on any device and dtype and is differentiable with
respect to the prototypes and the coefficients, so detection (×1.1 / ×1.5 crops), the tracker (×1.2,
no minimum size) and the mask loss (×1.5 around the ground truth) share these functions.
Shapes: ``n`` instances, ``T`` frames, ``h × w`` the prototype resolution (input / 4), boxes are
normalised x1y1x2y2.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from cico.model.box_coder import center_size, point_form

MaskHead = Literal["yolact", "condinst"]

# CondInst dynamic head: 8 mask-feature channels plus the Gaussian map in, 3 layers of
# 1x1 convs; the 161 parameters are w0 [8, 9], w1 [8, 8], w2 [1, 8], b0 [8], b1 [8], b2 [1].
CONDINST_CHANNELS = 8
CONDINST_SPLITS = (72, 64, 8, 8, 8, 1)
CONDINST_NUM_PARAMS = sum(CONDINST_SPLITS)

# Upper bound on the elements of one CondInst hidden activation ``[chunk, 8, T, h*w]``; instances
# are processed in chunks below it (16M float32 = 64 MiB).
_CONDINST_CHUNK_ELEMENTS = 1 << 24


def enlarge_boxes(boxes: Tensor, factor: float, min_size: float | None = None) -> Tensor:
    """Scale ``boxes [..., 4]`` (x1y1x2y2) about their centres by ``factor``.

    With ``min_size``, width and height are clamped from below after scaling (detection and the
    mask loss use 0.1; the tracker's ×1.2 uses no minimum).
    """
    cxcywh = center_size(boxes)
    wh = cxcywh[..., 2:] * factor
    if min_size is not None:
        wh = wh.clamp(min=min_size)
    return point_form(torch.cat((cxcywh[..., :2], wh), dim=-1))


def _crop_bounds(lo: Tensor, hi: Tensor, size: int, padding: int) -> tuple[Tensor, Tensor]:
    """Reference ``sanitize_coordinates``: clamp to [0, 1], scale, floor, order, pad, clamp to the map."""
    lo = (lo.clamp(0, 1) * size).long()
    hi = (hi.clamp(0, 1) * size).long()
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    return (lo - padding).clamp(min=0), (hi + padding).clamp(max=size)


def crop_masks(masks: Tensor, boxes: Tensor, padding: int = 1, *, inplace: bool = False) -> Tensor:
    """Zero every pixel of ``masks [n, T, h, w]`` outside its box ``boxes [n, 4]`` (x1y1x2y2).

    The box is converted to pixel bounds like the reference's ``crop``: coordinates are clamped to
    [0, 1], multiplied by ``w`` (``h``), floored, ordered, then ``x1 -= padding`` (>= 0) and
    ``x2 += padding`` (<= w); pixels with ``x1 <= col < x2`` and ``y1 <= row < y2`` are kept.
    With ``inplace`` the pixels are zeroed in ``masks`` itself (no copy; not for tensors autograd needs).
    """
    h, w = masks.shape[-2:]
    x1, x2 = _crop_bounds(boxes[:, 0], boxes[:, 2], w, padding)
    y1, y2 = _crop_bounds(boxes[:, 1], boxes[:, 3], h, padding)
    cols = torch.arange(w, device=masks.device)
    rows = torch.arange(h, device=masks.device)
    keep_x = (cols >= x1[:, None]) & (cols < x2[:, None])  # [n, w]
    keep_y = (rows >= y1[:, None]) & (rows < y2[:, None])  # [n, h]
    keep = keep_y[:, None, :, None] & keep_x[:, None, None, :]  # [n, 1, h, w]
    return masks.masked_fill_(~keep, 0) if inplace else masks * keep.to(masks.dtype)


def gaussian_rel_coords(boxes: Tensor, h: int, w: int) -> Tensor:
    """CiCo's one-channel Gaussian relative-position map, ``boxes [n, 4]`` to ``[n, h, w]``.

    In proto pixels, the centre is rounded with ``torch.round`` (half to even), ``sigma = max(1.5 *
    size, 1)`` per axis and the grid uses integer pixel indices (no +0.5). The reference's
    "small object" branch scales sigma by 1 and is therefore left out.
    """
    scale = boxes.new_tensor([w, h, w, h])
    cxcywh = center_size(boxes * scale)
    centre = torch.round(cxcywh[:, :2])
    sigma = (1.5 * cxcywh[:, 2:]).clamp(min=1)
    x = torch.arange(w, device=boxes.device, dtype=boxes.dtype)
    y = torch.arange(h, device=boxes.device, dtype=boxes.dtype)
    dx = (x[None, :] - centre[:, 0:1]) / sigma[:, 0:1]  # [n, w]
    dy = (y[None, :] - centre[:, 1:2]) / sigma[:, 1:2]  # [n, h]
    return torch.exp(-0.5 * (dx[:, None, :] ** 2 + dy[:, :, None] ** 2))


def yolact_masks(proto: Tensor, coeff: Tensor) -> Tensor:
    """Yolact linear combination: ``sigmoid(proto @ coeff^T)``, uncropped.

    Args:
        proto: ``[h, w, T, D]`` clip prototypes.
        coeff: ``[n, D]`` one coefficient vector per instance, shared by the T frames.

    Returns:
        ``[n, T, h, w]`` mask probabilities.
    """
    h, w, t, d = proto.shape
    frames = proto.permute(2, 0, 1, 3).reshape(t * h * w, d)
    # In place on the fresh product (mm does not save its output): one mask-sized tensor, not two.
    return (coeff @ frames.t()).sigmoid_().reshape(-1, t, h, w)


def _condinst_logits(feats: Tensor, gauss: Tensor, params: Tensor, clip_frames: int) -> Tensor:
    """The dynamic 1x1 conv stack for ``params [n, 161]`` on ``feats [8, T*P]`` and ``gauss [n, P]``.

    Returns ``[n, T*P]`` logits. Layer 0 is one GEMM over all instances (the features are shared)
    plus the Gaussian channel's contribution; layers 1 and 2 are batched matmuls with fused bias.
    """
    n, c = params.shape[0], CONDINST_CHANNELS
    w0, w1, w2, b0, b1, b2 = torch.split(params, list(CONDINST_SPLITS), dim=1)
    w0 = w0.reshape(n, c, c + 1)  # out-channel major; input channel 0 is the Gaussian map
    gauss_term = torch.addcmul(b0[:, :, None], w0[:, :, 0, None], gauss[:, None, :])  # [n, c, P]
    # In-place bias/ReLU are autograd-safe here: mm and baddbmm do not save their outputs.
    x = (w0[:, :, 1:].reshape(n * c, c) @ feats).reshape(n, c, clip_frames, -1)
    x = x.add_(gauss_term[:, :, None, :]).relu_().reshape(n, c, -1)
    x = torch.baddbmm(b1[:, :, None], w1.reshape(n, c, c), x).relu_()
    return torch.baddbmm(b2[:, :, None], w2[:, None, :], x).squeeze(1)


def condinst_masks(proto: Tensor, params: Tensor, boxes_cir: Tensor) -> Tensor:
    """CondInst-style masks from per-instance dynamic filters, uncropped.

    Input channels are ``[Gaussian map of boxes_cir, 8 mask features]``; layers are
    conv-relu-conv-relu-conv-sigmoid, all 1x1 and shared by the T frames. Implemented as batched
    matrix products over all instances (in chunks that bound the memory), not a per-instance loop.
    As in the reference the Gaussian map carries no gradient to the boxes.

    Args:
        proto: ``[h, w, T, 8]`` mask features.
        params: ``[n, 161]`` dynamic parameters (split w0 72, w1 64, w2 8, b0 8, b1 8, b2 1).
        boxes_cir: ``[n, 4]`` circumscribed boxes (not enlarged) centring the Gaussian map.

    Returns:
        ``[n, T, h, w]`` mask probabilities.
    """
    h, w, t, c = proto.shape
    if c != CONDINST_CHANNELS or params.shape[-1] != CONDINST_NUM_PARAMS:
        raise ValueError(
            f"CondInst expects {CONDINST_CHANNELS} mask features and {CONDINST_NUM_PARAMS} parameters, "
            f"got {c} and {params.shape[-1]}"
        )
    if params.shape[0] == 0:
        return proto.new_zeros(0, t, h, w)
    feats = proto.permute(3, 2, 0, 1).reshape(c, t * h * w)
    gauss = gaussian_rel_coords(boxes_cir.detach().to(proto.dtype), h, w).reshape(-1, h * w)
    chunk = max(1, _CONDINST_CHUNK_ELEMENTS // (c * t * h * w))
    logits = [_condinst_logits(feats, g, p, t) for g, p in zip(gauss.split(chunk), params.split(chunk))]
    return torch.sigmoid(torch.cat(logits)).reshape(-1, t, h, w)


def clip_masks(
    kind: MaskHead,
    proto: Tensor,
    coeff: Tensor,
    boxes_cir: Tensor,
    crop_factor: float,
    min_size: float | None,
) -> Tensor:
    """Generate and crop the clip masks of ``n`` instances.

    Args:
        kind: ``"yolact"`` (linear combination) or ``"condinst"`` (dynamic convs, Gaussian map
            centred on the non-enlarged ``boxes_cir``).
        proto: ``[h, w, T, D]`` prototypes / mask features of the clip.
        coeff: ``[n, D]`` Yolact coefficients or ``[n, 161]`` CondInst parameters.
        boxes_cir: ``[n, 4]`` circumscribed boxes (x1y1x2y2, normalised).
        crop_factor: crop box = ``boxes_cir`` scaled by this about its centre (test: Yolact 1.1,
            CondInst 1.5; training 1.5; tracker 1.2).
        min_size: lower clamp of the crop box's width/height (0.1, or ``None`` in the tracker).

    Returns:
        ``[n, T, h, w]`` probabilities, zero outside the 1-pixel-padded crop box.
    """
    if kind == "yolact":
        masks = yolact_masks(proto, coeff)
    elif kind == "condinst":
        masks = condinst_masks(proto, coeff, boxes_cir)
    else:
        raise ValueError(f"unknown mask head {kind!r}; expected 'yolact' or 'condinst'")
    # The masks are this function's own: crop them in place unless autograd needs them (sigmoid saves them).
    inplace = not (torch.is_grad_enabled() and masks.requires_grad)
    return crop_masks(masks, enlarge_boxes(boxes_cir, crop_factor, min_size), inplace=inplace)


def mask_iou(masks_a: Tensor, masks_b: Tensor) -> Tensor:
    """Pairwise IoU of binary masks per leading index, as one matrix product.

    Args:
        masks_a: ``[..., n, h, w]`` binary (bool or 0/1) masks.
        masks_b: ``[..., m, h, w]``.

    Returns:
        ``[..., n, m]`` float32: intersection / max(union, 1) (0 for two empty masks, as in the
        reference). Pixels are counted in float32, exact up to 2**24 pixels per mask.
    """
    a = masks_a.flatten(-2).float()
    b = a if masks_b is masks_a else masks_b.flatten(-2).float()
    inter = a @ b.transpose(-1, -2)
    union = a.sum(-1)[..., :, None] + b.sum(-1)[..., None, :] - inter
    return inter / union.clamp(min=1)
