"""The ``cico`` command line.

Each subcommand lives in its own module under :mod:`cico.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen subcommand's module is imported,
so ``cico evaluate`` starts without loading torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from . import __version__, threads
from .errors import CicoError

# name -> (module under cico.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the shipped model on fresh synthetic videos (or --video FILE) and score it"),
    "make-synthetic": ("make_synthetic", "write a synthetic video dataset in the YouTube-VIS format"),
    "check-data": ("check_data", "validate a YouTube-VIS/OVIS-format dataset"),
    "import-data": ("import_data", "convert ytvos/mots/labelme/cvat/coco annotations into a YouTube-VIS file"),
    "export-data": ("export_data", "write annotations or results as ytvos PNG folders or mots text files"),
    "show-data": ("show_data", "render a dataset's ground truth to mp4/GIF and plot its statistics"),
    "split": ("split", "write a deterministic held-out split of a training annotation file"),
    "evaluate": ("evaluate", "score a results file against ground truth (official YouTube-VIS metric)"),
    "convert": ("convert", "import a reference CiCo checkpoint (.pth) as a cico checkpoint"),
    "train": ("train", "train a CiCo model (one process or torchrun/DDP), resumable, with periodic evaluation"),
    "predict": ("predict", "segment and track the objects of a video, frame folder, dataset split or camera"),
    "eval": ("eval", "predict a dataset split, write results.json + CodaLab zip, and score it when GT exists"),
    "export": ("export", "export the clip network to ONNX (or torch.export .pt2) for ONNX Runtime and deployment"),
    "benchmark": ("benchmark", "measure frames/s of a model (network only or end to end) as one JSON line"),
}


def _top_parser() -> argparse.ArgumentParser:
    epilog = "commands:\n" + "\n".join(f"  {name:<16}{help_}" for name, (_, help_) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="cico",
        description="CiCo video instance segmentation.",
        epilog=epilog + "\n\nRun 'cico COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cico {__version__}")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv or ["--help"])
    name = argv[0]
    if name not in COMMANDS:
        top.parse_args(argv[:1])  # argparse reports the unknown command and exits 2
    module_name, help_ = COMMANDS[name]
    threads.configure()  # before a command imports torch (and its OpenMP runtime)
    module = importlib.import_module(f"cico.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"cico {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except CicoError as err:
        print(f"cico {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cico {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
