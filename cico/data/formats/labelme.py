"""labelme (version 5): one folder per video holding the frames and a labelme JSON beside each annotated frame.

A JSON file has ``imageHeight``, ``imageWidth`` and ``shapes``, each with ``label``, ``points``,
``shape_type`` (``polygon``, ``rectangle``, ``circle`` or ``mask``) and ``group_id``. A track is a
``(label, group_id)`` pair within a video; several shapes of one track in one frame are unioned.
Polygons, rectangles and circles are rasterised by pycocotools (a circle as a 64-gon); a ``mask`` shape
is a base64 PNG placed at its two corner points, as labelme places it. Lines and points have no area
and are skipped with a warning. A frame without a JSON file has no objects.
"""
from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CicoError
from ..annotations import read_json
from ..rle import encode
from ..sources import frame_files
from .base import DatasetBuilder, ImportOptions, ImportResult, image_size, natural_key, polygons_rle

AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
CIRCLE_POINTS = 64


def _points(shape: dict[str, Any], where: str, path: Path) -> np.ndarray:
    try:
        points = np.asarray(shape["points"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise CicoError(f"{where}: 'points' is not a list of [x, y]", path) from None
    if points.ndim != 2 or points.shape[1] != 2:
        raise CicoError(f"{where}: 'points' is not a list of [x, y]", path)
    return points


def _shape_rle(shape: dict[str, Any], height: int, width: int, where: str, path: Path) -> dict:
    kind = shape.get("shape_type") or "polygon"
    points = _points(shape, where, path)
    if kind == "polygon":
        if len(points) < 3:
            raise CicoError(f"{where}: a polygon needs 3 points, got {len(points)}", path)
        return polygons_rle([points.ravel().tolist()], height, width)
    if len(points) != 2:
        raise CicoError(f"{where}: a {kind} needs 2 points, got {len(points)}", path)
    (x1, y1), (x2, y2) = points
    if kind == "rectangle":
        return polygons_rle([[x1, y1, x2, y1, x2, y2, x1, y2]], height, width)
    if kind == "circle":
        radius = math.hypot(x2 - x1, y2 - y1)
        angles = np.linspace(0, 2 * np.pi, CIRCLE_POINTS, endpoint=False)
        polygon = np.stack([x1 + radius * np.cos(angles), y1 + radius * np.sin(angles)], 1)
        return polygons_rle([polygon.ravel().tolist()], height, width)
    # mask: a PNG of the box between the two points (inclusive), as labelme's shapes_to_label
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(base64.b64decode(shape["mask"]))) as image:
            crop = np.array(image).astype(bool)
    except (KeyError, TypeError, ValueError, UnidentifiedImageError, OSError):
        raise CicoError(f"{where}: 'mask' is not a base64 PNG", path) from None
    left, top, right, bottom = int(x1), int(y1), int(x2), int(y2)
    if crop.ndim != 2 or crop.shape != (bottom - top + 1, right - left + 1):
        raise CicoError(f"{where}: mask is {crop.shape[-1]}x{crop.shape[0]} but its points span "
                        f"{right - left + 1}x{bottom - top + 1}", path)
    if left < 0 or top < 0 or right >= width or bottom >= height:
        raise CicoError(f"{where}: mask at ({left}, {top})-({right}, {bottom}) lies outside the "
                        f"{width}x{height} frame", path)
    mask = np.zeros((height, width), bool)
    mask[top:bottom + 1, left:right + 1] = crop
    return encode(mask)


def read(src: Path, options: ImportOptions) -> ImportResult:
    if not src.is_dir():
        raise CicoError("not a folder of video folders", src)
    folders = sorted((p for p in src.iterdir() if p.is_dir() and any(p.glob("*.json"))), key=natural_key)
    if not folders:
        raise CicoError("no video folders with labelme JSON files", src)
    builder = DatasetBuilder()
    warnings: list[str] = []
    skipped: dict[str, int] = {}
    for folder in folders:
        frames = frame_files(folder)
        index = {f.stem: i for i, f in enumerate(frames)}
        jsons = sorted(folder.glob("*.json"), key=natural_key)
        for path in jsons:
            if path.stem not in index:
                raise CicoError(f"frame file is missing: no image {path.stem}.* beside it", path)
        height, width = image_size(frames[0])
        vid = builder.add_video(folder.name, [f"{folder.name}/{f.name}" for f in frames], height, width)
        for path in jsons:
            data = read_json(path)
            if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
                raise CicoError("not a labelme file (no 'shapes' list)", path)
            size = (data.get("imageHeight"), data.get("imageWidth"))
            if None not in size and tuple(size) != (height, width):
                raise CicoError(f"imageWidth x imageHeight {size[1]}x{size[0]} differs from the frame's "
                                f"{width}x{height}", path)
            frame = index[path.stem]
            for i, shape in enumerate(data["shapes"]):
                where = f"shape {i}"
                if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
                    raise CicoError(f"{where}: no 'label'", path)
                kind = shape.get("shape_type") or "polygon"
                if kind not in AREA_SHAPES:
                    skipped[kind] = skipped.get(kind, 0) + 1
                    continue
                label, group = shape["label"], shape.get("group_id")
                if group is None:
                    if not options.ungrouped_as_tracks:
                        raise CicoError(f"{where} ({label!r}) has no group_id: give each object's shapes one "
                                        "group_id, or use --ungrouped-as-tracks", path)
                    key: tuple = (label, None, frame, i)
                else:
                    key = (label, group)
                builder.add(vid, key, label, frame, _shape_rle(shape, height, width, where, path))
    for kind, count in skipped.items():
        warnings.append(f"{src}: {count} '{kind}' shapes have no area and were skipped")
    return ImportResult(builder.build(), src, warnings)
