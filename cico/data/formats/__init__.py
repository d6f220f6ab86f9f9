"""Annotation formats people already have, to and from the YouTube-VIS format.

Import (``cico import-data``): ``ytvos`` (YouTube-VOS/DAVIS PNG folders), ``mots`` (KITTI-MOTS and
MOTSChallenge text files, MOTS PNGs), ``labelme``, ``cvat`` (CVAT for video 1.1 XML) and ``coco`` (COCO
images, one-frame videos). Export (``cico export-data``): ``ytvos`` and ``mots``. One module per format,
each with ``read(src, options) -> ImportResult`` and, for export, ``write(videos, out, ...) -> warnings``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .base import ImportOptions, ImportResult

IMPORT_FORMATS = ("ytvos", "mots", "labelme", "cvat", "coco")
EXPORT_FORMATS = ("ytvos", "mots")


def import_dataset(fmt: str, src: str | Path, options: ImportOptions | None = None) -> ImportResult:
    """Read a dataset of format ``fmt`` at ``src`` as YouTube-VIS annotations (see :mod:`.base`)."""
    if fmt not in IMPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(IMPORT_FORMATS)}")
    src = Path(src)
    if not src.exists():
        from ...errors import CicoError

        raise CicoError("no such file or folder", src)
    module = importlib.import_module(f"{__name__}.{fmt}")
    return module.read(src, options or ImportOptions())
