"""Atomic file writing: every file cico writes appears complete or not at all.

A writer fills a temporary file beside the target (same folder, so the rename stays on one file system,
hidden, with the target's suffix so that format-sniffing writers such as ``cv2.imwrite`` and PyAV still
work); :meth:`atomic_write.commit` flushes it to disk and renames it over the target. An interruption
or an error discards the temporary file and leaves an older complete file in place.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType


class atomic_write:  # noqa: N801 (used like a function, as contextlib's context managers)
    """A temporary path that becomes ``path`` when the writing succeeds.

    As a context manager it yields the temporary :class:`~pathlib.Path`; on a clean exit the file is
    committed, on an exception discarded::

        with atomic_write(path) as tmp:
            tmp.write_text(text)

    Streaming writers keep the object and call :meth:`commit` or :meth:`discard` themselves.

    Args:
        path: the target file; its folder is created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix}")

    def commit(self) -> Path:
        """Flush the temporary file to disk and rename it to the target; returns the target."""
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (if any)."""
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()
