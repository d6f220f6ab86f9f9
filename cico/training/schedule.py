"""The learning-rate schedule: linear warm-up, then the reference's step decay or a cosine.

``lr(it) = init + (base − init)·it/warmup`` for ``it <= warmup`` (the reference's
``(LR − 1e-4)·it/500 + 1e-4``, ``init`` absolute), afterwards

* ``step`` (the reference): ``base·gamma^k`` where ``k`` counts the milestones already passed. The
  milestones are fractions of the run: the reference decays ×0.1 at the start of epoch 9 of 12, i.e. at
  0.75 of the iterations, which stays meaningful for ``--iters`` runs and for other epoch counts;
* ``cosine``: ``base·(1 + cos(π·p))/2`` with ``p`` the fraction of the post-warm-up iterations done, from
  ``base`` down to 0 at the end of the run (milestones and gamma unused).

The schedule is a pure function of the iteration, so resuming is exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..errors import CicoError

__all__ = ["ScheduleConfig", "WarmupDecayLR", "scaled_lr"]

DECAYS = ("step", "cosine")


@dataclass
class ScheduleConfig:
    """Warm-up and decay (reference values).

    Attributes:
        warmup_iters: length of the linear warm-up (500).
        warmup_init: absolute learning rate at iteration 0 (1e-4).
        decay: ``step`` (the reference) or ``cosine``.
        milestones: fractions of the run at which the rate is multiplied by ``gamma`` ((0.75,) = epoch 9/12).
        gamma: decay factor (0.1).
    """

    warmup_iters: int = 500
    warmup_init: float = 1e-4
    decay: str = "step"
    milestones: tuple[float, ...] = (0.75,)
    gamma: float = 0.1


def scaled_lr(base_lr: float, total_batch: int, reference_batch: int = 24) -> float:
    """Linear scaling rule: ``base_lr · total_batch / reference_batch`` (the recipe: 4 GPUs × 6 clips).

    The reference does not autoscale; the trainer applies this only with ``scale_lr=True``.
    """
    return base_lr * total_batch / reference_batch


class WarmupDecayLR(LRScheduler):
    """Per-iteration scheduler: call ``step()`` after every optimiser step.

    Args:
        optimizer: the optimiser; every group's ``initial_lr`` is its base rate.
        total_iters: iterations of the whole run (milestones are fractions of it).
        cfg: warm-up and decay settings.
    """

    def __init__(self, optimizer: Optimizer, total_iters: int, cfg: ScheduleConfig | None = None,
                 last_epoch: int = -1) -> None:
        self.cfg = cfg or ScheduleConfig()
        if self.cfg.decay not in DECAYS:
            raise CicoError(f"schedule.decay: expected one of {', '.join(DECAYS)}, got {self.cfg.decay!r}")
        self.total_iters = total_iters
        self.milestone_iters = [round(m * total_iters) for m in self.cfg.milestones]
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, iteration: int) -> float:
        """The learning rate of iteration ``iteration`` (0-based) for a group whose base rate is ``base_lr``."""
        cfg = self.cfg
        if cfg.warmup_iters > 0 and iteration <= cfg.warmup_iters:
            return cfg.warmup_init + (base_lr - cfg.warmup_init) * iteration / cfg.warmup_iters
        if cfg.decay == "cosine":
            done = (iteration - cfg.warmup_iters) / max(self.total_iters - cfg.warmup_iters, 1)
            return base_lr * (1 + math.cos(math.pi * min(done, 1.0))) / 2
        passed = sum(iteration >= m for m in self.milestone_iters)
        return base_lr * cfg.gamma ** passed

    def get_lr(self) -> list[float | Tensor]:
        return [self.lr_at(float(base), self.last_epoch) for base in self.base_lrs]

    def state_dict(self) -> dict:
        """The position (plain values only, so checkpoints load with ``weights_only=True``); the schedule
        itself comes from the configuration."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs),
                "_last_lr": list(self._last_lr), "_step_count": self._step_count}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)
