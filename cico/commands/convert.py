"""``cico convert REF.pth OUT --preset NAME``: import a reference CiCo checkpoint.

Reads a reference ``.pth`` (a plain state dict, or one under ``state_dict`` / ``model``; current or legacy
key names), maps its names to cico's, checks every tensor against the preset's network, and
writes a cico checkpoint (``.pth``, or ``.safetensors`` by the suffix of OUT) that holds the preset's
config, so ``--weights OUT`` alone is enough afterwards. Weights of another preset (CondInst for Yolact,
OVIS for YouTube-VIS, R101 for R50, ...) are refused with the presets they do fit.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CicoError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..model.config import PRESETS

    parser.add_argument("reference", type=Path, metavar="REF.pth", help="reference CiCo checkpoint")
    parser.add_argument("output", type=Path, metavar="OUT", help="cico checkpoint to write (.pth or .safetensors)")
    parser.add_argument("--preset", required=True, choices=list(PRESETS), metavar="NAME",
                        help="the model preset the weights belong to, e.g. cico_yolact_r50_yt19 "
                             f"(one of: {', '.join(PRESETS)})")


def run(args: argparse.Namespace) -> int:

    from ..model.checkpoint import FORMAT, model_from_state_dict, read_torch_file, save_checkpoint
    from ..model.config import get_preset
    from ..model.convert import (
        ConversionReport,
        match_state_dict,
        matching_presets,
        reference_to_cico,
        unwrap_state_dict,
    )
    from ..model.network import empty_model

    src: Path = args.reference
    obj = read_torch_file(src)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        raise CicoError("already a cico checkpoint; nothing to convert", src)
    try:
        reference = unwrap_state_dict(obj)
    except ValueError as err:
        raise CicoError(f"not a reference checkpoint: {err}", src) from None

    config = get_preset(args.preset)
    report = ConversionReport()
    state = reference_to_cico(reference, report)
    expected = empty_model(config).state_dict()
    matched, report = match_state_dict(state, expected, report)
    print(f"cico convert: {src} ({len(reference)} tensors) for preset {args.preset}")
    print("\n".join(report.lines()))
    if not report.ok:
        fits = [name for name in matching_presets(state) if name != args.preset]
        hint = f"; they fit {', '.join(fits)}" if fits else ""
        first = (report.missing + report.misshaped)[0]
        raise CicoError(f"weights do not fit preset {args.preset}: {len(report.missing)} missing and "
                        f"{len(report.misshaped)} mis-shaped tensors (e.g. {first}){hint}", src)
    model = model_from_state_dict(config, matched, source=src)
    out = save_checkpoint(args.output, model, config, preset=args.preset)
    print(f"wrote {out}: {len(matched)} tensors, preset {args.preset}")
    return 0
