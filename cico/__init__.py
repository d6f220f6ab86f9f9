"""cico: CiCo (Clip-in Clip-out) video instance segmentation."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# name -> module; imported on first use so that ``import cico`` stays light (no torch)
_LAZY = {"build_model": "cico.model.network", "load": "cico.inference.video"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cico' has no attribute {name!r}")
