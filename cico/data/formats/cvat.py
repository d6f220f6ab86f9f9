"""CVAT for video 1.1: ``annotations.xml`` with ``<track>``s of polygons, masks or boxes.

Every ``<track label=...>`` is one object; its shapes carry ``frame``, ``outside`` and ``keyframe``.
Between two shapes the track is interpolated as CVAT does it (CVAT's own export already lists every
frame): polygons by CVAT's curve matching, masks repeated; after a shape with ``outside="1"`` the
track is absent up to its next shape, and after its last shape it lasts to the end of the video unless
that shape is outside. Polygons are rasterised by pycocotools. A mask is CVAT's run-length code:
alternating runs of 0 and 1 (starting with 0), row by row within the box ``left, top, width, height``.
Tracks of boxes only have no mask and are skipped with a warning. Frames are the images of the frames
folder (``images/`` beside the XML, as CVAT exports them) in name order: frame ``i`` is the ``i``-th.
"""
from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from ...errors import CicoError
from ..rle import encode
from ..sources import frame_files
from .base import DatasetBuilder, ImportOptions, ImportResult, image_size, polygons_rle

MASK_SHAPES = ("polygon", "mask")
Shape = dict  # {"frame", "outside", "type", "points" (polygon, flat), "element" (mask)}


def cvat_mask(element: ElementTree.Element, height: int, width: int, where: str, path: Path) -> np.ndarray:
    """The full-frame ``bool [H, W]`` mask of a CVAT ``<mask rle left top width height>``."""
    try:
        counts = [int(v) for v in element.get("rle", "").split(",")]
        left, top, w, h = (int(element.get(k, "")) for k in ("left", "top", "width", "height"))
    except ValueError:
        raise CicoError(f"{where}: mask needs integer 'rle' runs and left/top/width/height", path) from None
    if min(counts) < 0 or sum(counts) != w * h:
        raise CicoError(f"{where}: mask runs cover {sum(counts)} pixels, not its {w}x{h} box", path)
    if left < 0 or top < 0 or left + w > width or top + h > height:
        raise CicoError(f"{where}: mask box {w}x{h} at ({left}, {top}) lies outside the {width}x{height} frame",
                        path)
    values = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool).reshape(h, w)
    mask = np.zeros((height, width), bool)
    mask[top:top + h, left:left + w] = values
    return mask


def _polygon(text: str, where: str, path: Path) -> list[float]:
    try:
        points = [float(v) for pair in text.split(";") for v in pair.split(",")]
    except ValueError:
        raise CicoError(f"{where}: polygon points are not 'x1,y1;x2,y2;...'", path) from None
    if len(points) < 6 or len(points) % 2:
        raise CicoError(f"{where}: a polygon needs at least 3 points", path)
    return points


def _curve(points: np.ndarray) -> np.ndarray:
    """Relative arc length ``[N]`` at each point of a curve ``[N, 2]`` (0 ... 1)."""
    steps = np.sqrt((np.diff(points, axis=0) ** 2).sum(1))
    lengths = np.concatenate([[0.0], np.cumsum(steps)])
    return lengths / lengths[-1] if lengths[-1] > 0 else lengths


def interpolate_polygon(left: list[float], right: list[float], offset: float) -> list[float]:
    """CVAT's polygon interpolation between two keyframes at ``offset`` in (0, 1).

    Points are matched by relative arc length along the closed curves (each left point to its nearest right
    point, then each unmatched right point to its nearest left point), the matched pairs moved linearly,
    and runs of nearly coincident points merged, as CVAT's ``polyshape_interpolation``.
    """
    a = np.asarray(left + left[:2]).reshape(-1, 2)
    b = np.asarray(right + right[:2]).reshape(-1, 2)
    ca, cb = _curve(a), _curve(b)
    matching = {i: [int(np.abs(cb - v).argmin())] for i, v in enumerate(ca)}
    matched = {j for js in matching.values() for j in js}
    for j in range(len(b)):
        if j not in matched:
            matching[int(np.abs(ca - cb[j]).argmin())].append(j)
    matching = {i: sorted(js) for i, js in matching.items()}
    moved = [a[i] + (b[j] - a[i]) * offset for i in range(len(a)) for j in matching[i]]
    starts, position = {}, 0
    for i in range(len(a)):
        starts[i] = list(range(position, position + len(matching[i])))
        position += len(matching[i])
    reduced: list[np.ndarray] = []

    def length(points: np.ndarray) -> float:
        return float(np.sqrt((np.diff(points, axis=0) ** 2).sum(1)).sum())

    def minimise(base: float, n: int, start: int, stop: int) -> None:
        threshold = base / (2 * n)
        kept, last = [moved[start]], start
        for k in range(start + 1, stop):
            if np.hypot(*(moved[last] - moved[k])) >= threshold:
                kept.append(moved[k])
                last = k
        kept.append(moved[stop])
        if len(kept) == 2 and np.hypot(*(moved[start] - moved[stop])) < threshold:
            kept = [(kept[0] + kept[1]) / 2]
        reduced.extend(kept)

    def left_segment(start: int, stop: int) -> None:
        first, last = starts[start][0], starts[stop][0]
        if first == last:
            reduced.append(moved[first])
            return
        minimise(length(a[start:stop + 1]), stop - start + 1, first, last)

    def right_segment(i: int) -> None:
        js = matching[i]
        minimise(length(b[js[0]:js[-1] + 1]), js[-1] - js[0] + 1, starts[i][0], starts[i][-1])

    opened = None
    for i in range(len(a)):
        if len(matching[i]) == 1:
            if opened is None:
                opened = i
            elif matching[i][0] != matching[opened][0]:
                left_segment(opened, i - 1)
                opened = i
        else:
            if opened is not None:
                left_segment(opened, i - 1)
                opened = None
            right_segment(i)
    if opened is not None:
        left_segment(opened, len(a) - 1)
    return np.asarray(reduced).ravel().tolist()[:-2]


def _frames_of(shapes: list[Shape], length: int) -> dict[int, tuple[Shape, Shape | None, float]]:
    """For each frame where the track is present: ``(shape, next shape, offset)`` to interpolate from."""
    out: dict[int, tuple[Shape, Shape | None, float]] = {}
    for k, shape in enumerate(shapes):
        if shape["outside"]:
            continue
        following = shapes[k + 1] if k + 1 < len(shapes) else None
        end = following["frame"] if following is not None else length
        for frame in range(shape["frame"], min(end, length)):
            offset = (frame - shape["frame"]) / (end - shape["frame"])
            out[frame] = (shape, following, offset)
    return out


def read(src: Path, options: ImportOptions) -> ImportResult:
    path = src if src.is_file() else src / "annotations.xml"
    if not path.is_file():
        raise CicoError("no CVAT annotations.xml here", src)
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as err:
        line, column = err.position
        raise CicoError(f"broken XML at line {line} column {column}", path) from None
    if root.tag != "annotations":
        raise CicoError(f"not CVAT XML: the root is <{root.tag}>, not <annotations>", path)
    frames_dir = options.frames or path.parent / "images"
    if not frames_dir.is_dir():
        raise CicoError(f"no frames folder {frames_dir} (give it with --frames)", path)
    frames = frame_files(frames_dir)
    if not frames:
        raise CicoError("no .jpg/.png frames in the frames folder", frames_dir)
    size = root.find("meta/*/size")
    if size is not None and (size.text or "").strip().isdigit() and int(size.text or 0) > len(frames):
        raise CicoError(f"the task has {size.text} frames but {frames_dir} holds {len(frames)} images", path)
    height, width = image_size(frames[0])
    name = (root.findtext("meta/task/name") or root.findtext("meta/job/name") or path.parent.name).strip()
    builder = DatasetBuilder()
    vid = builder.add_video(name or "video", [f.name for f in frames], height, width)
    warnings = []
    boxes_only = 0
    for track in root.iter("track"):
        label, track_id = track.get("label"), track.get("id")
        if not label:
            raise CicoError(f"track {track_id}: no label", path)
        shapes: list[Shape] = []
        for element in track:
            if element.tag not in MASK_SHAPES:
                continue
            where = f"track {track_id} frame {element.get('frame')}"
            try:
                frame = int(element.get("frame", ""))
            except ValueError:
                raise CicoError(f"{where}: no integer 'frame'", path) from None
            if not 0 <= frame < len(frames):
                raise CicoError(f"{where}: frame {frame} has no image in {frames_dir} ({len(frames)} images)", path)
            outside = element.get("outside") == "1"
            shape: Shape = {"frame": frame, "outside": outside, "type": element.tag, "where": where}
            if element.tag == "polygon" and (element.get("points") or not outside):
                shape["points"] = _polygon(element.get("points", ""), where, path)  # an outside one's too:
            elif not outside:  # CVAT interpolates towards it
                shape["rle"] = encode(cvat_mask(element, height, width, where, path))
            shapes.append(shape)
        if not shapes:
            boxes_only += any(e.tag == "box" for e in track)
            continue
        shapes.sort(key=lambda s: s["frame"])
        for frame, (shape, following, offset) in _frames_of(shapes, len(frames)).items():
            if shape["type"] == "mask":
                rle = shape["rle"]
            else:
                points = shape["points"]
                if offset > 0 and following is not None and "points" in following:
                    points = interpolate_polygon(points, following["points"], offset)
                rle = polygons_rle([points], height, width)
            builder.add(vid, track_id, label, frame, rle)
    if boxes_only:
        warnings.append(f"{path}: {boxes_only} tracks of boxes only have no mask and were skipped")
    return ImportResult(builder.build(), frames_dir, warnings)
