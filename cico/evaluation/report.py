"""An evaluation report people would rather look at than read: one HTML page, PNG figures, metrics.json.

``write_report(out_dir, result)`` writes into ``out_dir``:

* ``report.html``: one page that opens without cico or network access (the figures are embedded);
* ``figures/*.png``: the same figures as files (matplotlib, Agg backend): precision-recall curves per
  class at IoU 0.5 and 0.75 and averaged, AP by object size / video length / occlusion, the error
  breakdown and, with a frames folder, a strip of rendered frames (GT beside prediction, drawn by
  :func:`cico.outputs.render.draw_frame`) for each of the five worst videos;
* ``metrics.json``: every number on the page (the 12 AP numbers, per-class AP, tracking metrics,
  breakdowns, error analysis, the precision-recall curves), so a training run's history of
  evaluations can be plotted.

Each file is written under a temporary name and moved into place when complete.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from ..data.sources import read_image
from ..errors import CicoError
from ..fileio import atomic_write
from ..outputs.render import RenderStyle, draw_frame
from ..structures import FrameResult
from .breakdown import Breakdown, breakdown
from .error_analysis import ERROR_TYPES, ErrorAnalysis, analyse_errors
from .tracking import TRACKING_KEYS, TrackingResult
from .ytvis import IOU_THRESHOLDS, RECALL_THRESHOLDS, STAT_NAMES, EvaluationResult

WORST_VIDEOS = 5
STRIP_FRAMES = 4
STRIP_MIN_SCORE = 0.3  # results drawn in the strips (the metrics keep every result) ...
STRIP_MIN_TRACKS = 3  # ... and at least the three best
_INTEGER_KEYS = {"IDSW", "Frag", "MT", "ML", "CLR_TP", "CLR_FN", "CLR_FP"}


def check_writable(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and make sure files can be written there, before any long computation."""
    out_dir = Path(out_dir)
    probe = out_dir / f".cico-write-test.{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CicoError(f"cannot write the report there: {err.strerror or err}", out_dir) from None
    return out_dir


def _write(path: Path, data: bytes) -> None:
    """Write a file whole or not at all."""
    try:
        with atomic_write(path) as tmp:
            tmp.write_bytes(data)
    except OSError as err:
        raise CicoError(f"cannot write: {err.strerror or err}", path) from None


@dataclass(frozen=True)
class _Figure:
    name: str
    caption: str
    png: bytes


def write_report(
    out_dir: str | Path,
    result: EvaluationResult,
    frames_dir: str | Path | None = None,
    analysis: tuple[Breakdown, ErrorAnalysis] | None = None,
    title: str = "cico evaluation",
) -> Path:
    """Write ``report.html``, ``figures/`` and ``metrics.json`` into ``out_dir``; returns the page's path.

    Args:
        result: an evaluation run with ``tracking=True, details=True``.
        frames_dir: the folder the GT videos' ``file_names`` are relative to; with it the five worst
            videos get a strip of rendered frames.
        analysis: the breakdown and error analysis, if already computed.

    Raises:
        CicoError: the folder cannot be written, or a frame cannot be read.
    """
    import matplotlib

    matplotlib.use("Agg")
    out_dir = check_writable(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(exist_ok=True)
    if result.details is None or result.tracking is None:
        raise ValueError("write_report() needs evaluate(..., tracking=True, details=True)")
    parts, errors = analysis if analysis is not None else (breakdown(result), analyse_errors(result.details))
    figures = [_pr_figure(result), _breakdown_figure(parts), _error_figure(errors)]
    if frames_dir is not None:
        figures += _strips(result, parts, Path(frames_dir))
    for fig in figures:
        _write(figures_dir / f"{fig.name}.png", fig.png)
    _write(out_dir / "metrics.json", json.dumps(metrics_json(result, parts, errors), indent=1).encode())
    page = out_dir / "report.html"
    _write(page, _html(title, result, parts, errors, figures).encode())
    return page


def metrics_json(result: EvaluationResult, parts: Breakdown, errors: ErrorAnalysis) -> dict[str, Any]:
    """Every number of the report."""
    out: dict[str, Any] = {
        "stats": result.stats,
        "per_class_ap": {name: result.per_class_ap[cid] for cid, name in result.category_names.items()},
    }
    if result.tracking is not None:
        out["tracking"] = result.tracking.to_json()
        out["tracking_per_class"] = {result.category_names[cid]: scores
                                     for cid, scores in result.tracking.per_class.items()}
    if result.tracking_thresholded is not None:
        out["tracking_score_thresh"] = {"score_thresh": result.tracking_thresholded.score_threshold,
                                        **result.tracking_thresholded.to_json()}
    out["breakdown"] = parts.to_json()
    out["errors"] = errors.to_json()
    curves = _pr_curves(result)
    out["pr_curves"] = {"recall": RECALL_THRESHOLDS.tolist(),
                        **{k: {n: (None if c is None else c.tolist()) for n, c in v.items()}
                           for k, v in curves.items()}}
    return out


def _pr_curves(result: EvaluationResult) -> dict[str, dict[str, np.ndarray | None]]:
    """Precision ``[R]`` per class and averaged, at IoU 0.5, 0.75 and averaged over .50:.95 (area all, 100)."""
    p = result.precision[:, :, :, 0, -1]  # [T, R, K]
    names = list(result.category_names.values())
    out: dict[str, dict[str, np.ndarray | None]] = {}
    for label, sel in (("IoU=0.50", [0]), ("IoU=0.75", [int(np.argmin(abs(IOU_THRESHOLDS - 0.75)))]),
                       ("IoU=0.50:0.95", list(range(len(IOU_THRESHOLDS))))):
        curves: dict[str, np.ndarray | None] = {}
        defined: list[np.ndarray] = []
        for k, name in enumerate(names):
            c = p[sel, :, k]
            curves[name] = None
            if np.all(c > -1):
                defined.append(c.mean(0))
                curves[name] = defined[-1]
        curves["mean over classes"] = np.mean(defined, axis=0) if defined else None
        out[label] = curves
    return out


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _pr_figure(result: EvaluationResult) -> _Figure:
    import matplotlib.pyplot as plt

    curves = _pr_curves(result)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, (label, per) in zip(axes, curves.items()):
        for name, c in per.items():
            if c is None:
                continue
            if name == "mean over classes":
                ax.plot(RECALL_THRESHOLDS, c, color="black", linewidth=2.5, label=f"mean (AP {100 * c.mean():.1f})")
            else:
                ax.plot(RECALL_THRESHOLDS, c, linewidth=1, alpha=0.8, label=f"{name} ({100 * c.mean():.1f})")
        ax.set_title(f"Precision-recall, {label}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left", ncol=1 + len(per) // 12)
    return _Figure("pr_curves", "Precision-recall curves per class (area all, 100 results per video and class)"
                   " at IoU 0.5, 0.75 and averaged over 0.50:0.95; the legend gives each curve's AP in %.", _png(fig))


def _bars(ax, labels: Sequence[str], values: Sequence[float], title: str, color: str) -> None:
    shown = [max(v, 0.0) * 100 for v in values]
    bars = ax.bar(range(len(labels)), shown, color=color)
    for bar, v in zip(bars, values):
        ax.annotate("n/a" if v < 0 else f"{100 * v:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8, rotation=15)
    ax.set_ylim(0, max(shown + [1.0]) * 1.2)
    ax.set_title(title)
    ax.set_ylabel("AP (%)")


def _breakdown_figure(parts: Breakdown) -> _Figure:
    import matplotlib.pyplot as plt

    groups = [("object size", list(parts.by_size), list(parts.by_size.values()))]
    groups.append(("video length", [g.name for g in parts.by_length], [g.ap for g in parts.by_length]))
    if parts.by_long_split:
        groups.append(("long-video split", [g.name for g in parts.by_long_split], [g.ap for g in parts.by_long_split]))
    groups.append(("occlusion (MBOR)", [g.name for g in parts.by_occlusion], [g.ap for g in parts.by_occlusion]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.8))
    for ax, (title, labels, values), color in zip(axes, groups, ("#3f51b5", "#009688", "#ff9800", "#9c27b0")):
        _bars(ax, [label.replace(" (", "\n(") for label in labels], values, f"AP by {title}", color)
    return _Figure("ap_breakdown", "AP (.50:.95) by object size (the metric's small/medium/large), by video"
                   " length (thirds of the videos) and by occlusion level (video mean bounding-box overlap ratio);"
                   " n/a = no GT in the group.", _png(fig))


def _error_figure(errors: ErrorAnalysis) -> _Figure:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    values = [100 * errors.recovered[name] for name in ERROR_TYPES]
    colors = ["#e53935"] * 6 + ["#1e88e5"] * 2
    bars = ax.bar(range(len(values)), values, color=colors)
    for bar, v, name in zip(bars, values, ERROR_TYPES):
        ax.annotate(f"{v:+.1f}\n({errors.counts[name]})", (bar.get_x() + bar.get_width() / 2, max(v, 0)),
                    xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels([n.replace("_", " ") for n in ERROR_TYPES], fontsize=9, rotation=20)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylim(min(values + [0]) - 1, max(values + [1]) * 1.35 + 1)
    ax.set_ylabel("AP50 points recovered")
    ax.set_title(f"Error analysis: AP50 {100 * errors.ap50:.1f}, recovered by fixing each error type alone")
    return _Figure("errors", "AP50 points recovered by fixing each error type alone with an oracle (red: detection"
                   " errors, blue: tracking errors); in brackets the number of errors.", _png(fig))


def _drawn(frame: int, image: np.ndarray, tracks: list, labels: list[int], scores: list[float],
           ids: list[int]) -> FrameResult:
    """The tracks of one frame as the renderer draws predictions (boxes from the masks)."""
    height, width = image.shape[:2]
    masks, keep = [], []
    for j, track in enumerate(tracks):
        rle = track.rles[frame] if frame < len(track.rles) else None
        if rle is None or list(rle["size"]) != [height, width]:
            continue
        masks.append(mask_utils.decode(rle).astype(bool))
        keep.append(j)
    boxes = np.zeros((len(keep), 4), dtype=np.int64)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if xs.size:
            boxes[i] = (xs.min(), ys.min(), xs.max(), ys.max())
    return FrameResult(frame, image, np.array([ids[j] for j in keep], dtype=np.int64),
                  np.array([labels[j] for j in keep], dtype=np.int64),
                  np.array([scores[j] for j in keep], dtype=np.float64), np.zeros(len(keep), dtype=np.int64), boxes,
                  np.array(masks, dtype=bool).reshape(len(keep), height, width))


def _strips(result: EvaluationResult, parts: Breakdown, frames_dir: Path) -> list[_Figure]:
    """GT beside prediction for a few frames of each of the worst videos (with GT)."""
    import matplotlib.pyplot as plt

    details = result.details
    assert details is not None
    truth = details.truth
    if not frames_dir.is_dir():
        raise CicoError("frames folder not found", frames_dir)
    cids = list(truth.categories)
    names = list(truth.categories.values())
    worst = [r for r in parts.per_video if r.ap >= 0][:WORST_VIDEOS]
    out = []
    for rank, row in enumerate(worst, 1):
        meta = truth.videos.get(row.video_id)
        if meta is None or not meta.file_names:
            continue
        gts = [t for t in truth.tracks if t.video_id == row.video_id]
        dts = sorted((t for t in details.results if t.video_id == row.video_id), key=lambda t: -t.score)
        dts = [t for rank_, t in enumerate(dts) if t.score >= STRIP_MIN_SCORE or rank_ < STRIP_MIN_TRACKS]
        frames = np.unique(np.linspace(0, len(meta.file_names) - 1, min(STRIP_FRAMES, len(meta.file_names)))
                           .round().astype(int)).tolist()
        fig, axes = plt.subplots(len(frames), 2, figsize=(9, 2.6 * len(frames)), squeeze=False)
        for ax_row, f in zip(axes, frames):
            image = read_image(frames_dir / meta.file_names[f])
            gt_frame = _drawn(f, image, gts, [cids.index(t.category_id) + 1 for t in gts], [1.0] * len(gts),
                              [t.id for t in gts])
            dt_frame = _drawn(f, image, dts, [cids.index(t.category_id) + 1 for t in dts], [t.score for t in dts],
                              [t.id for t in dts])
            for ax, drawn, label, style in ((ax_row[0], gt_frame, "ground truth", RenderStyle(scores=False)),
                                            (ax_row[1], dt_frame, "prediction", RenderStyle())):
                ax.imshow(draw_frame(drawn, names, style)[:, :, ::-1])
                ax.set_title(f"{label}, frame {f}", fontsize=9)
                ax.axis("off")
        fig.suptitle(f"#{rank} worst: {row.name} (AP {100 * row.ap:.1f}, IDSW {row.idsw})", fontsize=11)
        out.append(_Figure(f"worst_{rank}_{_slug(row.name)}",
                           f"Worst video #{rank}: {html.escape(row.name)}, AP {100 * row.ap:.1f}%, {row.idsw} ID"
                           f" switches. Left GT (label: class: 1.00: GT id), right the results scoring"
                           f" >= {STRIP_MIN_SCORE},"
                           f" at least the {STRIP_MIN_TRACKS} best (label: class: score: result number).", _png(fig)))
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:0.85em;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{margin:12px 0}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.85em;color:#555}.note{color:#555;font-size:.9em}
"""


def _cell(value: float, key: str = "") -> str:
    if key in _INTEGER_KEYS:
        return str(int(value))
    return "-" if value < 0 and key != "MOTA" else f"{100 * value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _tracking_table(tracking: TrackingResult) -> str:
    rows = [[label] + [_cell(scores[k], k) for k in TRACKING_KEYS]
            for label, scores in (("class-averaged", tracking.class_avg), ("detection-averaged", tracking.det_avg))]
    return _table(["", *TRACKING_KEYS], rows)


def _html(title: str, result: EvaluationResult, parts: Breakdown, errors: ErrorAnalysis,
          figures: list[_Figure]) -> str:
    def figure(fig: _Figure) -> str:
        data = base64.b64encode(fig.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{fig.name}" data-file="figures/{fig.name}.png">'
                f"<figcaption>{fig.caption}</figcaption></figure>")

    by_name = {f.name: f for f in figures}
    s = [(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>")]
    s.append("<p class='note'>Video mask AP/AR: the official YouTube-VIS metric. Tracking metrics: TrackEval's"
             " YouTube-VIS conventions (per-frame mask IoU, every result track). Values in %, counts as integers.</p>")
    s.append("<h2>YouTube-VIS metric</h2>")
    s.append(_table(list(STAT_NAMES), [[_cell(result.stats[k]) for k in STAT_NAMES]]))
    if result.tracking is not None:
        s.append("<h2>Tracking metrics (HOTA, CLEAR, Identity)</h2>")
        s.append(_tracking_table(result.tracking))
    if result.tracking_thresholded is not None:
        s.append(f"<p>Result tracks with score &ge; {result.tracking_thresholded.score_threshold:g} only"
                 " (a deployment threshold; the protocol above keeps every track):</p>")
        s.append(_tracking_table(result.tracking_thresholded))
    s.append("<h2>Precision-recall curves</h2>" + figure(by_name["pr_curves"]))
    s.append("<h2>Breakdowns</h2>" + figure(by_name["ap_breakdown"]))
    group_rows = []
    for title_, groups in (("length", parts.by_length), ("long split", parts.by_long_split),
                           ("occlusion", parts.by_occlusion)):
        for g in groups:
            group_rows.append([f"{title_}: {g.name}", str(len(g.videos)), _cell(g.ap), _cell(g.ap50),
                               _cell(g.tracking["HOTA"]), _cell(g.tracking["IDF1"]), str(int(g.tracking["IDSW"]))])
    s.append(_table(["group", "videos", "AP", "AP50", "HOTA", "IDF1", "IDSW"], group_rows))
    s.append("<p class='note'>Occlusion: a frame's bounding-box overlap ratio is the area covered by at least two"
             " GT boxes over the area covered by at least one; a video's MBOR is its mean over the frames with GT;"
             " slight &le; 0.25 &lt; moderate &le; 0.5 &lt; heavy (the OVIS paper's levels).</p>")
    s.append("<h3>Per class</h3>")
    s.append(_table(["class", "AP", "HOTA", "AssA", "IDF1", "MOTA", "IDSW"],
                    [[r["name"], _cell(r["AP"]), _cell(r["HOTA"]), _cell(r["AssA"]), _cell(r["IDF1"]),
                      _cell(r["MOTA"], "MOTA"), str(int(r["IDSW"]))] for r in parts.per_class]))
    s.append("<h2>Error analysis</h2>" + figure(by_name["errors"]))
    s.append(_table(["error type", "errors", "AP50 recovered"],
                    [[n.replace("_", " "), str(errors.counts[n]), f"{100 * errors.recovered[n]:+.2f}"]
                     for n in ERROR_TYPES]))
    s.append("<h2>Per video (worst AP first)</h2>")
    s.append(_table(["video", "id", "frames", "GT tracks", "AP", "IDSW", "HOTA"],
                    [[r.name, str(r.video_id), str(r.length), str(r.gt_tracks), _cell(r.ap), str(r.idsw),
                      _cell(r.hota)] for r in parts.per_video]))
    strips = [f for f in figures if f.name.startswith("worst_")]
    if strips:
        s.append("<h2>The worst videos</h2>" + "".join(figure(f) for f in strips))
    s.append("</body></html>")
    return "\n".join(s)
