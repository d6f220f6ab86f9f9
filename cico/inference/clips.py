"""Clip splitting: the frames of a video as the reference's overlapping clips.

For one video of ``L`` frames with clips of ``T`` frames overlapping by ``O``: clip ``c`` holds frames
``c·(T-O) .. c·(T-O)+T-1`` (``⌈L / (T-O)⌉`` clips); a short last clip is padded cyclically
(``[a, b] -> [a, b, a]``, as the reference does); each clip outputs only its first ``T-O`` frames (of its
real, unpadded frames: the last clip ``[6, 6, 6]`` of a 7-frame video outputs frame 6 from position 0
only), so every frame is output once and the overlap frames only serve linking.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np


@dataclass
class Clip:
    """One clip of a video, as the reference forms it.

    Attributes:
        index: clip number in the video (0 resets the tracker).
        frame_ids: the ``T`` frame ids, cyclic padding included (``[6, 7, 6]``).
        images: the ``T`` frames (BGR ``uint8 [H, W, 3]``; a padded slot shares its frame's array).
        outputs: ``(frame_id, t)`` of the frames this clip outputs: its first ``min(T-O, real frames)``
            positions (the reference slices the clip's unpadded frame range).
    """

    index: int
    frame_ids: list[int]
    images: list[np.ndarray]
    outputs: list[tuple[int, int]]

    @property
    def is_first(self) -> bool:
        return self.index == 0


def split_clips(frames: Iterable[np.ndarray], clip_frames: int, overlap: int) -> Iterator[Clip]:
    """Form the clips of a video from its frames, reading ahead at most one clip.

    Args:
        frames: the video's frames in order (any iterable; consumed lazily).
        clip_frames: ``T``.
        overlap: ``O``, frames shared by consecutive clips (``0 <= O < T``).

    Yields:
        ``⌈L / (T-O)⌉`` clips.
    """
    if not 0 <= overlap < clip_frames:
        raise ValueError(f"overlap must be in [0, {clip_frames - 1}] for {clip_frames}-frame clips, got {overlap}")
    step = clip_frames - overlap
    iterator = iter(frames)
    window: list[np.ndarray] = []  # frames left, left+1, ... of the current clip
    left, exhausted, index = 0, False, 0
    while True:
        while not exhausted and len(window) < clip_frames:
            frame = next(iterator, None)
            if frame is None:
                exhausted = True
            else:
                window.append(frame)
        if not window:
            return
        real = len(window)
        slots = [t % real for t in range(clip_frames)]  # cyclic padding of a short clip
        frame_ids = [left + s for s in slots]
        outputs = [(left + t, t) for t in range(min(step, real))]
        yield Clip(index, frame_ids, [window[s] for s in slots], outputs)
        del window[:step]
        left += step
        index += 1


def batches(clips: Iterable[Clip], size: int) -> Iterator[list[Clip]]:
    """The clips in lists of ``size`` (the last one shorter)."""
    batch: list[Clip] = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
