"""Video-level aggregation of tracked clips into tracks, as the reference does it.

Per track id, every clip in which the tracker outputs the track contributes one score and one class
label; every output frame contributes its mask, RLE-encoded (pycocotools, via :func:`cico.data.rle.encode`)
as soon as the frame is final. At the end of the video a track becomes one result:

* ``category_id``: the majority label over its clips (``np.bincount(...).argmax()``: ties go to the
  smallest label), mapped to the dataset's own category id;
* ``score``: the mean of its per-clip scores;
* ``segmentations``: one entry per frame of the video, an RLE ``{"size": [H, W], "counts": str}`` where
  the track is output (an empty mask is still an RLE) and ``None`` elsewhere.

Results are listed per video in order of first appearance of the track ids, as the reference does.
"""
from __future__ import annotations

import tempfile
from array import array
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from ..data.rle import RLE, decode, encode
from ..structures import FrameResult


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


class _TrackRecord:
    """Per-clip scores/labels and, per output frame, where its RLE counts lie in the spill file."""

    def __init__(self) -> None:
        self.scores = array("f")
        self.labels = array("q")
        self.frames = array("q")
        self.offsets = array("q")
        self.lengths = array("q")


class VideoResults:
    """Collects the tracked clips of one video into :class:`Track` objects.

    The RLE of every output frame is appended to a temporary file as soon as it is encoded, and only
    small per-track arrays stay in memory, so memory does not grow with the video's length;
    :meth:`results` then streams the results entries one track at a time. Use it as a context manager
    (or call :meth:`close`) so the spill file is deleted.

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
        self.size: list[int] | None = None
        self._records: dict[int, _TrackRecord] = {}
        self._spill = tempfile.TemporaryFile()
        self._end = 0

    def __len__(self) -> int:
        """Number of tracks so far."""
        return len(self._records)

    @property
    def spilled(self) -> int:
        """Bytes of RLE counts written to the spill file so far (the masks are not kept in memory)."""
        return self._end

    def add(self, frames: Sequence[FrameResult]) -> None:
        """Add one clip: its output frames (all with the clip's tracks, in the same order)."""
        if not frames:
            return
        first = frames[0]
        for track_id, label, score in zip(first.ids.tolist(), first.labels.tolist(), first.scores.tolist()):
            record = self._records.get(track_id)
            if record is None:
                record = self._records[track_id] = _TrackRecord()
            record.scores.append(score)
            record.labels.append(label)
        for frame in frames:
            size = list(frame.image.shape[:2])
            if self.size is None:
                self.size = size
            elif size != self.size:
                raise ValueError(f"frame {frame.frame_id} is {size[1]}x{size[0]}, "
                                 f"the video {self.size[1]}x{self.size[0]}")
            self.length = max(self.length, frame.frame_id + 1)
            for track_id, mask in zip(frame.ids.tolist(), frame.masks):
                counts = encode(mask)["counts"].encode("ascii")
                record = self._records[track_id]
                record.frames.append(frame.frame_id)
                record.offsets.append(self._end)
                record.lengths.append(len(counts))
                self._spill.write(counts)
                self._end += len(counts)

    def _track(self, track_id: int, record: _TrackRecord) -> Track:
        label = int(np.bincount(np.frombuffer(record.labels, dtype=np.int64)).argmax())
        category = label if self.category_ids is None else self.category_ids[label - 1]
        name = self.class_names[label - 1] if 0 < label <= len(self.class_names) else str(label)
        score = np.frombuffer(record.scores, dtype=np.float32).mean().item()
        segmentations: list[RLE | None] = [None] * self.length
        self._spill.flush()
        for frame, offset, length in zip(record.frames, record.offsets, record.lengths):
            self._spill.seek(offset)
            segmentations[frame] = {"size": self.size, "counts": self._spill.read(length).decode("ascii")}
        self._spill.seek(self._end)
        return Track(self.video_id, track_id, category, name, score, segmentations)

    def tracks(self) -> list[Track]:
        """The video's tracks, in order of first appearance."""
        return [self._track(track_id, record) for track_id, record in self._records.items()]

    def results(self) -> Iterator[dict[str, Any]]:
        """The video's YouTube-VIS results entries, built one track at a time."""
        for track_id, record in self._records.items():
            yield self._track(track_id, record).to_result()

    def close(self) -> None:
        """Delete the spill file."""
        self._spill.close()

    def __enter__(self) -> VideoResults:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
