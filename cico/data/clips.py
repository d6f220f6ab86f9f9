"""Training clips: a torch ``Dataset`` of ``T``-frame clips with their object tubes, and the batch collate.

Follows the reference's ``YTVOSDataset``:

* the items are the (video, frame) pairs with at least one valid non-crowd box;
* each item samples ``T - 1`` reference frames from the window ``range(-T//2, (T+1)//2) \\ {0}``
  (``{-2, -1, +1}`` for ``T = 3``; asymmetric like the reference) among valid items, padding by
  repetition when too few exist; the clip is the sorted list of the ``T`` frame indices;
* every object of the clip becomes a tube: masks and boxes per frame, zeros where absent;
  boxes use the reference's inclusive ``[x, y, x+w-1, y+h-1]``, normalised; the objects come in the
  reference's order, that of a Python ``set`` of their ids (:func:`reference_object_order`);
* :class:`~cico.data.transforms.TrainAugmentation` augments the clip; objects without a positive
  box in any frame afterwards are dropped, and a clip left with none is drawn again;
* :func:`collate` pads a batch to its largest clip rounded up to ``size_divisor`` and rescales the
  boxes to the padded canvas.

Randomness comes from ``numpy.random.default_rng([seed, epoch, index])``, so a clip depends only on
the seed, the epoch (:meth:`ClipDataset.set_epoch`) and the item, never on the DataLoader worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import CicoError
from .annotations import Annotations, Track, load_annotations
from .sources import read_image
from .transforms import TrainAugmentation, pad_to, padded_size


@dataclass(frozen=True)
class ClipDataConfig:
    """Training-clip options (defaults: the reference's, except the flip direction).

    Attributes:
        clip_frames: ``T``, frames per clip.
        augment: the clip augmentation (resize, flip, expand/crop, normalisation), used as given; its
            normalisation must match the model's.
        size_divisor: batches are padded to a multiple of this.
        seed: base seed of every random decision.
        max_attempts: clip draws per item before giving up on finding an object (then the clip is
            returned with no objects; this happens only when every box of the item is one pixel thin).
    """

    clip_frames: int = 3
    augment: TrainAugmentation = TrainAugmentation()
    size_divisor: int = 32
    seed: int = 0
    max_attempts: int = 10


@dataclass
class ClipSample:
    """One training clip before batching (``n`` objects, ``T`` frames, resized size ``H' x W'``).

    Attributes:
        images: ``[T, 3, H', W']`` float32, normalised.
        boxes: ``[n, T, 4]`` float32 x1y1x2y2 normalised by ``(W', H')``, ``0`` where absent.
        masks: ``[n, T, H', W']`` uint8 0/1.
        labels: ``[n]`` int64 contiguous 1-based labels.
        track_ids: ``[n]`` int64 annotation (track) ids.
        video_id: the video's id in the annotation file.
        frame_ids: the ``T`` frame indices (into the video's ``file_names``), sorted, possibly repeated.
    """

    images: Tensor
    boxes: Tensor
    masks: Tensor
    labels: Tensor
    track_ids: Tensor
    video_id: int
    frame_ids: list[int]


@dataclass
class ClipBatch:
    """A batch of ``B`` clips as the trainer consumes it.

    Attributes:
        images: ``[B, T, 3, Hp, Wp]`` normalised, zero-padded bottom/right.
        boxes: per clip ``[n, T, 4]`` normalised x1y1x2y2 on the padded canvas, 0 where absent.
        masks: per clip ``[n, T, Hp, Wp]`` uint8 0/1.
        labels: per clip ``[n]`` int64, contiguous 1-based labels.
        track_ids: per clip ``[n]`` int64 annotation (track) ids.
        video_ids: per clip, the video id.
        frame_ids: per clip, the ``T`` frame indices.
    """

    images: Tensor
    boxes: list[Tensor]
    masks: list[Tensor]
    labels: list[Tensor]
    track_ids: list[Tensor]
    video_ids: list[int]
    frame_ids: list[list[int]]

    def _apply(self, fn: Callable[[Tensor], Tensor]) -> ClipBatch:
        return ClipBatch(fn(self.images), [fn(b) for b in self.boxes], [fn(m) for m in self.masks],
                         [fn(x) for x in self.labels], [fn(x) for x in self.track_ids],
                         list(self.video_ids), [list(f) for f in self.frame_ids])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipBatch:
        """The batch with every tensor on ``device``."""
        return self._apply(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> ClipBatch:
        """Page-locked copy (called by ``DataLoader(pin_memory=True)``)."""
        return self._apply(Tensor.pin_memory)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def reference_object_order(ids_per_frame: Sequence[Sequence[int]]) -> list[int]:
    """The clip's object ids in the order the reference emits them: iteration order of a ``set``.

    The reference collects the ids of the objects present in each frame of the clip (frame by frame,
    in annotation order) into a Python ``set`` and builds one tube per id in the set's iteration order.
    For small integer ids that order is by ``id mod table size``, so ``{31, 32, 33}`` comes out as
    ``[32, 33, 31]`` (table of 8). The order matters only for exact ties in the matcher.

    Args:
        ids_per_frame: per frame of the clip, the ids of the objects present in it.
    """
    ids: set[int] = set()
    for frame_ids in ids_per_frame:
        ids.update(int(i) for i in frame_ids)
    return list(ids)


def collate(samples: Sequence[ClipSample], size_divisor: int = 32) -> ClipBatch:
    """Batch clips: pad to the largest ``H' x W'`` rounded up to ``size_divisor``, boxes rescaled to it."""
    height = max(s.images.shape[-2] for s in samples)
    width = max(s.images.shape[-1] for s in samples)
    size = padded_size(height, width, size_divisor)
    boxes = []
    for s in samples:
        h, w = s.images.shape[-2:]
        boxes.append(s.boxes * s.boxes.new_tensor([w / size[1], h / size[0], w / size[1], h / size[0]]))
    return ClipBatch(
        images=torch.stack([pad_to(s.images, size) for s in samples]),
        boxes=boxes,
        masks=[pad_to(s.masks, size) for s in samples],
        labels=[s.labels for s in samples],
        track_ids=[s.track_ids for s in samples],
        video_ids=[s.video_id for s in samples],
        frame_ids=[list(s.frame_ids) for s in samples],
    )


class ClipDataset(Dataset[ClipSample]):
    """Training clips of a YouTube-VIS/OVIS dataset; works in DataLoader worker processes.

    Args:
        annotations: a parsed file or its path (it must have annotations).
        frames_dir: the folder the videos' ``file_names`` are relative to.
        config: see :class:`ClipDataConfig`.

    Use ``DataLoader(dataset, batch_size, shuffle=True, collate_fn=dataset.collate_fn, num_workers=...)``
    and call :meth:`set_epoch` before each epoch (without ``persistent_workers``, so the workers see it).
    """

    def __init__(self, annotations: Annotations | str | Path, frames_dir: str | Path,
                 config: ClipDataConfig | None = None) -> None:
        self.annotations = annotations if isinstance(annotations, Annotations) else load_annotations(annotations)
        self.frames_dir = Path(frames_dir)
        self.config = config or ClipDataConfig()
        if self.config.clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {self.config.clip_frames}")
        self.augment = self.config.augment
        self.epoch = 0
        where = self.annotations.path or "annotations"
        if not self.annotations.has_gt:
            raise CicoError("has no 'annotations' (a valid/test split?): nothing to train on", where)
        self.videos = self.annotations.videos
        self._tracks: list[list[Track]] = [
            sorted((t for t in self.annotations.tracks_of(v.id) if not t.iscrowd), key=lambda t: t.id)
            for v in self.videos]
        self.items: list[tuple[int, int]] = [
            (vi, f) for vi, video in enumerate(self.videos) for f in range(video.length)
            if any(t.has_valid_box(f) for t in self._tracks[vi])]
        self._valid = set(self.items)
        if not self.items:
            raise CicoError("no frame has a valid non-crowd box: nothing to train on", where)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws for a new epoch (clips stay reproducible per seed, epoch and item)."""
        self.epoch = epoch

    @property
    def collate_fn(self) -> Callable[[Sequence[ClipSample]], ClipBatch]:
        """:func:`collate` with this dataset's ``size_divisor`` (picklable, for DataLoader workers)."""
        return partial(collate, size_divisor=self.config.size_divisor)

    def sample_clip(self, video_index: int, frame: int, rng: np.random.Generator) -> list[int]:
        """The sorted ``T`` frame indices of a clip around ``frame``.

        Reference frames come from the offsets ``range(-T//2, (T+1)//2)`` without 0 whose frame is
        itself a valid item; ``T - 1`` are drawn without replacement, the list is repeated when
        shorter, and ``frame`` itself is repeated when there is none.
        """
        t = self.config.clip_frames
        need = t - 1
        candidates = [frame + i for i in range(-t // 2, (t + 1) // 2)
                      if i != 0 and (video_index, frame + i) in self._valid]
        if len(candidates) >= need:
            refs = [candidates[i] for i in rng.choice(len(candidates), need, replace=False)]
        elif candidates:
            refs = (candidates * need)[:need]
        else:
            refs = [frame] * need
        return sorted([frame, *refs])

    def __getitem__(self, index: int) -> ClipSample:
        video_index, frame = self.items[index]
        rng = np.random.default_rng([self.config.seed, self.epoch, index])
        cache: dict[int, np.ndarray] = {}
        for _ in range(self.config.max_attempts):
            sample = self._clip(video_index, self.sample_clip(video_index, frame, rng), rng, cache)
            if len(sample.labels):
                break
        return sample

    def _frame(self, video_index: int, frame: int, cache: dict[int, np.ndarray]) -> np.ndarray:
        if frame not in cache:
            video = self.videos[video_index]
            path = self.frames_dir / video.file_names[frame]
            image = read_image(path)
            if image.shape[:2] != (video.height, video.width):
                raise CicoError(f"frame is {image.shape[0]}x{image.shape[1]} but video {video.id} is "
                                f"{video.height}x{video.width} in the annotations", path)
            cache[frame] = image
        return cache[frame]

    def _clip(self, video_index: int, frame_ids: list[int], rng: np.random.Generator,
              cache: dict[int, np.ndarray]) -> ClipSample:
        """Read, build the tubes, augment and keep the objects with a box left."""
        video = self.videos[video_index]
        frames = [self._frame(video_index, f, cache) for f in frame_ids]
        by_id = {tr.id: tr for tr in self._tracks[video_index]}
        present = [[tr.id for tr in by_id.values() if tr.has_valid_box(f)] for f in frame_ids]
        tracks = [by_id[i] for i in reference_object_order(present)]
        n, t, h, w = len(tracks), len(frame_ids), video.height, video.width
        masks = np.zeros((n, t, h, w), np.uint8)
        boxes = np.zeros((n, t, 4), np.float32)
        for j, track in enumerate(tracks):
            for i, f in enumerate(frame_ids):
                if not track.has_valid_box(f):
                    continue
                box = track.bboxes[f]
                assert box is not None  # has_valid_box
                x, y, bw, bh = box
                boxes[j, i] = [x / w, y / h, (x + bw - 1) / w, (y + bh - 1) / h]
                mask = self.annotations.mask(track, f)
                if mask is not None:
                    masks[j, i] = mask
        images, masks, boxes = self.augment(frames, masks, boxes, rng)
        keep = ((boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])).any(axis=1)
        # A track has one category, so the reference's majority vote over its present frames is that label.
        labels = [self.annotations.label_of(tr.category_id) for tr in tracks]
        return ClipSample(
            images=torch.from_numpy(images),
            boxes=torch.from_numpy(boxes[keep]),
            masks=torch.from_numpy(np.ascontiguousarray(masks[keep])),
            labels=torch.tensor(labels, dtype=torch.int64)[torch.from_numpy(keep)],
            track_ids=torch.tensor([tr.id for tr in tracks], dtype=torch.int64)[torch.from_numpy(keep)],
            video_id=video.id,
            frame_ids=frame_ids,
        )
