"""``cico export-data FORMAT ANN_OR_RESULTS.json --out DIR``: annotations or predictions in other tools' formats.

``ytvos`` writes ``DIR/Annotations/<video>/<frame>.png`` (palette PNGs, object k = value k, crowd = 255)
and ``DIR/meta.json`` (classes); ``mots`` writes KITTI-MOTS ``DIR/instances_txt/<video>.txt``. With
``--frames`` the frames are linked into ``DIR/JPEGImages/<video>/`` (ytvos) or ``DIR/images/<video>/``
(mots), so that DIR is a complete dataset of that format (``cico import-data`` reads it back).

A results file (cico's ``results.json``) needs to know its videos: ``--ann`` the annotation (or video
list) file it was predicted on, or ``--frames`` the frame folder of a single predicted video; without
either, videos are named ``video<id>`` and frames ``00000``... Where predicted masks overlap, the
higher-scoring track wins.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..data.annotations import Annotations, load_annotations, parse_annotations, read_json
from ..data.formats import EXPORT_FORMATS
from ..data.formats.base import (
    ExportObject,
    ExportVideo,
    image_size,
    parse_classes,
    videos_from_annotations,
    write_folder,
)
from ..data.sources import dataset_videos, frame_files
from ..errors import CicoError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=EXPORT_FORMATS, help="the format to write")
    parser.add_argument("input", type=Path, metavar="ANN_OR_RESULTS.json",
                        help="a YouTube-VIS annotation file, or a results file (a list of tracks)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (replaced as a whole when the export succeeds)")
    parser.add_argument("--ann", type=Path, default=None, metavar="FILE",
                        help="results: the annotation/video file they were predicted on (names, frames, sizes)")
    parser.add_argument("--frames", type=Path, default=None, metavar="DIR",
                        help="the frames folder of the annotations/--ann (frames are linked into the export), "
                             "or for results without --ann the frame folder of the one predicted video")
    parser.add_argument("--score-thresh", type=float, default=0.0, metavar="S",
                        help="results: export the tracks scoring at least S (default 0: all)")
    parser.add_argument("--classes", default="", metavar="ID=NAME,...",
                        help="mots: class id of each class name (default: the file's category ids)")


def _result_videos(results: list[Any], args: argparse.Namespace) -> list[ExportVideo]:
    """The videos of a results file, described by ``--ann``, ``--frames`` or the results alone."""
    from ..evaluation.loading import load_ground_truth, load_results

    described: list[tuple[Any, str, list[str], int, int, list[Path] | None]]
    if args.ann is not None:
        ann: Annotations = load_annotations(args.ann)
        names = {c.id: c.name for c in ann.categories}
        frames_dir = args.frames
        described = [(v.id, source.name, [Path(n).stem for n in v.file_names], v.height, v.width,
                      list(source.paths) if frames_dir else None)
                     for v, source in zip(ann.videos, dataset_videos(ann, frames_dir or Path(".")))]
    else:
        ids = sorted({r.get("video_id") for r in results if isinstance(r, dict)}, key=str)
        first: dict[Any, tuple[list[int], int]] = {}
        for r in results:
            for seg in r.get("segmentations") or [] if isinstance(r, dict) else []:
                if isinstance(seg, dict) and "size" in seg:
                    first.setdefault(r.get("video_id"), (seg["size"], len(r["segmentations"])))
        names = {}
        described = []
        if args.frames is not None:
            files = frame_files(args.frames) if args.frames.is_dir() else []
            if not files:
                raise CicoError("no .jpg/.png frames in this folder", args.frames)
            if len(ids) > 1:
                raise CicoError(f"results of {len(ids)} videos: give the video file they came from with --ann",
                                args.input)
            height, width = image_size(files[0])
            described.append((ids[0] if ids else 1, args.frames.resolve().name, [f.stem for f in files], height,
                              width, list(files)))
        else:
            for vid in ids:
                if vid not in first:
                    continue  # no masks: nothing to export
                (height, width), length = first[vid]
                described.append((vid, f"video{vid}", [f"{f:05d}" for f in range(length)], height, width, None))
    gt = load_ground_truth({"videos": [{"id": vid, "height": h, "width": w} for vid, _, _, h, w, _ in described],
                            "categories": [{"id": cid, "name": name} for cid, name in names.items()]
                            or [{"id": r["category_id"], "name": str(r["category_id"])} for r in results
                                if isinstance(r, dict) and "category_id" in r],
                            "annotations": []})
    tracks, dropped = load_results(results, gt)
    if dropped:
        print(f"cico export-data: warning: {sum(dropped.values())} results of categories {sorted(dropped)} that "
              f"{args.ann} does not have were skipped", file=sys.stderr)
    out: list[ExportVideo] = []
    for vid, name, stems, height, width, paths in described:
        objects = []
        for track in tracks:
            if track.video_id != vid or track.score < args.score_thresh:
                continue
            if len(track.rles) != len(stems):
                raise CicoError(f"result {track.id - 1} has {len(track.rles)} frames but video {name} has "
                                f"{len(stems)}", args.input)
            if any(rle is not None and list(rle["size"]) != [height, width] for rle in track.rles):
                raise CicoError(f"result {track.id - 1}: mask size differs from video {name}'s {width}x{height}",
                                args.input)
            objects.append(ExportObject(gt.categories[track.category_id], track.category_id, track.rles,
                                        score=track.score))
        out.append(ExportVideo(name, stems, height, width, objects, paths))
    return out


def run(args: argparse.Namespace) -> int:
    from importlib import import_module

    data = read_json(args.input)
    if isinstance(data, list):
        videos = _result_videos(data, args)
    else:
        if args.ann is not None:
            raise CicoError("--ann is for a results file; this is an annotation file", args.input)
        videos = videos_from_annotations(parse_annotations(data, args.input), args.frames)
    writer = import_module(f"..data.formats.{args.format}", __package__).write
    warnings: list[str] = []

    def write(folder: Path) -> None:
        if args.format == "mots":
            warnings.extend(writer(videos, folder, parse_classes(args.classes)))
        else:
            warnings.extend(writer(videos, folder))

    write_folder(args.out, write)
    for warning in warnings:
        print(f"cico export-data: warning: {warning}", file=sys.stderr)
    objects = sum(len(v.objects) for v in videos)
    print(f"wrote {args.out}: {len(videos)} videos, {sum(len(v.frame_names) for v in videos)} frames, "
          f"{objects} objects as {args.format}")
    return 0
