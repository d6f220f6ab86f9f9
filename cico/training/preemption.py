"""Stopping a run on SIGTERM or SIGINT with a checkpoint, as cluster schedulers expect.

A scheduler sends SIGTERM to the job's processes and SIGKILL after a grace period. :class:`StopRequest`
turns the first SIGTERM/SIGINT into a flag; the loop finishes its current step, all processes agree on
the flag (it travels with the step's loss reduction), the main process writes a checkpoint of that
iteration marked ``interrupted``, and every process ends with :data:`INTERRUPTED_EXIT`. Further signals
only set the flag again, so a second Ctrl-C or SIGTERM during the save cannot cut it short (the write is
atomic anyway: a SIGKILL leaves the previous checkpoints intact).
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["INTERRUPTED_EXIT", "StopRequest", "TrainingInterrupted", "ignore_stop_signals"]

INTERRUPTED_EXIT = 75
"""Exit code of a run stopped by a signal after writing its checkpoint (``EX_TEMPFAIL``: try again)."""

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """A run stopped by SIGTERM/SIGINT after writing ``checkpoint``; resume it with ``--resume``."""

    def __init__(self, iteration: int, checkpoint: Path) -> None:
        self.iteration, self.checkpoint = iteration, checkpoint
        super().__init__(f"stopped by a signal after iteration {iteration}; checkpoint {checkpoint} "
                         "(continue with --resume)")


class StopRequest:
    """While active (a context manager), SIGTERM and SIGINT set :attr:`requested` instead of ending the
    process. Only the main thread can install signal handlers; elsewhere the request stays off."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers leave SIGTERM/SIGINT to the training process, which stops them."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
