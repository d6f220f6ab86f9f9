"""The out-of-the-box demo: cico's shipped model on synthetic videos, or on the user's own video.

The shipped model (``cico/weights/demo_tiny_yolact.safetensors``, float16, about 6 MB) is a
``tiny_yolact`` network that ``cico train`` trained from scratch on ``cico make-synthetic`` videos; its
classes are the synthetic shapes disc, square and triangle. ``python benchmarks/train_synthetic.py
--iters 14000 --eval-every 1000 --export cico/weights/demo_tiny_yolact.safetensors`` reproduces it (see the README).

:func:`run_demo` makes a held-out synthetic set with the same generator settings as the training data
(another seed), runs the full clip/linking pipeline, writes ``results.json``, a rendered mp4 per video
and a GIF of the first, and scores the results against the synthetic ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .weights import shipped_weights


@dataclass(frozen=True)
class DemoData:
    """Generator settings of the demo videos; the shipped model was trained on the same settings."""

    videos: int = 48  # about 100 objects: enough for a stable AP (a few videos give a noisy one)
    frames: int = 12
    size: tuple[int, int] = (128, 224)
    classes: int = 3
    max_objects: int = 3
    seed: int = 2026  # training used seeds 0 (train) and 1000 (held-out)
    gif_scale: int = 2


@dataclass
class DemoOutputs:
    """Where the demo wrote its files, and its scores (``None`` for a user video)."""

    out_dir: Path
    results: Path
    videos: list[Path]
    gif: Path | None
    ground_truth: Path | None
    stats: dict[str, float] | None
    seconds: float


def _write_gif(mp4: Path, gif: Path, scale: int, fps: float) -> Path:
    """A looping GIF of a rendered mp4, upscaled ``scale``x (nearest) for legibility."""
    import av

    from .media import write_gif

    with av.open(str(mp4)) as container:
        frames = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    return write_gif(gif, frames, fps, scale)


def run_demo(out_dir: str | Path, video: str | Path | None = None, data: DemoData = DemoData(),
             device: str = "cpu", progress: bool = True) -> DemoOutputs:
    """Run the shipped model: on a fresh synthetic set (scored against its ground truth), or on ``video``.

    Args:
        out_dir: output folder (created; the synthetic data goes to ``out_dir/data``).
        video: the user's video file or frame folder; ``None`` for the synthetic demo.
        data: generator settings of the synthetic demo videos.
        device: ``cpu`` or ``cuda``.
        progress: show progress bars.
    """
    import time

    from .data.sources import Video, dataset_videos, open_source
    from .data.synthetic import make_synthetic
    from .evaluation import evaluate
    from .inference.predictor import load
    from .outputs.writer import predict_to_dir

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = load(shipped_weights("demo"), device)
    fps = 6.0
    videos: list[Video]
    if video is None:
        from .data.annotations import load_annotations

        ann_file = make_synthetic(out_dir / "data", data.videos, data.frames, data.size, seed=data.seed,
                                  classes=data.classes, max_objects=data.max_objects, overwrite=True, workers=1)
        annotations = load_annotations(ann_file)
        videos = list(dataset_videos(annotations, ann_file.parent / "JPEGImages", fps=fps))
        category_ids = [annotations.category_id_of(label) for label in range(1, annotations.num_classes + 1)]
    else:
        videos = open_source(video)
        fps = videos[0].fps or fps
        category_ids = None
    summary = predict_to_dir(predictor, videos, out_dir, category_ids=category_ids, render=True,
                             progress=progress)
    rendered = [out_dir / f"{v.name}.mp4" for v in videos]
    gif = None
    if video is None:
        gif = _write_gif(rendered[0], out_dir / "demo.gif", data.gif_scale, fps)
    stats = evaluate(ann_file, summary.results).stats if video is None else None
    return DemoOutputs(out_dir, summary.results, rendered, gif, ann_file if video is None else None, stats,
                       time.perf_counter() - start)
