"""``cico evaluate GT.json RESULTS.json``: the official YouTube-VIS / OVIS video mask AP and AR.

Prints the 12 numbers in the COCO summary style and a per-class AP table; with ``--json`` the last
line of stdout is one JSON object holding the 12 numbers (-1 where undefined). Warnings about the
input (results of unknown classes, GT id 0, masks of another size) go to stderr, one line each.

``--tracking`` adds HOTA, CLEAR and Identity (TrackEval's YouTube-VIS conventions; the JSON line gets
``"tracking": {"class_avg": {...}, "det_avg": {...}}``), ``--track-score-thresh S`` the same on the
result tracks scoring at least S (``"tracking_score_thresh"``), ``--breakdown`` the tables per class,
size, video length, occlusion and video with the error analysis, and ``--report DIR`` the HTML report.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from ..errors import CicoError
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
    parser.add_argument("--tracking", action="store_true",
                        help="also compute HOTA, CLEAR (MOTA, IDSW, ...) and Identity (IDF1) as TrackEval does")
    parser.add_argument("--track-score-thresh", type=float, metavar="S", default=None,
                        help="also report the tracking metrics on the result tracks with score >= S "
                             "(implies --tracking)")
    parser.add_argument("--breakdown", action="store_true",
                        help="AP and tracking metrics per class, size, video length, occlusion and video, and the "
                        "error analysis (implies --tracking)")
    parser.add_argument("--report", type=Path, metavar="DIR", default=None,
                        help="write report.html, figures/ and metrics.json into DIR (implies --tracking)")
    parser.add_argument("--frames", type=Path, metavar="DIR", default=None,
                        help="frames folder of the GT videos: the report shows the five worst videos' frames")


def run(args: argparse.Namespace) -> int:
    if args.frames is not None and args.report is None:
        raise CicoError("--frames only serves --report DIR")
    if args.frames is not None and not args.frames.is_dir():
        raise CicoError("frames folder not found", args.frames)
    if args.report is not None:
        from ..evaluation.report import check_writable

        check_writable(args.report)  # fail now, not after the evaluation
    analyse = args.breakdown or args.report is not None
    result = evaluate_reporting_warnings(
        "cico evaluate", args.gt, args.results,
        zip_truncation=not args.count_missing_frames, gt_id_zero_never_matches=not args.match_gt_id_zero,
        tracking=args.tracking or analyse, track_score_thresh=args.track_score_thresh, details=analyse,
    )
    print_report(result, args.json, breakdown=args.breakdown, report=args.report, frames=args.frames)
    return 0


def evaluate_reporting_warnings(prog: str, gt: Any, results: Any, **options: Any) -> EvaluationResult:
    """:func:`~cico.evaluation.evaluate`, printing each warning it raises as one stderr line ``PROG: warning: ...``
    (evaluation warnings by their message, others prefixed with their category)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvaluationWarning)
        result = evaluate(gt, results, **options)
    for warning in caught:
        kind = "" if issubclass(warning.category, EvaluationWarning) else f"{warning.category.__name__}: "
        print(f"{prog}: warning: {kind}{warning.message}", file=sys.stderr)
    return result


def print_report(
    result: EvaluationResult, json_line: bool, breakdown: bool = False, report: Path | None = None,
    frames: Path | None = None,
) -> None:
    """The COCO-style summary and the per-class AP table, the tracking metrics when computed, the
    breakdowns when asked, the HTML report into ``report``; with ``json_line`` a last line of JSON."""
    print(result.summary())
    print()
    print("Per-class AP in % (IoU=0.50:0.95, area=all, maxDets=100; '-' = no ground truth):")
    print(result.per_class_table())
    for tracking in (result.tracking, result.tracking_thresholded):
        if tracking is not None:
            print()
            print(tracking.summary())
    analysis = None
    if breakdown or report is not None:
        from ..evaluation.breakdown import breakdown as make_breakdown
        from ..evaluation.error_analysis import analyse_errors

        assert result.details is not None
        analysis = (make_breakdown(result), analyse_errors(result.details))
    if breakdown and analysis is not None:
        print()
        print(analysis[0].text())
        print()
        print(analysis[1].text())
    if report is not None:
        from ..evaluation.report import write_report

        page = write_report(report, result, frames, analysis)
        print(f"\nreport      {page} (figures in {page.parent / 'figures'}, every number in"
              f" {page.parent / 'metrics.json'})")
    if json_line:
        line: dict[str, Any] = dict(result.stats)
        if result.tracking is not None:
            line["tracking"] = result.tracking.to_json()
        if result.tracking_thresholded is not None:
            line["tracking_score_thresh"] = {"score_thresh": result.tracking_thresholded.score_threshold,
                                             **result.tracking_thresholded.to_json()}
        print(json.dumps(line))
