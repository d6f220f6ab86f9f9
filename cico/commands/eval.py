"""``cico eval``: predict a whole dataset split, write results.json and the CodaLab zip, and score it.

Under ``torchrun --nproc_per_node=N -m cico eval ...`` the split's videos are shared out over the
processes (gloo on CPU, nccl on GPUs, each process on its own GPU with ``--device cuda``) and the main
process writes the one results.json, zip and report, identical to one process's.

The metric (the official YouTube-VIS video mask AP/AR, :mod:`cico.evaluation`) runs when the split has
ground truth; the standard ``valid``/``test`` splits have none and are scored by the CodaLab servers from
the zip.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .evaluate import evaluate_reporting_warnings, print_report
from .options import add_dataset_arguments
from .predict import WEIGHTS_HELP, add_inference_arguments, build_predictor, dataset_source, resolve_device

if TYPE_CHECKING:
    from ..training.distributed import Distributed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, type=Path, metavar="W", help=WEIGHTS_HELP)
    parser.add_argument("--out", type=Path, metavar="DIR", default=None,
                        help="output folder (default: eval_<dataset>_<split>, or eval_<annotation file name>)")
    add_inference_arguments(parser)
    parser.add_argument("--json", action="store_true", help="end with one JSON line holding the 12 numbers")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataset_arguments(parser, default_split="valid_sub")


def run(args: argparse.Namespace) -> int:
    from ..training.distributed import Distributed, process_group
    from .sharding import process_device

    env = Distributed.from_env()
    args.device = process_device(args.device, env)
    with process_group(env, resolve_device(args.device)[0]):
        return _run(args, env)


def _run(args: argparse.Namespace, env: Distributed) -> int:
    from ..outputs.codalab import write_submission
    from .sharding import predict_sharded

    predictor = build_predictor(args)
    videos, category_ids, annotations, paths = dataset_source(args, predictor.config.num_classes)
    out = args.out or Path(f"eval_{paths.dataset}_{paths.split}" if paths.dataset else f"eval_{paths.ann_file.stem}")
    summary = predict_sharded(predictor, videos, out, env, category_ids=category_ids, progress=not args.quiet)
    if summary is None:  # another process writes and scores
        return 0
    zip_path = write_submission(summary.results, out / "submission.zip")
    rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    print(f"wrote {summary.results} and {zip_path}: {summary.tracks} tracks in {summary.videos} videos, "
          f"{summary.frames} frames, {rate:.2f} frames/s")
    if not (paths.has_gt and annotations.has_gt and annotations.tracks):
        print("no ground truth in this split: submit the zip to the evaluation server")
        return 0
    result = evaluate_reporting_warnings("cico eval", paths.ann_file, summary.results, tracking=True, details=True)
    print_report(result, args.json, report=out / "report", frames=paths.frames_dir)
    return 0
