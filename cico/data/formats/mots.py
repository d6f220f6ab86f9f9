"""MOTS: KITTI-MOTS and MOTSChallenge text files, and the PNG variant.

* KITTI-MOTS: ``instances_txt/<seq>.txt``, one line per object and frame,
  ``frame obj_id class_id height width rle`` (0-based frames, ``rle`` a COCO compressed RLE string);
  images in ``images/<seq>/`` or KITTI's ``image_02/<seq>/``.
* MOTSChallenge: ``<seq>/gt/gt.txt``, the same lines with 1-based frames; images in ``<seq>/img1/``.
* PNG variant: ``instances/<seq>/<frame>.png`` (16-bit), pixel value ``class_id * 1000 + k``.

``obj_id = class_id * 1000 + k`` identifies a track within its sequence; class 10 marks ignore regions
(value 10000). Frames are the sequence's images in name order; a frame without lines has no objects.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import CicoError
from ..rle import encode
from ..sources import frame_files
from .base import DatasetBuilder, ExportVideo, ImportOptions, ImportResult, image_size, link_frames, natural_key, paint

KITTI_CLASSES = {1: "car", 2: "pedestrian"}
IGNORE_CLASS = 10


def rle_counts_problem(counts: bytes, height: int, width: int) -> str | None:
    """Why a COCO compressed RLE string does not describe a ``height x width`` mask, or ``None``.

    pycocotools decodes any string without checking it; this reads the counts as its ``rleFrString`` does.
    """
    total, position = 0, 0
    previous: list[int] = []
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                return "RLE string ends inside a number"
            c = counts[position] - 48
            if not 0 <= c < 64:
                return "RLE string has a character outside the COCO alphabet"
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            position += 1
            shift += 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
        if len(previous) > 2:
            value += previous[-2]
        if value < 0:
            return "RLE has a negative run"
        previous.append(value)
        total += value
    if total != height * width:
        return f"RLE covers {total} pixels, not {height}x{width}"
    return None


def _images(folder: Path, what: Path) -> list[Path]:
    if not folder.is_dir():
        raise CicoError(f"no images folder {folder} for this sequence", what)
    frames = frame_files(folder)
    if not frames:
        raise CicoError(f"no .jpg/.png images in {folder}", what)
    return frames


class _Reader:
    def __init__(self, options: ImportOptions) -> None:
        self.classes = options.classes or KITTI_CLASSES
        self.ignore = options.ignore
        self.builder = DatasetBuilder()
        self.ignored: list[tuple[int, int, dict]] = []
        self.used: set[int] = set()

    def video(self, name: str, file_names: list[str], first_frame: Path) -> tuple[int, int, int]:
        height, width = image_size(first_frame)
        return self.builder.add_video(name, file_names, height, width), height, width

    def add(self, vid: int, obj_id: int, class_id: int, frame: int, rle: dict, where: str, path: Path) -> None:
        if class_id == IGNORE_CLASS:
            self.ignored.append((vid, frame, rle))
            return
        if class_id not in self.classes:
            raise CicoError(f"{where}class id {class_id} has no name (name it with --classes ID=NAME,...)", path)
        self.used.add(class_id)
        self.builder.add(vid, obj_id, self.classes[class_id], frame, rle)

    def result(self, frames_dir: Path) -> ImportResult:
        if self.ignore == "crowd":
            for vid, frame, rle in self.ignored:
                for class_id in sorted(self.used):
                    self.builder.add(vid, ("ignore", class_id), self.classes[class_id], frame, rle, iscrowd=True)
        ids = {self.classes[c]: c for c in sorted(self.used)}
        return ImportResult(self.builder.build(ids), frames_dir)

    def text(self, path: Path, vid: int, length: int, height: int, width: int, first: int) -> None:
        """The lines of one sequence's txt file (frames numbered from ``first``)."""
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise CicoError(f"cannot read ({err})", path) from None
        seen: set[tuple[int, int]] = set()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"line {number}: "
            fields = line.split()
            if len(fields) != 6 or not all(f.lstrip("-").isdigit() for f in fields[:5]):
                raise CicoError(f"{where}expected 'frame obj_id class_id height width rle'", path)
            frame, obj_id, class_id, h, w = (int(f) for f in fields[:5])
            index = frame - first
            if not 0 <= index < length:
                raise CicoError(f"{where}frame {frame} has no image (the sequence has {length})", path)
            if (h, w) != (height, width):
                raise CicoError(f"{where}mask size {w}x{h} differs from the frame's {width}x{height}", path)
            counts = fields[5].encode("ascii", "replace")
            problem = rle_counts_problem(counts, h, w)
            if problem:
                raise CicoError(f"{where}{problem}", path)
            if (index, obj_id) in seen:
                raise CicoError(f"{where}object {obj_id} appears twice in frame {frame}", path)
            seen.add((index, obj_id))
            self.add(vid, obj_id, class_id, index, {"size": [h, w], "counts": counts}, where, path)


def read(src: Path, options: ImportOptions) -> ImportResult:
    reader = _Reader(options)
    if (src / "instances_txt").is_dir():
        frames_dir = next((src / d for d in ("images", "image_02") if (src / d).is_dir()), src / "images")
        for txt in sorted((src / "instances_txt").glob("*.txt"), key=natural_key):
            seq = txt.stem
            frames = _images(frames_dir / seq, txt)
            vid, height, width = reader.video(seq, [f"{seq}/{f.name}" for f in frames], frames[0])
            reader.text(txt, vid, len(frames), height, width, first=0)
        return reader.result(frames_dir)
    if (src / "instances").is_dir():
        frames_dir = next((src / d for d in ("images", "image_02") if (src / d).is_dir()), src / "images")
        for folder in sorted((p for p in (src / "instances").iterdir() if p.is_dir()), key=natural_key):
            seq = folder.name
            frames = _images(frames_dir / seq, folder)
            vid, height, width = reader.video(seq, [f"{seq}/{f.name}" for f in frames], frames[0])
            index = {f.stem: i for i, f in enumerate(frames)}
            for png in sorted(folder.glob("*.png"), key=natural_key):
                if png.stem not in index:
                    raise CicoError(f"no frame {png.stem} in {frames_dir / seq}", png)
                values = _read_png(png)
                if values.shape != (height, width):
                    raise CicoError(f"mask is {values.shape[1]}x{values.shape[0]} but the frame is "
                                    f"{width}x{height}", png)
                for value in np.unique(values).tolist():
                    if value:
                        reader.add(vid, value, value // 1000, index[png.stem], encode(values == value), "", png)
        return reader.result(frames_dir)
    sequences = sorted((p for p in src.iterdir() if (p / "gt" / "gt.txt").is_file()), key=natural_key) \
        if src.is_dir() else []
    if not sequences:
        raise CicoError("no MOTS data: expected instances_txt/<seq>.txt, instances/<seq>/*.png or <seq>/gt/gt.txt",
                        src)
    for folder in sequences:
        seq = folder.name
        frames = _images(folder / "img1", folder / "gt" / "gt.txt")
        vid, height, width = reader.video(seq, [f"{seq}/img1/{f.name}" for f in frames], frames[0])
        reader.text(folder / "gt" / "gt.txt", vid, len(frames), height, width, first=1)
    return reader.result(src)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.array(image).astype(np.int64)
    except (UnidentifiedImageError, OSError) as err:
        raise CicoError(f"cannot read the PNG ({err})", path) from None


def write(videos: Sequence[ExportVideo], out: Path, classes: dict[int, str] | None = None) -> list[str]:
    """Write KITTI-MOTS ``instances_txt/<video>.txt`` (0-based frames) and, when the frame files are known,
    ``images/<video>/000000.<ext>``. A category's class id is its id in ``classes`` (by name), else its own
    id; crowd objects become the ignore region (class 10). Overlaps go to the higher score or the later
    object (MOTS masks do not overlap). Returns warnings."""
    by_name = {name: class_id for class_id, name in (classes or {}).items()}
    warnings = []
    (out / "instances_txt").mkdir(parents=True, exist_ok=True)
    for video in videos:
        values: list[int] = []
        counters: dict[int, int] = {}
        for obj in video.objects:
            if obj.iscrowd:
                values.append(IGNORE_CLASS * 1000)
                continue
            class_id = by_name.get(obj.category, obj.category_id)
            if class_id == IGNORE_CLASS or not 0 < class_id < 65:
                raise CicoError(f"category {obj.category!r} has class id {class_id}: MOTS needs 1..64 without 10 "
                                "(give ids with --classes ID=NAME,...)")
            counters[class_id] = counters.get(class_id, 0) + 1
            if counters[class_id] > 999:
                raise CicoError(f"video {video.name} has more than 999 objects of class {class_id}")
            values.append(class_id * 1000 + counters[class_id])
        lines, overlapping = [], 0
        for f in range(len(video.frame_names)):
            ids, overlap = paint(video.objects, f, video.height, video.width, values)
            overlapping += overlap > 0
            for value in np.unique(ids).tolist():
                if value:
                    lines.append(f"{f} {value} {value // 1000} {video.height} {video.width} "
                                 f"{encode(ids == value)['counts']}")
        (out / "instances_txt" / f"{video.name}.txt").write_text("".join(line + "\n" for line in lines))
        if overlapping:
            warnings.append(f"video {video.name}: objects overlap in {overlapping} frames; MOTS masks do not "
                            "(the higher score or the later object is kept)")
        if video.frame_files:
            link_frames(video.frame_files, [f"{i:06d}{p.suffix}" for i, p in enumerate(video.frame_files)],
                        out / "images" / video.name)
    return warnings
