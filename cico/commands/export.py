"""``cico export --weights W --out model.onnx``: the clip network as an ONNX (or ``torch.export``) file.

The file holds the network alone (no anchors, no NMS): input ``clips [B, T, 3, H, W]`` prepared as the
predictor prepares them, outputs the raw head outputs and prototypes (:mod:`cico.model.onnx_export`). An ONNX
export carries the model config, so ``cico predict/eval/benchmark --weights model.onnx`` run it with ONNX
Runtime and cico's own detection, linking and outputs. After writing, the command checks the file with
``onnx.checker`` and prints the max absolute difference of every output against the torch network, on a random
clip and on the first clip of ``--check-video`` when given.

``--format pt2`` saves the ``torch.export`` ExportedProgram instead (``torch.export.load(path).module()`` runs
it; the config is in the archive's ``extra/cico.json``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import CicoError
from .make_synthetic import parse_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, type=Path, metavar="W", help="a cico checkpoint")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="the file to write (.onnx, .pt2)")
    parser.add_argument("--format", choices=("onnx", "pt2"), default="onnx", help="onnx (default) or pt2")
    parser.add_argument("--size", default=None, metavar="HxW",
                        help="padded input size, multiples of 32 (default: the model's test size, 384x640 for "
                             "the reference presets)")
    parser.add_argument("--batch-clips", type=int, default=1, metavar="B", help="clips per run (default 1)")
    parser.add_argument("--opset", type=int, default=18, metavar="N", help="ONNX opset (default 18)")
    parser.add_argument("--dynamic-size", action="store_true",
                        help="symbolic batch, height and width (multiples of 32) instead of the fixed --size")
    parser.add_argument("--check-video", default=None, metavar="SOURCE",
                        help="also compare with torch on the first clip of this video file or frame folder")


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__
    from ..data.transforms import padded_size
    from ..model.checkpoint import load_model

    model = load_model(args.weights)
    config = model.config
    if args.size is None:
        size = padded_size(config.min_size, config.max_size, config.size_divisibility)
    else:
        size = parse_size(args.size)
    if size[0] % 32 or size[1] % 32 or min(size) < 32:
        raise CicoError(f"--size {size[0]}x{size[1]}: height and width must be multiples of 32")
    if args.batch_clips < 1:
        raise CicoError("--batch-clips must be at least 1")
    if args.out.suffix.lower() != f".{args.format}":
        raise CicoError(f"--format {args.format} writes a .{args.format} file", args.out)
    clips = {"random clip": torch.randn(args.batch_clips, config.clip_frames, 3, *size, generator=torch.Generator()
                                        .manual_seed(0))}
    if args.check_video:
        clips["first clip of " + args.check_video] = _first_clip(args.check_video, config, size)
    print(f"cico export: {args.weights} ({config.backbone}, {config.mask_head}, T={config.clip_frames}) -> "
          f"{args.out}, input [{args.batch_clips}, {config.clip_frames}, 3, {size[0]}, {size[1]}]"
          f"{' (dynamic B, H, W)' if args.dynamic_size else ''}")
    if args.format == "pt2":
        differences = _export_pt2(model, args, size, clips)
    else:
        differences = _export_onnx(model, args, size, clips, __version__)
    for name, diffs in differences.items():
        print(f"max |export - torch| (max |torch|) on the {name}: "
              + ", ".join(f"{k} {diff:.2e} ({scale:.3g})" for k, (diff, scale) in diffs.items()))
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _export_onnx(model, args: argparse.Namespace, size: tuple[int, int], clips: dict,
                 version: str) -> dict[str, dict[str, tuple[float, float]]]:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise CicoError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'cico[onnx]'") from None
    from ..inference.onnx_runtime import OnnxClipNetwork, max_differences
    from ..model.onnx_export import export_onnx

    try:
        export_onnx(model, args.out, size=size, batch_clips=args.batch_clips, opset=args.opset,
                    dynamic_size=args.dynamic_size, cico_version=version)
    except ValueError as err:
        raise CicoError(str(err), args.out) from None
    print("onnx.checker: passed")
    network = OnnxClipNetwork(args.out)
    return {name: max_differences(model, network, clip) for name, clip in clips.items()}


def _export_pt2(model, args: argparse.Namespace, size: tuple[int, int],
                clips: dict) -> dict[str, dict[str, tuple[float, float]]]:
    import torch

    from ..fileio import atomic_write
    from ..model.onnx_export import OUTPUT_NAMES, RawClipNetwork, dynamic_dims, exportable

    example = next(iter(clips.values()))
    if args.dynamic_size:  # torch.export specialises dimensions of size 1: a dynamic batch is traced with 2 clips
        example = example.repeat(2, 1, 1, 1, 1)[:max(len(example), 2)]
    with exportable(model) as network, torch.no_grad():
        program = torch.export.export(network, (example,),
                                      dynamic_shapes={"clips": dynamic_dims()} if args.dynamic_size else None)
    extra = {"cico.json": json.dumps({"config": model.config.to_dict(), "input": "clips [B, T, 3, H, W]",
                                      "outputs": list(OUTPUT_NAMES)})}
    with atomic_write(args.out) as tmp:
        torch.export.save(program, str(tmp), extra_files=extra)
    loaded = torch.export.load(str(args.out)).module()
    differences = {}
    for name, clip in clips.items():
        with torch.no_grad():
            ours, theirs = RawClipNetwork(model)(clip), loaded(clip)
        differences[name] = {k: (float((a - b).abs().max()), float(a.abs().max()))
                             for k, a, b in zip(OUTPUT_NAMES, ours, theirs)}
    return differences


def _first_clip(source: str, config, size: tuple[int, int]):
    """The first ``T`` frames of ``source`` prepared as the predictor prepares them: ``[1, T, 3, H, W]``."""
    import torch

    from ..data.sources import open_source
    from ..data.transforms import pad_to, preprocess_frame
    from ..inference.clips import split_clips

    videos = open_source(source)
    clip = next(split_clips(videos[0].frames(), config.clip_frames, 0))
    frames = [preprocess_frame(image, config.min_size, config.max_size, config.normalization)
              for image in clip.images]
    if frames[0].shape[-2] > size[0] or frames[0].shape[-1] > size[1]:
        raise CicoError(f"its frames resize to {frames[0].shape[-2]}x{frames[0].shape[-1]}, larger than the export "
                        f"size {size[0]}x{size[1]}", source)
    return torch.stack([pad_to(f, size) for f in frames])[None]
