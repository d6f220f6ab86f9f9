"""``cico eval``: predict a whole dataset split, write results.json and the CodaLab zip, and score it.

The metric (the official YouTube-VIS video mask AP/AR, :mod:`cico.evaluation`) runs when the split has
ground truth; the standard ``valid``/``test`` splits have none and are scored by the CodaLab servers from
the zip.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.catalogue import add_dataset_arguments
from .evaluate import evaluate_reporting_warnings, print_report
from .predict import add_inference_arguments, build_predictor, dataset_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, type=Path, metavar="W",
                        help="a cico checkpoint, or an ONNX export of one (cico export), run with ONNX Runtime")
    parser.add_argument("--out", type=Path, metavar="DIR", default=None,
                        help="output folder (default: eval_<dataset>_<split>, or eval_<annotation file name>)")
    add_inference_arguments(parser)
    parser.add_argument("--json", action="store_true", help="end with one JSON line holding the 12 numbers")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataset_arguments(parser, default_split="valid_sub")


def run(args: argparse.Namespace) -> int:
    from ..inference.video import predict_to_dir
    from ..outputs.codalab import write_submission

    predictor = build_predictor(args)
    videos, category_ids, annotations, paths = dataset_source(args, predictor.config.num_classes)
    out = args.out or Path(f"eval_{paths.dataset}_{paths.split}" if paths.dataset else f"eval_{paths.ann_file.stem}")
    summary = predict_to_dir(predictor, videos, out, category_ids=category_ids, progress=not args.quiet)
    zip_path = write_submission(summary.results, out / "submission.zip")
    rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    print(f"wrote {summary.results} and {zip_path}: {summary.tracks} tracks in {summary.videos} videos, "
          f"{summary.frames} frames, {rate:.2f} frames/s")
    if not (paths.has_gt and annotations.has_gt and annotations.tracks):
        print("no ground truth in this split: submit the zip to the evaluation server")
        return 0
    print_report(evaluate_reporting_warnings("cico eval", paths.ann_file, summary.results), args.json)
    return 0
