"""YouTube-VIS / OVIS annotation files: typed reading, validation and writing.

The format (YouTube-VIS, also used by OVIS) is one JSON object with

* ``videos``: ``id``, ``file_names`` (frame paths relative to the frames folder), ``length``,
  ``width``, ``height``;
* ``categories``: ``id``, ``name`` (any ids: they need not be ``1..C``);
* ``annotations`` (absent in valid/test files): one per object *track*, with ``id``, ``video_id``,
  ``category_id``, ``iscrowd`` and per-frame lists of length ``length``: ``segmentations``
  (polygons, uncompressed RLE or compressed RLE; ``None``/``[]``/``{}`` where absent), ``bboxes``
  (``[x, y, w, h]`` or ``None``), ``areas`` and optionally ``occlusion``.

Classes get contiguous 1-based labels in the order of the sorted category ids (the reference's
``cat2label``); :meth:`Annotations.category_id_of` maps a label back to the file's id, so
outputs always carry the file's own category ids.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import CicoError
from ..fileio import atomic_write
from .rle import RLE, decode, to_rle
from .rle import area as rle_area

_VIDEO_KEYS = ("id", "width", "height", "length", "file_names")
_TRACK_KEYS = ("id", "video_id", "category_id", "iscrowd", "segmentations", "bboxes", "areas", "occlusion")
_CATEGORY_KEYS = ("id", "name")


@dataclass
class Video:
    """One video: its annotated frames (paths relative to the frames folder) and size."""

    id: int
    file_names: list[str]
    width: int
    height: int
    extra: dict[str, Any] = field(default_factory=dict)
    """Other keys of the file's video entry (``name``, ``license``, ...), written back unchanged."""

    @property
    def length(self) -> int:
        return len(self.file_names)


@dataclass
class Category:
    """One class as the file names it."""

    id: int
    name: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Track:
    """One annotated object through its video: per-frame lists of the video's length.

    ``segmentations[f]`` is the file's own entry (polygons, RLE, or ``None``/``[]``/``{}`` when absent);
    ``bboxes[f]`` is ``[x, y, w, h]`` or ``None``; ``areas[f]`` a number or ``None``.
    """

    id: int
    video_id: int
    category_id: int
    iscrowd: bool
    segmentations: list[Any]
    bboxes: list[list[float] | None]
    areas: list[float | None]
    occlusion: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def has_valid_box(self, frame: int) -> bool:
        """Whether frame ``frame`` counts for training: box given, area > 0, w >= 1, h >= 1."""
        box, area = self.bboxes[frame], self.areas[frame]
        return box is not None and area is not None and area > 0 and box[2] >= 1 and box[3] >= 1


@dataclass
class Annotations:
    """A parsed annotation file. Build with :func:`load_annotations` or :func:`parse_annotations`.

    Attributes:
        videos, categories, tracks: in file order.
        has_gt: whether the file has an ``annotations`` list (valid/test files have none).
        extra: the other top-level keys (``info``, ``licenses``, ...), written back unchanged.
        path: the file it was read from, if any.
    """

    videos: list[Video]
    categories: list[Category]
    tracks: list[Track]
    has_gt: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        self._videos = {v.id: v for v in self.videos}
        self._tracks_by_video: dict[int, list[Track]] = {v.id: [] for v in self.videos}
        for track in self.tracks:
            self._tracks_by_video.setdefault(track.video_id, []).append(track)
        self.category_ids: tuple[int, ...] = tuple(sorted(c.id for c in self.categories))
        self._labels = {cat_id: i + 1 for i, cat_id in enumerate(self.category_ids)}
        names = {c.id: c.name for c in self.categories}
        self.class_names: tuple[str, ...] = tuple(names[i] for i in self.category_ids)
        """Class names in label order: ``class_names[label - 1]``."""

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def video(self, video_id: int) -> Video:
        return self._videos[video_id]

    def tracks_of(self, video_id: int) -> list[Track]:
        """The tracks of one video, in file order."""
        return self._tracks_by_video.get(video_id, [])

    def label_of(self, category_id: int) -> int:
        """The contiguous 1-based label of a category id of the file."""
        return self._labels[category_id]

    def category_id_of(self, label: int) -> int:
        """The file's category id of a 1-based label."""
        if not 1 <= label <= len(self.category_ids):
            raise ValueError(f"label {label} outside 1..{len(self.category_ids)}")
        return self.category_ids[label - 1]

    def rle(self, track: Track, frame: int) -> RLE | None:
        """Compressed RLE of ``track`` in ``frame`` at the video's size, ``None`` when absent."""
        video = self._videos[track.video_id]
        return to_rle(track.segmentations[frame], video.height, video.width)

    def mask(self, track: Track, frame: int) -> np.ndarray | None:
        """Binary mask ``uint8 [H, W]`` of ``track`` in ``frame``, ``None`` when absent."""
        rle = self.rle(track, frame)
        return None if rle is None else decode(rle)

    def subset(self, video_ids: set[int] | list[int]) -> Annotations:
        """A new :class:`Annotations` with only these videos (in file order), their tracks and all categories."""
        keep = set(video_ids)
        return Annotations([v for v in self.videos if v.id in keep], list(self.categories),
                           [t for t in self.tracks if t.video_id in keep], self.has_gt, dict(self.extra))


# ---------------------------------------------------------------------------------------------- reading


def read_json(path: str | Path) -> Any:
    """``json.load`` of a file, with missing/unreadable/broken files reported as :class:`CicoError`."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CicoError("file not found", path) from None
    except json.JSONDecodeError as err:
        raise CicoError(f"broken JSON: {err.msg} at line {err.lineno} column {err.colno}", path) from None
    except UnicodeDecodeError:
        raise CicoError("broken JSON: not UTF-8 text", path) from None
    except OSError as err:
        raise CicoError(f"cannot read: {err.strerror}", path) from None


def load_annotations(path: str | Path) -> Annotations:
    """Read and validate an annotation file.

    Raises:
        CicoError: one line naming the file and its first problem (broken JSON, wrong schema,
            duplicate or dangling ids, per-frame lists whose length is not the video's, masks of the
            wrong size); ``cico check-data`` lists all of them.
    """
    return parse_annotations(read_json(path), path)


def parse_annotations(data: Any, path: str | Path | None = None) -> Annotations:
    """Validate and type an already-loaded annotation dict (see :func:`load_annotations`)."""
    problems = annotation_problems(data)
    if problems:
        more = f" (and {len(problems) - 1} more problems; run 'cico check-data')" if len(problems) > 1 else ""
        raise CicoError(problems[0] + more, path)
    videos = [Video(int(v["id"]), list(v["file_names"]), int(v["width"]), int(v["height"]),
                    {k: x for k, x in v.items() if k not in _VIDEO_KEYS}) for v in data["videos"]]
    sizes = {v.id: (v.height, v.width) for v in videos}
    categories = [Category(int(c["id"]), str(c["name"]), {k: x for k, x in c.items() if k not in _CATEGORY_KEYS})
                  for c in data.get("categories", [])]
    tracks = [_track(a, *sizes[int(a["video_id"])]) for a in data.get("annotations", [])]
    extra = {k: x for k, x in data.items() if k not in ("videos", "categories", "annotations")}
    return Annotations(videos, categories, tracks, "annotations" in data, extra, Path(path) if path else None)


def _track(a: dict[str, Any], height: int, width: int) -> Track:
    segmentations = list(a["segmentations"])
    bboxes, areas = a.get("bboxes"), a.get("areas")
    if bboxes is None or areas is None:  # derive what the file leaves out from the masks
        rles = [to_rle(s, height, width) for s in segmentations]
        if bboxes is None:
            bboxes = [None if r is None else [float(x) for x in mask_utils.toBbox(_bytes(r))] for r in rles]
        if areas is None:
            areas = [None if r is None else float(rle_area(r)) for r in rles]
    extra = {k: x for k, x in a.items() if k not in _TRACK_KEYS}
    return Track(int(a["id"]), int(a["video_id"]), int(a["category_id"]), bool(a.get("iscrowd", 0)),
                 segmentations, list(bboxes), list(areas), a.get("occlusion"), extra)


def _bytes(rle: RLE) -> RLE:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


# ------------------------------------------------------------------------------------------- validation


def _is_int(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _segmentation_problem(seg: Any, height: int, width: int) -> str | None:
    """What is wrong with one frame's segmentation entry, or ``None``."""
    if not seg:
        return None
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or not all(_is_number(x) for x in poly):
                return "polygon is not a list of numbers"
            if len(poly) < 6 or len(poly) % 2:
                return f"polygon with {len(poly)} coordinates (needs an even number >= 6)"
        return None
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        return "segmentation is neither polygons nor an RLE {size, counts}"
    size = seg["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(s) for s in size)):
        return f"RLE size {size!r} is not [height, width]"
    if list(size) != [height, width]:
        return f"mask size {size[0]}x{size[1]} but the video is {height}x{width}"
    counts = seg["counts"]
    if isinstance(counts, list):
        if not all(_is_int(c) for c in counts):
            return "uncompressed RLE counts are not integers"
        if sum(counts) != height * width:
            return f"uncompressed RLE counts cover {sum(counts)} pixels, not {height}x{width}"
    elif not isinstance(counts, str):
        return "RLE counts are neither a list nor a string"
    return None


def annotation_problems(data: Any) -> list[str]:
    """Every schema/consistency problem of an annotation dict, one line each (empty if valid).

    Checked: the top-level structure; video ids unique, ``file_names`` a list of strings whose length
    equals ``length``, ``width``/``height`` positive integers; category ids unique with names; track ids
    unique, tracks pointing at existing videos and categories; per-frame lists as long as the video;
    per-frame boxes ``[x, y, w, h]``; segmentations well-formed, masks of the video's size.
    """
    if not isinstance(data, dict):
        return [f"top level is a {type(data).__name__}, expected an object with 'videos'"]
    videos = data.get("videos")
    if not isinstance(videos, list):
        return ["missing 'videos' list" if videos is None else "'videos' is not a list"]
    problems: list[str] = []
    video_ids, sizes = _check_videos(videos, problems)
    cat_ids = _check_categories(data.get("categories", []), problems)
    tracks = data.get("annotations", [])
    if not isinstance(tracks, list):
        return problems + ["'annotations' is not a list"]
    track_ids: set[int] = set()
    for i, a in enumerate(tracks):
        if not isinstance(a, dict) or not _is_int(a.get("id")):
            problems.append(f"annotation #{i}: not an object with an integer 'id'")
            continue
        where = f"annotation {int(a['id'])}"
        if int(a["id"]) in track_ids:
            problems.append(f"{where}: duplicate annotation id")
            continue
        track_ids.add(int(a["id"]))
        if not _is_int(a.get("category_id")) or int(a["category_id"]) not in cat_ids:
            problems.append(f"{where}: category_id {a.get('category_id')!r} is not in 'categories'")
        video_id = a.get("video_id")
        if not _is_int(video_id) or int(video_id) not in video_ids:
            problems.append(f"{where}: video_id {video_id!r} is not in 'videos'")
        elif int(video_id) in sizes:  # otherwise that video's own problem is reported already
            _check_track_frames(a, f"{where} (video {int(video_id)})", *sizes[int(video_id)], problems)
    return problems


def _check_videos(videos: list[Any], problems: list[str]) -> tuple[set[int], dict[int, tuple[int, int, int]]]:
    """Video ids seen, and ``{id: (length, height, width)}`` of the well-formed videos."""
    video_ids: set[int] = set()
    sizes: dict[int, tuple[int, int, int]] = {}
    for i, v in enumerate(videos):
        if not isinstance(v, dict) or not _is_int(v.get("id")):
            problems.append(f"video #{i}: not an object with an integer 'id'")
            continue
        vid = int(v["id"])
        if vid in video_ids:
            problems.append(f"video {vid}: duplicate video id")
            continue
        video_ids.add(vid)
        names = v.get("file_names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append(f"video {vid}: 'file_names' is not a list of strings")
            continue
        length = v.get("length", len(names))
        if not _is_int(length) or int(length) != len(names):
            problems.append(f"video {vid}: 'length' is {length!r} but 'file_names' has {len(names)} entries")
        height, width = v.get("height"), v.get("width")
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            problems.append(f"video {vid}: 'height'/'width' must be positive integers, got {height!r}/{width!r}")
            continue
        sizes[vid] = (len(names), int(height), int(width))
    return video_ids, sizes


def _check_categories(categories: Any, problems: list[str]) -> set[int]:
    if not isinstance(categories, list):
        problems.append("'categories' is not a list")
        return set()
    cat_ids: set[int] = set()
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            problems.append(f"category #{i}: needs an integer 'id' and a string 'name'")
        elif int(c["id"]) in cat_ids:
            problems.append(f"category {int(c['id'])}: duplicate category id")
        else:
            cat_ids.add(int(c["id"]))
    return cat_ids


def _check_track_frames(a: dict[str, Any], where: str, length: int, height: int, width: int,
                        problems: list[str]) -> None:
    """Per-frame lists of one track: lengths, then the first bad segmentation/box/area."""
    if "segmentations" not in a:
        problems.append(f"{where}: missing 'segmentations'")
        return
    for key in ("segmentations", "bboxes", "areas", "occlusion"):
        entries = a.get(key)
        if entries is None and key != "segmentations":
            continue
        if not isinstance(entries, list):
            problems.append(f"{where}: '{key}' is not a list")
        elif len(entries) != length:
            problems.append(f"{where}: '{key}' has {len(entries)} entries but the video has {length} frames")
    if isinstance(a["segmentations"], list):
        for f, seg in enumerate(a["segmentations"]):
            problem = _segmentation_problem(seg, height, width)
            if problem:
                problems.append(f"{where} frame {f}: {problem}")
                break
    if isinstance(a.get("bboxes"), list):
        for f, box in enumerate(a["bboxes"]):
            if box is not None and not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
                problems.append(f"{where} frame {f}: bbox {box!r} is not [x, y, w, h] or null")
                break
    if isinstance(a.get("areas"), list):
        for f, area in enumerate(a["areas"]):
            if area is not None and not _is_number(area):
                problems.append(f"{where} frame {f}: area {area!r} is not a number or null")
                break


# ---------------------------------------------------------------------------------------------- writing


def annotations_to_dict(ann: Annotations) -> dict[str, Any]:
    """The JSON object of ``ann`` in the YouTube-VIS format (file category ids, extra keys kept)."""
    out: dict[str, Any] = dict(ann.extra)
    out["videos"] = [{"id": v.id, "width": v.width, "height": v.height, "length": v.length,
                      "file_names": v.file_names, **v.extra} for v in ann.videos]
    out["categories"] = [{"id": c.id, "name": c.name, **c.extra} for c in ann.categories]
    if ann.has_gt:
        tracks = []
        for t in ann.tracks:
            entry = {"id": t.id, "video_id": t.video_id, "category_id": t.category_id, "iscrowd": int(t.iscrowd),
                     "segmentations": t.segmentations, "bboxes": t.bboxes, "areas": t.areas}
            if t.occlusion is not None:
                entry["occlusion"] = t.occlusion
            tracks.append({**entry, **t.extra})
        out["annotations"] = tracks
    return out


def save_annotations(ann: Annotations, path: str | Path) -> None:
    """Write ``ann`` as JSON, atomically (:class:`~cico.fileio.atomic_write`)."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(annotations_to_dict(ann), f, separators=(",", ":"))
