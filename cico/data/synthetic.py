"""Synthetic videos for video instance segmentation, written in the YouTube-VIS format.

Each video shows 1-6 textured shapes moving over a textured, cluttered, slowly panning background.
The class of an object is its SHAPE (:data:`SYNTHETIC_CLASSES`); every instance draws its own
colours and texture (solid, stripes, gradient, checker or noise) from one distribution for all
classes, so colour and texture say nothing about the class. The background carries clutter that is
no class (blurred blobs, thin straight and curved lines, faint patterns), so a model has to learn
shapes. Objects follow smooth curved paths while scaling and rotating; some stay in view (bouncing
off the borders), some enter or leave the frame. They are drawn in a fixed depth order, so they
occlude each other; annotations hold the VISIBLE part only, and a frame where an object is fully
outside or fully hidden has ``None`` segmentation, bbox and area. Objects never visible are dropped.

Every video is an independent draw from ``np.random.default_rng([seed, video_index])``, so the
output is byte-identical for a seed whatever the number of worker processes.

The class list is stable (the shipped demo model is trained on it); ``classes=K`` uses its first K
names, with category ids 1..K in list order.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from ..errors import CicoError
from .rle import encode

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "disc", "square", "triangle", "star", "ring", "cross", "hexagon", "crescent",
)
"""Class names in category-id order (id = position + 1). Append only: the demo model depends on it."""

DEFAULT_CLASSES = 6
"""Classes used by default: disc, square, triangle, star, ring, cross."""

GENERATOR_VERSION = 1
"""Bumped whenever the same seed starts to give different videos."""

_SHAPE_EXTENT = 1.3  # every shape lies in [-1.3, 1.3]^2 in its own unit coordinates
_TEXTURE_SIZE = 96  # object textures are drawn on a square patch covering the shape's unit box
_FILL_SHIFT = 4  # fractional bits for sub-pixel polygon vertices in cv2.fillPoly


@dataclass(frozen=True)
class SceneConfig:
    """What every video of a dataset shares.

    Attributes:
        frames: number of frames per video.
        size: frame ``(height, width)`` in pixels.
        classes: number of classes, the first ``classes`` names of :data:`SYNTHETIC_CLASSES`.
        class_names: the shapes to draw instead (names of :data:`SYNTHETIC_CLASSES`, category id = position
            in it + 1), e.g. ``("star", "ring", "cross")`` for a class set the demo model has not seen.
        max_objects: objects per video are drawn uniformly from ``1..max_objects``.
        object_size: range ``(low, high)`` of an object's base diameter as a fraction of the frame's
            short side; over time it scales by up to about 1.4x either way, kept within 5 % and
            ``max(30 %, high + 2 %)`` of the short side.
    """

    frames: int = 30
    size: tuple[int, int] = (360, 640)
    classes: int = DEFAULT_CLASSES
    max_objects: int = 6
    object_size: tuple[float, float] = (0.10, 0.28)
    class_names: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The class names drawn: ``class_names``, else the first ``classes``."""
        return self.class_names or SYNTHETIC_CLASSES[:self.classes]


@dataclass
class SyntheticVideo:
    """One rendered video, in memory.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB frames (before JPEG compression).
        masks: ``[N, T, H, W]`` bool visible mask of each object visible in at least one frame.
        amodal: ``[N, T, H, W]`` bool full shape of each object (ignoring occlusion, cut at the frame).
        category_ids: ``N`` 1-based category ids.
    """

    frames: np.ndarray
    masks: np.ndarray
    amodal: np.ndarray
    category_ids: list[int]


# ---------------------------------------------------------------------------------------------
# Shapes: polygons in unit coordinates (radius about 1), filled regions and holes


def _circle(radius: float, center: tuple[float, float] = (0.0, 0.0), vertices: int = 48) -> np.ndarray:
    angle = np.linspace(0.0, 2.0 * math.pi, vertices, endpoint=False)
    return np.stack([center[0] + radius * np.cos(angle), center[1] + radius * np.sin(angle)], axis=1)


def _star_polygon(radii: np.ndarray, phase: float) -> np.ndarray:
    """Polygon with vertices at equal angles and the given radii ``[K]``."""
    angle = phase + np.linspace(0.0, 2.0 * math.pi, len(radii), endpoint=False)
    return np.stack([radii * np.cos(angle), radii * np.sin(angle)], axis=1)


def _shape(name: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Filled polygons and hole polygons ``[K, 2]`` (x, y) of one instance of class ``name``."""
    if name == "disc":
        return [_circle(1.0)], []
    if name == "square":
        return [_star_polygon(np.full(4, 1.12), math.pi / 4)], []
    if name == "triangle":
        return [_star_polygon(np.full(3, 1.2), -math.pi / 2)], []
    if name == "star":
        inner = rng.uniform(0.38, 0.5)
        return [_star_polygon(np.tile([1.15, 1.15 * inner], 5), -math.pi / 2)], []
    if name == "ring":
        return [_circle(1.0)], [_circle(rng.uniform(0.5, 0.65))]
    if name == "cross":
        w = rng.uniform(0.28, 0.38)
        cross = [(w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1),
                 (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1), (w, 1)]
        return [np.asarray(cross, dtype=np.float64)], []
    if name == "hexagon":
        return [_star_polygon(np.full(6, 1.05), 0.0)], []
    if name == "crescent":
        return [_circle(1.0)], [_circle(rng.uniform(0.8, 0.9), center=(rng.uniform(0.42, 0.55), 0.0))]
    raise ValueError(f"unknown synthetic class {name!r}")


# ---------------------------------------------------------------------------------------------
# Textures and background


def _unit_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``[H, W]`` scaled so the short side spans [0, 1]."""
    scale = 1.0 / min(height, width)
    return np.meshgrid(np.arange(width) * scale, np.arange(height) * scale)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise ``[H, W, channels]`` in about [-1, 1]: a coarse random grid, cubic-upsampled."""
    grid = rng.uniform(-1.0, 1.0, (cells, max(2, round(cells * width / height)), channels)).astype(np.float32)
    noise = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return noise.reshape(height, width, channels)


def _pattern(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A two-tone pattern weight ``[H, W]`` in [0, 1]: flat, stripes, gradient, checker or noise."""
    x, y = _unit_grid(height, width)
    angle = rng.uniform(0.0, math.pi)
    along = x * math.cos(angle) + y * math.sin(angle)
    kind = rng.integers(5)
    if kind == 0:
        return np.zeros((height, width))
    if kind == 1:
        period = rng.uniform(0.08, 0.3)
        wave = np.sin(2.0 * math.pi * along / period)
        return (wave > 0).astype(np.float64) if rng.random() < 0.5 else 0.5 + 0.5 * wave
    if kind == 2:
        return (along - along.min()) / max(np.ptp(along), 1e-9)
    if kind == 3:
        cell = rng.uniform(0.1, 0.3)
        across = -x * math.sin(angle) + y * math.cos(angle)
        return ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float64)
    noise = _smooth_noise(rng, height, width, int(rng.integers(3, 7)), 1)[..., 0]
    return np.clip(0.5 + 0.6 * noise, 0.0, 1.0)


def _colours(rng: np.random.Generator, away_from: np.ndarray, min_distance: float = 90.0) -> np.ndarray:
    """Two random colours ``[2, 3]`` whose mean is at least ``min_distance`` from ``away_from``."""
    for _ in range(20):
        colours = rng.uniform(0.0, 255.0, (2, 3))
        if np.linalg.norm(colours.mean(axis=0) - away_from) >= min_distance:
            break
    return colours


def _object_texture(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """An object's texture ``[P, P, 3]`` uint8 over its unit box; the same law for every class."""
    colours = _colours(rng, background_mean)
    weight = _pattern(rng, _TEXTURE_SIZE, _TEXTURE_SIZE)[..., None]
    texture = colours[0] + (colours[1] - colours[0]) * weight
    texture += rng.normal(0.0, rng.uniform(2.0, 12.0), texture.shape)
    return np.clip(texture, 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A cluttered background ``[H, W, 3]`` uint8: gradient, smooth noise, a faint pattern, blurred
    blobs, thin straight and curved lines and fine grain. No clutter item is a class shape."""
    short = min(height, width)
    x, y = _unit_grid(height, width)
    ends = rng.uniform(20.0, 235.0, (2, 3))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    along = x * math.cos(angle) + y * math.sin(angle)
    along = (along - along.min()) / max(np.ptp(along), 1e-9)
    image = ends[0] + (ends[1] - ends[0]) * along[..., None]
    image += rng.uniform(15.0, 45.0) * _smooth_noise(rng, height, width, int(rng.integers(3, 9)), 3)
    if rng.random() < 0.5:
        faint = _pattern(rng, height, width)[..., None]
        image += rng.uniform(0.15, 0.35) * (faint - 0.5) * rng.uniform(-120.0, 120.0, 3)
    image = np.clip(image, 0, 255).astype(np.uint8)

    blobs = image.copy()
    for _ in range(rng.integers(3, 12)):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = tuple(int(a) for a in rng.uniform(0.03, 0.2, 2) * short)
        colour = tuple(float(c) for c in rng.uniform(0.0, 255.0, 3))
        cv2.ellipse(blobs, center, axes, float(rng.uniform(0.0, 180.0)), 0.0, 360.0, colour, -1, cv2.LINE_AA)
    image = cv2.GaussianBlur(blobs, (0, 0), rng.uniform(0.015, 0.04) * short)

    thickness = max(1, round(short / 240))
    for _ in range(rng.integers(3, 14)):
        start, end = rng.uniform(-0.2, 1.2, (2, 2)) * (width, height)
        colour = tuple(float(c) for c in rng.uniform(0.0, 255.0, 3))
        width_px = int(rng.integers(1, 3)) * thickness
        cv2.line(image, tuple(int(v) for v in start), tuple(int(v) for v in end), colour, width_px, cv2.LINE_AA)
    for _ in range(rng.integers(1, 6)):
        heading = rng.uniform(0.0, 2.0 * math.pi) + np.cumsum(rng.normal(0.0, 0.35, 24))
        steps = rng.uniform(0.01, 0.04) * short * np.stack([np.cos(heading), np.sin(heading)], axis=1)
        curve = rng.uniform(0.0, 1.0, 2) * (width, height) + np.cumsum(steps, axis=0)
        colour = tuple(float(c) for c in rng.uniform(0.0, 255.0, 3))
        cv2.polylines(image, [np.round(curve).astype(np.int32)], False, colour, thickness, cv2.LINE_AA)

    grain = rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape)
    return np.clip(image + grain, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Motion


def _fold(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect ``values`` into ``[low, high]`` (a bouncing path); the midpoint if the range is empty."""
    if high <= low:
        return np.full_like(values, (low + high) / 2.0)
    span = high - low
    phase = np.mod(values - low, 2.0 * span)
    return low + np.where(phase > span, 2.0 * span - phase, phase)


def _path(rng: np.random.Generator, frames: int, height: int, width: int, radius: float) -> np.ndarray:
    """Centres ``[T, 2]`` (x, y) of one object: a smooth curve at varying speed that stays in view
    (bouncing), enters through a border or leaves through one."""
    short = min(height, width)
    t = np.arange(frames)
    speed = rng.uniform(0.006, 0.03) * short * (1.0 + 0.3 * np.sin(rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6.3)))
    heading = rng.uniform(0.0, 2.0 * math.pi) + rng.uniform(-0.08, 0.08) * t
    steps = speed[:, None] * np.stack([np.cos(heading), np.sin(heading)], axis=1)
    travelled = np.concatenate([np.zeros((1, 2)), np.cumsum(steps[:-1], axis=0)])
    mode = rng.choice(["stay", "enter", "leave"], p=[0.5, 0.25, 0.25])
    if mode == "stay":
        start = rng.uniform(0.0, 1.0, 2) * (width, height)
        margin = 0.6 * radius
        centres = start + travelled
        return np.stack([_fold(centres[:, 0], margin, width - margin),
                         _fold(centres[:, 1], margin, height - margin)], axis=1)
    # cross a border at frame `anchor`, moving inwards ("enter") or outwards ("leave")
    anchor = round((rng.uniform(0.15, 0.6) if mode == "enter" else rng.uniform(0.4, 0.85)) * (frames - 1))
    side = rng.integers(4)  # left, right, top, bottom
    along = rng.uniform(0.15, 0.85)
    border = [(0.0, along * height), (width, along * height), (along * width, 0.0), (along * width, height)][side]
    outward = [math.pi, 0.0, -math.pi / 2, math.pi / 2][side]
    direction = outward + rng.uniform(-1.0, 1.0) + (math.pi if mode == "enter" else 0.0)
    # rotate the whole path so that it crosses the border at `anchor` heading in `direction`
    turn = direction - heading[anchor]
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    return np.asarray(border) + (travelled - travelled[anchor]) @ rotation.T


# ---------------------------------------------------------------------------------------------
# Scene


@dataclass
class _Object:
    category_id: int
    fills: list[np.ndarray]  # polygons [K, 2] in unit coordinates
    holes: list[np.ndarray]
    texture: np.ndarray  # [P, P, 3] uint8 over [-extent, extent]^2
    aspect: np.ndarray  # [2] x/y stretch of the unit shape
    centres: np.ndarray  # [T, 2]
    radii: np.ndarray  # [T] pixels
    angles: np.ndarray  # [T] radians


@dataclass
class _Placed:
    """An object drawn in one frame: its box ``[y0:y1, x0:x1]`` and the shape mask inside it."""

    y0: int
    x0: int
    mask: np.ndarray  # [h, w] bool


class _Scene:
    """Everything random about one video, drawn once; frames are then rendered deterministically."""

    def __init__(self, config: SceneConfig, seed: int, index: int) -> None:
        rng = np.random.default_rng([seed, index])
        height, width = config.size
        short = min(height, width)
        self.size = config.size
        self.frames = config.frames
        self.pan = max(1, round(0.08 * short))
        self.background = _background(rng, height + 2 * self.pan, width + 2 * self.pan)
        background_mean = self.background.reshape(-1, 3).mean(axis=0)
        t = np.arange(config.frames)
        pan_path = rng.uniform(0.0, 2.0 * self.pan, 2) + rng.uniform(-0.6, 0.6, 2) * short / 100.0 * t[:, None]
        self.offsets = np.round(_fold(pan_path, 0.0, 2.0 * self.pan)).astype(int)  # [T, 2] (x, y)
        self.gain = 1.0 + rng.uniform(0.0, 0.12) * np.sin(rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3))
        self.bias = rng.uniform(-10.0, 10.0) * np.sin(rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3))

        self.objects: list[_Object] = []  # back to front
        for _ in range(rng.integers(1, config.max_objects + 1)):
            name = config.names[int(rng.integers(1, len(config.names) + 1)) - 1]
            category_id = SYNTHETIC_CLASSES.index(name) + 1
            fills, holes = _shape(name, rng)
            texture = _object_texture(rng, background_mean)
            low, high = config.object_size
            base = 0.5 * rng.uniform(low, high) * short
            log_scale = rng.uniform(-0.4, 0.4) * (t / max(1, config.frames - 1) - 0.5)
            log_scale = log_scale + rng.uniform(0.0, 0.15) * np.sin(rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
            radii = np.clip(base * np.exp(log_scale), 0.025 * short, max(0.15, 0.5 * high + 0.01) * short)
            angles = rng.uniform(0.0, 2.0 * math.pi) + rng.uniform(-0.12, 0.12) * t
            self.objects.append(_Object(
                category_id=category_id, fills=fills, holes=holes, texture=texture,
                aspect=np.exp(rng.uniform(-0.15, 0.15) * np.array([1.0, -1.0])),
                centres=_path(rng, config.frames, height, width, base), radii=radii, angles=angles,
            ))

    def _place(self, obj: _Object, t: int, image: np.ndarray) -> _Placed | None:
        """Draw ``obj`` at frame ``t`` onto ``image`` ``[H, W, 3]``; its box and mask, or None if outside."""
        height, width = self.size
        cos, sin = math.cos(obj.angles[t]), math.sin(obj.angles[t])
        linear = obj.radii[t] * np.array([[cos, -sin], [sin, cos]]) * obj.aspect  # unit -> pixels
        centre = obj.centres[t]
        fills = [poly @ linear.T + centre for poly in obj.fills]
        points = np.concatenate(fills)
        x0, y0 = np.maximum(np.floor(points.min(axis=0)).astype(int), 0)
        x1 = min(int(math.ceil(points[:, 0].max())) + 1, width)
        y1 = min(int(math.ceil(points[:, 1].max())) + 1, height)
        if x1 <= x0 or y1 <= y0:
            return None
        origin = np.array([x0, y0])
        # anti-aliased coverage; the mask is the pixels at least half covered
        alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
        scale = 1 << _FILL_SHIFT
        cv2.fillPoly(alpha, [np.round((p - origin) * scale).astype(np.int32) for p in fills], 255,
                     cv2.LINE_AA, _FILL_SHIFT)
        holes = [np.round((p @ linear.T + centre - origin) * scale).astype(np.int32) for p in obj.holes]
        if holes:
            cv2.fillPoly(alpha, holes, 0, cv2.LINE_AA, _FILL_SHIFT)
        mask = alpha >= 128
        if not mask.any():
            return None
        # texture patch pixel q -> unit u = q * 2e/P - e -> image x = linear u + centre - origin
        unit_per_pixel = 2.0 * _SHAPE_EXTENT / _TEXTURE_SIZE
        shift = centre - origin - linear @ np.full(2, _SHAPE_EXTENT)
        affine = np.hstack([linear * unit_per_pixel, shift[:, None]])
        texture = cv2.warpAffine(obj.texture, affine, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
        region = image[y0:y1, x0:x1]
        weight = alpha[..., None].astype(np.float32) / 255.0
        region[:] = region + (texture.astype(np.float32) - region) * weight + 0.5
        return _Placed(y0=int(y0), x0=int(x0), mask=mask)

    def render(self, t: int) -> tuple[np.ndarray, list[_Placed | None], list[_Placed | None]]:
        """Frame ``t``: the RGB image ``[H, W, 3]`` uint8 and, per object (back to front), its
        visible and its full placement (``None`` where it shows no pixel)."""
        height, width = self.size
        ox, oy = self.offsets[t]
        image = self.background[oy:oy + height, ox:ox + width].copy()
        full = [self._place(obj, t, image) for obj in self.objects]
        image = cv2.convertScaleAbs(image, alpha=float(self.gain[t]), beta=float(self.bias[t]))
        covered = np.zeros((height, width), bool)
        visible: list[_Placed | None] = [None] * len(full)
        for k in reversed(range(len(full))):
            placed = full[k]
            if placed is None:
                continue
            h, w = placed.mask.shape
            window = covered[placed.y0:placed.y0 + h, placed.x0:placed.x0 + w]
            shown = placed.mask & ~window
            window |= placed.mask
            if shown.any():
                visible[k] = _Placed(y0=placed.y0, x0=placed.x0, mask=shown)
        return image, visible, full


def _full_frame(placed: _Placed | None, size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size, bool)
    if placed is not None:
        h, w = placed.mask.shape
        mask[placed.y0:placed.y0 + h, placed.x0:placed.x0 + w] = placed.mask
    return mask


def _check_config(config: SceneConfig) -> None:
    height, width = config.size
    if height < 16 or width < 16:
        raise CicoError(f"frame size {height}x{width} is too small (at least 16x16)")
    if config.frames < 1:
        raise CicoError(f"frames must be at least 1, got {config.frames}")
    if not 1 <= config.classes <= len(SYNTHETIC_CLASSES):
        raise CicoError(f"classes must be in 1..{len(SYNTHETIC_CLASSES)}, got {config.classes}")
    unknown = [n for n in config.class_names if n not in SYNTHETIC_CLASSES]
    if unknown or len(set(config.class_names)) != len(config.class_names):
        raise CicoError(f"class names must be distinct names of {', '.join(SYNTHETIC_CLASSES)}; got "
                        f"{', '.join(config.class_names)}")
    if config.max_objects < 1:
        raise CicoError(f"max_objects must be at least 1, got {config.max_objects}")
    low, high = config.object_size
    if not 0.05 <= low <= high <= 0.6:
        raise CicoError(f"object_size must satisfy 0.05 <= low <= high <= 0.6, got {low}-{high}")


def render_video(index: int, seed: int = 0, config: SceneConfig = SceneConfig()) -> SyntheticVideo:
    """Render video ``index`` of the dataset with ``seed`` in memory (the same pixels before JPEG
    and the same masks that :func:`make_synthetic` writes for it)."""
    _check_config(config)
    scene = _Scene(config, seed, index)
    frames, masks, amodal = [], [], []
    for t in range(config.frames):
        image, visible, full = scene.render(t)
        frames.append(image)
        masks.append([_full_frame(p, config.size) for p in visible])
        amodal.append([_full_frame(p, config.size) for p in full])
    masks_nt = np.stack([np.stack(m) for m in masks], axis=1)  # [N, T, H, W]
    amodal_nt = np.stack([np.stack(m) for m in amodal], axis=1)
    seen = masks_nt.any(axis=(1, 2, 3))
    return SyntheticVideo(
        frames=np.stack(frames), masks=masks_nt[seen], amodal=amodal_nt[seen],
        category_ids=[obj.category_id for obj, keep in zip(scene.objects, seen) if keep],
    )


# ---------------------------------------------------------------------------------------------
# Writing a dataset


def video_name(index: int) -> str:
    """Folder / file stem of video ``index`` (0-based); its video id is ``index + 1``."""
    return f"video{index + 1:05d}"


@dataclass(frozen=True)
class _Job:
    index: int
    seed: int
    config: SceneConfig
    out_dir: Path
    video_file: bool
    fps: float
    jpeg_quality: int


def _frame_annotation(placed: _Placed | None, size: tuple[int, int]) -> tuple[Any, Any, Any]:
    """Compressed RLE, ``[x, y, w, h]`` box and area of a visible placement, or three ``None``."""
    if placed is None:
        return None, None, None
    rows = np.flatnonzero(placed.mask.any(axis=1))
    cols = np.flatnonzero(placed.mask.any(axis=0))
    box = [float(placed.x0 + cols[0]), float(placed.y0 + rows[0]),
           float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
    return encode(_full_frame(placed, size)), box, int(placed.mask.sum())


class _VideoWriter:
    """An ``.mp4`` file written with PyAV: H.264 (libx264) when available, else MPEG-4 part 2."""

    def __init__(self, path: Path, height: int, width: int, fps: float) -> None:
        import av  # only needed for --video-files

        codecs = av.codecs_available
        codec = "libx264" if "libx264" in codecs else "mpeg4"
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "17", "preset": "veryfast"}
        else:
            self.stream.bit_rate = 8 * width * height * int(math.ceil(fps))
        self.frame_type = av.VideoFrame

    def write(self, rgb: np.ndarray) -> None:
        frame = self.frame_type.from_ndarray(rgb, format="rgb24")
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


def _write_video(job: _Job) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Render one video, write its JPEG frames (and mp4); its ``videos`` entry and its annotations
    (without ids)."""
    height, width = job.config.size
    name = video_name(job.index)
    folder = job.out_dir / "JPEGImages" / name
    folder.mkdir(parents=True, exist_ok=True)
    scene = _Scene(job.config, job.seed, job.index)
    writer = None
    if job.video_file:
        (job.out_dir / "videos").mkdir(exist_ok=True)
        writer = _VideoWriter(job.out_dir / "videos" / f"{name}.mp4", height, width, job.fps)
    tracks: list[list[tuple[Any, Any, Any]]] = [[] for _ in scene.objects]
    file_names = []
    for t in range(job.config.frames):
        image, visible, _ = scene.render(t)
        file_name = f"{name}/{t:05d}.jpg"
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(job.out_dir / "JPEGImages" / file_name), bgr,
                           [cv2.IMWRITE_JPEG_QUALITY, job.jpeg_quality]):
            raise CicoError("cannot write frame", job.out_dir / "JPEGImages" / file_name)
        if writer is not None:
            writer.write(image)
        file_names.append(file_name)
        for track, placed in zip(tracks, visible):
            track.append(_frame_annotation(placed, job.config.size))
    if writer is not None:
        writer.close()
    video = {"id": job.index + 1, "width": width, "height": height, "length": job.config.frames,
             "file_names": file_names}
    annotations = []
    for obj, track in zip(scene.objects, tracks):
        if all(seg is None for seg, _, _ in track):
            continue
        annotations.append({
            "video_id": job.index + 1, "category_id": obj.category_id, "iscrowd": 0,
            "height": height, "width": width, "length": job.config.frames,
            "segmentations": [seg for seg, _, _ in track],
            "bboxes": [box for _, box, _ in track],
            "areas": [area for _, _, area in track],
        })
    return video, annotations


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _run_jobs(jobs: list[_Job], workers: int) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    if workers <= 1:
        yield from map(_write_video, jobs)
        return
    context = multiprocessing.get_context("spawn")  # safe even when the caller has threads (torch)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        yield from pool.map(_write_video, jobs)


def _clear_previous(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite``; then remove only what this writer makes."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CicoError("exists and is not a directory", out_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise CicoError("directory is not empty (use --overwrite to replace a synthetic dataset)", out_dir)
    for folder in ("JPEGImages", "videos"):
        shutil.rmtree(out_dir / folder, ignore_errors=True)
    (out_dir / "instances.json").unlink(missing_ok=True)


def make_synthetic(
    out_dir: str | Path,
    videos: int,
    frames: int,
    size: tuple[int, int] = (360, 640),
    seed: int = 0,
    classes: int = DEFAULT_CLASSES,
    *,
    max_objects: int = 6,
    object_size: tuple[float, float] = SceneConfig.object_size,
    video_files: bool = False,
    fps: float = 6.0,
    jpeg_quality: int = 90,
    overwrite: bool = False,
    workers: int | None = None,
    class_names: tuple[str, ...] = (),
) -> Path:
    """Write a synthetic YouTube-VIS dataset and return the path of its annotation file.

    Layout: ``out_dir/JPEGImages/videoNNNNN/NNNNN.jpg`` and ``out_dir/instances.json`` (compressed
    RLE segmentations with str counts, ``[x, y, w, h]`` boxes, areas, ``None`` where absent); with
    ``video_files`` also ``out_dir/videos/videoNNNNN.mp4`` at ``fps`` (same frames, before JPEG).

    Args:
        out_dir: output folder; must be empty or missing unless ``overwrite`` (which then removes
            ``JPEGImages/``, ``videos/`` and ``instances.json`` only).
        videos: number of videos. frames: frames per video. size: ``(height, width)``.
        seed: the dataset seed; video ``i`` is drawn from ``default_rng([seed, i])``.
        classes: use the first ``classes`` names of :data:`SYNTHETIC_CLASSES`.
        class_names: draw these shapes instead (see :class:`SceneConfig`).
        max_objects: objects per video are 1..max_objects.
        object_size: range of the objects' base diameters, as fractions of the short side.
        workers: processes rendering videos in parallel (default: up to 2); output is identical.
            They are started with "spawn", so a script calling this with ``workers > 1`` needs the
            usual ``if __name__ == "__main__":`` guard.

    Raises:
        CicoError: bad arguments, a non-empty ``out_dir`` without ``overwrite``, a write failure.
    """
    out_dir = Path(out_dir)
    config = SceneConfig(frames=frames, size=(int(size[0]), int(size[1])), classes=classes,
                         max_objects=max_objects, object_size=(float(object_size[0]), float(object_size[1])),
                         class_names=tuple(class_names))
    _check_config(config)
    if videos < 1:
        raise CicoError(f"videos must be at least 1, got {videos}")
    if video_files and (config.size[0] % 2 or config.size[1] % 2):
        raise CicoError(f"video files need an even frame size, got {config.size[0]}x{config.size[1]}")
    if fps <= 0:
        raise CicoError(f"fps must be positive, got {fps}")
    _clear_previous(out_dir, overwrite)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CicoError(f"cannot create the output folder: {err.strerror}", out_dir) from err

    jobs = [_Job(i, seed, config, out_dir, video_files, fps, jpeg_quality) for i in range(videos)]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    dataset: dict[str, Any] = {
        "info": {"description": "cico synthetic shapes (cico.data.synthetic)", "version": GENERATOR_VERSION,
                 "seed": seed, "videos": videos, "frames": frames, "size": list(config.size),
                 "max_objects": max_objects, "object_size": list(config.object_size)},
        "licenses": [],
        "videos": [],
        "categories": [{"id": SYNTHETIC_CLASSES.index(name) + 1, "name": name, "supercategory": "shape"}
                       for name in config.names],
        "annotations": [],
    }
    for video, tracks in _run_jobs(jobs, min(workers, videos)):
        dataset["videos"].append(video)
        for annotation in tracks:
            dataset["annotations"].append({"id": len(dataset["annotations"]) + 1, **annotation})

    path = out_dir / "instances.json"
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(dataset, separators=(",", ":")))
    except OSError as err:
        raise CicoError(f"cannot write annotations: {err.strerror}", partial) from err
    partial.replace(path)
    return path
