"""Rendering predictions: an mp4 with coloured masks, boxes and labels, and per-frame PNG id masks.

The drawing follows the reference's ``--display``: masks alpha-blended with α = 0.55 in a
colour chosen by track id (``PALETTE[(id * 5) % 19]``), the highest-scoring track on top; a solid box for a
track detected in the clip and a dotted one for a propagated track; the text ``class: score: id``. Labels
stay inside the frame and are moved apart when they would cover one another; :class:`RenderStyle` can
keep only the best ``top_k`` tracks of a frame or those above a score (the reference's ``--top_k``).

Videos are encoded with :class:`cico.media.Mp4Writer` at the source's frame rate. Every file is written
under a temporary name and moved into place when complete, so an interrupted run leaves no truncated
output.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..fileio import atomic_write
from ..structures import FrameResult

# The 19 colours of the reference's display (Material Design palette), RGB.
PALETTE_RGB: tuple[tuple[int, int, int], ...] = (
    (244, 67, 54), (233, 30, 99), (156, 39, 176), (103, 58, 183), (63, 81, 181), (33, 150, 243),
    (3, 169, 244), (0, 188, 212), (0, 150, 136), (76, 175, 80), (139, 195, 74), (205, 220, 57),
    (255, 235, 59), (255, 193, 7), (255, 152, 0), (255, 87, 34), (121, 85, 72), (158, 158, 158),
    (96, 125, 139),
)
MASK_ALPHA = 0.55


def track_colour(track_id: int) -> tuple[int, int, int]:
    """BGR colour of a track id (the reference's ``COLORS[(id * 5) % 19]``)."""
    r, g, b = PALETTE_RGB[(track_id * 5) % len(PALETTE_RGB)]
    return b, g, r


@dataclass(frozen=True)
class RenderStyle:
    """What a rendered frame shows.

    Attributes:
        top_k: at most this many tracks per frame, the highest-scoring (``None``: all).
        score_thresh: only the tracks scoring at least this.
        alpha: mask opacity.
        scores: write each track's score in its label (ground truth has none).
    """

    top_k: int | None = None
    score_thresh: float = 0.0
    alpha: float = MASK_ALPHA
    scores: bool = True


def shown_tracks(scores: np.ndarray, style: RenderStyle) -> np.ndarray:
    """Indices of the tracks a frame shows, best first: score >= ``score_thresh``, at most ``top_k``."""
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= style.score_thresh] if style.score_thresh > 0 else order
    return order if style.top_k is None else order[: style.top_k]


def draw_frame(frame: FrameResult, class_names: Sequence[str], style: RenderStyle = RenderStyle()) -> np.ndarray:
    """The frame with its tracks drawn: BGR ``uint8 [H, W, 3]`` (a new array).

    The best track is drawn last (on top) and gets the first choice of label place.
    """
    image = frame.image.astype(np.float32)
    shown = shown_tracks(np.asarray(frame.scores, np.float32), style)
    for j in shown[::-1]:  # lowest score first, so the best track ends on top
        colour = np.asarray(track_colour(int(frame.ids[j])), dtype=np.float32)
        mask = frame.masks[j]
        image[mask] = image[mask] * (1 - style.alpha) + colour * style.alpha
    out = image.round().clip(0, 255).astype(np.uint8)
    thickness = max(1, min(out.shape[:2]) // 240)
    texts = []
    for j in shown:
        label = int(frame.labels[j])
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        texts.append(f"{name}: {frame.scores[j]:.2f}: {int(frame.ids[j])}" if style.scores
                     else f"{name}: {int(frame.ids[j])}")
    font, scale = _font(out.shape[:2])
    sizes = [_text_box(text, font, scale) for text in texts]
    anchors = [(int(frame.boxes[j][0]), int(frame.boxes[j][1])) for j in shown]
    places = place_labels(sizes, anchors, out.shape[:2])
    for j, text, (w, h), (x, y) in list(zip(shown, texts, sizes, places))[::-1]:
        bgr = track_colour(int(frame.ids[j]))
        x1, y1, x2, y2 = (int(v) for v in frame.boxes[j])
        if frame.tracked[j] == 0:
            cv2.rectangle(out, (x1, y1), (x2, y2), bgr, thickness)
        else:
            _dotted_rectangle(out, (x1, y1), (x2, y2), bgr, thickness)
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), bgr, -1)
        baseline = cv2.getTextSize(text, font, scale, 1)[1]
        cv2.putText(out, text, (x + 2, y + h - 2 - baseline), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _dotted_rectangle(image: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], colour, thickness: int,
                      gap: int = 10) -> None:
    (x1, y1), (x2, y2) = p1, p2
    for x in range(x1, x2 + 1, gap):
        cv2.circle(image, (x, y1), thickness, colour, -1)
        cv2.circle(image, (x, y2), thickness, colour, -1)
    for y in range(y1, y2 + 1, gap):
        cv2.circle(image, (x1, y), thickness, colour, -1)
        cv2.circle(image, (x2, y), thickness, colour, -1)


def _font(size: tuple[int, int]) -> tuple[int, float]:
    return cv2.FONT_HERSHEY_DUPLEX, max(0.4, min(size) / 960)


def _text_box(text: str, font: int, scale: float) -> tuple[int, int]:
    """Width and height of a label's filled box (text, its descenders and a 2-pixel margin)."""
    (w, h), baseline = cv2.getTextSize(text, font, scale, 1)
    return w + 4, h + baseline + 4


def place_labels(sizes: Sequence[tuple[int, int]], anchors: Sequence[tuple[int, int]],
                 frame: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of label boxes, inside the frame and not overlapping one another where room allows.

    Args:
        sizes: ``(width, height)`` of each label box, in order of priority (the best track first).
        anchors: ``(x1, y1)`` of each track's box: a label goes just above the box, or inside its top
            when the box touches the frame's top; when that place is taken, the nearest free place in the
            column (down, then up).
        frame: ``(height, width)``.
    """
    height, width = frame
    placed: list[tuple[int, int, int, int]] = []
    out = []
    for (w, h), (x1, y1) in zip(sizes, anchors):
        x = min(max(x1, 0), max(width - w, 0))
        preferred = y1 - h if y1 - h >= 0 else max(y1, 0)
        preferred = min(preferred, max(height - h, 0))
        columns = [(px, py, pw, ph) for px, py, pw, ph in placed if px < x + w and x < px + pw]
        candidates = [preferred] + [py + ph for _, py, _, ph in columns] + [py - h for _, py, _, _ in columns]
        free = [y for y in candidates if 0 <= y <= height - h
                and all(not (y < py + ph and py < y + h) for _, py, _, ph in columns)]
        y = min(free, key=lambda c: (abs(c - preferred), c)) if free else preferred
        placed.append((x, y, w, h))
        out.append((x, y))
    return out


def id_mask(frame: FrameResult) -> np.ndarray:
    """The frame's instance-id image ``[H, W]``: ``track id + 1`` where a track is, 0 elsewhere.

    Where masks overlap, the higher-scoring track wins. ``uint8`` when every value fits, else ``uint16``.
    """
    height, width = frame.image.shape[:2]
    top = int(frame.ids.max()) + 1 if len(frame.ids) else 0
    if top > np.iinfo(np.uint16).max:
        raise ValueError(f"track id {top - 1} does not fit a 16-bit PNG")
    out = np.zeros((height, width), dtype=np.uint8 if top <= 255 else np.uint16)
    for j in np.argsort(frame.scores, kind="stable"):  # best last, so it wins
        out[frame.masks[j]] = int(frame.ids[j]) + 1
    return out


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a PNG (8- or 16-bit) atomically."""
    with atomic_write(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"cannot write {path}")
    return Path(path)
