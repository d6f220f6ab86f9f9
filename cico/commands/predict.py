"""``cico predict``: video instance segmentation of a video file, a frame folder, a dataset split or a camera."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import CicoError
from .options import add_dataset_arguments

if TYPE_CHECKING:
    import torch

    from ..outputs.render import RenderStyle

LIVE_RETIRE_AFTER = 30
WEIGHTS_HELP = ("a cico checkpoint, an ONNX export of one (cico export; run with ONNX Runtime), or 'demo' (the "
                "model shipped with cico)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", metavar="SOURCE",
                        help="a video file (mp4/avi/mov/webm/mkv), a folder of jpg/png frames, a webcam index "
                             "(0) or a stream URL; or give a dataset split with the options below")
    parser.add_argument("--weights", required=True, type=Path, metavar="W", help=WEIGHTS_HELP)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    add_inference_arguments(parser)
    parser.add_argument("--render", action="store_true",
                        help="also write DIR/<video>.mp4 with coloured masks, track ids, classes and scores")
    parser.add_argument("--render-top-k", type=int, default=None, metavar="N",
                        help="render at most the N best tracks of each frame (implies --render)")
    parser.add_argument("--render-score-thresh", type=float, default=0.0, metavar="S",
                        help="render only the tracks scoring at least S (implies --render)")
    parser.add_argument("--save-masks", action="store_true",
                        help="also write DIR/masks/<video>/<frame>.png instance-id masks (id + 1; 16-bit if needed)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of rendered frame folders / dataset videos (default 25)")
    parser.add_argument("--dump-tracker", action="store_true",
                        help="also write DIR/tracker/<video>.npz with every clip's detections and tracker outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataset_arguments(parser, default_split="valid")


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``cico predict`` and ``cico eval``."""
    group = parser.add_argument_group("inference")
    group.add_argument("--clip-frames", type=int, default=None, metavar="T",
                       help="frames per clip; must be the model's (default: the model's, 3 for the presets)")
    group.add_argument("--overlap", type=int, default=1, metavar="O", help="frames shared by consecutive clips (1)")
    group.add_argument("--score-thresh", type=float, default=None, metavar="S",
                       help="confidence threshold of detection and of the tracker's output (reference 0.1)")
    group.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    group.add_argument("--batch-clips", type=int, default=1, metavar="B", help="clips per network forward (1)")
    group.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast the network forward")
    group.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    group.add_argument("--retire-after", type=int, default=None, metavar="N",
                       help="forget tracks not detected for more than N clips, bounding memory on long videos "
                            "(default: keep all, as the reference; live cameras/streams default to 30)")


def build_predictor(args: argparse.Namespace, live: bool = False):
    """The :class:`~cico.inference.predictor.VideoPredictor` described by the inference options."""

    from ..inference.link import LinkConfig
    from ..inference.onnx_runtime import is_onnx, load_network
    from ..inference.predictor import VideoPredictor

    device, line = resolve_device(args.device)
    print(line, flush=True)
    if is_onnx(args.weights) and (args.amp or args.channels_last):
        raise CicoError("--amp and --channels-last apply to the torch network, not to an ONNX export", args.weights)
    model = load_network(args.weights, device)
    frames = model.config.clip_frames
    if args.clip_frames is not None and args.clip_frames != frames:
        raise CicoError(f"--clip-frames {args.clip_frames}: this model processes clips of {frames} frames "
                        "(its 3D convolutions and box tubes fix T)", args.weights)
    if not 0 <= args.overlap < frames:
        raise CicoError(f"--overlap must be between 0 and {frames - 1} for {frames}-frame clips")
    if args.batch_clips < 1:
        raise CicoError("--batch-clips must be at least 1")
    retire_after = args.retire_after
    if retire_after is None and live:
        retire_after = LIVE_RETIRE_AFTER
        print(f"cico: live source: tracks not detected for {retire_after} clips are forgotten (--retire-after)",
              file=sys.stderr)
    if retire_after is not None and retire_after < 1:
        raise CicoError("--retire-after must be at least 1")
    return VideoPredictor(model, overlap=args.overlap, batch_clips=args.batch_clips, amp=args.amp,
                          channels_last=args.channels_last, score_thresh=args.score_thresh,
                          link=LinkConfig(retire_after=retire_after))


def dataset_source(args: argparse.Namespace, num_classes: int):
    """Videos, category ids and annotations of the dataset options (see :mod:`cico.data.catalogue`)."""
    from ..data.annotations import load_annotations
    from ..data.sources import dataset_videos
    from .options import resolve_dataset

    paths = resolve_dataset(args)
    assert paths.ann_file is not None and paths.frames_dir is not None  # resolve_dataset checked both
    annotations = load_annotations(paths.ann_file)
    if annotations.num_classes != num_classes:
        raise CicoError(f"the dataset has {annotations.num_classes} categories but the model predicts "
                        f"{num_classes} classes", paths.ann_file)
    videos = dataset_videos(annotations, paths.frames_dir, getattr(args, "fps", None))
    return videos, annotations.category_ids, annotations, paths


def run(args: argparse.Namespace) -> int:
    from ..data.sources import Camera, Video, open_source
    from ..outputs.writer import predict_to_dir

    uses_dataset = bool(args.dataset or args.ann or args.frames)
    if (args.source is None) == (not uses_dataset):
        raise CicoError("give either a SOURCE or a dataset "
                        "(--dataset NAME --data-root DIR, or --ann FILE --frames DIR)")
    if uses_dataset:
        return _run_dataset(args)
    videos: Sequence[Video] = open_source(args.source, fps=args.fps)
    predictor = build_predictor(args, live=any(isinstance(v, Camera) for v in videos))
    summary = predict_to_dir(predictor, videos, args.out, render=render_option(args),
                             save_masks=args.save_masks, dump_tracker=args.dump_tracker, progress=not args.quiet)
    rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    print(f"wrote {summary.results}: {summary.tracks} tracks in {summary.videos} video(s), "
          f"{summary.frames} frames, {rate:.2f} frames/s", file=sys.stdout)
    return 0


def _run_dataset(args: argparse.Namespace) -> int:
    """A dataset split, its videos shared out over the processes under ``torchrun`` (one results.json)."""
    from ..training.distributed import Distributed, process_group
    from .sharding import predict_sharded, process_device

    env = Distributed.from_env()
    args.device = process_device(args.device, env)
    with process_group(env, resolve_device(args.device)[0]):
        predictor = build_predictor(args)
        videos, category_ids, _, _ = dataset_source(args, predictor.config.num_classes)
        summary = predict_sharded(predictor, videos, args.out, env, category_ids=category_ids,
                                  render=render_option(args),
                                  save_masks=args.save_masks, dump_tracker=args.dump_tracker,
                                  progress=not args.quiet)
    if summary is not None:
        rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
        print(f"wrote {summary.results}: {summary.tracks} tracks in {summary.videos} video(s), "
              f"{summary.frames} frames, {rate:.2f} frames/s", file=sys.stdout)
    return 0


def render_option(args: argparse.Namespace) -> bool | RenderStyle:
    """``--render`` with the ``--render-top-k`` / ``--render-score-thresh`` style, if given."""
    from ..outputs.render import RenderStyle

    if args.render_top_k is None and args.render_score_thresh <= 0:
        return bool(args.render)
    if args.render_top_k is not None and args.render_top_k < 1:
        raise CicoError("--render-top-k must be at least 1")
    return RenderStyle(top_k=args.render_top_k, score_thresh=args.render_score_thresh)


def resolve_device(name: str) -> tuple[torch.device, str]:
    """The device of a ``--device`` value (``auto``: CUDA when available, else the CPU), and the line that
    announces it (each command prints it first)."""
    import torch

    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        how = "auto: " + ("CUDA is available" if device.type == "cuda" else "no CUDA GPU found")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):
            raise CicoError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CicoError("--device cuda: CUDA is not available on this machine")
        how = "--device"
    return device, f"device: {device} ({how})"
