"""Tracking metrics of video instance segmentation results: HOTA, CLEAR (MOTA, IDSW, ...) and Identity (IDF1).

The numbers equal those of TrackEval's ``YouTubeVIS`` dataset with its ``HOTA``, ``CLEAR`` and
``Identity`` metrics, conventions included:

* the similarity is the per-frame mask IoU; a frame of a track counts when its segmentation is
  present (frames beyond the video's ``file_names`` are ignored, missing ones are absent);
* every result track counts, whatever its score (no threshold, no 100-per-video cap);
* crowd GT tracks are ordinary GT tracks (TrackEval only uses ``iscrowd`` for its track mAP);
* a result mask of another size than the GT mask has IoU 0 with it (TrackEval stops on such input);
* each class is evaluated on its own; a class is combined over videos by summing counts, and the
  classes are combined the two ways TrackEval does: ``class_avg`` (``cls_comb_cls_av``: the mean of
  the per-class scores over every GT category, empty ones included, counts summed) and ``det_avg``
  (``cls_comb_det_av``: the scores of the summed counts);
* the Hungarian matchings run on the same matrices, rows (GT) and columns (results) in file order,
  so that ties break the same way.

Speed comes from computing each (video, class) on its own tracks only, from the per-frame IoUs the
AP evaluation already computes (:func:`~cico.evaluation.video_iou.frame_ious`), from skipping the
frames where no pair reaches a threshold, and from numpy over all 19 HOTA thresholds at once.
"""
from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .loading import Track
from .video_iou import FrameIoU

ALPHAS = np.arange(0.05, 0.99, 0.05)  # [19] HOTA localisation thresholds, as TrackEval builds them
MATCH_THRESHOLD = 0.5  # CLEAR and Identity IoU threshold
_EPS = np.finfo("float").eps
HOTA_KEYS = ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr")
CLEAR_KEYS = ("MOTA", "MOTP", "IDSW", "Frag", "MT", "ML", "CLR_TP", "CLR_FN", "CLR_FP")
IDENTITY_KEYS = ("IDF1", "IDR", "IDP")
TRACKING_KEYS = HOTA_KEYS + CLEAR_KEYS + IDENTITY_KEYS
_INTEGER_KEYS = frozenset(("IDSW", "Frag", "MT", "ML", "CLR_TP", "CLR_FN", "CLR_FP"))


@dataclass
class Counts:
    """Additive counts of one or more (video, class) sequences, from which every score follows.

    HOTA arrays are ``[19]`` over :data:`ALPHAS`; ``ass_*`` and ``loc`` hold the per-sequence score
    times its true positives (TrackEval's weighted combination).
    """

    hota_tp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    hota_fn: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    hota_fp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    ass_a: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    ass_re: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    ass_pr: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    loc: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    clr_tp: int = 0
    clr_fn: int = 0
    clr_fp: int = 0
    idsw: int = 0
    mt: int = 0
    pt: int = 0
    ml: int = 0
    frag: int = 0
    motp_sum: float = 0.0
    idtp: int = 0
    idfn: int = 0
    idfp: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @staticmethod
    def total(parts: Iterable[Counts]) -> Counts:
        out = Counts()
        for part in parts:
            out += part
        return out

    def scores(self) -> dict[str, float]:
        """HOTA (means over the 19 thresholds), CLEAR and Identity scores of these counts, keyed by
        :data:`TRACKING_KEYS` (fractions; the counts as integers)."""
        tp = self.hota_tp
        hota = _hota_arrays(tp, self.hota_fn, self.hota_fp,
                            self.ass_a / np.maximum(1, tp), self.ass_re / np.maximum(1, tp),
                            self.ass_pr / np.maximum(1, tp), np.maximum(1e-10, self.loc) / np.maximum(1e-10, tp))
        out = {key: float(np.mean(hota[key])) for key in HOTA_KEYS}
        out.update(self._clear())
        out.update(self._identity())
        return out

    def _clear(self) -> dict[str, float]:
        gt_dets = max(1.0, self.clr_tp + self.clr_fn)
        return {
            "MOTA": (self.clr_tp - self.clr_fp - self.idsw) / gt_dets,
            "MOTP": self.motp_sum / max(1.0, self.clr_tp),
            "IDSW": self.idsw, "Frag": self.frag, "MT": self.mt, "ML": self.ml,
            "CLR_TP": self.clr_tp, "CLR_FN": self.clr_fn, "CLR_FP": self.clr_fp,
        }  # fmt: skip

    def _identity(self) -> dict[str, float]:
        return {
            "IDF1": self.idtp / max(1.0, self.idtp + 0.5 * self.idfp + 0.5 * self.idfn),
            "IDR": self.idtp / max(1.0, self.idtp + self.idfn),
            "IDP": self.idtp / max(1.0, self.idtp + self.idfp),
        }


def _hota_arrays(tp, fn, fp, ass_a, ass_re, ass_pr, loc_a) -> dict[str, np.ndarray]:
    """TrackEval's final HOTA fields, ``[19]`` each."""
    det_a = tp / np.maximum(1, tp + fn + fp)
    return {
        "HOTA": np.sqrt(det_a * ass_a), "DetA": det_a, "AssA": ass_a, "LocA": loc_a,
        "DetRe": tp / np.maximum(1, tp + fn), "DetPr": tp / np.maximum(1, tp + fp), "AssRe": ass_re, "AssPr": ass_pr,
    }  # fmt: skip


@dataclass(frozen=True)
class TrackingResult:
    """Tracking metrics of one results set.

    Attributes:
        class_avg: TrackEval's ``cls_comb_cls_av`` scores, keyed by :data:`TRACKING_KEYS`.
        det_avg: TrackEval's ``cls_comb_det_av`` scores.
        per_class: category id -> that class's scores over all videos.
        counts: (video id, category id) -> the sequence's counts (for breakdowns).
        score_threshold: the minimum result score kept, ``None`` for all results (the protocol).
    """

    class_avg: dict[str, float]
    det_avg: dict[str, float]
    per_class: dict[int, dict[str, float]]
    counts: dict[tuple[int, int], Counts] = field(repr=False)
    score_threshold: float | None = None

    def to_json(self) -> dict[str, dict[str, float]]:
        return {"class_avg": _rounded(self.class_avg), "det_avg": _rounded(self.det_avg)}

    def summary(self) -> str:
        """Two aligned lines of percentages (counts as integers): class-averaged, detection-averaged."""
        width = max(len(k) for k in TRACKING_KEYS) + 2
        label = "" if self.score_threshold is None else f" (result tracks with score >= {self.score_threshold:g})"
        lines = [f"Tracking metrics on masks{label}, TrackEval conventions:",
                 f"{'':<10}" + "".join(f"{k:>{width}}" for k in TRACKING_KEYS)]
        for name, scores in (("class-avg", self.class_avg), ("det-avg", self.det_avg)):
            cells = [f"{scores[k]:>{width}d}" if k in _INTEGER_KEYS else f"{100 * scores[k]:>{width}.2f}"
                     for k in TRACKING_KEYS]
            lines.append(f"{name:<10}" + "".join(cells))
        return "\n".join(lines)


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {k: (int(v) if k in _INTEGER_KEYS else float(v)) for k, v in scores.items()}


def combine(
    counts: dict[tuple[int, int], Counts], category_ids: Iterable[int], videos: Iterable[int] | None = None
) -> dict[str, dict[str, float]]:
    """``{"class_avg": ..., "det_avg": ...}`` of the sequences of ``videos`` (all when ``None``)."""
    keep = None if videos is None else set(videos)
    per_class: dict[int, Counts] = {cid: Counts() for cid in category_ids}
    for (vid, cid), part in counts.items():
        if (keep is None or vid in keep) and cid in per_class:
            per_class[cid] += part
    return {"class_avg": class_average(list(per_class.values())),
            "det_avg": Counts.total(per_class.values()).scores()}


def class_average(classes: Sequence[Counts]) -> dict[str, float]:
    """TrackEval's ``combine_classes_class_averaged``: scores averaged over classes, counts summed."""
    if not classes:
        return Counts().scores()
    per = [c.scores() for c in classes]
    total = Counts.total(classes).scores()
    return {k: (total[k] if k in _INTEGER_KEYS else float(np.mean([p[k] for p in per]))) for k in TRACKING_KEYS}


@dataclass(frozen=True)
class SequenceMatches:
    """CLEAR's per-frame matches of one (video, class) sequence: ``[M]`` frame, GT and result indices
    (into the track lists given), for the error analysis."""

    frames: np.ndarray
    gts: np.ndarray
    dts: np.ndarray


def evaluate_sequence(
    gts: Sequence[Track], dts: Sequence[Track], frames: Sequence[FrameIoU], length: int,
    keep: np.ndarray | None = None,
) -> tuple[Counts, SequenceMatches]:
    """HOTA, CLEAR and Identity counts of one (video, class).

    Args:
        gts: the GT tracks of the video and class, in file order.
        dts: its result tracks, in file order.
        frames: their per-frame IoUs (:func:`~cico.evaluation.video_iou.frame_ious`).
        length: the video's number of frames; later frames are ignored.
        keep: ``[len(dts)]`` bool, the results to evaluate (all when ``None``).
    """
    counts = Counts()
    no_match = SequenceMatches(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not gts or not dts:  # the common (video, class) of false positives only, or of misses only
        present = [int(np.count_nonzero(t.sizes[:length, 0])) for t in gts]
        kept = dts if keep is None else [d for d, k in zip(dts, keep.tolist()) if k]
        _unmatched(counts, sum(present), sum(int(np.count_nonzero(t.sizes[:length, 0])) for t in kept),
                   sum(n > 0 for n in present))
        return counts, no_match
    gt_present = _presence(gts, length)  # [G, T]
    dt_present = _presence(dts, length)  # [D, T]
    if keep is not None:
        dt_present &= keep[:, None]
    gt_ids = np.flatnonzero(gt_present.any(1))  # TrackEval's ids: tracks present in some frame
    dt_ids = np.flatnonzero(dt_present.any(1))
    gt_present, dt_present = gt_present[gt_ids], dt_present[dt_ids]
    num_g, num_d = gt_ids.size, dt_ids.size
    gt_dets, dt_dets = int(gt_present.sum()), int(dt_present.sum())
    if dt_dets == 0 or gt_dets == 0:
        _unmatched(counts, gt_dets, dt_dets, num_g)
        return counts, no_match

    # Dense similarity [T, G, D] (0 where either side is absent), GT rows as in TrackEval.
    sim = np.zeros((length, num_g, num_d))
    gt_row = np.full(len(gts), -1, dtype=np.int64)
    gt_row[gt_ids] = np.arange(num_g)
    dt_col = np.full(len(dts), -1, dtype=np.int64)
    dt_col[dt_ids] = np.arange(num_d)
    for frame in frames:
        if frame.frame >= length:
            break
        rows, cols, iou = gt_row[frame.gts], dt_col[frame.dts], frame.iou
        if keep is not None:  # results left out have no column
            ok_c = cols >= 0
            cols, iou = cols[ok_c], iou[ok_c]
        sim[frame.frame, rows[:, None], cols[None, :]] = iou.T
    gt_count = gt_present.sum(1).astype(np.float64)  # [G]
    dt_count = dt_present.sum(1).astype(np.float64)  # [D]

    presence = _Present(gt_present, dt_present)
    _hota(sim, presence, gt_count, dt_count, counts)
    matches = _clear(sim, presence, gt_count, counts)
    _identity(sim, gt_count, dt_count, counts)
    return counts, SequenceMatches(matches[0], gt_ids[matches[1]], dt_ids[matches[2]])


def _unmatched(counts: Counts, gt_dets: int, dt_dets: int, gt_tracks: int) -> None:
    """TrackEval's counts of a sequence without GT or without results: all misses or all false positives."""
    counts.hota_fn[:], counts.hota_fp[:] = gt_dets, dt_dets
    counts.clr_fn, counts.clr_fp = gt_dets, dt_dets
    counts.ml = gt_tracks if dt_dets == 0 else 0
    counts.idfn, counts.idfp = gt_dets, dt_dets


def _presence(tracks: Sequence[Track], length: int) -> np.ndarray:
    """``[N, T]`` bool: the track has a segmentation in the frame."""
    out = np.zeros((len(tracks), length), dtype=bool)
    for i, track in enumerate(tracks):
        n = min(len(track.rles), length)
        out[i, :n] = track.sizes[:n, 0] > 0
    return out


class _Present:
    """The GT rows and result columns present in each frame, from ``[G, T]`` and ``[D, T]`` presence."""

    def __init__(self, gt_present: np.ndarray, dt_present: np.ndarray) -> None:
        self.gt, self.dt = gt_present, dt_present
        frames = gt_present.shape[1]
        self._gt_frame, self._gt_index = np.nonzero(gt_present.T)
        self._dt_frame, self._dt_index = np.nonzero(dt_present.T)
        self._gt_bounds = np.searchsorted(self._gt_frame, np.arange(frames + 1))
        self._dt_bounds = np.searchsorted(self._dt_frame, np.arange(frames + 1))

    def rows(self, t: int) -> np.ndarray:
        return self._gt_index[self._gt_bounds[t] : self._gt_bounds[t + 1]]

    def cols(self, t: int) -> np.ndarray:
        return self._dt_index[self._dt_bounds[t] : self._dt_bounds[t + 1]]


def _assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-cost one-to-one assignment: scipy's ``linear_sum_assignment`` (:func:`hungarian_solver`)."""
    return hungarian_solver()(cost)


@functools.lru_cache(maxsize=1)
def hungarian_solver() -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """scipy's ``linear_sum_assignment``, loaded on first use (the AP alone needs no scipy).

    ``import scipy.optimize`` loads the whole package, hundreds of modules, about a sixth of the time of a
    tracking evaluation. The solver is a compiled module of its own (``scipy/optimize/_lsap``, needing nothing
    but NumPy, in every SciPy cico allows), so only that module is loaded; if that ever fails, the package is
    imported.
    """
    import scipy

    folder = Path(scipy.__file__).parent / "optimize"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"_lsap{suffix}"
        if not path.is_file():
            continue
        try:
            loader = importlib.machinery.ExtensionFileLoader("scipy.optimize._lsap", str(path))
            spec = importlib.util.spec_from_loader(loader.name, loader)
            if spec is None:
                break
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
            solver: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] = module.linear_sum_assignment
            return solver
        except (ImportError, AttributeError):
            break
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment


def _hota(sim, present: _Present, gt_count, dt_count, counts: Counts) -> None:
    """HOTA counts; ``sim`` ``[T, G, D]``."""
    row_sum, col_sum = sim.sum(2), sim.sum(1)  # [T, G], [T, D]
    denom = col_sum[:, None, :] + row_sum[:, :, None] - sim
    sim_iou = np.divide(sim, denom, out=np.zeros_like(sim), where=denom > 0 + _EPS)
    potential = sim_iou.sum(0)
    alignment = potential / (gt_count[:, None] + dt_count[None, :] - potential)  # [G, D]

    match_g, match_d, match_s = [], [], []
    for t in np.flatnonzero(sim.max(axis=(1, 2)) >= ALPHAS[0] - _EPS).tolist():
        rows, cols = present.rows(t), present.cols(t)
        block = sim[t][rows][:, cols]
        r, c = _assignment(-(alignment[rows][:, cols] * block))
        match_g.append(rows[r])
        match_d.append(cols[c])
        match_s.append(block[r, c])
    num_g, num_d = gt_count.size, dt_count.size
    tp = np.zeros(len(ALPHAS))
    loc = np.zeros(len(ALPHAS))
    matches_count = np.zeros((len(ALPHAS), num_g, num_d))
    if match_s:
        g, d, s = np.concatenate(match_g), np.concatenate(match_d), np.concatenate(match_s)
        hit = s[None, :] >= ALPHAS[:, None] - _EPS  # [19, M]
        tp = hit.sum(1).astype(np.float64)
        loc = (hit * s[None, :]).sum(1)
        flat = g * num_d + d
        for a in range(len(ALPHAS)):
            matches_count[a] = np.bincount(flat[hit[a]], minlength=num_g * num_d).reshape(num_g, num_d)
    gt_c, dt_c = gt_count[None, :, None], dt_count[None, None, :]
    counts.hota_tp += tp
    counts.hota_fn += gt_count.sum() - tp
    counts.hota_fp += dt_count.sum() - tp
    counts.ass_a += np.sum(matches_count * (matches_count / np.maximum(1, gt_c + dt_c - matches_count)), axis=(1, 2))
    counts.ass_re += np.sum(matches_count * (matches_count / np.maximum(1, gt_c)), axis=(1, 2))
    counts.ass_pr += np.sum(matches_count * (matches_count / np.maximum(1, dt_c)), axis=(1, 2))
    counts.loc += loc


def _clear(sim, present: _Present, gt_count, counts: Counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CLEAR counts, frame by frame (ID switches depend on the previous frame's matches).

    Returns the matches as ``[M]`` frame, GT and result indices.
    """
    num_g = gt_count.size
    matched_count = np.zeros(num_g)
    frag_count = np.zeros(num_g)
    prev_id = np.full(num_g, np.nan)  # last matched result of each GT, any frame before
    prev_step_id = np.full(num_g, np.nan)  # matched result in the previous evaluated frame
    threshold = MATCH_THRESHOLD - _EPS
    has_gt, has_dt = present.gt.any(0), present.dt.any(0)
    counts.clr_fp += int(present.dt[:, ~has_gt].sum())
    counts.clr_fn += int(present.gt[:, has_gt & ~has_dt].sum())
    out_f, out_g, out_d = [], [], []
    reachable = sim.max(axis=(1, 2)) >= threshold
    for t in np.flatnonzero(has_gt & has_dt).tolist():
        rows, cols = present.rows(t), present.cols(t)
        if reachable[t]:
            block = sim[t][rows][:, cols]
            score = np.where(block < threshold, 0.0, 1000.0 * (cols[None, :] == prev_step_id[rows][:, None]) + block)
            r, c = _assignment(-score)
            ok = score[r, c] > 0 + _EPS
            r, c = r[ok], c[ok]
            g, d = rows[r], cols[c]
            previous = prev_id[g]
            counts.idsw += int(np.count_nonzero(~np.isnan(previous) & (d != previous)))
            counts.motp_sum += float(sum(block[r, c]))
        else:
            g = d = np.zeros(0, dtype=np.int64)
        matched_count[g] += 1
        not_tracked_before = np.isnan(prev_step_id)
        prev_id[g] = d
        prev_step_id[:] = np.nan
        prev_step_id[g] = d
        frag_count += not_tracked_before & ~np.isnan(prev_step_id)
        counts.clr_tp += g.size
        counts.clr_fn += rows.size - g.size
        counts.clr_fp += cols.size - g.size
        out_f.append((t, g.size))
        out_g.append(g)
        out_d.append(d)
    ratio = matched_count[gt_count > 0] / gt_count[gt_count > 0]
    mt = int(np.sum(ratio > 0.8))
    pt = int(np.sum(ratio >= 0.2)) - mt
    counts.mt += mt
    counts.pt += pt
    counts.ml += num_g - mt - pt
    counts.frag += int(np.sum(frag_count[frag_count > 0] - 1))
    if not out_f:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    frames, sizes = zip(*out_f)
    return np.repeat(np.array(frames, dtype=np.int64), sizes), np.concatenate(out_g), np.concatenate(out_d)


def _identity(sim, gt_count, dt_count, counts: Counts) -> None:
    """Identity counts: the best one-to-one assignment of GT to result tracks over the whole video."""
    num_g, num_d = gt_count.size, dt_count.size
    potential = np.sum(sim >= MATCH_THRESHOLD, axis=0).astype(np.float64)
    size = num_g + num_d
    fp_mat = np.zeros((size, size))
    fn_mat = np.zeros((size, size))
    fp_mat[num_g:, :num_d] = 1e10
    fn_mat[:num_g, num_d:] = 1e10
    fn_mat[:num_g, :num_d] = gt_count[:, None]
    fn_mat[np.arange(num_g), num_d + np.arange(num_g)] = gt_count
    fp_mat[:num_g, :num_d] = dt_count[None, :]
    fp_mat[num_g + np.arange(num_d), np.arange(num_d)] = dt_count
    fn_mat[:num_g, :num_d] -= potential
    fp_mat[:num_g, :num_d] -= potential
    r, c = _assignment(fn_mat + fp_mat)
    idfn = int(fn_mat[r, c].sum())
    idfp = int(fp_mat[r, c].sum())
    counts.idfn += idfn
    counts.idfp += idfp
    counts.idtp += int(gt_count.sum()) - idfn
