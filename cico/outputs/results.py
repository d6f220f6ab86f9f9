"""The YouTube-VIS results file, written incrementally and moved into place when complete."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Protocol

from ..fileio import atomic_write


class ResultEntry(Protocol):
    """Anything that gives a YouTube-VIS results entry (a predicted track)."""

    def to_result(self) -> dict[str, Any]: ...


class ResultsWriter:
    """Writes a YouTube-VIS results list to ``path`` incrementally, video by video.

    Entries go to a temporary file (:class:`~cico.fileio.atomic_write`) that becomes ``path`` only in
    :meth:`close`, so an interrupted run never leaves a truncated results file (nor replaces an older
    complete one). Use it as a context manager: on an exception the temporary file is removed.
    """

    def __init__(self, path: str | Path) -> None:
        self._target = atomic_write(path)
        self.path = self._target.path
        self._file = open(self._target.tmp, "w", encoding="utf-8")
        self._file.write("[")
        self.count = 0

    def write(self, entries: Iterable[dict[str, Any] | ResultEntry]) -> None:
        """Append results entries (dicts, or tracks with a ``to_result()``)."""
        for entry in entries:
            result = entry if isinstance(entry, dict) else entry.to_result()
            self._file.write(("," if self.count else "") + json.dumps(result))
            self.count += 1

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        self._file.write("]\n")
        self._file.close()
        return self._target.commit()

    def abort(self) -> None:
        """Drop the partial file."""
        if not self._file.closed:
            self._file.close()
        self._target.discard()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
