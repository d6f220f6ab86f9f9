"""CodaLab submissions for the YouTube-VIS / OVIS evaluation servers.

The servers take a zip holding one file, ``results.json``, at its root: the YouTube-VIS results
list (``video_id``, ``category_id``, ``score``, ``segmentations`` per track). The zip is written
atomically (:class:`~cico.fileio.atomic_write`), so an interrupted write never leaves a truncated
submission nor replaces an older complete one.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import CicoError
from ..fileio import atomic_write
from .results import ResultEntry

_RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")


def _json_default(value: Any) -> Any:
    """JSON form of what results built in Python often hold: bytes RLE counts and numpy scalars."""
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _check_entries(entries: Sequence[Any], source: str) -> None:
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CicoError(f"result {i} must be an object, got {type(entry).__name__}", source)
        missing = [k for k in _RESULT_KEYS if k not in entry]
        if missing:
            raise CicoError(f"result {i} has no {', '.join(repr(k) for k in missing)}", source)
        if not isinstance(entry["segmentations"], list):
            raise CicoError(f"result {i}: 'segmentations' must be a list", source)


def write_submission(results: str | Path | Iterable[dict[str, Any] | ResultEntry], zip_path: str | Path) -> Path:
    """Write a CodaLab submission zip with ``results.json`` at its root, atomically.

    Args:
        results: a results JSON file (copied byte for byte after checking it is a results list),
            or the results entries (dicts, or tracks such as :class:`cico.inference.tracks.Track`); bytes RLE
            counts and numpy numbers are converted for JSON.
        zip_path: the zip to write (its folder is created).

    Returns:
        ``zip_path`` as a :class:`Path`.

    Raises:
        CicoError: the results file is missing, not JSON, or not a results list.
    """
    zip_path = Path(zip_path)
    entries: list[Any] | None = None
    if isinstance(results, (str, Path)):
        from ..data.annotations import read_json

        data = read_json(results)
        if not isinstance(data, list):
            raise CicoError(f"results must be a JSON list of tracks, got {type(data).__name__}", results)
        _check_entries(data, str(results))
        del data
    else:
        entries = [e if isinstance(e, dict) else e.to_result() for e in results]
        _check_entries(entries, "results")

    with atomic_write(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        if entries is None:
            archive.write(results, arcname="results.json")  # type: ignore[arg-type]
        else:
            with archive.open("results.json", "w") as raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
                text.write("[")
                for i, entry in enumerate(entries):
                    text.write(("," if i else "") + json.dumps(entry, default=_json_default))
                text.write("]")
    return zip_path
