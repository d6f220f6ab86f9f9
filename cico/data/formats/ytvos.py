"""The YouTube-VOS / DAVIS layout: ``JPEGImages/<video>/<frame>.jpg`` and ``Annotations/<video>/<frame>.png``.

An annotation PNG is an 8-bit palette or grey image: value ``k`` is object ``k`` of the video, 0 the
background and 255 a void (ignore) region, as in DAVIS 2017. A video whose PNGs hold only 0 and 255 is
a DAVIS-2016 binary annotation: 255 is then its one object. ``meta.json`` in YouTube-VOS's form
(``{"videos": {video: {"objects": {"k": {"category": NAME, "frames": [...]}}}}}``) names each object's
class; without it every object gets one class.

A frame without a PNG is a frame without annotation (YouTube-VOS annotates every 5th training frame):
its objects are absent there, and the video keeps all its frames, unless only the annotated frames are
asked for. A video without any PNG is kept without objects.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CicoError
from ..annotations import read_json
from ..rle import encode
from ..sources import frame_files
from .base import DatasetBuilder, ExportVideo, ImportOptions, ImportResult, image_size, link_frames, natural_key, paint

VOID = 255


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS/YouTube-VOS annotation PNGs (Pascal VOC's colour map), flat RGB."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def read_index_png(path: Path) -> np.ndarray:
    """The index values ``uint8 [H, W]`` of a palette or grey PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "1"):
                raise CicoError(f"not a palette or grey PNG (mode {image.mode})", path)
            return np.array(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise CicoError(f"cannot read the PNG ({err})", path) from None


def _meta(src: Path) -> dict[str, dict[int, str]]:
    """``{video: {object: category}}`` of ``meta.json`` (empty without one)."""
    path = src / "meta.json"
    if not path.is_file():
        return {}
    data = read_json(path)
    try:
        return {str(video): {int(k): str(obj["category"]) for k, obj in entry["objects"].items()}
                for video, entry in data["videos"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CicoError("not YouTube-VOS meta.json: expected {\"videos\": {video: {\"objects\": "
                        "{\"1\": {\"category\": NAME}}}}}", path) from None


def read(src: Path, options: ImportOptions) -> ImportResult:
    images_dir, masks_dir = src / "JPEGImages", src / "Annotations"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise CicoError(f"no {folder.name} folder (expected JPEGImages/<video>/ and Annotations/<video>/)", src)
    meta = _meta(src)
    builder = DatasetBuilder()
    warnings: list[str] = []
    voids: list[tuple[int, int, dict]] = []
    for folder in sorted((p for p in images_dir.iterdir() if p.is_dir()), key=natural_key):
        name = folder.name
        frames = frame_files(folder)
        pngs = {p.stem: p for p in (masks_dir / name).glob("*.png")} if (masks_dir / name).is_dir() else {}
        stems = {f.stem for f in frames}
        for stem, orphan in sorted(pngs.items()):
            if stem not in stems:
                raise CicoError(f"annotation without a frame: no {name}/{stem}.jpg in {images_dir}", orphan)
        if options.annotated_only:
            frames = [f for f in frames if f.stem in pngs]
        if not frames:
            warnings.append(f"{folder}: no {'annotated ' if options.annotated_only else ''}frames, video skipped")
            continue
        if not pngs:
            warnings.append(f"{folder}: no annotation PNGs, the video is kept without objects")
        height, width = image_size(frames[0])
        vid = builder.add_video(name, [f"{name}/{f.name}" for f in frames], height, width)
        values = {}
        for f, frame in enumerate(frames):
            png = pngs.get(frame.stem)
            if png is None:
                continue
            array = read_index_png(png)
            if array.shape != (height, width):
                raise CicoError(f"mask is {array.shape[1]}x{array.shape[0]} but the frame is {width}x{height}", png)
            values[f] = (array, png)
        binary = bool(values) and all(set(np.unique(a).tolist()) <= {0, VOID} for a, _ in values.values())
        for f, (array, png) in values.items():
            for k in np.unique(array).tolist():
                if k == 0:
                    continue
                rle = encode(array == k)
                if k == VOID and not binary:
                    voids.append((vid, f, rle))
                    continue
                obj = 1 if binary else k
                category = options.category
                if meta:
                    category = meta.get(name, {}).get(obj)  # type: ignore[assignment]
                    if category is None:
                        raise CicoError(f"object {obj} has no category in {src / 'meta.json'}", png)
                builder.add(vid, obj, category, f, rle)
    if voids and options.ignore == "crowd":
        categories = sorted({c for v in meta.values() for c in v.values()}) if meta else [options.category]
        for vid, f, rle in voids:
            for category in categories:
                builder.add(vid, ("void", category), category, f, rle, iscrowd=True)
    return ImportResult(builder.build(), images_dir, warnings)


def write(videos: Sequence[ExportVideo], out: Path) -> list[str]:
    """Write ``Annotations/<video>/<frame>.png`` for every frame, ``meta.json``, and the frames (when known)
    into ``JPEGImages/<video>/``; crowd objects become void (255). Returns warnings."""
    from PIL import Image

    palette = davis_palette()
    meta: dict[str, Any] = {"videos": {}}
    warnings = []
    for video in videos:
        objects = [o for o in video.objects if not o.iscrowd]
        if len(objects) > VOID - 1:
            raise CicoError(f"video {video.name} has {len(objects)} objects; an 8-bit annotation PNG holds 254")
        values, k = [], 0
        entries = {}
        for obj in video.objects:
            if obj.iscrowd:
                values.append(VOID)
                continue
            k += 1
            values.append(k)
            entries[str(k)] = {"category": obj.category,
                               "frames": [s for s, rle in zip(video.frame_names, obj.segmentations) if rle is not None]}
        meta["videos"][video.name] = {"objects": entries}
        folder = out / "Annotations" / video.name
        folder.mkdir(parents=True, exist_ok=True)
        overlapping = 0
        for f, stem in enumerate(video.frame_names):
            ids, overlap = paint(video.objects, f, video.height, video.width, values)
            overlapping += overlap > 0
            image = Image.frombytes("P", (video.width, video.height), ids.astype(np.uint8).tobytes())
            image.putpalette(palette)
            image.save(folder / f"{stem}.png")
        if overlapping:
            warnings.append(f"video {video.name}: objects overlap in {overlapping} frames; "
                            "a PNG holds one object per pixel (the higher score or the later object is kept)")
        if video.frame_files:
            link_frames(video.frame_files, [f"{s}{p.suffix}" for s, p in zip(video.frame_names, video.frame_files)],
                        out / "JPEGImages" / video.name)
    (out / "meta.json").write_text(json.dumps(meta))
    return warnings
