"""Models shipped inside the package, by name: the one place where ``--weights demo`` and ``cico.load("demo")``
become a file.

``demo`` is ``demo_tiny_yolact.safetensors``, the ``tiny_yolact`` network trained on synthetic videos
(see :mod:`cico.demo`).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import CicoError

SHIPPED_MODELS = {"demo": "demo_tiny_yolact.safetensors"}


def shipped_weights(name: str = "demo") -> Path:
    """Path of a model shipped inside the package (``demo``)."""
    if name not in SHIPPED_MODELS:
        raise CicoError(f"unknown shipped model {name!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    path = Path(str(resources.files("cico") / "weights" / SHIPPED_MODELS[name]))
    if not path.is_file():
        raise CicoError("the shipped model is missing from this installation (reinstall cico)", path)
    return path


def resolve_weights(weights: str | Path) -> Path:
    """The checkpoint file of a ``--weights`` value: a shipped model's name (unless a file of that name
    exists), else the path itself."""
    if str(weights) in SHIPPED_MODELS and not Path(weights).exists():
        return shipped_weights(str(weights))
    return Path(weights)
