"""Constants shared by the data pipeline and the model: the standard datasets' class lists and the input
normalisation.

The class lists are those of the official annotation files (their contiguous 1-based labels follow the
sorted category ids, ``1..C`` in this order); the reference presets name their classes with them.
"""
from __future__ import annotations

from typing import Literal, get_args

import numpy as np

YTVIS2019_CLASSES: tuple[str, ...] = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake", "monkey",
    "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear",
    "motorbike", "giraffe", "leopard", "fox", "deer", "owl", "surfboard", "airplane", "truck", "zebra",
    "tiger", "elephant", "snowboard", "boat", "shark", "mouse", "frog", "eagle", "earless seal", "tennis_racket",
)
YTVIS2021_CLASSES: tuple[str, ...] = (
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck",
    "earless_seal", "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda", "giraffe", "horse", "leopard",
    "lizard", "monkey", "motorbike", "mouse", "parrot", "person", "rabbit", "shark", "skateboard", "snake",
    "snowboard", "squirrel", "surfboard", "tennis_racket", "tiger", "train", "truck", "turtle", "whale", "zebra",
)
OVIS_CLASSES: tuple[str, ...] = (
    "person", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "poultry", "giant panda", "lizard", "parrot", "monkey", "rabbit", "tiger", "fish", "turtle",
    "bicycle", "motorcycle", "airplane", "boat", "vehicle",
)

Normalization = Literal["reference", "rgb"]
"""Input normalisation of a model: ``"reference"`` (the channel-order quirk) or ``"rgb"`` (correct)."""

NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)

# ImageNet mean/std in RGB order, as the reference's augmentations use them.
MEANS = np.array((123.675, 116.28, 103.53), dtype=np.float32)
STD = np.array((58.395, 57.12, 57.375), dtype=np.float32)
