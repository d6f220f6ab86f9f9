"""``cico benchmark``: frames per second of a model, with the protocol printed alongside as one JSON line.

Protocol:

* network (default): a random clip ``[B, T, 3, Hp, Wp]`` at the padded input size of a ``--size`` frame
  (480x854 -> 384x640 for the reference presets) through the network in eval mode, detection included;
  ``--warmup`` untimed forwards, then ``--repeats`` timed ones (CUDA synchronised before and after).
  ``frames_per_s`` counts the ``T - O`` new frames each clip contributes to a video (O = ``--overlap``).
* ``--end-to-end``: an mp4 of ``--frames`` frames of moving shapes at ``--size`` is written first (not
  timed), or ``--source`` names a real video / frame folder; after a warm-up on one clip of moving shapes,
  the whole video is timed through ``VideoPredictor``: decoding, preprocessing, network + detection,
  linking, masks back at full size and RLE encoding. ``frames_per_s`` = video frames / seconds.

Random-init weights (the default) make detection degenerate (the focal prior scores ~0.01, so nothing
passes 0.1 and linking has nothing to do); pass ``--weights`` for a trained or reference checkpoint.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import CicoError
from .make_synthetic import parse_size
from .predict import resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="cico_yolact_r50_yt19", help="model preset (random init)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a cico checkpoint, an ONNX export (run with ONNX Runtime) or 'demo' (the model "
                             "shipped with cico) instead of the preset")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--end-to-end", action="store_true", help="time the whole video pipeline on an mp4")
    parser.add_argument("--size", default="480x854", help="frame size HxW (default 480x854)")
    parser.add_argument("--frames", type=int, default=24, help="--end-to-end video length (default 24)")
    parser.add_argument("--source", default=None,
                        help="--end-to-end on this video file or frame folder instead of moving shapes")
    parser.add_argument("--overlap", type=int, default=1, help="frames shared by consecutive clips (1)")
    parser.add_argument("--batch-clips", type=int, default=1, help="clips per forward (1)")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards (network mode)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards (network mode)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def moving_shapes(frames: int, size: tuple[int, int], seed: int = 0):
    """Frames of a few shapes moving over a gradient background (BGR ``uint8``), generated lazily."""
    import cv2

    h, w = size
    rng = np.random.default_rng(seed)
    background = np.linspace(40, 160, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2).astype(np.uint8)
    shapes = [(rng.uniform(0.1, 0.9, 2) * (w, h), rng.uniform(-4, 4, 2), rng.uniform(0.06, 0.15) * h,
               tuple(int(c) for c in rng.integers(0, 255, 3)), kind) for kind in ("disc", "square", "disc")]
    for t in range(frames):
        image = background.copy()
        for (x, y), (vx, vy), radius, colour, kind in shapes:
            cx, cy = int((x + vx * t) % w), int((y + vy * t) % h)
            if kind == "disc":
                cv2.circle(image, (cx, cy), int(radius), colour, -1)
            else:
                top_left, bottom_right = (int(cx - radius), int(cy - radius)), (int(cx + radius), int(cy + radius))
                cv2.rectangle(image, top_left, bottom_right, colour, -1)
        yield image


def write_moving_shapes(path: Path, frames: int, size: tuple[int, int], fps: float = 30.0) -> Path:
    """An H.264 mp4 of :func:`moving_shapes`."""
    from ..media import Mp4Writer

    with Mp4Writer(path, fps) as writer:
        for image in moving_shapes(frames, size):
            writer.write(image)
    return path


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.transforms import padded_size, resize_shape
    from ..inference.link import LinkConfig
    from ..inference.onnx_runtime import load_network
    from ..inference.predictor import VideoPredictor
    from ..model.config import get_preset
    from ..model.network import build_model
    from ..structures import ClipResult

    size = parse_size(args.size)
    if min(size) < 2:
        raise CicoError(f"--size must be at least 2x2, got {args.size!r}")
    if args.repeats < 1 or args.warmup < 0 or args.frames < 1:
        raise CicoError("--repeats and --frames must be at least 1, --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device, _ = resolve_device(args.device)  # the JSON line names it
    if args.weights is not None:
        model = load_network(args.weights, device)
        name = str(args.weights)
    else:
        try:
            get_preset(args.preset)
        except KeyError as err:
            raise CicoError(str(err.args[0])) from None
        model = build_model(args.preset).to(device).eval()
        name = args.preset
    config = model.config
    predictor = VideoPredictor(model, overlap=args.overlap, batch_clips=args.batch_clips, amp=args.amp,
                               channels_last=args.channels_last, link=LinkConfig())
    resized = resize_shape(*size, config.min_size, config.max_size)
    padded = padded_size(*resized, config.size_divisibility, config.min_size, config.max_size)
    record = {"model": name, "device": str(device), "threads": torch.get_num_threads(),
              "mode": "end-to-end" if args.end_to_end else "network", "frame_size": list(size),
              "input_size": list(padded), "clip_frames": config.clip_frames, "overlap": args.overlap,
              "batch_clips": args.batch_clips, "amp": args.amp, "channels_last": args.channels_last}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if args.end_to_end:
        from ..data.sources import VideoFile, open_source

        with tempfile.TemporaryDirectory() as tmp:
            if args.source:
                (video,) = open_source(args.source)
                size = next(iter(video.frames())).shape[:2]
            else:
                video = VideoFile(write_moving_shapes(Path(tmp) / "shapes.mp4", args.frames, size))
            warm = VideoFile(write_moving_shapes(Path(tmp) / "warm.mp4", config.clip_frames, size))
            predictor.predict_video(warm)
            sync()
            counts = {"frames": 0, "detections": 0}

            def count(clip: ClipResult) -> None:
                counts["frames"] += len(clip.frames)
                counts["detections"] += len(clip.detections)

            start = time.perf_counter()
            tracks = len(predictor.predict_video(video, on_clip=count))
            sync()
            seconds = time.perf_counter() - start
        frames, detections = counts["frames"], counts["detections"]
        clips = -(-frames // (config.clip_frames - args.overlap))
        record.update(source=args.source or "moving shapes mp4", frame_size=list(size), frames=frames,
                      seconds=round(seconds, 4), detections_per_clip=round(detections / clips, 2), tracks=tracks,
                      frames_per_s=round(frames / seconds, 4))
    else:
        clips = torch.randn(args.batch_clips, config.clip_frames, 3, *padded, device=device)
        detections = 0
        for _ in range(args.warmup):
            predictor.detect_clips(clips)
        sync()
        start = time.perf_counter()
        for _ in range(args.repeats):
            detections += sum(len(d) for d in predictor.detect_clips(clips))
        sync()
        seconds = time.perf_counter() - start
        clip_rate = args.repeats * args.batch_clips / seconds
        record.update(warmup=args.warmup, repeats=args.repeats, seconds=round(seconds, 4),
                      detections_per_clip=detections / (args.repeats * args.batch_clips),
                      clips_per_s=round(clip_rate, 4),
                      frames_per_s=round(clip_rate * (config.clip_frames - args.overlap), 4))
    print(json.dumps(record))
    return 0
