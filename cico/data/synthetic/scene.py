"""Synthetic scenes: objects moving over a panning background, rendered frame by frame with their masks.

Objects follow smooth curved paths while scaling and rotating; some stay in view (bouncing off the
borders), some enter or leave the frame. They are drawn in a fixed depth order, so they occlude each other;
the visible masks hold the VISIBLE part only. Every video is an independent draw from
``np.random.default_rng([seed, video_index])``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ...errors import CicoError
from .shapes import (
    DEFAULT_CLASSES,
    FILL_SHIFT,
    SHAPE_EXTENT,
    SYNTHETIC_CLASSES,
    TEXTURE_SIZE,
    background,
    object_texture,
    shape_polygons,
)


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
class Placed:
    """An object drawn in one frame: its box ``[y0:y1, x0:x1]`` and the shape mask inside it."""

    y0: int
    x0: int
    mask: np.ndarray  # [h, w] bool


class Scene:
    """Everything random about one video, drawn once; frames are then rendered deterministically."""

    def __init__(self, config: SceneConfig, seed: int, index: int) -> None:
        rng = np.random.default_rng([seed, index])
        height, width = config.size
        short = min(height, width)
        self.size = config.size
        self.frames = config.frames
        self.pan = max(1, round(0.08 * short))
        self.background = background(rng, height + 2 * self.pan, width + 2 * self.pan)
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
            fills, holes = shape_polygons(name, rng)
            texture = object_texture(rng, background_mean)
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

    def _place(self, obj: _Object, t: int, image: np.ndarray) -> Placed | None:
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
        scale = 1 << FILL_SHIFT
        cv2.fillPoly(alpha, [np.round((p - origin) * scale).astype(np.int32) for p in fills], 255,
                     cv2.LINE_AA, FILL_SHIFT)
        holes = [np.round((p @ linear.T + centre - origin) * scale).astype(np.int32) for p in obj.holes]
        if holes:
            cv2.fillPoly(alpha, holes, 0, cv2.LINE_AA, FILL_SHIFT)
        mask = alpha >= 128
        if not mask.any():
            return None
        # texture patch pixel q -> unit u = q * 2e/P - e -> image x = linear u + centre - origin
        unit_per_pixel = 2.0 * SHAPE_EXTENT / TEXTURE_SIZE
        shift = centre - origin - linear @ np.full(2, SHAPE_EXTENT)
        affine = np.hstack([linear * unit_per_pixel, shift[:, None]])
        texture = cv2.warpAffine(obj.texture, affine, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
        region = image[y0:y1, x0:x1]
        weight = alpha[..., None].astype(np.float32) / 255.0
        region[:] = region + (texture.astype(np.float32) - region) * weight + 0.5
        return Placed(y0=int(y0), x0=int(x0), mask=mask)

    def render(self, t: int) -> tuple[np.ndarray, list[Placed | None], list[Placed | None]]:
        """Frame ``t``: the RGB image ``[H, W, 3]`` uint8 and, per object (back to front), its
        visible and its full placement (``None`` where it shows no pixel)."""
        height, width = self.size
        ox, oy = self.offsets[t]
        image = self.background[oy:oy + height, ox:ox + width].copy()
        full = [self._place(obj, t, image) for obj in self.objects]
        image = cv2.convertScaleAbs(image, alpha=float(self.gain[t]), beta=float(self.bias[t]))
        covered = np.zeros((height, width), bool)
        visible: list[Placed | None] = [None] * len(full)
        for k in reversed(range(len(full))):
            placed = full[k]
            if placed is None:
                continue
            h, w = placed.mask.shape
            window = covered[placed.y0:placed.y0 + h, placed.x0:placed.x0 + w]
            shown = placed.mask & ~window
            window |= placed.mask
            if shown.any():
                visible[k] = Placed(y0=placed.y0, x0=placed.x0, mask=shown)
        return image, visible, full


def full_frame(placed: Placed | None, size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size, bool)
    if placed is not None:
        h, w = placed.mask.shape
        mask[placed.y0:placed.y0 + h, placed.x0:placed.x0 + w] = placed.mask
    return mask


def check_config(config: SceneConfig) -> None:
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
    check_config(config)
    scene = Scene(config, seed, index)
    frames, masks, amodal = [], [], []
    for t in range(config.frames):
        image, visible, full = scene.render(t)
        frames.append(image)
        masks.append([full_frame(p, config.size) for p in visible])
        amodal.append([full_frame(p, config.size) for p in full])
    masks_nt = np.stack([np.stack(m) for m in masks], axis=1)  # [N, T, H, W]
    amodal_nt = np.stack([np.stack(m) for m in amodal], axis=1)
    seen = np.asarray(masks_nt.any(axis=(1, 2, 3)))
    return SyntheticVideo(
        frames=np.stack(frames), masks=masks_nt[seen], amodal=amodal_nt[seen],
        category_ids=[obj.category_id for obj, keep in zip(scene.objects, seen.tolist()) if keep],
    )
