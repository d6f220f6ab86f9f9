"""Every CiCo loss term (spec §3.4) on tiny tensors against a hand computation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cico.model.box_coder import center_size, decode, encode
from cico.model.outputs import HeadOutputs
from cico.training.losses import (
    CiCoLoss,
    LossConfig,
    box_area_pixels,
    centerness_bce,
    diou_loss,
    track_pair_loss,
)


def test_diou_matches_the_formula_and_sorts_coordinates() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    # IoU 1/7, centre distance^2 = 2, enclosing diagonal^2 = 18
    expected = 1 - 1 / 7 + 2 / 18
    assert diou_loss(a, b).item() == pytest.approx(expected, rel=1e-6)
    swapped = torch.tensor([[2.0, 2.0, 0.0, 0.0]])  # corners swapped: sorted first
    assert diou_loss(swapped, b).item() == pytest.approx(expected, rel=1e-6)
    assert diou_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)


def test_centerness_bce_accepts_negative_targets_with_finite_gradients() -> None:
    p = torch.tensor([0.7, 0.2], requires_grad=True)
    t = torch.tensor([-0.5, 0.9])
    loss = centerness_bce(p, t)
    expected = [-(-0.5 * math.log(0.7) + 1.5 * math.log(0.3)), -(0.9 * math.log(0.2) + 0.1 * math.log(0.8))]
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)
    loss.sum().backward()
    assert torch.isfinite(p.grad).all()
    saturated = torch.tensor([0.0, 1.0], requires_grad=True)
    out = centerness_bce(saturated, torch.tensor([0.5, 0.5]))
    assert out.tolist() == pytest.approx([50.0, 50.0])  # logs clamped at -100 like PyTorch's BCE
    out.sum().backward()
    assert torch.isfinite(saturated.grad).all()


def test_track_pair_loss_by_hand() -> None:
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # s = [[1, .5], [.5, 1]]: every off-diagonal pair costs log 2 whether same object or not
    assert track_pair_loss(e, torch.tensor([0, 0])).item() == pytest.approx(math.log(2) / 2)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # s = 0 off the diagonal
    assert track_pair_loss(opposite, torch.tensor([0, 1])).item() == pytest.approx(0.0, abs=1e-6)
    assert track_pair_loss(opposite, torch.tensor([0, 0])).item() == pytest.approx(
        2 * -math.log(1e-10) / 4, rel=1e-4)  # both logs clamped at 1e-10


def test_box_area_in_floored_proto_pixels() -> None:
    boxes = torch.tensor([[0.1, 0.2, 0.55, 0.95], [0.5, 0.5, 0.5, 0.5], [-0.2, 0.0, 1.3, 1.0]])
    # w=20: x 2..11 -> 9; h=10: y 2..9 -> 7. Degenerate -> 1x1. Clamped to the map -> 20x10.
    assert box_area_pixels(boxes, 10, 20).tolist() == [63.0, 1.0, 200.0]


# -- the whole loss on a hand-made batch ------------------------------------------------------


def _anchor(box: tuple[float, float, float, float]) -> list[float]:
    return center_size(torch.tensor(box)).tolist()


def _batch(num_classes: int = 2, focal: bool = True, seed: int = 0):
    """Two clips of T=2 frames, 3 anchors, one object in clip 1, clip 0 empty; 4x4 prototypes."""
    g = torch.Generator().manual_seed(seed)
    T, N, D, E = 2, 3, 4, 3
    gt = (0.0, 0.0, 0.5, 0.5)
    priors = torch.tensor([_anchor(gt), _anchor((0.0, 0.0, 0.45, 0.5)), [0.85, 0.85, 0.2, 0.2]])
    C = num_classes if focal else num_classes + 1
    head = HeadOutputs(
        loc=torch.randn(2 * T, N, 4 * T, generator=g) * 0.3,
        conf=torch.randn(2 * T, N, C, generator=g),
        centerness=torch.rand(2 * T, N, 1, generator=g),
        mask_coeff=torch.tanh(torch.randn(2 * T, N, D, generator=g)),
        track=F.normalize(torch.randn(2 * T, N, E, generator=g), dim=-1),
        priors=priors,
        prior_levels=torch.zeros(N),
        proto=torch.relu(torch.randn(2, 4, 4, T, D, generator=g)),
    )
    for value in vars(head).values():
        value.requires_grad_(value.is_floating_point())
    # the object: frame 0 at gt, absent in frame 1 (supplemented from frame 0)
    boxes = [torch.zeros(0, T, 4), torch.tensor([[list(gt), [0.0] * 4]])]
    masks = [torch.zeros(0, T, 8, 8), torch.zeros(1, T, 8, 8)]
    masks[1][0, 0, :4, :4] = 1
    labels = [torch.zeros(0, dtype=torch.long), torch.tensor([2])]
    return head, boxes, masks, labels


def test_every_term_against_a_hand_computation() -> None:
    head, boxes, masks, labels = _batch()
    losses = CiCoLoss(2)(head, boxes, masks, labels)
    # anchor 0 = gt (IoU 1, forced), anchor 1 IoU 0.9 (positive), anchor 2 far (negative);
    # supplemented: frame 1 also at gt -> positives (rows 2, 3) x (anchors 0, 1); rows 0, 1 neutral
    positives = [(k, a) for k in (2, 3) for a in (0, 1)]
    gt = torch.tensor([0.0, 0.0, 0.5, 0.5])
    n_p, T = 4, 2

    box = diou = center = 0.0
    for k, a in positives:
        target = encode(gt.expand(T, 4), head.priors[a].expand(T, 4)).reshape(-1)
        box += F.smooth_l1_loss(head.loc[k, a], target, reduction="sum").item()
        pred_boxes = decode(head.loc[k, a].reshape(T, 4), head.priors[a].expand(T, 4))
        d = sum(diou_loss(pred_boxes[t], gt).item() for t in range(T)) / T
        diou += d
        p = head.centerness[k, a, 0].item()
        tgt = 1 - d
        center += -(tgt * math.log(p) + (1 - tgt) * math.log(1 - p))
    assert losses["box"].item() == pytest.approx(box / (n_p * T), rel=1e-5)
    assert losses["box_diou"].item() == pytest.approx(diou / n_p, rel=1e-5)
    assert losses["centerness"].item() == pytest.approx(center / n_p, rel=1e-5)

    focal = 0.0
    for k in (2, 3):  # rows of clip 0 are all neutral (no objects): excluded
        for a in range(3):
            for c in range(2):
                y = 1.0 if (a < 2 and c == 1) else 0.0
                p = torch.sigmoid(head.conf[k, a, c]).item()
                pt = p if y else 1 - p
                alpha = 0.25 if y else 0.75
                focal += -alpha * (1 - pt) ** 2 * math.log(pt)
    assert losses["class"].item() == pytest.approx(focal / n_p * 5, rel=1e-5)

    e = torch.stack([head.track[k, a] for k, a in positives])
    s = (e @ e.t() + 1) / 2  # all four positives are the same object
    track = -s.log().mean().item()
    assert losses["track"].item() == pytest.approx(track / 2 * 5, rel=1e-5)  # B = 2 clips

    # masks: 8x8 GT -> 4x4 proto; crop = gt x1.5 about its centre = (-0.125, -0.125, 0.625, 0.625)
    # -> pixels [0, 2.5 -> 2] padded by 1 -> cols/rows 0..2; area of the gt box = 2x2 proto pixels
    gt_small = torch.zeros(T, 4, 4)
    gt_small[0, :2, :2] = 1
    mask = 0.0
    for k, a in positives:
        t_p = k - 2
        logits = head.proto[1] @ head.mask_coeff[k, a]  # [4, 4, T]
        per_frame = []
        for t in range(T):
            prob = torch.sigmoid(logits[:, :, t])
            keep = torch.zeros(4, 4)
            keep[:3, :3] = 1
            bce = F.binary_cross_entropy(prob * keep, gt_small[t], reduction="sum").item()
            per_frame.append(bce / 4)
        w = [0.9 ** abs(t - t_p) for t in range(T)]
        mask += sum(wi * li for wi, li in zip(w, per_frame)) / sum(w)
    assert losses["mask"].item() == pytest.approx(mask / n_p / 2 * 6.125 * 2, rel=1e-5)

    total = sum(losses.values())
    total.backward()
    for name, value in vars(head).items():
        if value.is_floating_point() and name not in ("priors", "prior_levels"):
            assert value.grad is not None and torch.isfinite(value.grad).all(), name


def test_softmax_classifier_with_hard_negatives() -> None:
    head, boxes, masks, labels = _batch(focal=False)
    losses = CiCoLoss(2, focal=False)(head, boxes, masks, labels)
    # 4 positives (label 2), only 2 negatives (anchor 2 of rows 2, 3): min(3*4, 12-1) keeps both
    rows = [(2, 0, 2), (2, 1, 2), (3, 0, 2), (3, 1, 2), (2, 2, 0), (3, 2, 0)]
    logits = torch.stack([head.conf[k, a] for k, a, _ in rows])
    expected = F.cross_entropy(logits, torch.tensor([c for _, _, c in rows])) * 5
    assert losses["class"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_hard_negative_mining_keeps_the_most_confident_negatives() -> None:
    T, N, C = 1, 20, 3
    priors = torch.tensor([_anchor((0.0, 0.0, 0.5, 0.5))] + [[0.9, 0.9, 0.05, 0.05]] * (N - 1))
    conf = torch.zeros(T, N, C + 1)
    conf[0, 1:, 2] = torch.arange(1, N, dtype=torch.float)  # later negatives are more confident
    head = HeadOutputs(loc=torch.zeros(T, N, 4), conf=conf, centerness=torch.full((T, N, 1), 0.5),
                       mask_coeff=torch.zeros(T, N, 2), track=F.normalize(torch.ones(T, N, 2), dim=-1),
                       priors=priors, prior_levels=torch.zeros(N), proto=torch.zeros(1, 4, 4, T, 2))
    boxes = [torch.tensor([[[0.0, 0.0, 0.5, 0.5]]])]
    losses = CiCoLoss(C, focal=False)(
        head, boxes, [torch.zeros(1, T, 8, 8)], [torch.tensor([1])])
    chosen = [0, N - 3, N - 2, N - 1]  # the positive and the 3 hardest negatives
    expected = F.cross_entropy(conf[0, chosen], torch.tensor([1, 0, 0, 0])) * 5
    assert losses["class"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("focal", [True, False])
@pytest.mark.parametrize("kind", ["yolact", "condinst"])
def test_batches_without_objects_or_positives_give_zero_terms_that_backpropagate(
        focal: bool, kind: str) -> None:
    head, boxes, masks, labels = _batch(focal=focal)
    if kind == "condinst":
        head.mask_coeff = torch.zeros(4, 3, 161, requires_grad=True)
        head.proto = torch.rand(2, 4, 4, 2, 8, requires_grad=True)
    loss = CiCoLoss(2, kind, focal)
    empty = loss(head, [torch.zeros(0, 2, 4)] * 2, [torch.zeros(0, 2, 8, 8)] * 2,
                 [torch.zeros(0, dtype=torch.long)] * 2)
    assert all(v.item() == 0.0 for v in empty.values())
    sum(empty.values()).backward()
    assert head.loc.grad is not None and head.proto.grad is not None

    # an object far from every anchor but the forced one is still matched; with no usable anchor
    # (all predictions NaN) there are no positives at all
    head.loc.grad = None
    bad = head.loc.detach().clone().fill_(float("nan")).requires_grad_()
    head.loc = bad
    out = loss(head, boxes, masks, labels)
    for name in ("box", "box_diou", "centerness", "track", "mask"):
        assert out[name].item() == 0.0, name
    sum(v for k, v in out.items() if k != "class").backward()


def test_condinst_mask_term_runs_and_reaches_the_parameters() -> None:
    head, boxes, masks, labels = _batch()
    head.mask_coeff = (torch.randn(4, 3, 161) * 0.3).requires_grad_()
    head.proto = torch.rand(2, 4, 4, 2, 8, requires_grad=True)
    losses = CiCoLoss(2, "condinst")(head, boxes, masks, labels)
    assert losses["mask"].item() > 0
    losses["mask"].backward()
    assert head.mask_coeff.grad[2:, :2].abs().sum() > 0  # positives get gradients
    assert head.mask_coeff.grad[:2].abs().sum() == 0  # the empty clip's anchors do not


def test_centerness_target_clamp_option() -> None:
    head, boxes, masks, labels = _batch()
    with torch.no_grad():
        head.loc[:, :, 0::4] += 25.0  # predictions far to the right: DIoU < 0, a negative target
    positives = [(k, a) for k in (2, 3) for a in (0, 1)]
    gt = torch.tensor([0.0, 0.0, 0.5, 0.5])
    targets, probs = [], []
    for k, a in positives:
        pred_boxes = decode(head.loc[k, a].detach().reshape(2, 4), head.priors[a].expand(2, 4))
        targets.append(1 - sum(diou_loss(pred_boxes[t], gt).item() for t in range(2)) / 2)
        probs.append(head.centerness[k, a, 0].item())
    assert max(targets) < 0
    plain = CiCoLoss(2)(head, boxes, masks, labels)["centerness"].item()
    clamped = CiCoLoss(2, cfg=LossConfig(clamp_centerness_target=True))(head, boxes, masks, labels)["centerness"].item()
    bce = [(-(t * math.log(p) + (1 - t) * math.log(1 - p))) for t, p in zip(targets, probs)]
    assert plain == pytest.approx(sum(bce) / 4, rel=1e-5)  # the reference: the negative target as is
    assert clamped == pytest.approx(sum(-math.log(1 - p) for p in probs) / 4, rel=1e-5)  # target 0
