"""Clip matching (spec §3.2-§3.3) on hand-made clips whose expected assignment is worked out here."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from cico.model.box_coder import center_size, encode, point_form
from cico.training.matcher import MatchConfig, _matching_boxes, match_batch, match_clip, supplement_absent_boxes


def _nested_anchor(box: tuple[float, float, float, float], iou: float) -> list[float]:
    """An anchor (cx, cy, w, h) centred in ``box`` whose IoU with it is ``iou`` (same aspect ratio)."""
    x1, y1, x2, y2 = box
    s = math.sqrt(iou)
    return [(x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * s, (y2 - y1) * s]


def _tube(box: list[float], T: int) -> torch.Tensor:
    return torch.tensor([box] * T)


def test_effective_thresholds_are_0476_and_0381() -> None:
    gt = (0.2, 0.2, 0.6, 0.6)
    ious = [1.0, 0.49, 0.47, 0.39, 0.37]
    priors = torch.tensor([_nested_anchor(gt, v) for v in ious] + [[0.9, 0.9, 0.1, 0.1]])
    got = box_iou(torch.tensor([gt]), point_form(priors))[0]
    assert torch.allclose(got[:5], torch.tensor(ious), atol=1e-5)
    boxes = _tube(list(gt), 3)[None]
    conf, matched, _ = match_clip(boxes, torch.tensor([7]), priors)
    # 1.0 forced, 0.49 > 0.476 positive, 0.47 and 0.39 neutral, 0.37 < 0.381 negative, far anchor negative
    expected = torch.tensor([7, 7, -1, -1, 0, 0])
    assert torch.equal(conf, expected.expand(3, -1))
    assert torch.equal(matched[:, :2], torch.zeros(3, 2, dtype=torch.long))


def test_without_the_boost_the_nominal_thresholds_apply() -> None:
    gt = (0.2, 0.2, 0.6, 0.6)
    priors = torch.tensor([_nested_anchor(gt, v) for v in (1.0, 0.49, 0.39)])
    cfg = MatchConfig(boost_all_objects=False)  # the object is large: no boost at all
    conf, _, _ = match_clip(_tube(list(gt), 3)[None], torch.tensor([1]), priors, cfg)
    assert conf[0].tolist() == [1, -1, 0]


def test_anchor_matching_two_objects_is_neutral() -> None:
    a, b = (0.1, 0.1, 0.5, 0.5), (0.15, 0.1, 0.55, 0.5)
    middle = (0.125, 0.1, 0.525, 0.5)
    priors = center_size(torch.tensor([a, b, middle]))
    ious = box_iou(torch.tensor([a, b]), torch.tensor([middle]))[:, 0]
    assert (ious > 0.5).all()  # > 0.5 with both objects: best overlap := 0.45 (x1.05 = 0.4725)
    boxes = torch.stack([_tube(list(a), 2), _tube(list(b), 2)])
    conf, matched, _ = match_clip(boxes, torch.tensor([3, 5]), priors)
    assert conf[0].tolist() == [3, 5, -1]  # the exact anchors are forced matches, the middle neutral
    assert matched[0, :2].tolist() == [0, 1]


def _stall_clip() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    X, Y, Z, W = (0.0, 0.0, 0.2, 0.2), (0.6, 0.6, 0.8, 0.8), (0.6, 0.1, 0.8, 0.3), (0.25, 0.0, 0.45, 0.2)
    w_anchor = (0.1, 0.0, 0.3, 0.2)  # IoU 1/3 with X (its best object), 1/7 with W (W's best anchor)
    priors = torch.cat([center_size(torch.tensor([X, w_anchor])),
                        torch.tensor([_nested_anchor(Y, 0.3), _nested_anchor(Z, 0.2)])])
    boxes = torch.stack([_tube(list(o), 1) for o in (X, Y, Z, W)])
    ious = box_iou(torch.tensor([X, Y, Z, W]), point_form(priors))
    assert ious.amax(dim=1).tolist() == pytest.approx([1.0, 0.3, 0.2, 1 / 7], abs=1e-5)
    assert ious[0, 1] == pytest.approx(1 / 3, abs=1e-5)
    return boxes, torch.tensor([1, 2, 3, 4]), priors  # anchors: x, w, y, z


def test_forced_matches_and_the_reference_stall() -> None:
    boxes, labels, priors = _stall_clip()
    conf, matched, _ = match_clip(boxes, labels, priors)
    # X forced (IoU 1); Y forced (0.3 >= 0.225); Z fails (0.2 < 0.225 and max overlap is 2) and the
    # loop stalls on Z, so W is never forced although its anchor's best overlap (1/3, from X) passes.
    assert conf[0].tolist() == [1, 0, 2, 0]
    assert matched[0, 1].item() == 0  # anchor w stays with X (overlap 0.35 after the boost: negative)


def test_forced_match_stall_fix_goes_on_to_the_next_object() -> None:
    boxes, labels, priors = _stall_clip()
    conf, matched, _ = match_clip(boxes, labels, priors, MatchConfig(forced_match_stall=False))
    assert conf[0].tolist() == [1, 4, 2, 0]
    assert matched[0, 1].item() == 3


def test_lone_weak_object_is_forced() -> None:
    gt = (0.2, 0.2, 0.6, 0.6)
    priors = torch.tensor([_nested_anchor(gt, 0.1), [0.9, 0.9, 0.1, 0.1]])
    conf, _, _ = match_clip(_tube(list(gt), 2)[None], torch.tensor([9]), priors)
    assert conf.tolist() == [[9, 0], [9, 0]]  # max overlap < 0.5: forced even at IoU 0.1


def test_absent_frames_take_the_nearest_present_box_earlier_on_ties() -> None:
    a, b = [0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.7, 0.7]
    zero = [0.0, 0.0, 0.0, 0.0]
    boxes = torch.tensor([[a, zero, zero, b], [a, zero, b, zero], [zero, zero, zero, zero]])
    out = supplement_absent_boxes(boxes)
    assert torch.equal(out[0], torch.tensor([a, a, b, b]))
    assert torch.equal(out[1], torch.tensor([a, a, b, b]))  # frame 1 ties between 0 and 2: earlier wins
    assert torch.equal(out[2], torch.zeros(4, 4))  # absent everywhere: unchanged
    assert torch.equal(boxes[0, 1], torch.zeros(4))  # the input is not modified


def test_regression_target_is_the_whole_tube_and_absent_frames_still_positive() -> None:
    zero = [0.0, 0.0, 0.0, 0.0]
    tube = torch.tensor([[[0.2, 0.2, 0.6, 0.6], [0.25, 0.2, 0.65, 0.6], zero]])
    priors = torch.tensor([_nested_anchor((0.2, 0.2, 0.6, 0.6), 1.0), [0.9, 0.9, 0.1, 0.1]])
    targets = match_batch([tube], [torch.tensor([2])], priors)
    supplemented = targets.boxes[0][0]
    assert supplemented[2].tolist() == pytest.approx([0.25, 0.2, 0.65, 0.6])
    assert targets.labels[:, 0].tolist() == [2, 2, 2]  # absent frame 2 matched via the supplemented box
    expected = encode(supplemented, priors[0].expand(3, 4)).reshape(12)
    for t in range(3):
        assert torch.allclose(targets.loc[t, 0], expected)


def test_batch_rows_are_clip_major_and_empty_clips_are_neutral() -> None:
    gt = [0.2, 0.2, 0.6, 0.6]
    priors = torch.tensor([_nested_anchor(tuple(gt), 1.0), [0.9, 0.9, 0.1, 0.1]])
    boxes = [torch.zeros(0, 2, 4), _tube(gt, 2)[None]]
    labels = [torch.zeros(0, dtype=torch.long), torch.tensor([4])]
    targets = match_batch(boxes, labels, priors)
    assert targets.labels.tolist() == [[-1, -1], [-1, -1], [4, 0], [4, 0]]
    assert targets.loc.shape == (4, 2, 8)


def test_non_finite_prediction_makes_a_positive_neutral() -> None:
    gt = [0.2, 0.2, 0.6, 0.6]
    priors = torch.tensor([_nested_anchor(tuple(gt), 1.0), _nested_anchor(tuple(gt), 0.9)])
    loc_pred = torch.zeros(2, 2, 8)
    loc_pred[1, 0, 3] = float("nan")
    targets = match_batch([_tube(gt, 2)[None]], [torch.tensor([1])], priors, loc_pred=loc_pred)
    assert targets.labels.tolist() == [[1, 1], [-1, 1]]


def test_long_clips_match_the_circumscribed_box_of_slow_neighbours() -> None:
    T = 6
    tube = torch.tensor([0.2, 0.2, 0.6, 0.6]).repeat(T, 1)
    tube[3] += torch.tensor([0.02, 0.0, 0.02, 0.0])  # slow: IoU 0.9 with frames 2 and 4
    tube[5] = torch.tensor([0.7, 0.7, 0.8, 0.8])  # fast: no overlap with frame 4
    matching, _ = _matching_boxes(tube[None], MatchConfig())
    union = torch.tensor([0.2, 0.2, 0.62, 0.6])
    assert torch.equal(matching[:2, 0], tube[:2])
    assert torch.allclose(matching[2:5, 0], union.expand(3, 4))
    assert torch.equal(matching[5, 0], tube[5])
    # T <= 5: each frame's own box
    short, _ = _matching_boxes(tube[None, :5], MatchConfig())
    assert torch.equal(short[:, 0], tube[:5])
