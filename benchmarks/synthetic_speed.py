"""Speed of ``make_synthetic``: 50 videos x 30 frames at 360x640 (JPEG frames + instances.json).

Prints one JSON line: wall-clock seconds, frames per second, workers, and the same with mp4 files.
Usage: ``python benchmarks/synthetic_speed.py [--workers N] [--video-files]``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cico.data.synthetic import make_synthetic

VIDEOS, FRAMES, SIZE = 50, 30, (360, 640)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--video-files", action="store_true", help="also write (and time) mp4 files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        annotation_file = make_synthetic(Path(tmp) / "synthetic", VIDEOS, FRAMES, SIZE, seed=0,
                                         video_files=args.video_files, workers=args.workers)
        seconds = time.perf_counter() - start
        instances = len(json.loads(annotation_file.read_text())["annotations"])
    print(json.dumps({
        "benchmark": "synthetic_speed", "videos": VIDEOS, "frames": FRAMES, "size": list(SIZE),
        "workers": args.workers, "video_files": args.video_files, "instances": instances,
        "seconds": round(seconds, 2), "frames_per_s": round(VIDEOS * FRAMES / seconds, 1),
    }))


if __name__ == "__main__":
    main()
