"""``cico show-data --ann ANN.json --frames DIR --out DIR``: look at a dataset's ground truth and its statistics.

Each video is rendered as ``cico predict --render`` renders predictions (the same colours per track id,
class names, track ids, masks and boxes; crowd tracks get dotted boxes) to ``DIR/<video>.mp4`` (or
``.gif``). ``DIR/stats.json`` and ``DIR/stats.png`` hold the videos, frames and objects per video, the
tracks per class, the object sizes (small/medium/large on the track's mean area, as the YouTube-VIS metric
counts them) and the share of track frames where the object is absent; the same table is printed.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..data.annotations import Annotations, load_annotations
from ..data.sources import FrameFiles, dataset_videos
from ..errors import CicoError
from ..evaluation.ytvis import AREA_RANGES
from ..fileio import atomic_write
from ..media import Mp4Writer, write_gif
from ..outputs.render import RenderStyle, draw_frame
from ..structures import FrameResult

SIZES = ("small", "medium", "large")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", type=Path, required=True, metavar="ANN.json", help="a YouTube-VIS annotation file")
    parser.add_argument("--frames", type=Path, required=True, metavar="DIR", help="its frames folder")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--videos", type=int, default=None, metavar="N",
                        help="render the first N videos only (the statistics cover all)")
    parser.add_argument("--gif", action="store_true", help="write GIFs instead of mp4 files")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of the rendered videos (default 25)")


def size_of(mean_area: float) -> str:
    """small / medium / large of a track's mean area, by the metric's ranges."""
    for name in SIZES:
        if mean_area <= AREA_RANGES[name][1]:
            return name
    return SIZES[-1]


def dataset_stats(ann: Annotations) -> dict[str, Any]:
    """The statistics of ``stats.json`` (crowd tracks are counted apart, as the metric ignores them)."""
    tracks = [t for t in ann.tracks if not t.iscrowd]
    frames = {v.id: v.length for v in ann.videos}
    per_video = Counter(t.video_id for t in tracks)
    names = {c.id: c.name for c in ann.categories}
    per_class = Counter(names[t.category_id] for t in tracks)
    sizes = Counter(size_of(float(np.mean([a for a in t.areas if a]) if any(t.areas) else 0.0)) for t in tracks)
    track_frames = sum(frames[t.video_id] for t in tracks)
    absent = sum(s is None or not s for t in tracks for s in t.segmentations)
    return {
        "videos": len(ann.videos),
        "frames": sum(frames.values()),
        "frames_per_video": [frames[v.id] for v in ann.videos],
        "tracks": len(tracks),
        "crowd_tracks": len(ann.tracks) - len(tracks),
        "objects_per_video": [per_video[v.id] for v in ann.videos],
        "tracks_per_class": {name: per_class[name] for name in ann.class_names},
        "sizes": {name: sizes[name] for name in SIZES},
        "absent_fraction": absent / track_frames if track_frames else 0.0,
    }


def stats_table(stats: dict[str, Any]) -> str:
    def spread(values: list[int]) -> str:
        return f"min {min(values)}, mean {np.mean(values):.1f}, max {max(values)}" if values else "-"

    lines = [f"videos             {stats['videos']}",
             f"frames             {stats['frames']} ({spread(stats['frames_per_video'])} per video)",
             f"tracks             {stats['tracks']} ({spread(stats['objects_per_video'])} per video)"
             + (f", {stats['crowd_tracks']} crowd" if stats["crowd_tracks"] else ""),
             "tracks per class   " + ", ".join(f"{k} {v}" for k, v in stats["tracks_per_class"].items()),
             "sizes              " + ", ".join(f"{k} {v}" for k, v in stats["sizes"].items()),
             f"absent             {100 * stats['absent_fraction']:.1f}% of the tracks' frames"]
    return "\n".join(lines)


def plot_stats(stats: dict[str, Any], path: Path) -> None:
    """``stats.png``: four panels (frames and objects per video, tracks per class, sizes), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (a, b), (c, d) = axes
    a.hist(stats["frames_per_video"], bins=min(20, max(1, stats["videos"])), color="#2196f3")
    a.set(title="frames per video", xlabel="frames", ylabel="videos")
    objects = Counter(stats["objects_per_video"])
    b.bar(list(objects), list(objects.values()), color="#4caf50")
    b.set(title="objects per video", xlabel="tracks", ylabel="videos")
    classes = stats["tracks_per_class"]
    c.barh(list(classes)[::-1], list(classes.values())[::-1], color="#ff9800")
    c.set(title="tracks per class", xlabel="tracks")
    d.bar(list(stats["sizes"]), list(stats["sizes"].values()), color="#9c27b0")
    d.set(title=f"object sizes (mean area; absent in {100 * stats['absent_fraction']:.1f}% of track frames)",
          ylabel="tracks")
    for axis in (a.yaxis, b.xaxis, b.yaxis, c.xaxis, d.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{stats['videos']} videos, {stats['frames']} frames, {stats['tracks']} tracks")
    fig.tight_layout()
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def gt_frames(ann: Annotations, video_id: int, images: FrameFiles):
    """The ground truth of one video as :class:`FrameResult` objects (score 1; crowd tracks as propagated,
    so drawn with dotted boxes)."""
    tracks = ann.tracks_of(video_id)
    for f, image in enumerate(images.frames()):
        present = [t for t in tracks if t.segmentations[f]]
        masks = np.zeros((len(present), *image.shape[:2]), bool)
        boxes = np.zeros((len(present), 4), np.int64)
        for i, t in enumerate(present):
            mask = ann.mask(t, f)
            if mask is None or mask.shape != image.shape[:2]:
                raise CicoError(f"track {t.id} frame {f}: mask size differs from the frame {images.paths[f]}",
                                ann.path)
            masks[i] = mask.astype(bool)
            bbox = t.bboxes[f]
            if bbox is not None:
                x, y, w, h = bbox
                boxes[i] = (int(x), int(y), int(x + w), int(y + h))
            else:
                ys, xs = np.nonzero(mask)
                boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0)
        yield FrameResult(f, image, np.array([t.id for t in present], np.int64),
                          np.array([ann.label_of(t.category_id) for t in present], np.int64),
                          np.ones(len(present), np.float32), np.array([int(t.iscrowd) for t in present], np.int64),
                          boxes, masks)


def run(args: argparse.Namespace) -> int:
    ann = load_annotations(args.ann)
    if not ann.has_gt:
        raise CicoError("the file has no annotations to show", args.ann)
    if not args.frames.is_dir():
        raise CicoError("frames folder not found", args.frames)
    args.out.mkdir(parents=True, exist_ok=True)
    videos = dataset_videos(ann, args.frames, args.fps)[: args.videos]
    style = RenderStyle(scores=False)
    written = []
    for video in videos:
        drawn = (draw_frame(frame, ann.class_names, style) for frame in gt_frames(ann, int(video.video_id), video))
        if args.gif:
            written.append(write_gif(args.out / f"{video.name}.gif", drawn, video.fps))
        else:
            with Mp4Writer(args.out / f"{video.name}.mp4", video.fps) as writer:
                for image in drawn:
                    writer.write(image)
            written.append(writer.path)
    stats = dataset_stats(ann)
    with atomic_write(args.out / "stats.json") as tmp:
        tmp.write_text(json.dumps(stats, indent=1))
    plot_stats(stats, args.out / "stats.png")
    print(stats_table(stats))
    print(f"wrote {len(written)} {'GIFs' if args.gif else 'videos'}, stats.json and stats.png to {args.out}")
    return 0
