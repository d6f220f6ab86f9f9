"""Video-level aggregation (spec §5.5) and the atomic results writer."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cico.data.rle import area, decode
from cico.inference.tracks import Track, VideoResults
from cico.outputs.results import ResultsWriter
from cico.structures import FrameResult

H, W = 6, 8


def frame(frame_id: int, ids: list[int], labels: list[int], scores: list[float], masks: list[np.ndarray]):
    k = len(ids)
    return FrameResult(frame_id, np.zeros((H, W, 3), np.uint8), np.array(ids, np.int64), np.array(labels, np.int64),
                       np.array(scores, np.float32), np.zeros(k, np.int64), np.zeros((k, 4), np.int64),
                       np.array(masks, bool).reshape(k, H, W))


def block(y: int, x: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y:y + 2, x:x + 2] = True
    return mask


EMPTY = np.zeros((H, W), bool)


def three_clips() -> VideoResults:
    results = VideoResults(5, ("cat", "dog", "fox"), category_ids=(10, 20, 30))
    # clip 0 -> frames 0, 1: track 3 (dog), track 1 (cat)
    results.add([frame(0, [3, 1], [2, 1], [0.5, 0.2], [block(0, 0), block(2, 2)]),
                 frame(1, [3, 1], [2, 1], [0.5, 0.2], [block(0, 1), block(2, 3)])])
    # clip 1 -> frames 2, 3: track 3 now a cat with an empty mask in frame 3, track 7 (fox) appears
    results.add([frame(2, [3, 7], [1, 3], [0.3, 0.9], [block(1, 1), block(4, 6)]),
                 frame(3, [3, 7], [1, 3], [0.3, 0.9], [EMPTY, block(4, 5)])])
    # clip 2 -> frame 4: nobody
    results.add([frame(4, [], [], [], [])])
    return results


def test_tracks_in_first_appearance_order_with_majority_class_and_mean_score():
    tracks = three_clips().tracks()
    assert [t.track_id for t in tracks] == [3, 1, 7]
    t3, t1, t7 = tracks
    # track 3: labels [2, 1] -> tie -> the smaller label (1 = cat -> category 10)
    assert (t3.category_id, t3.category_name) == (10, "cat")
    assert t3.score == pytest.approx(0.4)
    assert t3.score == np.float32(np.mean(np.array([0.5, 0.3], np.float32))).item()
    assert (t1.category_id, t1.score) == (10, pytest.approx(0.2))
    assert (t7.category_id, t7.category_name, t7.score) == (30, "fox", pytest.approx(0.9))
    assert all(t.video_id == 5 and len(t.segmentations) == 5 for t in tracks)


def test_segmentations_rle_where_output_none_elsewhere_empty_mask_kept():
    t3, t1, t7 = three_clips().tracks()
    assert [s is not None for s in t3.segmentations] == [True, True, True, True, False]
    assert [s is not None for s in t1.segmentations] == [True, True, False, False, False]
    assert [s is not None for s in t7.segmentations] == [False, False, True, True, False]
    assert area(t3.segmentations[3]) == 0  # an empty mask is an RLE, not None
    assert t3.segmentations[0]["size"] == [H, W] and isinstance(t3.segmentations[0]["counts"], str)
    np.testing.assert_array_equal(decode(t3.segmentations[2]), block(1, 1))
    np.testing.assert_array_equal(t7.masks[3], block(4, 5))
    assert t7.masks[0] is None and t7.frames == [2, 3]
    assert [m is None for m in t1.masks[1:3]] == [False, True]


def test_labels_are_category_ids_without_a_mapping():
    results = VideoResults(1, ("a", "b"))
    results.add([frame(0, [0], [2], [0.7], [block(0, 0)])])
    (track,) = results.tracks()
    assert (track.category_id, track.category_name) == (2, "b")
    assert track.to_result() == {"video_id": 1, "score": track.score, "category_id": 2,
                                 "segmentations": track.segmentations}


def test_results_writer_streams_and_moves_into_place(tmp_path: Path):
    path = tmp_path / "out" / "results.json"
    tracks = three_clips().tracks()
    with ResultsWriter(path) as writer:
        writer.write(tracks[:2])
        assert [p.name for p in path.parent.iterdir()] == [f".results.{os.getpid()}.partial.json"]
        writer.write([tracks[2].to_result()])
    data = json.loads(path.read_text())
    assert [d["category_id"] for d in data] == [10, 10, 30]
    assert data[2]["segmentations"][0] is None
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_interrupted_writer_keeps_the_previous_results(tmp_path: Path):
    path = tmp_path / "results.json"
    path.write_text("[]\n")
    with pytest.raises(KeyboardInterrupt):
        with ResultsWriter(path) as writer:
            writer.write(three_clips().tracks())
            raise KeyboardInterrupt
    assert path.read_text() == "[]\n"
    assert list(tmp_path.iterdir()) == [path]


def test_empty_results_file(tmp_path: Path):
    with ResultsWriter(tmp_path / "results.json"):
        pass
    assert json.loads((tmp_path / "results.json").read_text()) == []
    assert isinstance(Track(1, 0, 1, "a", 0.5, [None]).masks[0], type(None))


def test_streamed_entries_equal_the_tracks_and_masks_live_in_the_spill_file():
    with three_clips() as results:
        assert len(results) == 3 and results.length == 5 and results.size == [H, W]
        assert list(results.results()) == [t.to_result() for t in results.tracks()]
        counts = [rle["counts"] for track in results.tracks() for rle in track.segmentations if rle is not None]
        assert results.spilled == sum(len(c) for c in counts) > 0
    with pytest.raises(ValueError):  # the spill file is closed
        results.tracks()
