"""CPU runtime policy: how many threads the network uses, how long idle threads spin before sleeping, and whether
torch's allocator asks for huge pages.

OpenMP worker threads (torch's intra-op pool, oneDNN) spin-wait between parallel regions. On an idle machine
that saves the wake-up latency; on a busy one a spinning thread burns the time slice another process (or a
descheduled sibling the barrier waits for) needs, and a run slows far more than its fair share. Sleeping at once
(``OMP_WAIT_POLICY=PASSIVE``) removes that collapse but pays a futex wake-up for every small operator. The
policy here spins briefly (``GOMP_SPINCOUNT``), long enough to bridge the gap between consecutive operators and
short enough that a thread gives its core up when there is nothing to do; ONNX Runtime's pool gets the same
thread count and its spinning follows the same choice.

Tensors of 2 MB and more are allocated on transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, torch's switch,
recommended by its CPU tuning guide): a clip's activations are hundreds of such tensors, a huge page faults in
2 MB at once, and a whole video's peak memory is lower with it at the same speed (measured in the README). The
kernel must allow it (``/sys/kernel/mm/transparent_hugepage/enabled`` ``always`` or ``madvise``); elsewhere the
switch does nothing.

:func:`configure` is called at start-up by the command line, :func:`cico.load` and the trainer (DataLoader
workers inherit the environment and :func:`configure_worker` keeps them at one thread). Whatever the user set
wins: ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``THP_MEM_ALLOC_ENABLE`` in the environment are
never touched, and once torch is imported (the user may have called ``torch.set_num_threads``; torch reads the
huge-page switch at its first allocation) only ONNX Runtime sessions follow the policy.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

DEFAULT_SPINCOUNT = 1000
"""Busy-wait iterations of an idle OpenMP thread before it sleeps (libgomp: 300 000, or 1000 when it has more
threads than cores)."""


@dataclass(frozen=True)
class ThreadPolicy:
    """Threads and spinning of the CPU compute pools, and torch's huge-page allocation.

    Attributes:
        threads: intra-op threads (``None``: the runtime's default, one per available core).
        spincount: OpenMP busy-wait iterations before sleeping (``None``: the runtime's default, 0: sleep at once).
        huge_pages: torch allocates tensors of 2 MB and more on transparent huge pages (``THP_MEM_ALLOC_ENABLE``).
    """

    threads: int | None = None
    spincount: int | None = DEFAULT_SPINCOUNT
    huge_pages: bool = True

    def environment(self) -> dict[str, str]:
        """The variables this policy sets (before torch and its OpenMP runtime load)."""
        env = {}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        if self.spincount is not None:
            env["GOMP_SPINCOUNT"] = str(self.spincount)
        env["THP_MEM_ALLOC_ENABLE"] = "1" if self.huge_pages else "0"
        return env

    def apply_onnxruntime(self, options: Any) -> None:
        """Set an ``onnxruntime.SessionOptions``' intra-op threads and spinning (spinning stays on only where the
        OpenMP threads are allowed a long spin)."""
        options.intra_op_num_threads = self.threads or available_cores()
        options.inter_op_num_threads = 1
        spin = self.spincount is None or self.spincount > DEFAULT_SPINCOUNT
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def current_policy() -> ThreadPolicy:
    """The policy in force: the user's environment where set, the default elsewhere."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        spincount: int | None = 0
    elif os.environ.get("OMP_WAIT_POLICY", "").upper() == "ACTIVE":
        spincount = None
    else:
        spincount = _int(os.environ.get("GOMP_SPINCOUNT"), DEFAULT_SPINCOUNT)
    huge_pages = os.environ.get("THP_MEM_ALLOC_ENABLE", "1").strip() == "1"
    return ThreadPolicy(_int(threads, None), spincount, huge_pages)


def configure(policy: ThreadPolicy | None = None) -> bool:
    """Apply ``policy`` (default :class:`ThreadPolicy`) to this process, leaving the user's choices alone.

    Only effective before torch (and so the OpenMP runtime) is imported: returns whether it applied.
    """
    if "torch" in sys.modules:
        return False
    environment = (policy or ThreadPolicy()).environment()
    if "OMP_WAIT_POLICY" in os.environ:  # the user's wait policy: a spin count would override it
        environment.pop("GOMP_SPINCOUNT", None)
    for name, value in environment.items():
        os.environ.setdefault(name, value)
    return True


def configure_worker(worker_id: int) -> None:
    """``worker_init_fn`` of data-loading workers: one compute thread each (torch's own default in DataLoader
    workers, extended to OpenCV's pool) so that workers do not compete with the training threads."""
    import cv2

    cv2.setNumThreads(1)


def _int(value: str | None, default: int | None) -> int | None:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
