"""cico's tracks as `supervision <https://supervision.roboflow.com>`_ detections, one ``sv.Detections`` per frame.

Needs the optional extra: ``pip install cico[supervision]``. ::

    tracks = cico.load("demo").predict("video.mp4")
    for frame, detections in enumerate(to_detections(tracks)):
        annotated = sv.MaskAnnotator().annotate(image, detections)

Each frame's detections hold the tracks present in it: ``mask`` ``bool [N, H, W]``, ``xyxy`` ``[N, 4]``
(the masks' tight boxes, as ``sv.mask_to_xyxy``), ``class_id`` (the category id), ``tracker_id`` (the
track id), ``confidence`` (the track's score) and ``data["class_name"]``. Tracks from a results file work
too (:func:`tracks_from_results`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.annotations import read_json
from ..errors import CicoError
from ..inference.tracks import Track

if TYPE_CHECKING:
    import supervision as sv


def _supervision() -> Any:
    try:
        import supervision
    except ImportError:
        raise CicoError("supervision is not installed: pip install 'cico[supervision]'") from None
    return supervision


def to_detections(tracks: Sequence[Track], length: int | None = None) -> list[sv.Detections]:
    """One ``sv.Detections`` per frame of a video's tracks (``length`` frames: by default the tracks').

    All tracks must belong to one video; masks are decoded frame by frame.
    """
    sv = _supervision()
    if len({t.video_id for t in tracks}) > 1:
        raise ValueError("tracks of several videos: convert one video at a time")
    length = max((len(t.segmentations) for t in tracks), default=0) if length is None else length
    frames = []
    for f in range(length):
        present = [t for t in tracks if f < len(t.segmentations) and t.segmentations[f] is not None]
        if not present:
            frames.append(sv.Detections.empty())
            continue
        masks = np.stack([t.masks[f] for t in present])
        frames.append(sv.Detections(
            xyxy=sv.mask_to_xyxy(masks).astype(np.float32), mask=masks,
            confidence=np.array([t.score for t in present], np.float32),
            class_id=np.array([t.category_id for t in present], int),
            tracker_id=np.array([t.track_id for t in present], int),
            data={"class_name": np.array([t.category_name for t in present])}))
    return frames


def tracks_from_results(path: str | Path, class_names: dict[int, str] | None = None) -> dict[int | str, list[Track]]:
    """The tracks of a results file per video id (track ids: position within the video; names from
    ``class_names`` by category id, else the id)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise CicoError("not a results file (a JSON list of tracks)", path)
    videos: dict[int | str, list[Track]] = {}
    for i, r in enumerate(data):
        try:
            tracks = videos.setdefault(r["video_id"], [])
            name = (class_names or {}).get(r["category_id"], str(r["category_id"]))
            tracks.append(Track(r["video_id"], len(tracks), int(r["category_id"]), name, float(r["score"]),
                                list(r["segmentations"])))
        except (KeyError, TypeError, ValueError):
            raise CicoError(f"result {i}: needs video_id, category_id, score and segmentations", path) from None
    return videos
