"""Box conversions, SSD coding of anchor tubes, circumscribed boxes and per-frame tube IoU."""
from __future__ import annotations

import pytest
import torch

from cico.model.box_coder import (
    center_size,
    circumscribed,
    decode,
    decode_tubes,
    encode,
    point_form,
    tube_iou,
)


def test_point_form_and_center_size_are_inverse_and_exact_on_a_known_box():
    cxcywh = torch.tensor([[0.5, 0.25, 0.2, 0.1]])
    xyxy = point_form(cxcywh)
    torch.testing.assert_close(xyxy, torch.tensor([[0.4, 0.2, 0.6, 0.3]]))
    torch.testing.assert_close(center_size(xyxy), cxcywh)


def test_decode_matches_the_ssd_formula_with_variances():
    prior = torch.tensor([0.5, 0.5, 0.2, 0.4])
    loc = torch.tensor([1.0, -2.0, 0.5, -1.0])
    cx, cy = 0.5 + 1.0 * 0.1 * 0.2, 0.5 - 2.0 * 0.1 * 0.4
    w, h = 0.2 * torch.exp(torch.tensor(0.1)), 0.4 * torch.exp(torch.tensor(-0.2))
    expected = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    torch.testing.assert_close(decode(loc, prior), expected)
    # other variances change the result
    assert not torch.allclose(decode(loc, prior, (0.2, 0.2)), expected)


def test_encode_inverts_decode_with_broadcasting_over_leading_dims():
    g = torch.Generator().manual_seed(0)
    priors = torch.rand(7, 4, generator=g, dtype=torch.float64) * 0.5 + 0.1
    loc = torch.randn(2, 3, 7, 4, generator=g, dtype=torch.float64)
    boxes = decode(loc, priors)
    assert boxes.shape == (2, 3, 7, 4) and boxes.dtype == torch.float64
    torch.testing.assert_close(encode(boxes, priors), loc)


def test_decode_tubes_reads_channels_frame_major():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.2, 0.3, 0.4]])
    loc = torch.randn(5, 2, 3 * 4)  # [B*T, N, 4T]
    tubes = decode_tubes(loc, priors)
    assert tubes.shape == (5, 2, 3, 4)
    for t in range(3):
        torch.testing.assert_close(tubes[:, :, t], decode(loc[..., 4 * t:4 * t + 4], priors))


def test_circumscribed_encloses_all_frames():
    tube = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.0, 0.3, 0.2, 0.5], [0.2, 0.1, 0.6, 0.3]]])
    torch.testing.assert_close(circumscribed(tube), torch.tensor([[0.0, 0.1, 0.6, 0.5]]))
    # reference semantics: min/max over all coordinates, so swapped corners still give an ordered box
    swapped = torch.tensor([[[0.5, 0.6, 0.1, 0.2]]])
    torch.testing.assert_close(circumscribed(swapped), torch.tensor([[0.1, 0.2, 0.5, 0.6]]))


def test_tube_iou_is_per_frame():
    a = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]]])
    b = torch.tensor([[[0.0, 0.0, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]],
                      [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.25]]])
    iou = tube_iou(a, b)
    assert iou.shape == (2, 1, 2)
    torch.testing.assert_close(iou, torch.tensor([[[0.5, 1.0]], [[0.0, 0.5]]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    priors = torch.rand(4, 4, dtype=dtype) + 0.1
    assert decode_tubes(torch.zeros(4, 8, dtype=dtype), priors).dtype == dtype
