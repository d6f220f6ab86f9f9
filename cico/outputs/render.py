"""Rendering predictions: an mp4 with coloured masks, boxes and labels, and per-frame PNG id masks.

The drawing follows the reference's ``--display``: masks alpha-blended with α = 0.55 in a
colour chosen by track id (``PALETTE[(id * 5) % 19]``), the highest-scoring track on top; a solid box for a
track detected in the clip and a dotted one for a propagated track; the text ``class: score: id``.

Videos are encoded with :class:`cico.media.Mp4Writer` at the source's frame rate. Every file is written
under a temporary name and moved into place when complete, so an interrupted run leaves no truncated
output.
"""
from __future__ import annotations

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


def draw_frame(frame: FrameResult, class_names: Sequence[str], alpha: float = MASK_ALPHA) -> np.ndarray:
    """The frame with its tracks drawn: BGR ``uint8 [H, W, 3]`` (a new array)."""
    image = frame.image.astype(np.float32)
    order = np.argsort(-frame.scores, kind="stable")
    for j in order[::-1]:  # lowest score first, so the best track ends on top
        colour = np.asarray(track_colour(int(frame.ids[j])), dtype=np.float32)
        mask = frame.masks[j]
        image[mask] = image[mask] * (1 - alpha) + colour * alpha
    out = image.round().clip(0, 255).astype(np.uint8)
    thickness = max(1, min(out.shape[:2]) // 240)
    for j in order[::-1]:
        track_id, label = int(frame.ids[j]), int(frame.labels[j])
        box_colour = track_colour(track_id)
        x1, y1, x2, y2 = (int(v) for v in frame.boxes[j])
        if frame.tracked[j] == 0:
            cv2.rectangle(out, (x1, y1), (x2, y2), box_colour, thickness)
        else:
            _dotted_rectangle(out, (x1, y1), (x2, y2), box_colour, thickness)
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        _label(out, f"{name}: {frame.scores[j]:.2f}: {track_id}", (x1, y1), box_colour)
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


def _label(image: np.ndarray, text: str, corner: tuple[int, int], colour) -> None:
    font, scale, thick = cv2.FONT_HERSHEY_DUPLEX, max(0.4, min(image.shape[:2]) / 960), 1
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    x = min(max(corner[0], 0), max(image.shape[1] - tw, 0))
    y = max(corner[1], th + 4)
    cv2.rectangle(image, (x, y - th - 4), (x + tw, y), colour, -1)
    cv2.putText(image, text, (x, y - 3), font, scale, (255, 255, 255), thick, cv2.LINE_AA)


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
