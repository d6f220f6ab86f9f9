"""``cico predict``: video instance segmentation of a video file, a frame folder, a dataset split or a camera."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..data.catalogue import add_dataset_arguments
from ..errors import CicoError

LIVE_RETIRE_AFTER = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", metavar="SOURCE",
                        help="a video file (mp4/avi/mov/webm/mkv), a folder of jpg/png frames, a webcam index "
                             "(0) or a stream URL; or give a dataset split with the options below")
    parser.add_argument("--weights", required=True, type=Path, metavar="W",
                        help="a cico checkpoint, or an ONNX export of one (cico export), run with ONNX Runtime")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    add_inference_arguments(parser)
    parser.add_argument("--render", action="store_true",
                        help="also write DIR/<video>.mp4 with coloured masks, track ids, classes and scores")
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
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    group.add_argument("--batch-clips", type=int, default=1, metavar="B", help="clips per network forward (1)")
    group.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast the network forward")
    group.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    group.add_argument("--retire-after", type=int, default=None, metavar="N",
                       help="forget tracks not detected for more than N clips, bounding memory on long videos "
                            "(default: keep all, as the reference; live cameras/streams default to 30)")


def build_predictor(args: argparse.Namespace, live: bool = False):
    """The :class:`~cico.inference.video.VideoPredictor` described by the inference options."""
    import torch

    from ..inference.link import LinkConfig
    from ..inference.onnx_runtime import is_onnx, load_network
    from ..inference.video import VideoPredictor

    device = torch.device(args.device) if _valid_device(args.device) else None
    if device is None:
        raise CicoError(f"unknown device {args.device!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CicoError("--device cuda: CUDA is not available on this machine")
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
    from ..data.catalogue import resolve_dataset
    from ..data.sources import dataset_videos

    paths = resolve_dataset(args)
    annotations = load_annotations(paths.ann_file)
    if annotations.num_classes != num_classes:
        raise CicoError(f"the dataset has {annotations.num_classes} categories but the model predicts "
                        f"{num_classes} classes", paths.ann_file)
    videos = dataset_videos(annotations, paths.frames_dir, getattr(args, "fps", None))
    return videos, annotations.category_ids, annotations, paths


def run(args: argparse.Namespace) -> int:
    from ..data.sources import Camera, open_source
    from ..inference.video import predict_to_dir

    uses_dataset = bool(args.dataset or args.ann or args.frames)
    if (args.source is None) == (not uses_dataset):
        raise CicoError("give either a SOURCE or a dataset (--dataset NAME --data-root DIR, or --ann FILE --frames DIR)")
    if uses_dataset:
        predictor = build_predictor(args)
        videos, category_ids, _, _ = dataset_source(args, predictor.config.num_classes)
    else:
        videos: Sequence = open_source(args.source, fps=args.fps)
        predictor = build_predictor(args, live=any(isinstance(v, Camera) for v in videos))
        category_ids = None
    summary = predict_to_dir(predictor, videos, args.out, category_ids=category_ids, render=args.render,
                             save_masks=args.save_masks, dump_tracker=args.dump_tracker, progress=not args.quiet)
    rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    print(f"wrote {summary.results}: {summary.tracks} tracks in {summary.videos} video(s), "
          f"{summary.frames} frames, {rate:.2f} frames/s", file=sys.stdout)
    return 0


def _valid_device(name: str) -> bool:
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True
