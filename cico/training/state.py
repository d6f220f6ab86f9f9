"""Training checkpoints: atomic, complete, resumable, and usable as ``--weights`` by every command.

A training checkpoint is a cico checkpoint (:func:`cico.model.checkpoint.save_checkpoint`: write to a
temporary file, then rename) with the trainer's state added::

    {"format": "cico", "version": 1, "config": ModelConfig dict, "preset": name, "model": state_dict,
     "train": {"iteration", "epoch", "optimizer", "scheduler", "scaler", "rng": [per rank], "data",
               "config": the full training config, "best": {...}}}

Everything in it loads with ``torch.load(weights_only=True)``: RNG states are stored as tensors and
lists, never pickled objects. Periodic checkpoints are ``RUN_DIR/checkpoints/iter_00001234.pt``;
``--resume`` takes the newest one, ``--resume FILE`` a named one. A checkpoint written because the run
was stopped by a signal has ``"interrupted": true`` in its ``"train"`` entry. A SIGKILL during a write
leaves only a hidden temporary file, so the newest *complete* checkpoint is always intact.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import ModelEmaV3
from torch.amp import GradScaler

from ..errors import CicoError
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import ModelConfig
from ..model.network import CiCo
from .config import TrainConfig, config_to_dict
from .distributed import Distributed
from .schedule import WarmupDecayLR

__all__ = ["TrainState", "save_state", "restore_state", "capture_rng", "restore_rng", "checkpoint_path",
           "list_checkpoints", "latest_checkpoint", "prune_checkpoints", "load_training_state"]

_NAME = re.compile(r"^iter_(\d{8})\.pt$")
CHECKPOINT_DIR = "checkpoints"


def capture_rng() -> dict[str, Any]:
    """The Python, NumPy, torch and CUDA generator states of this process (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)  # the legacy tuple form
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(py_state), py_gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore the generator states written by :func:`capture_rng`."""
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    """``RUN_DIR/checkpoints/iter_{iteration:08d}.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / f"iter_{iteration:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The complete periodic checkpoints of a run, ``(iteration, path)`` by increasing iteration."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest periodic checkpoint of a run, or ``None``."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` periodic checkpoints (``keep <= 0`` keeps everything)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint; returns the whole cico checkpoint dict (with its ``"train"`` entry).

    Raises:
        CicoError: unreadable file, or a cico checkpoint without trainer state (e.g. a ``final.pt`` of
            another tool), which cannot be resumed.
    """
    checkpoint = load_checkpoint(path, map_location=map_location)
    if not isinstance(checkpoint.get("train"), dict):
        raise CicoError("a cico checkpoint without trainer state; it can initialise a run (--weights) "
                        "but not resume one", path)
    return checkpoint


@dataclass
class TrainState:
    """Everything a checkpoint holds about a run in progress (the model is also its ``"model"`` entry).

    Attributes:
        iteration: optimiser steps done.
        best: ``{"AP", "iteration"}`` of the best periodic evaluation (AP -1: none yet).
        loads, failed_loads: clip loads of the run and those that failed to decode (all processes).
    """

    model: CiCo
    model_config: ModelConfig
    optimizer: torch.optim.Optimizer
    scheduler: WarmupDecayLR
    scaler: GradScaler
    ema: ModelEmaV3 | None
    iteration: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"AP": -1.0, "iteration": 0})
    loads: int = 0
    failed_loads: int = 0

    @property
    def result_model(self) -> CiCo:
        """The weights a run hands out (evaluation, ``best.pt``, ``final.pt``): the average when kept."""
        return self.ema.module if self.ema is not None else self.model


def save_state(run_dir: Path, state: TrainState, cfg: TrainConfig, env: Distributed, per_epoch: int,
               interrupted: bool = False) -> Path:
    """Write ``RUN_DIR/checkpoints/iter_N.pt`` from the main process (every process must call it: the
    generator states are gathered) and prune the old ones; returns its path."""
    rng = capture_rng()
    rngs: list[Any] = [rng]
    if env.world_size > 1:
        rngs = [None] * env.world_size
        dist.all_gather_object(rngs, rng)
    path = checkpoint_path(run_dir, state.iteration)
    if env.is_main:
        iteration = state.iteration
        train = {"iteration": iteration, "epoch": iteration // per_epoch, "interrupted": interrupted,
                 "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
                 "scaler": state.scaler.state_dict(), "rng": rngs, "best": dict(state.best),
                 "loads": [state.loads, state.failed_loads],
                 **({"ema": state.ema.module.state_dict()} if state.ema is not None else {}),
                 "data": {"seed": cfg.seed, "epoch": iteration // per_epoch,
                          "iteration_in_epoch": iteration % per_epoch, "batch_size": cfg.batch_size,
                          "accumulate": cfg.accumulate, "world_size": env.world_size},
                 "config": config_to_dict(cfg)}
        save_checkpoint(path, state.model, state.model_config, preset=cfg.preset, train=train)
        prune_checkpoints(run_dir, cfg.keep_checkpoints)
    env.barrier()
    return path


def restore_state(state: TrainState, checkpoint: dict[str, Any], env: Distributed) -> bool:
    """Load a checkpoint's model and trainer state into ``state``; returns whether the generator states
    could be restored (the same number of processes), else the caller reseeds."""
    state.model.load_state_dict(checkpoint["model"])
    train = checkpoint["train"]
    state.optimizer.load_state_dict(train["optimizer"])
    state.scheduler.load_state_dict(train["scheduler"])
    state.scaler.load_state_dict(train["scaler"])
    if state.ema is not None:
        state.ema.module.load_state_dict(train["ema"])
    state.iteration, state.best = int(train["iteration"]), dict(train["best"])
    state.loads, state.failed_loads = (int(n) for n in train.get("loads", (0, 0)))
    rng = train["rng"]
    if len(rng) != env.world_size:
        return False
    restore_rng(rng[env.rank])
    return True
