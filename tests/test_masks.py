"""Clip-mask generation (Yolact / CondInst), the crop rules and the Gaussian relative-coordinate map."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import cico.model.masks as masks_mod
from cico.model.masks import (
    clip_masks,
    condinst_masks,
    crop_masks,
    enlarge_boxes,
    gaussian_rel_coords,
    mask_iou,
    yolact_masks,
)


def _kept_region(box, h=8, w=10, padding=1):
    out = crop_masks(torch.ones(1, 1, h, w), torch.tensor([box]), padding)[0, 0]
    rows = out.any(1).nonzero().flatten().tolist()
    cols = out.any(0).nonzero().flatten().tolist()
    return (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) if rows else None


def test_crop_floors_pads_and_keeps_half_open_ranges():
    # x: 0.26*10=2.6 -> 2 -> 1 ; 0.5*10=5 -> 5 -> 6 ; y: 0.3*8=2.4 -> 2 -> 1 ; 0.74*8=5.92 -> 5 -> 6
    assert _kept_region([0.26, 0.3, 0.5, 0.74]) == (1, 6, 1, 6)
    assert _kept_region([0.26, 0.3, 0.5, 0.74], padding=0) == (2, 5, 2, 5)


def test_crop_clamps_to_the_map_and_orders_swapped_corners():
    assert _kept_region([-0.5, -1.0, 1.5, 2.0]) == (0, 8, 0, 10)
    assert _kept_region([0.5, 0.74, 0.26, 0.3]) == (1, 6, 1, 6)
    # a degenerate box still keeps the padding ring around its floor position
    assert _kept_region([0.5, 0.5, 0.5, 0.5]) == (3, 5, 4, 6)


def test_crop_zeroes_outside_and_keeps_values_inside():
    m = torch.rand(2, 3, 8, 10) + 0.5
    boxes = torch.tensor([[0.0, 0.0, 0.3, 0.3], [0.5, 0.5, 1.0, 1.0]])
    out = crop_masks(m, boxes)
    # box 0: rows [0, 0.3*8 -> 2 (+1) = 3), cols [0, 0.3*10 -> 3 (+1) = 4)
    assert torch.equal(out[0, :, :3, :4], m[0, :, :3, :4])
    assert out[0, :, 3:].eq(0).all() and out[0, :, :, 4:].eq(0).all()
    assert out[1, :, :3].eq(0).all() and torch.equal(out[1, :, 3:, 4:], m[1, :, 3:, 4:])
    in_place = crop_masks(m, boxes, inplace=True)
    assert in_place is m and torch.equal(m, out)


def test_enlarge_boxes_scales_about_the_centre_and_clamps_only_when_asked():
    box = torch.tensor([[0.4, 0.4, 0.6, 0.45]])
    torch.testing.assert_close(enlarge_boxes(box, 1.5), torch.tensor([[0.35, 0.3875, 0.65, 0.4625]]))
    torch.testing.assert_close(enlarge_boxes(box, 1.5, 0.1), torch.tensor([[0.35, 0.375, 0.65, 0.475]]))


def test_gaussian_map_centre_rounding_sigma_and_integer_grid():
    h, w = 6, 8
    # x: 0.25*8=2, 0.5*8=4 -> cx=3, bw=2 -> sigma_x=3 ; y: 0.0, 1/12*6=0.5 -> cy=round(0.25)=0, sigma_y=max(.75,1)=1
    g = gaussian_rel_coords(torch.tensor([[0.25, 0.0, 0.5, 1 / 12]]), h, w)[0]
    assert g.shape == (h, w)
    assert g[0, 3] == 1.0 and g.argmax() == 3
    assert math.isclose(g[2, 5].item(), math.exp(-0.5 * ((2 / 3) ** 2 + 2 ** 2)), rel_tol=1e-6)
    # round half to even: a centre at 2.5 px rounds to 2, at 3.5 px to 4
    g = gaussian_rel_coords(torch.tensor([[0.25, 0.0, 0.375, 1.0], [0.375, 0.0, 0.5, 1.0]]), h, w)
    assert g[0, 0].argmax() == 2 and g[1, 0].argmax() == 4


def test_yolact_masks_are_sigmoid_of_the_linear_combination():
    proto = torch.randn(5, 7, 3, 4)
    coeff = torch.randn(2, 4)
    out = yolact_masks(proto, coeff)
    assert out.shape == (2, 3, 5, 7)
    expected = torch.sigmoid((proto[:, :, 1] * coeff[1]).sum(-1))
    torch.testing.assert_close(out[1, 1], expected)


def _naive_condinst(proto, params, boxes):
    """One instance and one frame at a time with real 1x1 convolutions."""
    h, w, t, _ = proto.shape
    out = []
    for p, box in zip(params, boxes):
        w0, w1, w2, b0, b1, b2 = torch.split(p, [72, 64, 8, 8, 8, 1])
        gauss = gaussian_rel_coords(box[None], h, w)
        frames = []
        for f in range(t):
            x = torch.cat([gauss, proto[:, :, f].permute(2, 0, 1)])[None]  # [1, 9, h, w]
            x = F.relu(F.conv2d(x, w0.reshape(8, 9, 1, 1), b0))
            x = F.relu(F.conv2d(x, w1.reshape(8, 8, 1, 1), b1))
            frames.append(torch.sigmoid(F.conv2d(x, w2.reshape(1, 8, 1, 1), b2))[0, 0])
        out.append(torch.stack(frames))
    return torch.stack(out)


def _condinst_inputs(n=5, h=12, w=16, t=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    proto = torch.relu(torch.randn(h, w, t, 8, generator=g, dtype=dtype))
    params = torch.tanh(torch.randn(n, 161, generator=g, dtype=dtype))
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 0.6
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(n, 2, generator=g, dtype=dtype) * 0.3], 1)
    return proto, params, boxes


def test_condinst_matches_a_naive_per_instance_convolution():
    proto, params, boxes = _condinst_inputs()
    out = condinst_masks(proto, params, boxes)
    assert out.shape == (5, 3, 12, 16)
    torch.testing.assert_close(out, _naive_condinst(proto, params, boxes), atol=1e-6, rtol=1e-5)


def test_condinst_chunking_gives_the_same_result(monkeypatch):
    proto, params, boxes = _condinst_inputs(n=7)
    full = condinst_masks(proto, params, boxes)
    monkeypatch.setattr(masks_mod, "_CONDINST_CHUNK_ELEMENTS", 2 * 8 * 3 * 12 * 16)
    torch.testing.assert_close(condinst_masks(proto, params, boxes), full)


def test_condinst_rejects_wrong_parameter_counts():
    proto, params, boxes = _condinst_inputs()
    with pytest.raises(ValueError, match="161"):
        condinst_masks(proto, params[:, :160], boxes)


@pytest.mark.parametrize("kind", ["yolact", "condinst"])
def test_clip_masks_crop_with_the_enlarged_box_and_handle_no_instances(kind):
    proto, params, boxes = _condinst_inputs(n=3)
    coeff = params if kind == "condinst" else params[:, :8]
    out = clip_masks(kind, proto, coeff, boxes, 1.5, 0.1)
    uncropped = condinst_masks(proto, params, boxes) if kind == "condinst" else yolact_masks(proto, coeff)
    torch.testing.assert_close(out, crop_masks(uncropped, enlarge_boxes(boxes, 1.5, 0.1)))
    assert (out == 0).any() and (out > 0).any()
    empty = clip_masks(kind, proto, coeff[:0], boxes[:0], 1.1, 0.1)
    assert empty.shape == (0, 3, 12, 16)


def test_clip_masks_rejects_an_unknown_head():
    proto, params, boxes = _condinst_inputs(n=1)
    with pytest.raises(ValueError, match="unknown mask head"):
        clip_masks("solo", proto, params, boxes, 1.1, 0.1)


@pytest.mark.parametrize("kind", ["yolact", "condinst"])
def test_clip_masks_are_differentiable(kind):
    proto, params, boxes = _condinst_inputs(n=2, h=5, w=6, t=2, dtype=torch.float64)
    coeff = params if kind == "condinst" else params[:, :8]
    proto.requires_grad_(True)
    coeff = coeff.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, c: clip_masks(kind, p, c, boxes, 1.5, 0.1), (proto, coeff))


def test_mask_iou_counts_pixels_and_returns_zero_for_two_empty_masks():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[0, :2, :2] = True  # 4 px
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    b[0, :2, :] = True  # 8 px, overlaps a[0] by 4
    b[1, 2:, 2:] = True  # disjoint
    iou = mask_iou(a, b)
    torch.testing.assert_close(iou, torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    batched = mask_iou(torch.stack([a, a]), torch.stack([b, b]))
    assert batched.shape == (2, 2, 3) and torch.equal(batched[1], iou)
