"""Video-level aggregation of tracked clips and the YouTube-VIS results file (spec §5.5).

Per track id, every clip in which the tracker outputs the track contributes one score and one class
label; every output frame contributes its mask, RLE-encoded (pycocotools, via :func:`cico.data.rle.encode`)
as soon as the frame is final. At the end of the video a track becomes one result:

* ``category_id``: the majority label over its clips (``np.bincount(...).argmax()``: ties go to the
  smallest label), mapped to the dataset's own category id;
* ``score``: the mean of its per-clip scores;
* ``segmentations``: one entry per frame of the video, an RLE ``{"size": [H, W], "counts": str}`` where
  the track is output (an empty mask is still an RLE) and ``None`` elsewhere.

Results are listed per video in order of first appearance of the track ids, as the reference does.
:class:`ResultsWriter` streams them to a JSON file that appears atomically when complete.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ..data.rle import RLE, decode, encode

if TYPE_CHECKING:
    from ..inference.video import FrameResult


class LazyMasks(SequenceABC):
    """A track's per-frame masks, decoded from RLE on access: ``masks[f]`` is ``bool [H, W]`` or ``None``."""

    def __init__(self, segmentations: Sequence[RLE | None]) -> None:
        self._segmentations = segmentations

    def __len__(self) -> int:
        return len(self._segmentations)

    def __getitem__(self, frame):
        if isinstance(frame, slice):
            return [self[i] for i in range(*frame.indices(len(self)))]
        rle = self._segmentations[frame]
        return None if rle is None else decode(rle).astype(bool)


@dataclass
class Track:
    """One predicted object through one video.

    Attributes:
        video_id: the video's id (the dataset's, or 1 for a single video).
        track_id: the tracker's id (row index, unique within the video).
        category_id: the majority class, as the dataset's category id.
        category_name: its name.
        score: the mean of the per-clip scores.
        segmentations: per frame, a compressed RLE (``counts`` str) or ``None`` where not output.
    """

    video_id: int | str
    track_id: int
    category_id: int
    category_name: str
    score: float
    segmentations: list[RLE | None]

    @property
    def masks(self) -> LazyMasks:
        """Per-frame ``bool [H, W]`` masks (``None`` where absent), decoded lazily."""
        return LazyMasks(self.segmentations)

    @property
    def frames(self) -> list[int]:
        """The frames in which the track is output."""
        return [f for f, rle in enumerate(self.segmentations) if rle is not None]

    def to_result(self) -> dict[str, Any]:
        """The YouTube-VIS results entry."""
        return {"video_id": self.video_id, "score": self.score, "category_id": self.category_id,
                "segmentations": self.segmentations}


@dataclass
class _TrackRecord:
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    masks: dict[int, RLE] = field(default_factory=dict)


class VideoResults:
    """Collects the tracked clips of one video into :class:`Track` objects.

    Args:
        video_id: written to every result.
        class_names: names of the 1-based labels (``class_names[label-1]``).
        category_ids: the dataset's category id of each label (``category_ids[label-1]``); ``None`` means
            the labels are the category ids.
    """

    def __init__(self, video_id: int | str, class_names: Sequence[str],
                 category_ids: Sequence[int] | None = None) -> None:
        self.video_id = video_id
        self.class_names = tuple(class_names)
        self.category_ids = None if category_ids is None else tuple(category_ids)
        self.length = 0
        self._records: dict[int, _TrackRecord] = {}

    def add(self, frames: Sequence[FrameResult]) -> None:
        """Add one clip: its output frames (all with the clip's tracks, in the same order)."""
        if not frames:
            return
        first = frames[0]
        for track_id, label, score in zip(first.ids.tolist(), first.labels.tolist(), first.scores.tolist()):
            record = self._records.setdefault(track_id, _TrackRecord())
            record.scores.append(score)
            record.labels.append(label)
        for frame in frames:
            self.length = max(self.length, frame.frame_id + 1)
            for track_id, mask in zip(frame.ids.tolist(), frame.masks):
                self._records[track_id].masks[frame.frame_id] = encode(mask)

    def tracks(self) -> list[Track]:
        """The video's tracks, in order of first appearance."""
        tracks = []
        for track_id, record in self._records.items():
            label = int(np.bincount(np.asarray(record.labels, dtype=np.int64)).argmax())
            category = label if self.category_ids is None else self.category_ids[label - 1]
            name = self.class_names[label - 1] if 0 < label <= len(self.class_names) else str(label)
            score = np.asarray(record.scores, dtype=np.float32).mean().item()
            segmentations = [record.masks.get(f) for f in range(self.length)]
            tracks.append(Track(self.video_id, track_id, category, name, score, segmentations))
        return tracks


class ResultsWriter:
    """Writes a YouTube-VIS results list to ``path`` incrementally, video by video.

    Entries go to ``path.partial`` and the file is renamed to ``path`` only by :meth:`close`, so an
    interrupted run never leaves a truncated results file (nor replaces an older complete one). Use it
    as a context manager: on an exception the partial file is removed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._file = open(self._partial, "w", encoding="utf-8")
        self._file.write("[")
        self.count = 0

    def write(self, entries: Iterable[dict[str, Any] | Track]) -> None:
        """Append results entries (dicts or :class:`Track` objects)."""
        for entry in entries:
            if isinstance(entry, Track):
                entry = entry.to_result()
            self._file.write(("," if self.count else "") + json.dumps(entry))
            self.count += 1

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        self._file.write("]\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if not self._file.closed:
            self._file.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
