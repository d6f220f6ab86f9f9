"""Frame preprocessing: the reference's test transform and its clip-consistent training augmentation.

Everything works on OpenCV BGR frames (``uint8 [H, W, 3]``) with numpy and ``cv2``, like the
reference:

* resize with ``cv2.resize`` (``INTER_LINEAR``) on the float32 image so that the short side is
  ``min_size`` unless the long side would then exceed ``max_size`` (:func:`resize_shape`);
* normalise with the ImageNet constants, either with the reference's channel-order quirk
  (``"reference"``: RGB constants applied to BGR data, then BGR->RGB; the published
  checkpoints need it) or correctly (``"rgb"``: BGR->RGB first, then normalise);
* zero-pad bottom/right (:func:`pad_to`, :func:`padded_size`).

Training adds a flip and a random expand/crop, drawn once per clip so that every frame of the clip
gets the same geometry (:class:`TrainAugmentation`). The reference flips *vertically*;
``flip="horizontal"`` is the usual choice and the default here, ``"vertical"`` reproduces the
reference's training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, get_args

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..constants import MEANS, NORMALIZATIONS, STD, Normalization

FlipMode = Literal["horizontal", "vertical", "none"]
"""Training flip: ``"horizontal"`` (usual), ``"vertical"`` (the reference's quirk) or ``"none"``."""

FLIP_MODES: tuple[str, ...] = get_args(FlipMode)


def resize_shape(height: int, width: int, min_size: int = 384, max_size: int = 640) -> tuple[int, int]:
    """Target ``(H', W')`` of the reference resize.

    Wide frames (``H/W < min_size/max_size``) get ``W' = max_size``, ``H' = int(H * (max_size/W))``;
    the others ``H' = min_size``, ``W' = int(W * (min_size/H))``. The float expressions follow the
    reference exactly (480x854 -> 359x640; 720x1280 -> 360x640; 480x640 -> 384x512).
    """
    if height / width < min_size / max_size:
        return int(height * (max_size / width)), max_size
    return min_size, int(width * (min_size / height))


def padded_size(height: int, width: int, divisor: int = 32, min_h: int = 0, min_w: int = 0) -> tuple[int, int]:
    """``(max(height, min_h), max(width, min_w))``, each rounded up to a multiple of ``divisor``.

    Test clips use ``min_h, min_w = min_size, max_size`` (always 384x640 at the standard
    size); training batches pad to the batch maximum with no minimum.
    """
    h, w = max(height, min_h), max(width, min_w)
    return -(-h // divisor) * divisor, -(-w // divisor) * divisor


def pad_to(tensor: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-pad the last two dimensions ``[..., H, W]`` at the bottom/right to ``size = (Hp, Wp)``."""
    h, w = tensor.shape[-2:]
    if (h, w) == tuple(size):
        return tensor
    if size[0] < h or size[1] < w:
        raise ValueError(f"cannot pad {h}x{w} to the smaller {size[0]}x{size[1]}")
    return F.pad(tensor, (0, size[1] - w, 0, size[0] - h))


def fill_value(normalization: Normalization) -> np.ndarray:
    """The BGR pixel value that normalises to exactly 0 (``[3]`` float32), used to fill expand canvases."""
    return MEANS.copy() if normalization == "reference" else MEANS[::-1].copy()


def normalize(image: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Normalise a float32 BGR image ``[H, W, 3]`` into a network input ``[3, H, W]`` (RGB channel order).

    ``"reference"``: ``(BGR - MEANS) / STD`` with the RGB-order constants, then BGR->RGB, so that
    ``ch0 = (R - 103.53) / 57.375``, ``ch1 = (G - 116.28) / 57.12``, ``ch2 = (B - 123.675) / 58.395``
    (the reference's quirk). ``"rgb"``: BGR->RGB, then ``(RGB - MEANS) / STD``.
    """
    if normalization == "reference":
        out = ((image - MEANS) / STD)[:, :, ::-1]
    elif normalization == "rgb":
        out = (image[:, :, ::-1] - MEANS) / STD
    else:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def preprocess_frame(frame_bgr: np.ndarray, min_size: int = 384, max_size: int = 640,
                   normalization: Normalization = "reference") -> Tensor:
    """The reference test preprocessing of one frame: ``uint8 [H, W, 3]`` BGR -> float32 ``[3, H', W']``.

    ``cv2.resize`` (``INTER_LINEAR``) of the float32 image to :func:`resize_shape`, then
    :func:`normalize`. Padding is separate (:func:`pad_to`).
    """
    h2, w2 = resize_shape(frame_bgr.shape[0], frame_bgr.shape[1], min_size, max_size)
    resized = cv2.resize(frame_bgr.astype(np.float32), (w2, h2), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(normalize(resized, normalization))


def _resize_each(stack: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize`` (``INTER_LINEAR``) of every image of a stack ``[N, H, W(, C)]`` to ``[N, height, width(, C)]``."""
    if stack.shape[0] == 0:
        return np.zeros((0, height, width, *stack.shape[3:]), stack.dtype)
    return np.stack([cv2.resize(np.ascontiguousarray(x), (width, height), interpolation=cv2.INTER_LINEAR)
                     for x in stack])


@dataclass(frozen=True)
class TrainAugmentation:
    """Clip-consistent training augmentation: flip -> resize -> expand/crop -> normalise.

    Attributes:
        min_size, max_size: the resize (:func:`resize_shape`).
        flip: ``"horizontal"`` (default), ``"vertical"`` (the reference's flip) or ``"none"``.
        flip_prob: probability of flipping the clip.
        expand_prob: probability of the expand/crop step: ``s ~ U(0.5, 1.5)``; ``s <= 1`` shrinks the
            clip into the top-left of a canvas filled with the mean (0 after normalisation), ``s > 1``
            enlarges it and crops a random window of the resized size.
        normalization: see :func:`normalize`.
    """

    min_size: int = 384
    max_size: int = 640
    flip: FlipMode = "horizontal"
    flip_prob: float = 0.5
    expand_prob: float = 0.5
    normalization: Normalization = "reference"

    def __post_init__(self) -> None:
        if self.flip not in FLIP_MODES:
            raise ValueError(f"unknown flip {self.flip!r}; expected one of {FLIP_MODES}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; expected one of {NORMALIZATIONS}")

    def __call__(self, frames: Sequence[np.ndarray], masks: np.ndarray, boxes: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment one clip with the same random decisions for all ``T`` frames.

        Args:
            frames: ``T`` BGR frames ``uint8 [H, W, 3]`` of one video.
            masks: ``uint8 [n, T, H, W]`` 0/1 object masks (all-zero where an object is absent).
            boxes: ``float32 [n, T, 4]`` x1y1x2y2 normalised by ``(W, H)``; ``[0, 0, 0, 0]`` where absent.
            rng: the source of every random decision.

        Returns:
            ``images float32 [T, 3, H', W']`` (normalised), ``masks uint8 [n, T, H', W']`` and
            ``boxes float32 [n, T, 4]`` normalised by ``(W', H')``. A box that no longer has positive
            width and height (absent, or cropped away) is ``[0, 0, 0, 0]``.
        """
        n, t = masks.shape[:2]
        h, w = frames[0].shape[:2]
        images = np.stack(frames).astype(np.float32)  # [T, H, W, 3] BGR
        masks = masks.reshape(n * t, h, w)
        boxes = boxes.astype(np.float32).copy()
        present = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])

        if rng.random() < self.flip_prob and self.flip != "none":  # drawn always: same stream for every mode
            if self.flip == "vertical":
                images, masks = images[:, ::-1], masks[:, ::-1]
                boxes[..., 1], boxes[..., 3] = 1 - boxes[..., 3], 1 - boxes[..., 1]
            else:
                images, masks = images[:, :, ::-1], masks[:, :, ::-1]
                boxes[..., 0], boxes[..., 2] = 1 - boxes[..., 2], 1 - boxes[..., 0]

        h2, w2 = resize_shape(h, w, self.min_size, self.max_size)
        images = _resize_each(images, h2, w2)
        masks = _resize_each(masks, h2, w2)

        if rng.random() < self.expand_prob:
            images, masks, boxes = self._expand(images, masks, boxes, rng)

        boxes[~present] = 0
        boxes[(boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])] = 0
        normalised = np.stack([normalize(image, self.normalization) for image in images])
        return normalised, masks.reshape(n, t, h2, w2), boxes

    def _expand(self, images: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scale by ``s ~ U(0.5, 1.5)`` and paste into / crop out a window of the current size.

        ``images [T, H', W', 3]`` (BGR, not normalised), ``masks [nT, H', W']``, ``boxes [n, T, 4]``.
        """
        h2, w2 = images.shape[1:3]
        s = rng.uniform(0.5, 1.5)
        hs, ws = int(h2 * s), int(w2 * s)
        images = _resize_each(images, hs, ws)
        masks = _resize_each(masks, hs, ws)
        if s <= 1:
            canvas = np.empty((images.shape[0], h2, w2, 3), np.float32)
            canvas[:] = fill_value(self.normalization)
            canvas[:, :hs, :ws] = images
            mask_canvas = np.zeros((masks.shape[0], h2, w2), np.uint8)
            mask_canvas[:, :hs, :ws] = masks
            return canvas, mask_canvas, boxes * np.float32(s)
        top = int(rng.integers(0, hs - h2 + 1))
        left = int(rng.integers(0, ws - w2 + 1))
        scale = np.array([ws, hs, ws, hs], np.float32)
        offset = np.array([left, top, left, top], np.float32)
        size = np.array([w2, h2, w2, h2], np.float32)
        boxes = np.clip((boxes * scale - offset) / size, 0, 1).astype(np.float32)
        return images[:, top:top + h2, left:left + w2], masks[:, top:top + h2, left:left + w2], boxes
