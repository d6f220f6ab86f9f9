"""Reading and checking YouTube-VIS ground truth and results for the metric.

Both files become lists of :class:`Track`: one object track of one video with its per-frame
compressed RLEs and mask areas. Everything the official ``ytvos.py`` would trip over (broken JSON,
wrong types, missing keys, a malformed RLE, a result on a video the ground truth does not have)
raises a one-line :class:`~cico.errors.CicoError` naming the file and the place; what the official
code silently accepts (a result of an unknown category, a GT track of an unknown video or category)
is accepted the same way.

The ground truth is not read through :mod:`cico.data.annotations` on purpose: its checks are those
of a training file (every list as long as the video, masks of the video's size, no dangling ids),
stricter than the official evaluator, whose results the metric must reproduce on any input it takes.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, cast

import numpy as np
from pycocotools import mask as mask_utils

from ..data.annotations import read_json as read_annotations_json
from ..data.rle import RLE, to_rle
from ..data.rle import areas as rle_areas
from ..errors import CicoError

Source = str | Path


@dataclass
class Track:
    """One object track (a GT annotation or a result) of one video.

    Attributes:
        id: GT annotation id; for a result its 1-based position in the results list (as the
            official ``loadRes`` numbers them).
        video_id, category_id: as in the file.
        score: result confidence (0 for ground truth).
        iscrowd: GT crowd flag (always False for results).
        avg_area: the area used for the small/medium/large ranges: for GT the mean of the non-zero
            entries of its ``areas`` field, for results the mean of the non-zero mask areas.
        rles: ``[L]`` per-frame compressed RLE, ``None`` where the object is absent. ``L`` is the
            length of the ``segmentations`` list, which need not be the video length.
        areas: ``[L]`` int64 mask area per frame (0 where absent).
        sizes: ``[L, 2]`` int64 mask ``(height, width)`` per frame (0 where absent).
    """

    id: int
    video_id: int
    category_id: int
    score: float
    iscrowd: bool
    avg_area: float
    rles: list[RLE | None]
    areas: np.ndarray
    sizes: np.ndarray


@dataclass(frozen=True)
class VideoMeta:
    """What the tracking metrics and breakdowns need to know of one GT video.

    Attributes:
        name: the folder of its first frame (``file_names[0]`` up to the first ``/``), as TrackEval
            names sequences; ``"video <id>"`` without ``file_names``.
        length: number of frames (``len(file_names)``, else ``length``; ``None`` if neither is given).
        long_video: the video is marked ``"long_video": true`` (the YouTube-VIS 2022 long-video split).
        file_names: its frame paths, relative to the frames folder (empty if the file has none).
    """

    name: str
    length: int | None
    long_video: bool
    file_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroundTruth:
    """The ground truth in evaluation scope.

    Attributes:
        video_ids: sorted ids of every video in ``videos``.
        video_sizes: video id -> ``(height, width)`` (``None`` where the file omits them; only
            polygons need them).
        categories: category id -> name, in ascending id order.
        tracks: GT tracks of known videos and categories, in file order.
        source: where the ground truth came from (for messages).
        videos: video id -> name, length and long-video mark.
    """

    video_ids: list[int]
    video_sizes: dict[int, tuple[int | None, int | None]]
    categories: dict[int, str]
    tracks: list[Track]
    source: str
    videos: dict[int, VideoMeta] = field(default_factory=dict)


def read_json(path: Source, what: str) -> Any:
    """Parse a JSON file, or the ``results.json`` (or only ``.json``) inside a CodaLab ``.zip``.

    ``what`` names the file's role in messages ("ground truth", "results").
    """
    path = Path(path)
    if path.suffix.lower() != ".zip":
        return read_annotations_json(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith(".json")]
            name = "results.json" if "results.json" in names else (names[0] if len(names) == 1 else None)
            if name is None:
                raise CicoError(f"the zip holds no results.json (found: {names or 'no JSON file'})", path)
            with archive.open(name) as stream:
                return json.load(stream)
    except FileNotFoundError:
        raise CicoError(f"no such {what} file", path) from None
    except json.JSONDecodeError as err:
        raise CicoError(f"broken JSON in the zip: {err.msg} at line {err.lineno} column {err.colno}", path) from None
    except UnicodeDecodeError:
        raise CicoError("broken JSON in the zip: not UTF-8 text", path) from None
    except zipfile.BadZipFile:
        raise CicoError("not a valid zip file", path) from None
    except OSError as err:
        raise CicoError(f"cannot read: {err.strerror or err}", path) from None


def _integer(value: Any, where: str, source: str) -> int:
    """An id: a JSON integer (an integral float is accepted, as the official code compares with ``==``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CicoError(f"{where} must be an integer, got {json.dumps(value)[:40]}", source)
    if isinstance(value, float):
        if not value.is_integer():
            raise CicoError(f"{where} must be an integer, got {value}", source)
        return int(value)
    return value


def _field(entry: Any, key: str, where: str, source: str) -> Any:
    if not isinstance(entry, dict):
        raise CicoError(f"{where} must be an object, got {type(entry).__name__}", source)
    if key not in entry:
        raise CicoError(f"{where} has no '{key}'", source)
    return entry[key]


def _track_masks(
    segmentations: Any, size: tuple[int | None, int | None], where: str, source: str
) -> tuple[list[RLE | None], np.ndarray, np.ndarray]:
    """Per-frame compressed RLEs, areas ``[L]`` and sizes ``[L, 2]`` of one track's segmentations."""
    if not isinstance(segmentations, list):
        raise CicoError(f"{where}: 'segmentations' must be a list, got {type(segmentations).__name__}", source)
    rles: list[RLE | None] = [None] * len(segmentations)
    frames = [frame for frame, seg in enumerate(segmentations) if seg]  # null, [] and {} mean "absent"
    _convert_uncompressed(segmentations, frames, rles)
    for frame in frames:
        seg = segmentations[frame]
        if rles[frame] is not None:
            continue
        rle: RLE | None
        if type(seg) is dict and type(seg.get("counts")) is str and "size" in seg:
            rles[frame] = seg  # compressed RLE, used as is (the common case, kept fast)
        else:
            height, width = size
            if isinstance(seg, list) and (height is None or width is None):
                raise CicoError(
                    f"{where}: segmentations[{frame}] is a polygon but the video has no height/width", source
                )
            try:
                rle = to_rle(seg, height or 0, width or 0)
            except Exception as err:  # pycocotools raises bare Exception for unsupported input
                problem = f"segmentations[{frame}] is not a valid polygon or RLE ({err})"
                raise CicoError(f"{where}: {problem}", source) from None
            rles[frame] = rle
    n = len(rles)
    areas = np.zeros(n, dtype=np.int64)
    sizes = np.zeros((n, 2), dtype=np.int64)
    if frames:
        present = cast("list[RLE]", [rles[f] for f in frames])  # the frames with a segmentation
        try:
            present_areas = rle_areas(present)
            present_sizes = np.array([rle["size"] for rle in present], dtype=np.int64).reshape(len(frames), 2)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as err:
            bad = next((f for f in frames if not _valid_rle(rles[f])), frames[0])
            raise CicoError(f"{where}: segmentations[{bad}] is not a valid RLE ({err})", source) from None
        too_big = (present_areas > present_sizes.prod(1)) | (present_sizes.min(1) <= 0)
        if too_big.any():
            k = int(too_big.argmax())
            size = present_sizes[k].tolist()
            problem = f"segmentations[{frames[k]}] is not a valid RLE (counts do not fit size {size})"
            raise CicoError(f"{where}: {problem}", source)
        index = slice(None) if len(frames) == n else np.array(frames)
        areas[index] = present_areas
        sizes[index] = present_sizes
    return rles, areas, sizes


def _convert_uncompressed(segmentations: list, frames: list[int], rles: list[RLE | None]) -> None:
    """Compress a track's uncompressed RLEs (as GT files hold them) in one call; on any problem leave
    them to the frame-by-frame path, which names the bad frame."""
    first = segmentations[frames[0]] if frames else None
    if not (type(first) is dict and type(first.get("counts")) is list):
        return  # compressed RLEs or polygons (results files): nothing to batch
    todo = [f for f in frames if type(segmentations[f]) is dict and type(segmentations[f].get("counts")) is list]
    if len(todo) < 2:
        return
    try:
        converted = mask_utils.frPyObjects([segmentations[f] for f in todo], 0, 0)
    except Exception:  # noqa: BLE001 -- pycocotools raises bare Exception; the slow path reports it
        return
    for f, rle in zip(todo, converted):
        rles[f] = rle


def _valid_rle(rle: RLE | None) -> bool:
    try:
        size = rle["size"]  # type: ignore[index]
        mask_utils.area([rle])
        return len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        return False


def _mean_nonzero(areas: Sequence[Any]) -> float:
    """The official ``avg_area``: mean of the truthy entries, 0 when there is none."""
    kept = [a for a in areas if a]
    return float(np.array(kept).mean()) if kept else 0.0


def _video_meta(video: Mapping[str, Any], vid: int) -> VideoMeta:
    """Name, length and long-video mark of one ``videos`` entry (lenient: only tracking needs them)."""
    names = video.get("file_names")
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return VideoMeta(names[0].split("/")[0], len(names), bool(video.get("long_video", False)), tuple(names))
    length = video.get("length")
    length = length if isinstance(length, int) and not isinstance(length, bool) else None
    return VideoMeta(f"video {vid}", length, bool(video.get("long_video", False)))


def load_ground_truth(gt: Source | Mapping[str, Any]) -> GroundTruth:
    """Check and index a YouTube-VIS / OVIS ground-truth file (or its already parsed dict)."""
    source = str(gt) if isinstance(gt, (str, Path)) else "ground truth"
    data = read_json(gt, "ground truth") if isinstance(gt, (str, Path)) else gt
    if not isinstance(data, Mapping):
        raise CicoError(f"ground truth must be a JSON object, got {type(data).__name__}", source)
    for key in ("videos", "categories", "annotations"):
        if key not in data:
            hint = " (an unannotated split cannot be evaluated)" if key == "annotations" else ""
            raise CicoError(f"ground truth has no '{key}'{hint}", source)
        if not isinstance(data[key], list):
            raise CicoError(f"'{key}' must be a list, got {type(data[key]).__name__}", source)

    video_sizes: dict[int, tuple[int | None, int | None]] = {}
    videos: dict[int, VideoMeta] = {}
    for i, video in enumerate(data["videos"]):
        vid = _integer(_field(video, "id", f"videos[{i}]", source), f"videos[{i}].id", source)
        height, width = video.get("height"), video.get("width")
        video_sizes[vid] = (
            _integer(height, f"videos[{i}].height", source) if height is not None else None,
            _integer(width, f"videos[{i}].width", source) if width is not None else None,
        )
        videos[vid] = _video_meta(video, vid)
    names: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        cid = _integer(_field(cat, "id", f"categories[{i}]", source), f"categories[{i}].id", source)
        names[cid] = str(cat.get("name", cid))
    categories = {cid: names[cid] for cid in sorted(names)}

    tracks: list[Track] = []
    seen: dict[int, int] = {}
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        ann_id = _integer(_field(ann, "id", where, source), f"{where}.id", source)
        where = f"annotations[{i}] (id {ann_id})"
        if ann_id in seen:
            raise CicoError(f"{where}: duplicate annotation id (also annotations[{seen[ann_id]}])", source)
        seen[ann_id] = i
        vid = _integer(_field(ann, "video_id", where, source), f"{where}.video_id", source)
        cid = _integer(_field(ann, "category_id", where, source), f"{where}.category_id", source)
        segmentations = _field(ann, "segmentations", where, source)
        if vid not in video_sizes or cid not in categories:
            continue  # out of scope, never loaded by the official getAnnIds
        iscrowd = ann.get("iscrowd", 0)
        if not isinstance(iscrowd, int):  # JSON true/false are accepted too, as int() takes them
            raise CicoError(f"{where}: 'iscrowd' must be 0 or 1, got {json.dumps(iscrowd)[:20]}", source)
        rles, areas, sizes = _track_masks(segmentations, video_sizes[vid], where, source)
        area_field = ann.get("areas")
        if area_field is None:  # no `areas`: fall back to the mask areas
            avg_area = _mean_nonzero(areas.tolist())
        else:
            if not isinstance(area_field, list) or not all(
                a is None or (isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a))
                for a in area_field
            ):
                raise CicoError(f"{where}: 'areas' must be a list of numbers or null", source)
            avg_area = _mean_nonzero(area_field)
        tracks.append(Track(ann_id, vid, cid, 0.0, bool(iscrowd), avg_area, rles, areas, sizes))
    return GroundTruth(sorted(video_sizes), video_sizes, categories, tracks, source, videos)


def load_results(
    results: Source | Sequence[Mapping[str, Any]], gt: GroundTruth
) -> tuple[list[Track], dict[int, int]]:
    """Check a results list (dicts, or :class:`cico.outputs.results.Track`) against the ground truth.

    Returns the results of GT categories as tracks (in file order) and, for the results whose
    category is not a GT category (dropped, as the official code does), a count per category id.
    """
    source = str(results) if isinstance(results, (str, Path)) else "results"
    data = read_json(results, "results") if isinstance(results, (str, Path)) else results
    if isinstance(data, Mapping) or not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        raise CicoError(f"results must be a JSON list of tracks, got {type(data).__name__}", source)
    tracks: list[Track] = []
    dropped: dict[int, int] = {}
    for i, entry in enumerate(data):
        if hasattr(entry, "to_result"):  # cico.outputs.results.Track, straight from prediction
            entry = entry.to_result()
        where = f"result {i}"
        vid = _integer(_field(entry, "video_id", where, source), f"{where}: video_id", source)
        cid = _integer(_field(entry, "category_id", where, source), f"{where}: category_id", source)
        score = _field(entry, "score", where, source)
        segmentations = _field(entry, "segmentations", where, source)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
            raise CicoError(f"{where}: 'score' must be a number, got {json.dumps(score)[:20]}", source)
        if vid not in gt.video_sizes:
            raise CicoError(f"{where}: video_id {vid} is not a video of the ground truth {gt.source}", source)
        where = f"result {i} (video {vid})"
        rles, areas, sizes = _track_masks(segmentations, gt.video_sizes[vid], where, source)
        if cid not in gt.categories:
            dropped[cid] = dropped.get(cid, 0) + 1
            continue
        nonzero = areas[areas > 0]
        avg_area = float(nonzero.sum()) / nonzero.size if nonzero.size else 0.0  # exact: integer sum
        tracks.append(Track(i + 1, vid, cid, score, False, avg_area, rles, areas, sizes))
    return tracks, dropped
