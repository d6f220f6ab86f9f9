"""Helpers for the video-inference tests: a tiny model that detects something, and synthetic videos."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from cico.media import Mp4Writer
from cico.model.checkpoint import save_checkpoint
from cico.model.network import CiCo, build_model

CLASS_NAMES = ("disc", "square")


def tiny_model(seed: int = 0, conf_bias: float = -1.75) -> CiCo:
    """A randomly initialised ``tiny_yolact`` at 64x96 input with 2 classes, in eval mode.

    Its class bias is raised from the focal prior (-4.6) so that some anchors pass the 0.1 threshold
    and the clips get a few tens of detections (random-init weights, so they are not meaningful).
    """
    torch.manual_seed(seed)
    model = build_model("tiny_yolact", min_size=64, max_size=96, num_classes=2, class_names=CLASS_NAMES)
    with torch.no_grad():
        model.head.conf_layer.bias.fill_(conf_bias)
    return model.eval()


def tiny_checkpoint(path: Path, **kwargs) -> Path:
    """Save :func:`tiny_model` as a cico checkpoint."""
    return save_checkpoint(path, tiny_model(**kwargs), preset="tiny_yolact")


def disc_frames(n: int, size: tuple[int, int] = (90, 160)) -> list[np.ndarray]:
    """``n`` BGR frames of a disc and a square moving over a grey background."""
    h, w = size
    frames = []
    for i in range(n):
        image = np.full((h, w, 3), 60, np.uint8)
        cv2.circle(image, (w // 6 + 6 * i, h // 2), h // 6, (0, 200, 255), -1)
        cv2.rectangle(image, (w - w // 4 - 4 * i, h // 5), (w - w // 10 - 4 * i, h // 2), (255, 80, 0), -1)
        frames.append(image)
    return frames


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 10.0, faststart: bool = True) -> Path:
    """Encode ``frames`` (BGR) as an H.264 mp4."""
    with Mp4Writer(path, fps, faststart=faststart) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def write_frames(folder: Path, frames: list[np.ndarray], suffix: str = ".png") -> Path:
    """Write ``frames`` as ``folder/00000.png`` ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}{suffix}"), frame)
    return folder
