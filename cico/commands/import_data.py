"""``cico import-data FORMAT SRC --out ANN.json``: a dataset in another annotation format as a YouTube-VIS file.

The written file's ``file_names`` are relative to the format's frames folder (printed in the summary), so
``cico check-data --ann ANN.json --frames FRAMES`` accepts it and every other command can use it. Bad input
is one line naming the file (and line or frame), exit code 2, and ``--out`` is neither written nor replaced.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.annotations import annotation_problems, annotations_to_dict, save_annotations
from ..data.formats import IMPORT_FORMATS, import_dataset
from ..data.formats.base import DEFAULT_CATEGORY, ImportOptions, parse_classes
from ..data.formats.mots import KITTI_CLASSES

FORMATS_HELP = """formats and their frames folder:
  ytvos    SRC/JPEGImages/<video>/<frame>.jpg + SRC/Annotations/<video>/<frame>.png (YouTube-VOS, DAVIS);
           value k = object k, 255 = void; PNGs of only 0/255 (DAVIS 2016) are one object; optional
           SRC/meta.json names the classes. Frames folder: SRC/JPEGImages
  mots     KITTI-MOTS SRC/instances_txt/<seq>.txt (images in SRC/images/ or SRC/image_02/), MOTS PNGs
           SRC/instances/<seq>/*.png, or MOTSChallenge SRC/<seq>/gt/gt.txt (+ SRC/<seq>/img1/). Frames
           folder: the images folder (SRC for MOTSChallenge)
  labelme  SRC/<video>/ holding the frames and a labelme 5 JSON beside each annotated frame. Frames folder: SRC
  cvat     CVAT for video 1.1: SRC/annotations.xml or the XML itself, frames in SRC/images/ (or --frames)
  coco     a COCO instance-segmentation JSON of images: one 1-frame video per image. Frames folder: the
           JSON's folder (or --frames)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = FORMATS_HELP
    parser.add_argument("format", choices=IMPORT_FORMATS, help="the annotation format of SRC")
    parser.add_argument("src", type=Path, metavar="SRC", help="the dataset folder (or file, for cvat/coco)")
    parser.add_argument("--out", type=Path, required=True, metavar="ANN.json", help="the YouTube-VIS file to write")
    parser.add_argument("--category", default=DEFAULT_CATEGORY,
                        help=f"ytvos without meta.json: the class of every object (default {DEFAULT_CATEGORY!r})")
    parser.add_argument("--annotated-only", action="store_true",
                        help="ytvos: keep only the frames that have an annotation PNG (default: keep every frame "
                             "of the video; objects are absent in the frames without a PNG)")
    default_classes = ",".join(f"{k}={v}" for k, v in KITTI_CLASSES.items())
    parser.add_argument("--classes", default=default_classes, metavar="ID=NAME,...",
                        help=f"mots: names of the class ids (default KITTI's, {default_classes})")
    parser.add_argument("--ignore-regions", choices=("crowd", "drop"), default="crowd",
                        help="mots class 10 and ytvos void (255) regions: 'crowd' (default) makes them iscrowd "
                             "tracks, one per class, which the metric ignores and training skips; 'drop' drops them")
    parser.add_argument("--ungrouped-as-tracks", action="store_true",
                        help="labelme: a shape without group_id is its own track (default: an error)")
    parser.add_argument("--frames", type=Path, default=None, metavar="DIR",
                        help="cvat/coco: the frames folder, if not the default")


def run(args: argparse.Namespace) -> int:
    options = ImportOptions(category=args.category, annotated_only=args.annotated_only,
                            classes=parse_classes(args.classes), ignore=args.ignore_regions,
                            ungrouped_as_tracks=args.ungrouped_as_tracks, frames=args.frames)
    result = import_dataset(args.format, args.src, options)
    ann = result.annotations
    problems = annotation_problems(annotations_to_dict(ann))
    assert not problems, problems[:3]  # the builders write valid files; a failure here is a bug
    for warning in result.warnings:
        print(f"cico import-data: warning: {warning}", file=sys.stderr)
    save_annotations(ann, args.out)
    crowd = sum(t.iscrowd for t in ann.tracks)
    frames = sum(v.length for v in ann.videos)
    print(f"wrote {args.out}: {len(ann.videos)} videos, {frames} frames, {len(ann.tracks) - crowd} tracks"
          f"{f' (+{crowd} crowd)' if crowd else ''}, {ann.num_classes} classes; frames folder: {result.frames_dir}")
    return 0
