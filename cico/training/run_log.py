"""What a run reports: tqdm progress, ``metrics.jsonl`` and TensorBoard, on the main process only."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write

__all__ = ["RunLogger", "LossWindow", "write_json"]


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


class RunLogger:
    """Progress bar, ``RUN_DIR/metrics.jsonl`` (one JSON object per line) and ``RUN_DIR/tb``.

    Inactive (every method a no-op) on the processes other than the main one.
    """

    def __init__(self, run_dir: Path, active: bool, start: int, total: int, per_epoch: int) -> None:
        self.active = active
        self.bar = None
        self.writer = None
        self.per_epoch = per_epoch
        if not active:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = run_dir / "metrics.jsonl"
        self._truncate(start)
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start)
        self.bar = tqdm(total=total, initial=start, desc="train", unit="it", dynamic_ncols=True,
                        mininterval=1.0 if os.isatty(2) else 30.0)

    def _truncate(self, start: int) -> None:
        """Drop the lines a stopped run wrote after the checkpoint it resumes from."""
        if not self.metrics.exists():
            return
        kept = [line for line in self.metrics.read_text().splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= start]
        self.metrics.write_text("".join(line + "\n" for line in kept))

    def record(self, entry: dict[str, Any], scalars: dict[str, float]) -> None:
        """Append ``entry`` to ``metrics.jsonl`` and ``scalars`` to TensorBoard at ``entry["iteration"]``."""
        if self.writer is None:
            return
        with self.metrics.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, entry["iteration"])
        self.writer.flush()

    def progress(self, iteration: int, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", epoch=iteration // self.per_epoch,
                                 refresh=False)
            self.bar.update(1)

    def write(self, text: str, error: bool = False) -> None:
        """A line of text (to stderr with ``error``) that does not break the progress bar; on the processes
        without a bar, ``error`` lines are printed and the others dropped."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr if error else None)
        elif error:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class LossWindow:
    """The per-step losses and learning rates since the last metrics line."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.started = time.perf_counter()

    def add(self, losses: dict[str, float], lr: float) -> None:
        for name, value in losses.items():
            self.values.setdefault(name, []).append(value)
        self.values.setdefault("lr", []).append(lr)

    def flush(self, iteration: int, per_epoch: int) -> tuple[dict[str, Any], dict[str, float]] | None:
        """The metrics entry and TensorBoard scalars of the window, which then starts again (``None``: empty)."""
        if not self.values:
            return None
        seconds = time.perf_counter() - self.started
        steps = len(self.values["lr"])
        means = {k: float(np.mean(v)) for k, v in self.values.items()}
        lr = means.pop("lr")
        loss = sum(means.values())
        entry = {"iteration": iteration, "epoch": (iteration - 1) // per_epoch, "lr": lr, "loss": loss,
                 **{f"loss_{k}": v for k, v in means.items()}, "iters_per_s": steps / max(seconds, 1e-9)}
        scalars = {"train/loss": loss, "train/lr": lr, "train/iters_per_s": entry["iters_per_s"],
                   **{f"train/loss_{k}": v for k, v in means.items()}}
        self.values = {}
        self.started = time.perf_counter()
        return entry, scalars
