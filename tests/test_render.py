"""Rendering: colours by track id, alpha blending with the best track on top, id-mask PNGs, mp4 files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cico.data.sources import open_source
from cico.media import Mp4Writer
from cico.outputs.render import MASK_ALPHA, PALETTE_RGB, draw_frame, id_mask, track_colour, write_png
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
