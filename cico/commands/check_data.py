"""``cico check-data``: validate a YouTube-VIS/OVIS-format dataset (annotations and frames).

Prints a short summary on stdout and each problem as one line on stderr; any problem gives exit
code 2.
"""
from __future__ import annotations

import argparse
import sys

from ..data.check import check_dataset
from .options import add_dataset_arguments, resolve_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--no-decode", action="store_true",
                        help="only check that frame files exist (faster); by default each frame is decoded "
                             "and its size compared with the video's")
    parser.add_argument("--workers", type=int, default=None, help="threads decoding frames (default: CPU count, <= 8)")
    parser.add_argument("--max-problems", type=int, default=50, help="problems printed at most (default 50)")


def run(args: argparse.Namespace) -> int:
    paths = resolve_dataset(args)
    assert paths.ann_file is not None and paths.frames_dir is not None
    report = check_dataset(paths.ann_file, paths.frames_dir, decode=not args.no_decode, workers=args.workers)
    for problem in report.problems[: args.max_problems]:
        print(problem, file=sys.stderr)
    if len(report.problems) > args.max_problems:
        print(f"... and {len(report.problems) - args.max_problems} more problems", file=sys.stderr)

    print(f"annotations: {paths.ann_file}")
    print(f"frames:      {paths.frames_dir}")
    tracks = (f"tracks: {report.tracks} (crowd {report.crowd_tracks})" if report.has_gt
              else "no annotations (test split)")
    print(f"videos: {report.videos}  frames: {report.frames}  {tracks}")
    if report.has_gt:
        counts = [f"{name} {n}" for name, n in report.tracks_per_class.items() if n]
        empty = sum(n == 0 for n in report.tracks_per_class.values())
        without = f" ({empty} classes without tracks)" if empty else ""
        print("tracks per class: " + (", ".join(counts) or "none") + without)
    checked = "exist" if args.no_decode else "exist, decode and have the video's size"
    if report.ok:
        print(f"OK: the annotations are valid and all {report.frames} frames {checked}")
        return 0
    print(f"FAILED: {len(report.problems)} problem{'s' if len(report.problems) != 1 else ''}")
    return 2
