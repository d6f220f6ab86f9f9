"""User-facing errors.

Anything the user can fix (a broken JSON, a missing frame, a wrong checkpoint, an unreadable video)
raises :class:`CicoError` with one line that names the file and the problem. The command line prints
that line and exits with code 2, with no traceback; bugs still raise ordinary exceptions.
"""
from __future__ import annotations

from pathlib import Path


class CicoError(Exception):
    """A problem with the user's input, reported as one line and exit code 2."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.problem = " ".join(str(message).split())  # the message without the path
        text = f"{path}: {self.problem}" if path is not None else self.problem
        super().__init__(text)
