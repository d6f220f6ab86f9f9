"""Deterministic held-out split of a training annotation file (the "valid_sub" sets).

The reference's comment says "last one-tenth": the held-out part is the last ``int(n * fraction)``
videos in file order (or the last ``count``), with all their tracks; the rest stays for training.
Both halves keep every category, so labels mean the same in each. (The reference's own script picked
tracks by ``video_id - 1``, which is only right when ids are ``1..n`` in order; this selects by id.)
"""
from __future__ import annotations

from ..errors import CicoError
from .annotations import Annotations


def held_out_split(ann: Annotations, fraction: float = 0.1,
                   count: int | None = None) -> tuple[Annotations, Annotations]:
    """Split ``ann`` into ``(remaining train, held out)``: the held-out part is its last videos.

    Args:
        ann: a training annotation file.
        fraction: share of videos held out, ``int(len(videos) * fraction)`` of them.
        count: the number of videos held out instead of ``fraction``.

    Raises:
        CicoError: either part would be empty.
    """
    n = len(ann.videos)
    k = count if count is not None else int(n * fraction)
    if not 0 < k < n:
        how = f"--count {count}" if count is not None else f"fraction {fraction}"
        raise CicoError(f"{how} holds out {k} of {n} videos; both parts need at least one", ann.path)
    ids = [v.id for v in ann.videos]
    return ann.subset(ids[: n - k]), ann.subset(ids[n - k:])
