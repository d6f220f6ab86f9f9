"""Tracks as supervision detections per frame, with the real supervision package (the cico[supervision] extra)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import supervision as sv

from cico.data.rle import encode
from cico.inference.tracks import Track
from cico.outputs.interop import to_detections, tracks_from_results


def rect(y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    mask = np.zeros((20, 30), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def test_tracks_become_detections_per_frame(tmp_path: Path) -> None:
    a, b = rect(2, 8, 3, 10), rect(10, 18, 12, 25)
    tracks = [Track(1, 0, 7, "cat", 0.9, [encode(a), None, encode(a)]),
              Track(1, 4, 3, "dog", 0.4, [encode(b), encode(b), None])]
    frames = to_detections(tracks)
    assert len(frames) == 3 and all(isinstance(d, sv.Detections) for d in frames)
    first = frames[0]
    assert len(first) == 2 and first.mask.shape == (2, 20, 30) and first.mask.dtype == bool
    np.testing.assert_array_equal(first.xyxy, [[3, 2, 9, 7], [12, 10, 24, 17]])
    np.testing.assert_array_equal(first.class_id, [7, 3])
    np.testing.assert_array_equal(first.tracker_id, [0, 4])
    np.testing.assert_allclose(first.confidence, [0.9, 0.4])
    assert list(first.data["class_name"]) == ["cat", "dog"]
    assert list(frames[1].tracker_id) == [4] and list(frames[2].tracker_id) == [0]
    assert len(to_detections(tracks, length=5)[4]) == 0
    image = sv.MaskAnnotator().annotate(np.zeros((20, 30, 3), np.uint8), first)  # supervision takes them as is
    assert image[4, 5].any() and not image[0, 0].any()
    results = tmp_path / "results.json"
    results.write_text(json.dumps([t.to_result() for t in tracks]))
    (loaded,) = tracks_from_results(results, {7: "cat", 3: "dog"}).values()
    np.testing.assert_array_equal(to_detections(loaded)[0].mask, first.mask)
