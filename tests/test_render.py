"""Rendering: colours by track id, alpha blending with the best track on top, id-mask PNGs, mp4 files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cico.data.sources import open_source
from cico.media import Mp4Writer
from cico.outputs.render import (
    MASK_ALPHA,
    PALETTE_RGB,
    RenderStyle,
    draw_frame,
    id_mask,
    place_labels,
    shown_tracks,
    track_colour,
    write_png,
)
from cico.structures import FrameResult


def frame_with(ids, scores, masks, tracked=None, size=(120, 160)):
    k = len(ids)
    return FrameResult(3, np.full((*size, 3), 100, np.uint8), np.array(ids), np.ones(k, np.int64),
                       np.array(scores, np.float32), np.array(tracked or [0] * k),
                       np.array([[100, 90, 150, 115]] * k), np.array(masks, bool))


def rect(y1, y2, x1, x2, size=(120, 160)):
    mask = np.zeros(size, bool)
    mask[y1:y2, x1:x2] = True
    return mask


def test_colour_by_track_id_like_the_reference():
    assert len(PALETTE_RGB) == 19
    assert track_colour(0) == PALETTE_RGB[0][::-1]
    assert track_colour(4) == PALETTE_RGB[20 % 19][::-1]
    assert track_colour(23) == track_colour(4)  # (23*5) % 19 == (4*5) % 19


def test_masks_blended_with_alpha_best_score_on_top():
    low, high = rect(0, 20, 0, 30), rect(10, 20, 10, 30)
    frame = frame_with([1, 2], [0.2, 0.9], [low, high])
    out = draw_frame(frame, ["thing"])
    c_low, c_high = np.array(track_colour(1), float), np.array(track_colour(2), float)
    only_low = 100 * (1 - MASK_ALPHA) + c_low * MASK_ALPHA
    both = (100 * (1 - MASK_ALPHA) + c_low * MASK_ALPHA) * (1 - MASK_ALPHA) + c_high * MASK_ALPHA
    np.testing.assert_allclose(out[5, 5], only_low.round(), atol=1)
    np.testing.assert_allclose(out[15, 20], both.round(), atol=1)
    assert (out[5, 5] != 100).any() and frame.image[5, 5, 0] == 100  # a new image
    # box drawn (solid for a detected track) at x = 100..150, y = 90..115
    assert (out[105, 100] != 100).any()


def test_propagated_track_gets_a_dotted_box():
    solid = draw_frame(frame_with([1], [0.5], [np.zeros((120, 160), bool)]), ["a"])
    dotted = draw_frame(frame_with([1], [0.5], [np.zeros((120, 160), bool)], tracked=[2]), ["a"])

    def column(image):
        return (image[92:116, 100] != 100).any(axis=1).sum()

    assert column(solid) > column(dotted) > 0


def test_id_mask_values_overlaps_and_bit_depth(tmp_path: Path):
    a, b = rect(0, 20, 0, 30), rect(10, 20, 10, 40)
    ids = id_mask(frame_with([0, 5], [0.3, 0.8], [a, b]))
    assert ids.dtype == np.uint8
    assert ids[5, 5] == 1 and ids[15, 20] == 6 and ids[15, 35] == 6 and ids[60, 100] == 0
    ids = id_mask(frame_with([300, 5], [0.9, 0.8], [a, b]))
    assert ids.dtype == np.uint16 and ids[15, 20] == 301
    path = write_png(tmp_path / "m" / "00000.png", ids)
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), ids)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["00000.png"]


def test_mp4_writer_round_trip_and_atomicity(tmp_path: Path):
    path = tmp_path / "video.mp4"
    with Mp4Writer(path, fps=7.5) as writer:
        for i in range(5):
            writer.write(np.full((45, 81, 3), 40 * i, np.uint8))  # odd size: padded to even
        assert not path.exists()
    (video,) = open_source(path)
    frames = list(video.frames())
    assert len(frames) == 5 and video.fps == 7.5 and frames[0].shape == (46, 82, 3)
    assert abs(int(frames[4][10, 10, 0]) - 160) <= 6
    with pytest.raises(RuntimeError):
        with Mp4Writer(tmp_path / "broken.mp4", fps=10) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]


def test_top_k_and_score_threshold_keep_the_best_tracks() -> None:
    masks = [rect(0, 10, 0, 10), rect(20, 30, 0, 10), rect(40, 50, 0, 10)]
    frame = frame_with([1, 2, 3], [0.2, 0.9, 0.5], masks)
    np.testing.assert_array_equal(shown_tracks(frame.scores, RenderStyle(top_k=2)), [1, 2])
    np.testing.assert_array_equal(shown_tracks(frame.scores, RenderStyle(score_thresh=0.3)), [1, 2])
    out = draw_frame(frame, ["a"], RenderStyle(top_k=1))
    assert (out[25, 5] != 100).any() and (out[5, 5] == 100).all() and (out[45, 5] == 100).all()


def test_labels_stay_inside_the_frame_and_apart() -> None:
    # five tracks with the same box at the top edge: their labels would pile up on one spot
    sizes = [(60, 14)] * 5
    places = place_labels(sizes, [(150, 0)] * 5, (120, 160))
    boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(places, sizes)]
    assert all(0 <= x1 and x2 <= 160 and 0 <= y1 and y2 <= 120 for x1, y1, x2, y2 in boxes)
    assert all(not (a[1] < b[3] and b[1] < a[3]) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert places[0] == (100, 0)  # the best track keeps the place at its box (inside, as the box touches the top)
    assert place_labels([(60, 14)], [(10, 40)], (120, 160)) == [(10, 26)]  # above its box when there is room
    # drawn: the label of a box touching the top edge is fully inside the image
    frame = frame_with([1], [0.5], [np.zeros((120, 160), bool)])
    frame.boxes[:] = [60, 0, 100, 30]
    out = draw_frame(frame, ["thing"])
    colour = np.array(track_colour(1))
    assert (np.abs(out[1, 62].astype(int) - colour) <= 1).all()  # the label's filled box starts at row 0
