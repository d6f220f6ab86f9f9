"""What every format shares: building a YouTube-VIS dataset from per-frame masks, and the export model.

Importers feed :class:`DatasetBuilder` one mask per (video, track, frame); several masks of one track in
one frame are unioned. :meth:`DatasetBuilder.build` gives :class:`~cico.data.annotations.Annotations`
with compressed RLEs, boxes and areas per frame and ``None`` where a track is absent (an empty mask
counts as absent). Exporters take :class:`ExportVideo` objects, made from annotations by
:func:`videos_from_annotations` or from a results file by the command.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ...errors import CicoError
from ..annotations import Annotations, Category, Track, Video
from ..rle import RLE, to_rle
from ..sources import dataset_videos

DEFAULT_CATEGORY = "object"


@dataclass(frozen=True)
class ImportOptions:
    """Options of ``cico import-data``; each format reads the ones it knows.

    Attributes:
        category: class of every object when the format names none (ytvos without ``meta.json``).
        annotated_only: ytvos: keep only the frames that have an annotation PNG.
        classes: mots: class id -> name (KITTI-MOTS's by default).
        ignore: mots/ytvos ignore regions: ``crowd`` (an ``iscrowd`` track per class) or ``drop``.
        ungrouped_as_tracks: labelme: a shape without ``group_id`` is its own track instead of an error.
        frames: cvat/coco: the frames folder, when not the format's default.
    """

    category: str = DEFAULT_CATEGORY
    annotated_only: bool = False
    classes: dict[int, str] | None = None
    ignore: str = "crowd"
    ungrouped_as_tracks: bool = False
    frames: Path | None = None


@dataclass
class ImportResult:
    """An imported dataset: the annotations, the folder its ``file_names`` are relative to, and warnings."""

    annotations: Annotations
    frames_dir: Path
    warnings: list[str] = field(default_factory=list)


def _bytes_rle(rle: RLE) -> RLE:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def polygons_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """Union of polygons ``[x1, y1, x2, y2, ...]`` rasterised by pycocotools."""
    rle = to_rle([list(map(float, p)) for p in polygons], height, width)
    if rle is None:
        raise ValueError("no polygons")
    return _bytes_rle(rle)


class DatasetBuilder:
    """Collects videos, categories and per-frame masks into YouTube-VIS annotations.

    Tracks are keyed by any hashable within their video; ids are given in order of first appearance.
    """

    def __init__(self) -> None:
        self.videos: list[Video] = []
        self._names: set[str] = set()
        self._tracks: dict[tuple[int, Hashable], tuple[str, bool, dict[int, RLE]]] = {}

    def add_video(self, name: str, file_names: list[str], height: int, width: int) -> int:
        """Register a video; returns its id (1, 2, ...)."""
        if not file_names:
            raise CicoError("the video has no frames", name)
        video = Video(len(self.videos) + 1, list(file_names), int(width), int(height), {"name": name})
        self.videos.append(video)
        return video.id

    def add(self, video_id: int, key: Hashable, category: str, frame: int, rle: RLE, iscrowd: bool = False) -> None:
        """Add one mask (compressed RLE at the video's size) of track ``key`` in ``frame`` (0-based)."""
        video = self.videos[video_id - 1]
        if list(rle["size"]) != [video.height, video.width]:
            raise ValueError(f"mask size {rle['size']} is not the video's {[video.height, video.width]}")
        entry = self._tracks.setdefault((video_id, key), (category, iscrowd, {}))
        frames = entry[2]
        rle = _bytes_rle(rle)
        frames[frame] = mask_utils.merge([frames[frame], rle]) if frame in frames else rle

    def has_track(self, video_id: int, key: Hashable) -> bool:
        return (video_id, key) in self._tracks

    def build(self, category_ids: dict[str, int] | None = None) -> Annotations:
        """The annotations. Categories get ``category_ids`` (name -> id), else ids 1.. by sorted name."""
        names = sorted({category for category, _, _ in self._tracks.values()})
        if category_ids is None:
            category_ids = {name: i + 1 for i, name in enumerate(names)}
        else:
            names = sorted(category_ids, key=category_ids.__getitem__)
        categories = [Category(category_ids[name], name) for name in names]
        tracks: list[Track] = []
        for (video_id, _), (category, iscrowd, frames) in self._tracks.items():
            length = self.videos[video_id - 1].length
            segmentations: list[RLE | None] = [None] * length
            bboxes: list[list[float] | None] = [None] * length
            areas: list[float | None] = [None] * length
            for f, rle in sorted(frames.items()):
                area = int(mask_utils.area(rle))
                if area == 0:
                    continue
                segmentations[f] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
                bboxes[f] = [float(v) for v in mask_utils.toBbox(rle)]
                areas[f] = float(area)
            if any(s is not None for s in segmentations):
                tracks.append(Track(len(tracks) + 1, video_id, category_ids[category], iscrowd, segmentations,
                                    bboxes, areas))
        return Annotations(list(self.videos), categories, tracks)


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header; a missing or unreadable file is a CicoError."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise CicoError("frame file is missing", path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as err:
        raise CicoError(f"cannot read the image ({err})", path) from None
    return height, width


def natural_key(path: Path) -> list[int | str]:
    """Sort key of names with numbers in natural order (``2`` before ``10``)."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]


def parse_classes(text: str) -> dict[int, str]:
    """``"1=car,2=pedestrian"`` -> ``{1: "car", 2: "pedestrian"}``."""
    classes: dict[int, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, name = item.partition("=")
        if not sep or not key.strip().isdigit() or not name.strip():
            raise CicoError(f"--classes: {item!r} is not ID=NAME")
        classes[int(key)] = name.strip()
    return classes


# ---------------------------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportObject:
    """One object of a video to export: per-frame compressed RLEs (``None`` where absent).

    ``score`` orders overlapping objects (higher on top) when the format cannot store overlaps; ground
    truth has none and keeps its order (later on top).
    """

    category: str
    category_id: int
    segmentations: Sequence[RLE | None]
    iscrowd: bool = False
    score: float | None = None


@dataclass(frozen=True)
class ExportVideo:
    """A video to export: its name, frame names (file stems), size, objects and frame files if known."""

    name: str
    frame_names: list[str]
    height: int
    width: int
    objects: list[ExportObject]
    frame_files: list[Path] | None = None


def videos_from_annotations(ann: Annotations, frames_dir: Path | None = None) -> list[ExportVideo]:
    """The videos of an annotation file as :class:`ExportVideo`, named as ``cico predict`` names their outputs
    (frame files under ``frames_dir`` if given)."""
    names = {c.id: c.name for c in ann.categories}
    out: list[ExportVideo] = []
    used: set[str] = set()
    for video, source in zip(ann.videos, dataset_videos(ann, frames_dir or Path("."))):
        name = source.name if source.name not in used | {"."} else f"{video.extra.get('name', 'video')}_{video.id}"
        used.add(name)
        objects = [ExportObject(names[t.category_id], t.category_id,
                                [ann.rle(t, f) for f in range(video.length)], t.iscrowd)
                   for t in ann.tracks_of(video.id)]
        out.append(ExportVideo(name, [Path(n).stem for n in video.file_names], video.height,
                               video.width, objects, list(source.paths) if frames_dir is not None else None))
    return out


def paint(objects: Sequence[ExportObject], frame: int, height: int, width: int,
          values: Sequence[int]) -> tuple[np.ndarray, int]:
    """One frame's id image ``[H, W]`` (uint16) with ``values[i]`` where object ``i`` is, and the number of
    pixels claimed by several objects (the higher score, else the later object, wins)."""
    out = np.zeros((height, width), np.uint16)
    claimed = np.zeros((height, width), bool)
    order = sorted(range(len(objects)), key=lambda i: (objects[i].score is not None and objects[i].score, i))
    overlap = 0
    for i in order:
        rle = objects[i].segmentations[frame]
        if rle is None:
            continue
        mask = mask_utils.decode(_bytes_rle(rle)).astype(bool)
        overlap += int((claimed & mask).sum())
        claimed |= mask
        out[mask] = values[i]
    return out, overlap


def link_frames(files: Sequence[Path], names: Sequence[str], folder: Path) -> None:
    """Put the frame files into ``folder`` under ``names``: hard links where possible, else copies."""
    folder.mkdir(parents=True, exist_ok=True)
    for src, name in zip(files, names):
        if not src.is_file():
            raise CicoError("frame file is missing", src)
        try:
            os.link(src, folder / name)
        except OSError:
            shutil.copyfile(src, folder / name)


def write_folder(out: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` into a temporary folder beside ``out``, then put it in place of ``out``.

    An error leaves ``out`` as it was (absent, or the previous export).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        write(tmp)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "previous")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
