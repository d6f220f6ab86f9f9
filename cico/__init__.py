"""cico: CiCo (Clip-in Clip-out) video instance segmentation.

``cico.load(weights)`` gives a video predictor (``.predict(source)`` returns typed tracks),
``cico.build_model(preset)`` the bare network, ``cico.evaluate(gt, results)`` the official
YouTube-VIS metric. Heavy modules (torch) are imported on first use, so ``import cico`` stays light.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .inference.predictor import VideoPredictor

# name -> module; imported on first use
_LAZY = {"build_model": "cico.model.network", "evaluate": "cico.evaluation"}

__all__ = ["__version__", "load", *_LAZY]


def load(weights: str | Path = "demo", device: str = "cpu", **options: Any) -> VideoPredictor:
    """A video predictor for a cico checkpoint, or for a model shipped with cico by name (``"demo"``).

    Args:
        weights: a cico checkpoint (``.pt``/``.pth``/``.safetensors``: a training run's ``final.pt``, a
            converted published checkpoint), an ONNX export of one (``.onnx``, run with ONNX Runtime) or the name
            of a shipped model.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        options: passed to :class:`cico.inference.predictor.VideoPredictor` (``overlap``, ``batch_clips``,
            ``amp``, ``channels_last``, ``score_thresh``, ...).
    """
    from .inference.predictor import load as load_predictor
    from .threads import configure

    configure()  # the CPU thread policy, unless torch is already loaded (the user's settings stand)

    return load_predictor(weights, device, **options)  # the checkpoint reader resolves shipped names


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cico' has no attribute {name!r}")
