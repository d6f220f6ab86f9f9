"""Synthetic shapes: the class list, each class's polygons, the objects' textures and the background.

The class of an object is its SHAPE; every instance draws its own colours and texture (solid, stripes,
gradient, checker or noise) from one distribution for all classes, so colour and texture say nothing about
the class. The background carries clutter that is no class (blurred blobs, thin straight and curved lines,
faint patterns).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "disc", "square", "triangle", "star", "ring", "cross", "hexagon", "crescent",
)
"""Class names in category-id order (id = position + 1). Append only: the demo model depends on it."""

DEFAULT_CLASSES = 6
"""Classes used by default: disc, square, triangle, star, ring, cross."""

SHAPE_EXTENT = 1.3  # every shape lies in [-1.3, 1.3]^2 in its own unit coordinates
TEXTURE_SIZE = 96  # object textures are drawn on a square patch covering the shape's unit box
FILL_SHIFT = 4  # fractional bits for sub-pixel polygon vertices in cv2.fillPoly


# ---------------------------------------------------------------------------------------------
# Shapes: polygons in unit coordinates (radius about 1), filled regions and holes


def _circle(radius: float, center: tuple[float, float] = (0.0, 0.0), vertices: int = 48) -> np.ndarray:
    angle = np.linspace(0.0, 2.0 * math.pi, vertices, endpoint=False)
    return np.stack([center[0] + radius * np.cos(angle), center[1] + radius * np.sin(angle)], axis=1)


def _star_polygon(radii: np.ndarray, phase: float) -> np.ndarray:
    """Polygon with vertices at equal angles and the given radii ``[K]``."""
    angle = phase + np.linspace(0.0, 2.0 * math.pi, len(radii), endpoint=False)
    return np.stack([radii * np.cos(angle), radii * np.sin(angle)], axis=1)


def shape_polygons(name: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
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


def object_texture(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """An object's texture ``[P, P, 3]`` uint8 over its unit box; the same law for every class."""
    colours = _colours(rng, background_mean)
    weight = _pattern(rng, TEXTURE_SIZE, TEXTURE_SIZE)[..., None]
    texture = colours[0] + (colours[1] - colours[0]) * weight
    texture += rng.normal(0.0, rng.uniform(2.0, 12.0), texture.shape)
    return np.clip(texture, 0, 255).astype(np.uint8)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
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
