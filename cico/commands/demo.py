"""``cico demo``: the shipped model on fresh synthetic videos (scored), or on your own video."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..demo import DemoData, run_demo
from ..evaluation import STAT_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", metavar="FILE", help="run on your own video file or frame folder instead")
    parser.add_argument("--out", type=Path, default=Path("cico_demo"), help="output folder (default ./cico_demo)")
    parser.add_argument("--videos", type=int, default=DemoData.videos, help="synthetic videos to make")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="end with one JSON line holding the 12 numbers")


def run(args: argparse.Namespace) -> int:
    data = DemoData(videos=args.videos)
    if args.video is None:
        print(f"cico demo: {data.videos} synthetic videos ({data.frames} frames, {data.size[0]}x{data.size[1]}), "
              "the shipped tiny_yolact model, clips of 3 frames overlapping by 1")
    else:
        print("cico demo: the shipped model knows only the synthetic shapes (disc, square, triangle)"
              "; on real footage expect few or odd detections. Train your own with 'cico train'.")
    out = run_demo(args.out, args.video, data, args.device, progress=not args.quiet)
    if out.stats is not None:
        print("\nYouTube-VIS metric against the synthetic ground truth:")
        for name in STAT_NAMES:
            print(f"  {name:<6} {out.stats[name]:.3f}")
    print(f"\nresults     {out.results}")
    for video in out.videos[:3]:
        print(f"rendered    {video}")
    if len(out.videos) > 3:
        print(f"            ... and {len(out.videos) - 3} more mp4 files in {out.out_dir}")
    if out.gif is not None:
        print(f"gif         {out.gif}")
    if out.ground_truth is not None:
        print(f"ground truth {out.ground_truth}  (score again: cico evaluate {out.ground_truth} {out.results})")
    print(f"done in {out.seconds:.1f} s")
    if args.json and out.stats is not None:
        print(json.dumps(out.stats))
    return 0
