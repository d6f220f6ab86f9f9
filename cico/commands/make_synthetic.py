"""``cico make-synthetic OUT``: write a synthetic video dataset in the YouTube-VIS format."""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from ..data.synthetic import DEFAULT_CLASSES, SYNTHETIC_CLASSES, SceneConfig, make_synthetic
from ..errors import CicoError


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (e.g. ``"360x640"``) as ``(height, width)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise CicoError(f"--size: expected HEIGHTxWIDTH such as 360x640, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def parse_range(text: str) -> tuple[float, float]:
    """``"LOW-HIGH"`` (e.g. ``"0.2-0.45"``) as ``(low, high)``."""
    match = re.fullmatch(r"\s*(\d*\.?\d+)\s*-\s*(\d*\.?\d+)\s*", text)
    if match is None:
        raise CicoError(f"--object-size: expected LOW-HIGH such as 0.1-0.28, got {text!r}")
    return float(match.group(1)), float(match.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (JPEGImages/, instances.json, videos/)")
    parser.add_argument("--videos", type=int, default=20, help="number of videos (default 20)")
    parser.add_argument("--frames", type=int, default=30, help="frames per video (default 30)")
    parser.add_argument("--size", default="360x640", help="frame size HEIGHTxWIDTH (default 360x640)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--classes", type=int, default=DEFAULT_CLASSES,
                        help=f"number of shape classes, the first K of {', '.join(SYNTHETIC_CLASSES)} "
                             f"(default {DEFAULT_CLASSES})")
    parser.add_argument("--class-names", metavar="A,B,...",
                        help="draw these shapes instead of the first K (e.g. star,ring,cross: classes the "
                             "demo model has not seen, for fine-tuning)")
    parser.add_argument("--max-objects", type=int, default=6, help="at most this many objects per video")
    parser.add_argument("--object-size", default="{:g}-{:g}".format(*SceneConfig.object_size), metavar="LOW-HIGH",
                        help="range of object diameters as fractions of the frame's short side "
                             f"(default {SceneConfig.object_size[0]:g}-{SceneConfig.object_size[1]:g})")
    parser.add_argument("--video-files", action="store_true", help="also write videos/<name>.mp4")
    parser.add_argument("--fps", type=float, default=6.0, help="frame rate of the mp4 files (default 6)")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default up to 2)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace JPEGImages/, videos/ and instances.json in a non-empty OUT")


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.size)
    object_size = parse_range(args.object_size)
    class_names = tuple(n.strip() for n in args.class_names.split(",") if n.strip()) if args.class_names else ()
    start = time.perf_counter()
    path = make_synthetic(args.out, args.videos, args.frames, size, seed=args.seed, classes=args.classes,
                          max_objects=args.max_objects, object_size=object_size,
                          video_files=args.video_files, fps=args.fps, class_names=class_names,
                          overwrite=args.overwrite, workers=args.workers)
    seconds = time.perf_counter() - start
    instances = len(json.loads(path.read_text())["annotations"])
    videos = f" and {args.videos} mp4 files" if args.video_files else ""
    print(f"wrote {args.videos} videos x {args.frames} frames ({size[0]}x{size[1]}), {instances} instances "
          f"of {len(class_names) or args.classes} classes to {path}{videos} in {seconds:.1f} s")
    return 0
