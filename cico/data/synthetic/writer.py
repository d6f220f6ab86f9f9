"""Writing a synthetic dataset: JPEG frames, optional mp4s and the YouTube-VIS annotation file.

Every video is rendered independently (optionally in worker processes), so the output is byte-identical
for a seed whatever the number of workers. A frame where an object is fully outside or fully hidden has
``None`` segmentation, bbox and area; objects never visible are dropped.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from ...errors import CicoError
from ...fileio import atomic_write
from ...media import Mp4Writer
from ..rle import encode
from .scene import Placed, Scene, SceneConfig, check_config, full_frame
from .shapes import DEFAULT_CLASSES, SYNTHETIC_CLASSES

GENERATOR_VERSION = 1
"""Bumped whenever the same seed starts to give different videos."""


# ---------------------------------------------------------------------------------------------
# Writing a dataset


def video_name(index: int) -> str:
    """Folder / file stem of video ``index`` (0-based); its video id is ``index + 1``."""
    return f"video{index + 1:05d}"


@dataclass(frozen=True)
class _Job:
    index: int
    seed: int
    config: SceneConfig
    out_dir: Path
    video_file: bool
    fps: float
    jpeg_quality: int


def _frame_annotation(placed: Placed | None, size: tuple[int, int]) -> tuple[Any, Any, Any]:
    """Compressed RLE, ``[x, y, w, h]`` box and area of a visible placement, or three ``None``."""
    if placed is None:
        return None, None, None
    rows = np.flatnonzero(placed.mask.any(axis=1))
    cols = np.flatnonzero(placed.mask.any(axis=0))
    box = [float(placed.x0 + cols[0]), float(placed.y0 + rows[0]),
           float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
    return encode(full_frame(placed, size)), box, int(placed.mask.sum())


def _write_video(job: _Job) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Render one video, write its JPEG frames (and mp4); its ``videos`` entry and its annotations
    (without ids)."""
    height, width = job.config.size
    name = video_name(job.index)
    folder = job.out_dir / "JPEGImages" / name
    folder.mkdir(parents=True, exist_ok=True)
    scene = Scene(job.config, job.seed, job.index)
    writer = None
    if job.video_file:
        (job.out_dir / "videos").mkdir(exist_ok=True)
        writer = Mp4Writer(job.out_dir / "videos" / f"{name}.mp4", job.fps, crf=17, preset="veryfast",
                           faststart=False)
    tracks: list[list[tuple[Any, Any, Any]]] = [[] for _ in scene.objects]
    file_names = []
    for t in range(job.config.frames):
        image, visible, _ = scene.render(t)
        file_name = f"{name}/{t:05d}.jpg"
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(job.out_dir / "JPEGImages" / file_name), bgr,
                           [cv2.IMWRITE_JPEG_QUALITY, job.jpeg_quality]):
            raise CicoError("cannot write frame", job.out_dir / "JPEGImages" / file_name)
        if writer is not None:
            writer.write(bgr)
        file_names.append(file_name)
        for track, placed in zip(tracks, visible):
            track.append(_frame_annotation(placed, job.config.size))
    if writer is not None:
        writer.close()
    video = {"id": job.index + 1, "width": width, "height": height, "length": job.config.frames,
             "file_names": file_names}
    annotations = []
    for obj, track in zip(scene.objects, tracks):
        if all(seg is None for seg, _, _ in track):
            continue
        annotations.append({
            "video_id": job.index + 1, "category_id": obj.category_id, "iscrowd": 0,
            "height": height, "width": width, "length": job.config.frames,
            "segmentations": [seg for seg, _, _ in track],
            "bboxes": [box for _, box, _ in track],
            "areas": [area for _, _, area in track],
        })
    return video, annotations


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _run_jobs(jobs: list[_Job], workers: int) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    if workers <= 1:
        yield from map(_write_video, jobs)
        return
    context = multiprocessing.get_context("spawn")  # safe even when the caller has threads (torch)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        yield from pool.map(_write_video, jobs)


def _clear_previous(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite``; then remove only what this writer makes."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CicoError("exists and is not a directory", out_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise CicoError("directory is not empty (use --overwrite to replace a synthetic dataset)", out_dir)
    for folder in ("JPEGImages", "videos"):
        shutil.rmtree(out_dir / folder, ignore_errors=True)
    (out_dir / "instances.json").unlink(missing_ok=True)


def make_synthetic(
    out_dir: str | Path,
    videos: int,
    frames: int,
    size: tuple[int, int] = (360, 640),
    seed: int = 0,
    classes: int = DEFAULT_CLASSES,
    *,
    max_objects: int = 6,
    object_size: tuple[float, float] = SceneConfig.object_size,
    video_files: bool = False,
    fps: float = 6.0,
    jpeg_quality: int = 90,
    overwrite: bool = False,
    workers: int | None = None,
    class_names: tuple[str, ...] = (),
) -> Path:
    """Write a synthetic YouTube-VIS dataset and return the path of its annotation file.

    Layout: ``out_dir/JPEGImages/videoNNNNN/NNNNN.jpg`` and ``out_dir/instances.json`` (compressed
    RLE segmentations with str counts, ``[x, y, w, h]`` boxes, areas, ``None`` where absent); with
    ``video_files`` also ``out_dir/videos/videoNNNNN.mp4`` at ``fps`` (same frames, before JPEG).

    Args:
        out_dir: output folder; must be empty or missing unless ``overwrite`` (which then removes
            ``JPEGImages/``, ``videos/`` and ``instances.json`` only).
        videos: number of videos. frames: frames per video. size: ``(height, width)``.
        seed: the dataset seed; video ``i`` is drawn from ``default_rng([seed, i])``.
        classes: use the first ``classes`` names of :data:`SYNTHETIC_CLASSES`.
        class_names: draw these shapes instead (see :class:`SceneConfig`).
        max_objects: objects per video are 1..max_objects.
        object_size: range of the objects' base diameters, as fractions of the short side.
        workers: processes rendering videos in parallel (default: up to 2); output is identical.
            They are started with "spawn", so a script calling this with ``workers > 1`` needs the
            usual ``if __name__ == "__main__":`` guard.

    Raises:
        CicoError: bad arguments, a non-empty ``out_dir`` without ``overwrite``, a write failure.
    """
    out_dir = Path(out_dir)
    config = SceneConfig(frames=frames, size=(int(size[0]), int(size[1])), classes=classes,
                         max_objects=max_objects, object_size=(float(object_size[0]), float(object_size[1])),
                         class_names=tuple(class_names))
    check_config(config)
    if videos < 1:
        raise CicoError(f"videos must be at least 1, got {videos}")
    if video_files and (config.size[0] % 2 or config.size[1] % 2):
        raise CicoError(f"video files need an even frame size, got {config.size[0]}x{config.size[1]}")
    if fps <= 0:
        raise CicoError(f"fps must be positive, got {fps}")
    _clear_previous(out_dir, overwrite)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CicoError(f"cannot create the output folder: {err.strerror}", out_dir) from err

    jobs = [_Job(i, seed, config, out_dir, video_files, fps, jpeg_quality) for i in range(videos)]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    dataset: dict[str, Any] = {
        "info": {"description": "cico synthetic shapes (cico.data.synthetic)", "version": GENERATOR_VERSION,
                 "seed": seed, "videos": videos, "frames": frames, "size": list(config.size),
                 "max_objects": max_objects, "object_size": list(config.object_size)},
        "licenses": [],
        "videos": [],
        "categories": [{"id": SYNTHETIC_CLASSES.index(name) + 1, "name": name, "supercategory": "shape"}
                       for name in config.names],
        "annotations": [],
    }
    for video, tracks in _run_jobs(jobs, min(workers, videos)):
        dataset["videos"].append(video)
        for annotation in tracks:
            dataset["annotations"].append({"id": len(dataset["annotations"]) + 1, **annotation})

    path = out_dir / "instances.json"
    try:
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(dataset, separators=(",", ":")))
    except OSError as err:
        raise CicoError(f"cannot write annotations: {err.strerror}", path) from err
    return path
