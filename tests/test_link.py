"""The clip-to-clip tracker (spec §5.3) on hand-made detections whose matching scores are worked out."""
from __future__ import annotations

import math

import pytest
import torch

from cico.inference.link import ClipTracker, LinkConfig
from cico.structures import Instances

T, H, W = 3, 20, 20


def box_mask(box: list[float]) -> torch.Tensor:
    """``[H, W]`` float mask filling the normalised box."""
    mask = torch.zeros(H, W)
    x1, y1, x2, y2 = (round(v * s) for v, s in zip(box, (W, H, W, H)))
    mask[y1:y2, x1:x2] = 1.0
    return mask


def embed(angle: float) -> torch.Tensor:
    """A unit 2-d embedding; two embeddings at angles a, b have cosine cos(a - b)."""
    return torch.tensor([math.cos(angle), math.sin(angle)])


def dets(boxes: list[list[float]], labels: list[int], scores: list[float], angles: list[float],
         coeff: list[float] | None = None, proto_value: float = 10.0, kind: str = "yolact") -> Instances:
    """Detections whose boxes are constant over the clip and whose masks fill their boxes.

    The prototypes are one constant channel, so a track re-generated with coefficient +1 fills its
    enlarged crop box and with -1 is empty.
    """
    n = len(boxes)
    tube = torch.tensor(boxes, dtype=torch.float32).reshape(n, 4)[:, None].repeat(1, T, 1)
    masks = torch.stack([box_mask(b) for b in boxes]).reshape(n, H, W)[:, None].repeat(1, T, 1, 1)
    dim = 1 if kind == "yolact" else 161
    return Instances(
        labels=torch.tensor(labels, dtype=torch.int64).reshape(n),
        scores=torch.tensor(scores, dtype=torch.float32).reshape(n),
        boxes=tube,
        boxes_cir=tube[:, 0].clone(),
        masks=masks,
        track=torch.stack([embed(a) for a in angles]).reshape(n, 2),
        mask_coeff=torch.tensor(coeff if coeff is not None else [1.0] * n).reshape(n, 1).repeat(1, dim),
        prior_levels=torch.zeros(n, dtype=torch.int64),
        centerness=torch.ones(n),
        ids=torch.full((n,), -1, dtype=torch.int64),
        tracked_mask=torch.zeros(n, dtype=torch.int64),
        proto=torch.full((H, W, T, dim if kind == "yolact" else 8), proto_value),
    )


A = [0.1, 0.1, 0.4, 0.4]
B = [0.6, 0.6, 0.9, 0.9]
C = [0.6, 0.1, 0.9, 0.4]


def test_first_clip_outputs_every_detection_with_row_ids():
    tracker = ClipTracker("yolact", T)
    out = tracker(dets([A, B], [1, 2], [0.5, 0.4], [0.0, 1.0]), [0, 1, 2], is_first=True)
    assert out.ids.tolist() == [0, 1]
    assert out.labels.tolist() == [1, 2]
    assert out.tracked_mask.tolist() == [0, 0]
    assert tracker.frame_ids.tolist() == [0, 1, 2]
    assert out.masks.shape == (2, T, H, W)


def test_overlapping_clip_matches_same_object_and_appends_new_one():
    tracker = ClipTracker("yolact", T)
    tracker(dets([A, B], [1, 2], [0.5, 0.4], [0.0, 1.5]), [0, 1, 2], is_first=True)
    # B moved away (no overlap) but keeps its embedding; A is re-detected in place; C is new.
    out = tracker(dets([C, A, [0.6, 0.5, 0.95, 0.95]], [1, 1, 2], [0.3, 0.6, 0.45], [3.0, 0.0, 1.5]),
                  [2, 3, 4], is_first=False)
    # det 1 (A) -> track 0, det 2 (near B, same embedding) -> track 1, det 0 (C) -> new track 2
    assert out.ids.tolist() == [0, 1, 2]
    assert out.scores.tolist() == pytest.approx([0.6, 0.45, 0.3])
    assert out.tracked_mask.tolist() == [0, 0, 0]
    assert len(tracker.state) == 3
    assert tracker.frame_ids.tolist() == [2, 3, 4]


def test_greedy_deduplication_drops_the_weaker_claimant():
    tracker = ClipTracker("yolact", T)
    tracker(dets([A], [1], [0.5], [0.0]), [0, 1, 2], is_first=True)
    # Both detections prefer track 0; the one in place wins, the shifted one is dropped (not new).
    shifted = [0.12, 0.12, 0.42, 0.42]
    out = tracker(dets([shifted, A], [1, 1], [0.9, 0.5], [0.0, 0.0]), [2, 3, 4], is_first=False)
    assert out.ids.tolist() == [0]
    assert out.scores.tolist() == pytest.approx([0.5])
    assert len(tracker.state) == 1


def expected_scores(similarity: float, score: float, miou: float, biou: float, same: bool, d: float,
                    coeff=(0.1, 1.0, 1.0, 0.3)) -> tuple[float, float]:
    """(new-object column, track column) of the score matrix for one detection and one track."""
    c0, c1, c2, c3 = coeff
    new = 0.5 + c0 * score + c1 * d + c2 * d + c3
    old = similarity + c0 * score + c1 * miou + c2 * biou + c3 * float(same)
    return new, old


@pytest.mark.parametrize("small", [True, False])
def test_new_object_column_halves_the_dummy_for_small_objects(small):
    # Disjoint boxes and masks (IoUs 0), same label, embedding cosine 0.9 -> similarity 0.95:
    # track column 0.95 + 0.3 + 0.1 s; new column 1.4 + 0.1 s (d = 0.3) or 1.1 + 0.1 s (d = 0.15).
    big_track, big_det = [0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]
    small_track, small_det = [0.0, 0.0, 0.2, 0.2], [0.6, 0.6, 0.8, 0.8]
    track_box, det_box = (small_track, small_det) if small else (big_track, big_det)
    angle = math.acos(0.9)
    new, old = expected_scores(0.95, 0.5, 0.0, 0.0, True, 0.15 if small else 0.3)
    assert (old > new) == small
    tracker = ClipTracker("yolact", T)
    tracker(dets([track_box], [1], [0.5], [0.0]), [0, 1, 2], is_first=True)
    out = tracker(dets([det_box], [1], [0.5], [angle]), [2, 3, 4], is_first=False)
    if small:  # matched: the track is overwritten by the detection
        assert len(tracker.state) == 1 and out.ids.tolist() == [0]
        assert tracker.state.boxes_cir[0].tolist() == pytest.approx(det_box)
    else:  # a new track; the old one is propagated (score x 0.9^3)
        assert len(tracker.state) == 2
        assert tracker.state.scores.tolist() == pytest.approx([0.5 * 0.9 ** 3, 0.5])


def test_unmatched_track_is_propagated_on_the_new_prototypes():
    tracker = ClipTracker("yolact", T)
    tracker(dets([A, B], [1, 2], [0.9, 0.5], [0.0, 2.0]), [0, 1, 2], is_first=True)
    out = tracker(dets([C], [2], [0.5], [2.0], coeff=[1.0]), [2, 3, 4], is_first=False)
    # C takes track 1 (same embedding and label); track 0 is propagated
    state = tracker.state
    assert len(state) == 2 and out.ids.tolist() == [0, 1]
    assert out.tracked_mask.tolist() == [1, 0]
    assert state.scores[0].item() == pytest.approx(0.9 * 0.729)
    assert state.boxes_cir[0].tolist() == pytest.approx(A)
    # the propagated mask fills A enlarged x1.2 about its centre (0.07..0.43 -> pixels 1..8 floored),
    # padded by one pixel: rows and columns 0..8
    mask = out.masks[0, 0] > 0.5
    assert mask.any(1).nonzero().flatten().tolist() == list(range(9))
    assert mask.any(0).nonzero().flatten().tolist() == list(range(9))


def test_track_is_output_for_at_most_max_lost_clips_then_kept_in_memory():
    tracker = ClipTracker("yolact", T)
    assert tracker.max_lost_clips == 5
    tracker(dets([A, B], [1, 2], [0.99, 0.5], [0.0, 2.0]), [0, 1, 2], is_first=True)
    seen = []
    for c in range(1, 8):
        frames = [2 * c, 2 * c + 1, 2 * c + 2]
        out = tracker(dets([B], [2], [0.5], [2.0]), frames, is_first=False)
        seen.append(0 in out.ids.tolist())
    # lost for 1..5 clips: output (0.99 * 0.729^5 = 0.204 > 0.1); 6 and 7: not output although
    # the score is still above 0.1 after 6 clips (0.149)
    assert seen == [True] * 5 + [False] * 2
    assert tracker.state.tracked_mask[0].item() == 7
    assert len(tracker.state) == 2


def test_score_threshold_and_mask_area_end_the_output_of_propagated_tracks():
    tracker = ClipTracker("yolact", T)
    # track 0: 0.13 * 0.729 = 0.095 < 0.1; track 1: coefficient -1 re-generates an empty mask
    tracker(dets([A, C, B], [1, 3, 2], [0.13, 0.9, 0.5], [0.0, 1.0, 2.0], coeff=[1.0, -1.0, 1.0]), [0, 1, 2],
            is_first=True)
    out = tracker(dets([B], [2], [0.5], [2.0]), [2, 3, 4], is_first=False)
    assert out.ids.tolist() == [2]
    assert tracker.state.scores.tolist() == pytest.approx([0.13 * 0.729, 0.9 * 0.729, 0.5])
    assert tracker.state.masks[1].sum() == 0 and tracker.state.masks[0].sum() > 0


def test_no_detections_quirk_skips_propagation_and_leaves_frame_ids_stale():
    tracker = ClipTracker("yolact", T)
    tracker(dets([A], [1], [0.9], [0.0]), [0, 1, 2], is_first=True)
    empty = dets([A], [1], [0.9], [0.0])[:0]
    out = tracker(empty, [2, 3, 4], is_first=False)
    assert len(out) == 0
    state = tracker.state
    assert state.tracked_mask.tolist() == [1]
    assert state.scores.tolist() == pytest.approx([0.9])  # not decayed
    assert tracker.frame_ids.tolist() == [0, 1, 2]  # stale
    # next clip [4, 5, 6] does not overlap the stale ids: first-frame/last-frame box IoU path
    out = tracker(dets([A], [1], [0.8], [0.0]), [4, 5, 6], is_first=False)
    assert out.ids.tolist() == [0] and out.tracked_mask.tolist() == [0]


def test_without_overlap_matches_first_frame_to_last_frame_box():
    tracker = ClipTracker("yolact", T)
    first = dets([A], [1], [0.9], [0.0])
    first.boxes[0, -1] = torch.tensor(B)  # the track ends in B
    tracker(first, [0, 1, 2], is_first=True)
    # no frame in common (O = 0); the detection starts where the track ended but has an orthogonal
    # embedding: box IoU 1 with the last box decides (weights 0.5, not doubled)
    out = tracker(dets([B], [1], [0.5], [math.pi / 2]), [3, 4, 5], is_first=False)
    assert out.ids.tolist() == [0]
    assert len(tracker.state) == 1


def test_is_first_resets_and_empty_first_clip_defers_the_start():
    tracker = ClipTracker("yolact", T)
    tracker(dets([A, B], [1, 2], [0.9, 0.5], [0.0, 2.0]), [0, 1, 2], is_first=True)
    out = tracker(dets([C], [3], [0.5], [1.0]), [0, 1, 2], is_first=True)
    assert out.ids.tolist() == [0] and len(tracker.state) == 1
    d = dets([C], [3], [0.5], [1.0])
    empty = d[:0]
    assert len(tracker(empty, [0, 1, 2], is_first=True)) == 0 and tracker.state is None
    out = tracker(d, [2, 3, 4], is_first=False)  # no state yet: starts like a first clip
    assert out.ids.tolist() == [0]


def test_condinst_propagation_and_custom_survival_limit():
    tracker = ClipTracker("condinst", T, LinkConfig(max_lost_clips=1))
    tracker(dets([A, B], [1, 2], [0.9, 0.5], [0.0, 2.0], kind="condinst"), [0, 1, 2], is_first=True)
    out1 = tracker(dets([B], [2], [0.5], [2.0], kind="condinst"), [2, 3, 4], is_first=False)
    out2 = tracker(dets([B], [2], [0.5], [2.0], kind="condinst"), [4, 5, 6], is_first=False)
    assert out1.ids.tolist() == [0, 1] and out2.ids.tolist() == [1]
    assert out1.masks.shape == (2, T, H, W)


def test_retire_after_forgets_lost_tracks_and_never_reuses_ids():
    tracker = ClipTracker("yolact", T, LinkConfig(retire_after=1))
    tracker(dets([A, B], [1, 2], [0.99, 0.5], [0.0, 2.0]), [0, 1, 2], is_first=True)
    tracker(dets([B], [2], [0.5], [2.0]), [2, 3, 4], is_first=False)  # A lost for 1 clip: kept
    assert tracker.state.ids.tolist() == [0, 1]
    tracker(dets([B], [2], [0.5], [2.0]), [4, 5, 6], is_first=False)  # lost for 2: retired
    assert tracker.state.ids.tolist() == [1]
    # A comes back: the reference would re-identify track 0; retired, it becomes track 2
    out = tracker(dets([A, B], [1, 2], [0.99, 0.5], [0.0, 2.0]), [6, 7, 8], is_first=False)
    assert out.ids.tolist() == [1, 2] and tracker.next_id == 3
    # everything retired (no detection clips also age tracks), then a fresh start keeps counting
    empty = dets([A], [1], [0.9], [0.0])[:0]
    tracker(empty, [8, 9, 10], is_first=False)
    tracker(empty, [10, 11, 12], is_first=False)
    assert len(tracker.state) == 0
    out = tracker(dets([C], [3], [0.5], [1.0]), [12, 13, 14], is_first=False)
    assert out.ids.tolist() == [3]
