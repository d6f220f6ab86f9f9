"""Validation of a whole dataset: the annotation file and the frames it points at (``cico check-data``).

Every problem is one line naming the file; the schema checks are
:func:`cico.data.annotations.annotation_problems`; the frame checks (exists, decodes with OpenCV,
has the video's width/height) run in a thread pool, because OpenCV decodes without the GIL.
Frames are read with cico's one frame reader (:func:`cico.data.sources.read_image`), so a frame that
fails here also fails in training and inference.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import CicoError
from .annotations import _is_int, annotation_problems, read_json
from .sources import read_image


@dataclass
class CheckReport:
    """The outcome of :func:`check_dataset`.

    Attributes:
        problems: one line per problem (empty when the dataset is valid).
        videos, frames, tracks: counts from the annotation file (frames = annotated frames).
        crowd_tracks: tracks with ``iscrowd`` set.
        tracks_per_class: ``{class name: tracks}`` in the order of the sorted category ids.
        has_gt: whether the file has an ``annotations`` list.
    """

    problems: list[str] = field(default_factory=list)
    videos: int = 0
    frames: int = 0
    tracks: int = 0
    crowd_tracks: int = 0
    tracks_per_class: dict[str, int] = field(default_factory=dict)
    has_gt: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def _videos(data: dict[str, Any]) -> Iterator[tuple[int, list[str], int, int]]:
    """``(id, file_names, height, width)`` of every well-formed video entry (the others are schema problems)."""
    for v in data.get("videos", []):
        if (isinstance(v, dict) and _is_int(v.get("id")) and isinstance(v.get("file_names"), list)
                and all(isinstance(n, str) for n in v["file_names"])
                and _is_int(v.get("height")) and _is_int(v.get("width"))):
            yield int(v["id"]), v["file_names"], int(v["height"]), int(v["width"])


_MISSING = "is missing"


def _frame_problem(path: Path, height: int, width: int, decode: bool) -> str | None:
    if not path.is_file():
        return _MISSING
    if not decode:
        return None
    try:
        image = read_image(path)
    except CicoError as err:
        return err.problem
    if image.shape[:2] != (height, width):
        return f"is {image.shape[0]}x{image.shape[1]} but the video is {height}x{width}"
    return None


def check_frames(data: dict[str, Any], frames_dir: Path, decode: bool = True, workers: int | None = None) -> list[str]:
    """Problems of the frame files of every well-formed video in ``data`` (paths under ``frames_dir``).

    A video whose frames are all missing is reported once, with its folder.
    """
    jobs = [(vid, f, frames_dir / name, h, w) for vid, names, h, w in _videos(data) for f, name in enumerate(names)]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda job: _frame_problem(job[2], job[3], job[4], decode), jobs))
    missing = Counter(vid for (vid, *_), problem in zip(jobs, results) if problem == _MISSING)
    lengths = Counter(vid for vid, *_ in jobs)
    problems, reported = [], set()
    for (vid, f, path, _, _), problem in zip(jobs, results):
        if problem is None or vid in reported:
            continue
        if problem == _MISSING and missing[vid] == lengths[vid] > 1:
            problems.append(f"{path.parent}: all {lengths[vid]} frames of video {vid} are missing")
            reported.add(vid)
        else:
            problems.append(f"{path}: frame {f} of video {vid} {problem}")
    return problems


def check_dataset(ann_file: str | Path, frames_dir: str | Path, decode: bool = True,
                  workers: int | None = None) -> CheckReport:
    """Validate an annotation file and its frames; see :class:`CheckReport`.

    Raises:
        CicoError: the annotation file is missing or not JSON (nothing else can be checked then).
    """
    data = read_json(ann_file)
    report = CheckReport(problems=[f"{ann_file}: {p}" for p in annotation_problems(data)])
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        return report
    report.problems += check_frames(data, Path(frames_dir), decode, workers)
    videos = list(_videos(data))
    report.videos, report.frames = len(videos), sum(len(names) for _, names, _, _ in videos)
    tracks = data.get("annotations")
    report.has_gt = isinstance(tracks, list)
    tracks = [t for t in tracks if isinstance(t, dict)] if isinstance(tracks, list) else []
    categories = data["categories"] if isinstance(data.get("categories"), list) else []
    names = {c["id"]: str(c.get("name")) for c in categories if isinstance(c, dict) and _is_int(c.get("id"))}
    per_category = Counter(t.get("category_id") for t in tracks)
    report.tracks = len(tracks)
    report.crowd_tracks = sum(bool(t.get("iscrowd")) for t in tracks)
    report.tracks_per_class = {names[i]: per_category[i] for i in sorted(names)}
    return report
