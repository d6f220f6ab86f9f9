"""The training run: one process, or ``torchrun --nproc_per_node=N`` for DistributedDataParallel.

:func:`train` sets the run up (:mod:`~cico.training.setup`), restores a checkpoint when resuming
(:mod:`~cico.training.state`), runs the loop (:mod:`~cico.training.loop`) and writes the final weights.
The periodic evaluation is a callable given by the caller (the command line builds one that shards the
held-out videos over the processes), so training depends on no inference code.

Outputs in ``RUN_DIR``: ``checkpoints/iter_*.pt`` (complete, atomic, resumable, and usable as
``--weights``), ``final.pt`` (the last weights), ``best.pt`` (best held-out mask AP), ``eval/iter_*/``
(each periodic evaluation's ``results.json`` and numbers), ``metrics.jsonl`` (one JSON object per log
interval and per evaluation), ``tb/`` (TensorBoard), ``config.json``.

Exact resume: the data order is a pure function of ``(seed, epoch)``, each clip's augmentation a pure
function of ``(seed, epoch, index)``, and a checkpoint holds the model, optimiser, scheduler, grad
scaler, iteration and every process's generator states; with ``deterministic=True`` a run stopped at any
moment (SIGKILL, or SIGTERM/SIGINT, which writes a checkpoint of the current step) and resumed with
``--resume`` ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import CicoError
from ..model.checkpoint import save_checkpoint
from .config import TrainConfig, config_from_dict, config_to_dict
from .distributed import Distributed, process_group
from .loop import Evaluator, LoopContext, run_loop
from .losses import CiCoLoss
from .preemption import StopRequest
from .run_log import RunLogger, write_json
from .sampler import iterations_per_epoch
from .schedule import WarmupDecayLR, scaled_lr
from .setup import amp_dtype, build_model, build_optimizer, device_for, frozen_bn, load_data, seed_process
from .state import TrainState, latest_checkpoint, load_training_state, restore_state

__all__ = ["train", "resume_point"]


def resume_point(run_dir: Path, resume: bool | str | Path) -> Path | None:
    """The checkpoint a run continues from: a named file, the newest of ``RUN_DIR`` (``True``), or none.

    Raises:
        CicoError: nothing to resume from, or a fresh run in a folder that holds a run's checkpoints.
    """
    if resume is not True and resume:
        path = Path(resume)
        if not path.is_file():
            raise CicoError("--resume: checkpoint not found", path)
        return path
    latest = latest_checkpoint(run_dir)
    if resume:
        if latest is None:
            raise CicoError(f"--resume: no checkpoint to resume from in {run_dir / 'checkpoints'}")
        return latest
    if latest is not None:
        raise CicoError("already holds checkpoints of a run; use --resume to continue it or choose another --out",
                        run_dir)
    return None


def train(cfg: TrainConfig, resume: bool | str | Path = False, iters: int | None = None, epochs: int | None = None,
          evaluate: Evaluator | None = None) -> Path:
    """Run (or resume) a training run; returns ``RUN_DIR/final.pt``.

    Args:
        cfg: the run's configuration. When resuming, the stored configuration is used (only ``cfg.out`` is
            read from ``cfg``), with ``iters``/``epochs`` replaced when given.
        resume: ``True``: continue from the newest checkpoint of ``cfg.out``; a path: from that checkpoint.
        evaluate: the periodic evaluation on the held-out split (``None``: none).

    Raises:
        TrainingInterrupted: SIGTERM/SIGINT stopped the run after writing a checkpoint.
        CicoError: a user error (data, configuration, a non-finite loss, ...).
    """
    if not cfg.out:
        raise CicoError("no run folder: give --out RUN_DIR")
    run_dir = Path(cfg.out)
    resume_from = resume_point(run_dir, resume)
    checkpoint = load_training_state(resume_from) if resume_from is not None else None
    if checkpoint is not None:
        stored = config_from_dict(checkpoint["train"]["config"])
        cfg = replace(stored, out=cfg.out, iters=stored.iters if iters is None else iters,
                      epochs=stored.epochs if epochs is None else epochs)
    if cfg.accumulate < 1:
        raise CicoError(f"accumulate={cfg.accumulate}: expected 1 or more micro-batches per step")
    env = Distributed.from_env()
    device = device_for(cfg, env)
    autocast = amp_dtype(cfg, device)
    if cfg.sync_bn and env.world_size > 1 and device.type != "cuda":
        raise CicoError("sync_bn needs GPUs (PyTorch's SyncBatchNorm has no CPU implementation)")
    with process_group(env, device), StopRequest() as stop:
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        return _run(cfg, env, device, autocast, run_dir, checkpoint, resume_from, evaluate, stop)


def _run(cfg: TrainConfig, env: Distributed, device: torch.device, autocast: torch.dtype | None, run_dir: Path,
         checkpoint: dict | None, resume_from: Path | None, evaluate: Evaluator | None, stop: StopRequest) -> Path:
    frozen, frozen_note = frozen_bn(cfg)
    data = load_data(cfg, frozen)
    held_out = data.shared == 0
    if env.is_main:
        if data.val is not None and not held_out:
            print(f"warning: the periodic evaluation set {cfg.val_ann} shares {data.shared} of its "
                  f"{len(data.val.videos)} videos with the training set: its AP is not a held-out number "
                  "(train on train_sub and evaluate on valid_sub, see 'cico split')", flush=True)
        print(frozen_note, flush=True)
        if data.note:
            print(data.note, flush=True)
    model, notes = build_model(cfg, data.model)
    model = model.to(device)
    if cfg.sync_bn and env.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    dataset = data.train
    per_epoch = iterations_per_epoch(len(dataset), cfg.batch_size, env.world_size, cfg.accumulate)
    if per_epoch < 1:
        raise CicoError(f"{len(dataset)} training clips cannot fill one batch of {cfg.batch_size} clips x "
                        f"{env.world_size} processes x {cfg.accumulate} micro-batches", cfg.train_ann)
    total = cfg.iters or cfg.epochs * per_epoch
    clips = cfg.batch_size * cfg.accumulate * env.world_size
    lr = scaled_lr(cfg.lr, clips, cfg.reference_batch) if cfg.scale_lr else cfg.lr
    optimizer = build_optimizer(cfg, model, lr)
    ema = (ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup_power > 0,
                      warmup_power=cfg.ema_warmup_power) if cfg.ema_decay > 0 else None)
    state = TrainState(model, data.model, optimizer, WarmupDecayLR(optimizer, total, cfg.schedule),
                       torch.amp.GradScaler(device.type, enabled=autocast == torch.float16), ema)
    seed_process(cfg.seed, env.rank)
    if checkpoint is not None:
        if not restore_state(state, checkpoint, env):
            seed_process(cfg.seed + state.iteration, env.rank)
        state.scheduler.total_iters = total
        state.scheduler.milestone_iters = [round(m * total) for m in cfg.schedule.milestones]
    network: nn.Module = model
    if env.world_size > 1:
        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    logger = RunLogger(run_dir, env.is_main, state.iteration, total, per_epoch)
    if env.is_main:
        for note in notes:
            print(note, flush=True)
        write_json(run_dir / "config.json", {"train": config_to_dict(cfg), "model": data.model.to_dict(),
                                             "held_out": held_out})
        if resume_from is not None:
            print(f"resuming from {resume_from} (iteration {state.iteration} of {total})", flush=True)
    ctx = LoopContext(cfg, env, device, autocast, run_dir, total, per_epoch,
                      CiCoLoss.for_model(data.model, cfg.loss), network, logger, data.val, held_out, evaluate)
    try:
        run_loop(ctx, state, dataset, stop)
    finally:
        logger.close()
    final = run_dir / "final.pt"
    if env.is_main:
        best = state.best
        save_checkpoint(final, state.result_model, data.model, preset=cfg.preset,
                        summary={"iterations": total, "best": best, "weight_average": ema is not None})
        print(f"final weights: {final}" + (f" (best {'held-out' if held_out else 'NOT held-out'} mask AP "
                                            f"{best['AP']:.3f} at iteration {best['iteration']}: "
                                            f"{run_dir / 'best.pt'})" if best["AP"] >= 0 else ""), flush=True)
    env.barrier()
    return final
