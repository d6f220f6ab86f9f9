"""Per-clip Detect on hand-made clips: thresholds, top-k, the three filters, per-class Fast NMS (with
the coincident-mask rule and the reference's row-only permutation quirk) and its memory bound."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO

from cico.model.box_coder import center_size, encode
from cico.model.detect import DetectConfig, detect
from cico.model.masks import crop_masks, enlarge_boxes
from cico.model.outputs import HeadOutputs

H = W = 32


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, torch.log(p / (1 - p)), torch.full_like(p, -30.0))


def _head(boxes, probs, centerness=None, coeff=None, proto=None) -> HeadOutputs:
    """One clip whose candidate ``i`` is anchor ``i`` of frame 0 with tube ``boxes[i]`` (x1y1x2y2).

    Anchors of the other frames score 0. By default masks are the 1.1x crop boxes (Yolact, one
    prototype of +10 and coefficient 1), centerness is 1 and the track embedding of candidate ``i``
    is ``[i, 0, ...]``.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    probs = torch.as_tensor(probs, dtype=torch.float32)
    n, t = boxes.shape[:2]
    priors = center_size(boxes[:, 0])
    loc = torch.zeros(t, n, 4 * t)
    loc[0] = encode(boxes, priors[:, None]).reshape(n, 4 * t)
    conf = torch.full((t, n, probs.shape[1]), -30.0)
    conf[0] = _logit(probs)
    ctr = torch.ones(t, n, 1)
    if centerness is not None:
        ctr[0, :, 0] = torch.as_tensor(centerness, dtype=torch.float32)
    coeff = torch.ones(n, 1) if coeff is None else torch.as_tensor(coeff, dtype=torch.float32)
    track = torch.zeros(t, n, 4)
    track[0, :, 0] = torch.arange(n, dtype=torch.float32)
    if proto is None:
        proto = torch.full((H, W, t, 1), 10.0)
    return HeadOutputs(
        loc=loc, conf=conf, centerness=ctr, mask_coeff=coeff.expand(t, n, -1).clone(), track=track,
        priors=priors, prior_levels=torch.arange(n, dtype=torch.float32), proto=proto[None],
    )


def _static(*boxes, frames=2):
    return [[b] * frames for b in boxes]


def _run(head, config=None, **kw):
    (dets,) = detect(head, classifier=kw.pop("classifier", "sigmoid"), mask_head=kw.pop("mask_head", "yolact"),
                     config=config)
    return dets


def _sources(dets) -> list[int]:
    return dets.track[:, 0].long().tolist()


FAR = ([0.05, 0.05, 0.25, 0.25], [0.4, 0.4, 0.6, 0.6], [0.7, 0.7, 0.95, 0.95], [0.05, 0.7, 0.3, 0.95])


def test_score_threshold_labels_raw_scores_and_order():
    probs = [[0.3, 0, 0], [0, 0.6, 0], [0.05, 0.08, 0.09], [0, 0, 0.3]]
    dets = _run(_head(_static(*FAR), probs, centerness=[0.5, 1.0, 1.0, 0.3]))
    # candidate 2 is below 0.1; candidate 3 fails the second threshold (0.3 * 0.3 <= 0.1)
    assert _sources(dets) == [1, 0]
    assert dets.labels.tolist() == [2, 1] and dets.labels.dtype == torch.int64
    torch.testing.assert_close(dets.scores, torch.tensor([0.6, 0.3]))  # raw, not rescored
    torch.testing.assert_close(dets.boxes, torch.tensor(_static(FAR[1], FAR[0])), atol=1e-6, rtol=0)
    torch.testing.assert_close(dets.boxes_cir, torch.tensor([FAR[1], FAR[0]]), atol=1e-6, rtol=0)
    assert dets.prior_levels.tolist() == [1.0, 0.0]
    assert dets.masks.shape == (2, 2, H, W) and dets.proto.shape == (H, W, 2, 1)
    # masks belong to their detections: the 1.1x crop of each one's own box
    crops = crop_masks(torch.ones(2, 2, H, W), enlarge_boxes(dets.boxes_cir, 1.1, 0.1))
    assert torch.equal(dets.masks > 0.5, crops > 0.5)


def test_top_k_keeps_the_best_raw_scores():
    head = _head(_static(*FAR[:3]), [[0.5], [0.7], [0.6]])
    assert _sources(_run(head)) == [1, 2, 0]
    assert _sources(_run(head, DetectConfig(top_k=2))) == [1, 2]
    assert DetectConfig().candidate_limit(3) == 300 and DetectConfig().candidate_limit(2) == 200
    assert DetectConfig(top_k=7).candidate_limit(3) == 7


def test_filter1_drops_cross_class_near_duplicates_by_rescored_rank():
    a, a2 = [0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.51]  # IoU 0.975
    head = _head(_static(a, a2), [[0.5, 0], [0, 0.9]], centerness=[1.0, 0.3])
    # candidate 1 has the higher raw score but the lower rescored one (0.27 < 0.5)
    assert _sources(_run(head)) == [0]
    assert sorted(_sources(_run(head, DetectConfig(duplicate_iou_thresh=1.0)))) == [0, 1]


def test_filter2_needs_the_centre_strictly_inside_in_enough_frames():
    out = [0.9, 0.2, 1.3, 0.4]  # centre x = 1.1, but the mask inside the image is large enough
    ins = [0.5, 0.2, 0.9, 0.4]
    edge = [-0.2, 0.2, 0.2, 0.4]  # centre x = 0 exactly: not strictly inside
    boxes = [[out, out], [out, ins], [edge, edge]]
    assert _sources(_run(_head(boxes, [[0.5], [0.6], [0.7]]))) == [1]
    # T = 4 needs 2 frames inside
    boxes = [[out, out, out, ins], [out, ins, out, ins]]
    assert _sources(_run(_head(boxes, [[0.5], [0.6]]))) == [1]


def test_filter3_drops_empty_masks_and_masks_covering_little_of_their_box():
    proto = torch.full((H, W, 2, 2), 10.0)
    proto[..., 1] = -20.0
    proto[4:7, 4:7, :, 1] = 20.0  # a 9-pixel blob
    big, small = [0.05, 0.05, 0.95, 0.95], [0.1, 0.1, 0.25, 0.25]
    boxes = _static(big, small, FAR[2])
    coeff = [[0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]]  # blob in a big box, blob in a small box, empty
    dets = _run(_head(boxes, [[0.5], [0.6], [0.7]], coeff=coeff, proto=proto))
    assert _sources(dets) == [1]
    assert (dets.masks > 0.5).sum().item() == 2 * 9


def test_nms_suppresses_within_a_class_only():
    a, b = [0.1, 0.1, 0.5, 0.5], [0.15, 0.1, 0.55, 0.5]  # box IoU 0.78
    assert _sources(_run(_head(_static(a, b), [[0.8, 0], [0.6, 0]]))) == [0]
    assert _sources(_run(_head(_static(a, b), [[0.8, 0], [0, 0.6]]))) == [0, 1]
    assert _sources(_run(_head(_static(a, b), [[0.8, 0], [0.6, 0]]), DetectConfig(nms_iou_thresh=0.9))) == [0, 1]


def test_a_candidate_can_be_detected_under_several_classes():
    dets = _run(_head(_static(FAR[0]), [[0.5, 0.4, 0.05]]))
    assert dets.labels.tolist() == [1, 2] and _sources(dets) == [0, 0]
    torch.testing.assert_close(dets.scores, torch.tensor([0.5, 0.4]))


def test_coincident_masks_in_one_flagged_frame_count_as_the_same_object():
    # frame 0: both masks are the same blob (mask IoU 1); frame 1: disjoint boxes and masks
    proto = torch.full((H, W, 2, 1), 10.0)
    proto[:, :, 0] = -10.0
    proto[5:15, 10:16, 0] = 10.0
    boxes = [[[0.1, 0.1, 0.5, 0.5], [0.05, 0.55, 0.35, 0.95]],
             [[0.3, 0.1, 0.7, 0.5], [0.6, 0.55, 0.95, 0.95]]]
    head = _head(boxes, [[0.8], [0.6]], proto=proto)
    # mean mask IoU alone is 0.5, giving 0.25*0.167 + 0.25*0.222 + 0.5*0.5 = 0.35: kept
    assert _sources(_run(head, DetectConfig(coincident_mask_iou=1.0))) == [0, 1]
    assert _sources(_run(head)) == [0]


def test_row_only_permutation_of_the_circumscribed_iou_is_reproduced_and_fixable():
    p, q, r = [0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0.23, 0.1, 0.63, 0.5]  # IoU(p, r) = 0.51
    # global rescored order 0, 1, 2; class A ranks candidate 2 above candidate 0
    probs = [[0.3, 0.9, 0.0], [0.0, 0.0, 0.8], [0.7, 0.0, 0.0]]
    head = _head(_static(p, q, r), probs)
    # reference: class A compares candidate 2 with the circumscribed box of candidate 1 (position 1
    # used as a candidate index), IoU 0, so candidate 0 survives in class A: 0.25*0.51 + 0.5*0.6 =
    # 0.43; with both axes permuted it is 0.25*0.51 + 0.25*0.51 + 0.5*0.6 = 0.55 > 0.5
    quirk = _run(head)
    assert quirk.labels.tolist() == [2, 3, 1, 1] and _sources(quirk) == [0, 1, 2, 0]
    fixed = _run(head, DetectConfig(fix_nms_cir_permutation=True))
    assert fixed.labels.tolist() == [2, 3, 1] and _sources(fixed) == [0, 1, 2]


def test_softmax_drops_the_background_channel():
    head = _head(_static(*FAR[:2]), [[0.5, 0.5], [0.5, 0.5]])
    head.conf = torch.full((2, 2, 3), -30.0)
    head.conf[1, :, 0] = 30.0  # frame-1 anchors: background
    head.conf[0, 0] = torch.tensor([0.0, 2.0, -5.0])
    head.conf[0, 1] = torch.tensor([5.0, 0.0, 0.0])  # background wins
    dets = _run(head, classifier="softmax")
    assert dets.labels.tolist() == [1] and _sources(dets) == [0]
    assert math.isclose(dets.scores.item(), math.exp(2) / (1 + math.exp(2) + math.exp(-5)), rel_tol=1e-6)


def test_each_clip_uses_its_own_frames_and_prototypes():
    one = _head(_static(*FAR[:2]), [[0.5, 0], [0, 0]])
    two = _head(_static(*FAR[:2]), [[0, 0], [0, 0.7]], proto=torch.full((H, W, 2, 1), 9.0))
    both = HeadOutputs(*(torch.cat([getattr(one, f), getattr(two, f)]) for f in
                         ("loc", "conf", "centerness", "mask_coeff", "track")),
                       priors=one.priors, prior_levels=one.prior_levels,
                       proto=torch.cat([one.proto, two.proto]))
    first, second = detect(both, classifier="sigmoid", mask_head="yolact")
    assert first.labels.tolist() == [1] and _sources(first) == [0]
    assert second.labels.tolist() == [2] and _sources(second) == [1]
    assert second.proto.eq(9.0).all()


@pytest.mark.parametrize("mask_head", ["yolact", "condinst"])
def test_no_candidate_gives_empty_detections_with_the_right_shapes(mask_head):
    head = _head(_static(*FAR[:2]), [[0.05], [0.1]])
    if mask_head == "condinst":
        head.mask_coeff = torch.zeros(2, 2, 161)
        head.proto = torch.zeros(1, H, W, 2, 8)
    dets = _run(head, mask_head=mask_head)
    assert len(dets) == 0
    assert dets.boxes.shape == (0, 2, 4) and dets.masks.shape == (0, 2, H, W)
    assert dets.track.shape == (0, 4) and dets.mask_coeff.shape[0] == 0


def test_unknown_classifier_or_mask_head_is_rejected():
    with pytest.raises(ValueError, match="classifier"):
        detect(_head(_static(FAR[0]), [[0.5]]), classifier="relu", mask_head="yolact")
    with pytest.raises(ValueError, match="mask head"):
        detect(_head(_static(FAR[0]), [[0.5]]), classifier="sigmoid", mask_head="solo")


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, torch
    torch.set_num_threads(2)
    from cico.model.detect import detect
    from cico.model.outputs import HeadOutputs

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    T, N, C, h, w, n = 3, 5000, 40, 96, 160, 300
    g = torch.Generator().manual_seed(0)
    conf = torch.full((T, N, C), -10.0)
    conf[0, :n, 0] = 2.0 + torch.rand(n, generator=g)  # 300 confident class-1 candidates
    centre = 0.15 + 0.7 * torch.rand(N, 2, generator=g)
    priors = torch.cat([centre, 0.05 + 0.25 * torch.rand(N, 2, generator=g)], 1)
    head = HeadOutputs(
        loc=torch.zeros(T, N, 4 * T), conf=conf, centerness=torch.ones(T, N, 1),
        mask_coeff=torch.rand(T, N, 32, generator=g), track=torch.randn(T, N, 64, generator=g),
        priors=priors, prior_levels=torch.zeros(N),
        proto=torch.rand(1, h, w, T, 32, generator=g) + 0.1)
    before = rss_mb()
    (dets,) = detect(head, classifier="sigmoid", mask_head="yolact")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"extra_mb": peak - before, "detections": len(dets)}))
""")


def test_memory_stays_bounded_with_300_candidates_at_96x160():
    """The reference's [classes, n, n, h*w] mask IoU would need ~110 GB here; ours stays small."""
    result = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True,
                            cwd=REPO, timeout=120, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["detections"] > 10  # the 300 candidates really reached the mask stages
    # measured 220-400 MB depending on allocator and thread pools; one class's [n, n, h*w] float tensor
    # alone would be 5.6 GB here, so 1 GB still separates bounded from quadratic memory
    assert report["extra_mb"] < 1024, report
