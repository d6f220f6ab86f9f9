"""COCO instance segmentation of images: each image becomes a one-frame video, each annotation a track.

Polygons are rasterised by pycocotools, RLEs (compressed or not) kept exactly; ``iscrowd`` is kept. The
category ids of the file are kept. ``file_name`` is relative to the frames folder (by default the JSON
file's folder), so every frame must exist there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from ...errors import CicoError
from ..annotations import _segmentation_problem, read_json
from ..rle import to_rle
from .base import DatasetBuilder, ImportOptions, ImportResult
from .mots import rle_counts_problem


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read(src: Path, options: ImportOptions) -> ImportResult:
    data = read_json(src)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise CicoError("not a COCO file: needs 'images', 'annotations' and 'categories' lists", src)
    frames_dir = options.frames or src.parent
    categories: dict[int, str] = {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _int(c.get("id")) or not isinstance(c.get("name"), str):
            raise CicoError(f"categories[{i}]: needs an integer 'id' and a string 'name'", src)
        if c["name"] in categories.values():
            raise CicoError(f"categories[{i}]: the name {c['name']!r} is used twice", src)
        categories[c["id"]] = c["name"]
    builder = DatasetBuilder()
    videos: dict[int, tuple[int, int, int]] = {}
    for i, image in enumerate(data["images"]):
        if not (isinstance(image, dict) and _int(image.get("id")) and isinstance(image.get("file_name"), str)
                and _int(image.get("height")) and _int(image.get("width"))):
            raise CicoError(f"images[{i}]: needs an integer 'id', 'height', 'width' and a 'file_name'", src)
        if image["id"] in videos:
            raise CicoError(f"images[{i}]: duplicate image id {image['id']}", src)
        if not (frames_dir / image["file_name"]).is_file():
            raise CicoError(f"images[{i}]: frame file is missing: {frames_dir / image['file_name']}", src)
        vid = builder.add_video(Path(image["file_name"]).stem, [image["file_name"]], image["height"], image["width"])
        videos[image["id"]] = (vid, image["height"], image["width"])
    skipped = 0
    for i, a in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(a, dict) or a.get("image_id") not in videos:
            raise CicoError(f"{where}: image_id {a.get('image_id') if isinstance(a, dict) else None!r} "
                            "is not in 'images'", src)
        if a.get("category_id") not in categories:
            raise CicoError(f"{where}: category_id {a.get('category_id')!r} has no name in 'categories'", src)
        vid, height, width = videos[a["image_id"]]
        segmentation = a.get("segmentation")
        if not segmentation:
            skipped += 1
            continue
        problem = _segmentation_problem(segmentation, height, width)
        if problem is None and isinstance(segmentation, dict) and isinstance(segmentation["counts"], str):
            problem = rle_counts_problem(segmentation["counts"].encode("ascii", "replace"), height, width)
        if problem:
            raise CicoError(f"{where} (image {a['image_id']}): {problem}", src)
        rle = to_rle(segmentation, height, width)
        if isinstance(rle, list):  # frPyObjects of one uncompressed RLE may give a list
            rle = mask_utils.merge(rle)
        assert rle is not None  # a non-empty segmentation
        builder.add(vid, ("ann", i), categories[a["category_id"]], 0, rle, iscrowd=bool(a.get("iscrowd", 0)))
    warnings = [f"{src}: {skipped} annotations without segmentation were skipped"] if skipped else []
    ids = {name: cid for cid, name in sorted(categories.items())}
    return ImportResult(builder.build(ids), frames_dir, warnings)
