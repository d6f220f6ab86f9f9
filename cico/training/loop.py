"""The iteration loop: micro-batches, the optimiser step, and the hooks between steps (metrics,
checkpoints, the periodic evaluation, a stop request).

One step: ``accumulate`` micro-batches of ``batch_size`` clips each go through the network (autocast on
GPU, and in bf16 on a CPU that computes it natively) and the CiCo losses (float32); each micro-batch's
loss is normalised on its own, its sum divided by ``accumulate`` goes backwards, DistributedDataParallel
averages over the processes (synchronising only on the last micro-batch), then the optimiser, the weight
average and the learning rate step. That is the reference's per-GPU loss followed by the mean over
``processes · accumulate`` GPUs.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..data.annotations import Annotations
from ..data.clips import ClipBatch, ClipDataset
from ..data.image_clips import MixedClipDataset
from ..errors import CicoError
from ..model.checkpoint import save_checkpoint
from ..model.network import CiCo
from ..threads import configure_worker
from .config import TrainConfig
from .distributed import Distributed
from .losses import CiCoLoss
from .preemption import StopRequest, TrainingInterrupted, ignore_stop_signals
from .run_log import LossWindow, RunLogger
from .sampler import EpochItems, RunOrder, collate_loads
from .state import TrainState, capture_rng, latest_checkpoint, restore_rng, save_state

__all__ = ["EvalRequest", "Evaluator", "LoopContext", "run_loop", "train_step", "too_many_failed_loads",
           "MIN_LOADS", "MAX_FAILED_SHARE"]

MIN_LOADS = 100
MAX_FAILED_SHARE = 0.01
"""The run stops when more than this share of its clip loads failed (counted from ``MIN_LOADS`` loads on)."""


@dataclass(frozen=True)
class EvalRequest:
    """A periodic evaluation: the held-out split, its frames, the clip overlap, and the folder for its
    ``results.json`` and numbers."""

    annotations: Annotations
    frames_dir: Path
    overlap: int
    out_dir: Path


Evaluator = Callable[[CiCo, EvalRequest], "dict[str, float] | None"]
"""Called on every process with the same model and request; returns the 12 YouTube-VIS numbers on the
main process (``None`` elsewhere). It may leave the model in eval mode."""


@dataclass(frozen=True)
class LoopContext:
    """What the loop reads and never changes."""

    cfg: TrainConfig
    env: Distributed
    device: torch.device
    amp_dtype: torch.dtype | None
    run_dir: Path
    total: int
    per_epoch: int
    criterion: CiCoLoss
    network: nn.Module
    """The module the forward runs through: the model, or its DistributedDataParallel wrapper."""
    logger: RunLogger
    val: Annotations | None = None
    held_out: bool = True
    evaluate: Evaluator | None = None


def too_many_failed_loads(failed: int, loads: int) -> bool:
    """Whether a run's failed clip loads are too many to go on (more than 1 % of at least 100)."""
    return loads >= MIN_LOADS and failed > MAX_FAILED_SHARE * loads


def _loader(ctx: LoopContext, dataset: ClipDataset | MixedClipDataset, start: int) -> DataLoader:
    cfg, env = ctx.cfg, ctx.env
    order = RunOrder(len(dataset), cfg.batch_size, cfg.seed, start, ctx.total, env.rank, env.world_size,
                     cfg.accumulate)
    return DataLoader(EpochItems(dataset), batch_size=cfg.batch_size, sampler=order,
                      collate_fn=partial(collate_loads, collate=dataset.collate_fn), num_workers=cfg.num_workers,
                      pin_memory=ctx.device.type == "cuda", drop_last=True, persistent_workers=False,
                      prefetch_factor=2 if cfg.num_workers else None,
                      worker_init_fn=_init_worker if cfg.num_workers else None)


def _init_worker(worker_id: int) -> None:
    """A loading worker leaves the stop signals to the training process and computes on one thread."""
    ignore_stop_signals(worker_id)
    configure_worker(worker_id)


def _steps(loader: DataLoader, accumulate: int) -> Iterator[list[tuple[ClipBatch, list[str]]]]:
    batches = iter(loader)
    while True:
        micro = [batch for _, batch in zip(range(accumulate), batches)]
        if len(micro) < accumulate:
            return
        yield micro


def run_loop(ctx: LoopContext, state: TrainState, dataset: ClipDataset | MixedClipDataset, stop: StopRequest) -> None:
    """Train from ``state.iteration`` to ``ctx.total``.

    Raises:
        TrainingInterrupted: a stop was requested; the checkpoint of the last finished step is written.
        CicoError: a non-finite loss, or too many clips whose frames failed to load (with a checkpoint).
    """
    cfg, env = ctx.cfg, ctx.env
    window = LossWindow()
    state.model.train()
    for micro in _steps(_loader(ctx, dataset, state.iteration), cfg.accumulate):
        stopping = train_step(ctx, state, micro, window, stop)
        iteration = state.iteration
        if iteration % cfg.log_every == 0 or iteration == ctx.total:
            _log(ctx, state, window)
        if too_many_failed_loads(state.failed_loads, state.loads):
            path = save_state(ctx.run_dir, state, cfg, env, ctx.per_epoch)
            raise CicoError(f"iteration {iteration}: {state.failed_loads} of {state.loads} clip loads failed "
                            f"(more than {MAX_FAILED_SHARE:.0%}); training stopped, checkpoint {path}")
        if stopping or iteration % cfg.checkpoint_every == 0 or iteration == ctx.total:
            path = save_state(ctx.run_dir, state, cfg, env, ctx.per_epoch, interrupted=stopping)
            if stopping:
                raise TrainingInterrupted(iteration, path)
        if ctx.val is not None and ctx.evaluate is not None and cfg.eval_every > 0 and (
                iteration % cfg.eval_every == 0 or iteration == ctx.total):
            _evaluate(ctx, state)
            state.model.train()


def train_step(ctx: LoopContext, state: TrainState, micro: list[tuple[ClipBatch, list[str]]], window: LossWindow,
               stop: StopRequest | None = None) -> bool:
    """One optimiser step over ``accumulate`` micro-batches; returns whether any process was asked to stop
    (by the time its backward passes were done).

    Raises:
        CicoError: a loss term is not finite (on every process; the weights are left unchanged).
    """
    cfg, env = ctx.cfg, ctx.env
    state.optimizer.zero_grad(set_to_none=True)
    sums: torch.Tensor | None = None
    names: list[str] = []
    failures: list[str] = []
    loads = 0
    for k, (batch, failed) in enumerate(micro):
        failures += failed
        loads += len(batch) + len(failed)
        batch = batch.to(ctx.device, non_blocking=True)
        last = k == len(micro) - 1
        sync = (ctx.network.no_sync() if isinstance(ctx.network, DistributedDataParallel) and not last
                else contextlib.nullcontext())
        autocast = (torch.autocast(ctx.device.type, dtype=ctx.amp_dtype) if ctx.amp_dtype is not None
                    else contextlib.nullcontext())
        with sync:
            with autocast:
                outputs = ctx.network(batch.images)
            losses = ctx.criterion(outputs.head, batch.boxes, batch.masks, batch.labels)
            state.scaler.scale(sum(losses.values()) / len(micro)).backward()
        names = list(losses)
        values = torch.stack([v.detach().float() for v in losses.values()])
        sums = values if sums is None else sums + values
    assert sums is not None
    requested = stop is not None and stop.requested
    shared = torch.cat([sums.cpu() / len(micro), torch.tensor([float(requested), len(failures), loads])])
    if env.world_size > 1:
        shared = shared.to(ctx.device)
        dist.all_reduce(shared)
        shared = shared.cpu()
        shared[:len(names)] /= env.world_size
    values, (stops, failed, loaded) = shared[:len(names)], shared[len(names):].tolist()
    iteration = state.iteration + 1
    for line in failures:
        ctx.logger.write(f"iteration {iteration}: a clip failed to load and was replaced: {line}", error=True)
    if not bool(torch.isfinite(values).all()):
        name, value = next((n, v) for n, v in zip(names, values.tolist()) if not math.isfinite(v))
        last_good = latest_checkpoint(ctx.run_dir)
        raise CicoError(f"iteration {iteration}: loss term '{name}' is {value}; training stopped "
                        f"(last good checkpoint: {last_good or 'none yet'}; try a lower lr or clip_grad_norm=10)")
    if cfg.clip_grad_norm > 0:
        state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), cfg.clip_grad_norm)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if state.ema is not None:
        state.ema.update(state.model, step=iteration)
    lr = state.optimizer.param_groups[0]["lr"]
    state.scheduler.step()
    state.iteration = iteration
    state.loads += int(loaded)
    state.failed_loads += int(failed)
    window.add(dict(zip(names, values.tolist())), lr)
    ctx.logger.progress(iteration, float(values.sum()), lr)
    return stops > 0


def _log(ctx: LoopContext, state: TrainState, window: LossWindow) -> None:
    flushed = window.flush(state.iteration, ctx.per_epoch)
    if flushed is not None:
        entry, scalars = flushed
        entry.update(loads=state.loads, failed_loads=state.failed_loads)
        ctx.logger.record(entry, scalars)


def _evaluate(ctx: LoopContext, state: TrainState) -> None:
    """The periodic evaluation on every process (the evaluator shards the videos), recorded by the main one;
    the generator states are restored afterwards so that evaluating does not change the training."""
    assert ctx.val is not None and ctx.evaluate is not None
    iteration = state.iteration
    request = EvalRequest(ctx.val, Path(ctx.cfg.val_frames), ctx.cfg.eval_overlap,
                          ctx.run_dir / "eval" / f"iter_{iteration:08d}")
    model = state.result_model
    if ctx.env.world_size > 1:
        # Batch-norm statistics are buffers that each process updated with its own clips (DDP sends rank 0's
        # at the next forward): every process evaluates rank 0's, the weights that are saved.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    rng = capture_rng()
    started = time.perf_counter()
    with torch.no_grad():
        stats = ctx.evaluate(model, request)
    restore_rng(rng)
    if ctx.env.is_main and stats is not None:
        entry = {"iteration": iteration, "eval": stats, "held_out": ctx.held_out,
                 "eval_seconds": time.perf_counter() - started, "eval_dir": str(request.out_dir)}
        ctx.logger.record(entry, {f"eval/{k}": v for k, v in stats.items()})
        improved = stats["AP"] > state.best["AP"]
        if improved:
            state.best = {"AP": stats["AP"], "iteration": iteration}
            save_checkpoint(ctx.run_dir / "best.pt", state.result_model, state.model_config, preset=ctx.cfg.preset,
                            summary={"iteration": iteration, "eval": stats, "held_out": ctx.held_out})
        kind = "held-out" if ctx.held_out else "NOT held-out (shares videos with the training set)"
        ctx.logger.write(f"iteration {iteration}: {kind} mask AP {stats['AP']:.3f} AP50 {stats['AP50']:.3f} "
                         f"AR10 {stats['AR10']:.3f}" + (" (best)" if improved else ""))
    ctx.env.barrier()
