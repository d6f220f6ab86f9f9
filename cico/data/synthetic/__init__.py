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
from .scene import SceneConfig, SyntheticVideo, render_video
from .shapes import DEFAULT_CLASSES, SYNTHETIC_CLASSES
from .writer import GENERATOR_VERSION, make_synthetic, video_name

__all__ = ["DEFAULT_CLASSES", "GENERATOR_VERSION", "SYNTHETIC_CLASSES", "SceneConfig", "SyntheticVideo",
           "make_synthetic", "render_video", "video_name"]
