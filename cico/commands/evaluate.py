"""``cico evaluate GT.json RESULTS.json``: the official YouTube-VIS / OVIS video mask AP and AR.

Prints the 12 numbers in the COCO summary style and a per-class AP table; with ``--json`` the last
line of stdout is one JSON object holding the 12 numbers (-1 where undefined). Warnings about the
input (results of unknown classes, GT id 0, masks of another size) go to stderr, one line each.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from ..evaluation import EvaluationResult, EvaluationWarning, evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gt", metavar="GT.json", help="ground-truth annotation file (YouTube-VIS / OVIS format)")
    parser.add_argument(
        "results",
        metavar="RESULTS.json",
        help="results list as written by 'cico predict' (or a CodaLab submission .zip)",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line holding the 12 numbers")
    parser.add_argument(
        "--count-missing-frames",
        action="store_true",
        help="fix of an official quirk: frames beyond a result's (or GT's) segmentation list count as 'absent' "
        "instead of being ignored (numbers then differ from the official server)",
    )
    parser.add_argument(
        "--match-gt-id-zero",
        action="store_true",
        help="fix of an official quirk: let results match a GT track whose id is 0 (officially never a true positive)",
    )


def run(args: argparse.Namespace) -> int:
    result = evaluate_reporting_warnings(
        "cico evaluate", args.gt, args.results,
        zip_truncation=not args.count_missing_frames, gt_id_zero_never_matches=not args.match_gt_id_zero,
    )
    print_report(result, args.json)
    return 0


def evaluate_reporting_warnings(prog: str, gt: Any, results: Any, **options: bool) -> EvaluationResult:
    """:func:`~cico.evaluation.evaluate`, printing each warning it raises as one stderr line ``PROG: warning: ...``
    (evaluation warnings by their message, others prefixed with their category)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvaluationWarning)
        result = evaluate(gt, results, **options)
    for warning in caught:
        kind = "" if issubclass(warning.category, EvaluationWarning) else f"{warning.category.__name__}: "
        print(f"{prog}: warning: {kind}{warning.message}", file=sys.stderr)
    return result


def print_report(result: EvaluationResult, json_line: bool) -> None:
    """The COCO-style summary and the per-class AP table; with ``json_line`` a last line of JSON stats."""
    print(result.summary())
    print()
    print("Per-class AP in % (IoU=0.50:0.95, area=all, maxDets=100; '-' = no ground truth):")
    print(result.per_class_table())
    if json_line:
        print(json.dumps(result.stats))
