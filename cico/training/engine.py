"""The training engine: one process, or ``torchrun --nproc_per_node=N`` for DistributedDataParallel.

Per iteration: a batch of clips (:class:`~cico.data.clips.ClipDataset`, order from
:class:`~cico.training.sampler.RunOrder`), the network forward (autocast on GPU, and in bf16 on a CPU
that computes it natively), the CiCo losses in float32, their plain sum backwards, the optimiser step
(SGD as the reference, or AdamW), the per-iteration learning rate. Each process normalises its own
losses and DDP averages the gradients, which is the reference's per-GPU loss followed by the mean over
GPUs.

Outputs in ``RUN_DIR``: ``checkpoints/iter_*.pt`` (complete, atomic, resumable, and usable as
``--weights``), ``final.pt`` (the last weights), ``best.pt`` (best held-out mask AP), ``metrics.jsonl``
(one JSON object per log interval and per evaluation), ``tb/`` (TensorBoard), ``config.json``.

Exact resume: the data order is a pure function of ``(seed, epoch)``, each clip's augmentation a pure
function of ``(seed, epoch, index)``, and a checkpoint holds the model, optimiser, scheduler, grad
scaler, iteration and every process's generator states; with ``deterministic=True`` a run killed at any
moment and resumed with ``--resume`` ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..data.annotations import Annotations, annotations_to_dict, load_annotations
from ..data.clips import ClipBatch, ClipDataConfig, ClipDataset
from ..errors import CicoError
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import ModelConfig, get_preset
from ..model.network import CiCo
from ..threads import configure_worker
from .config import TrainConfig, config_from_dict, config_to_dict
from .init import load_coco_init, load_imagenet_backbone, reference_init
from .losses import CiCoLoss
from .sampler import EpochItems, RunOrder, iterations_per_epoch
from .schedule import WarmupDecayLR, scaled_lr
from .state import (capture_rng, checkpoint_path, latest_checkpoint, load_training_state, prune_checkpoints,
                    restore_rng)

__all__ = ["Trainer", "train", "Distributed"]


@dataclass
class Distributed:
    """This process's place in the run (``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _device(cfg: TrainConfig, env: Distributed) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CicoError("device=cuda but no CUDA GPU is available")
    return torch.device("cuda", env.local_rank)


def _cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16: oneDNN convs about 2x faster)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check is not None and check() for check in checks)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    choice = cfg.amp
    if choice == "auto":
        if device.type == "cuda":
            choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            choice = "bf16" if _cpu_has_fast_bf16() else "none"
    dtypes = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if choice not in dtypes:
        raise CicoError(f"amp={cfg.amp!r}: expected auto, none, bf16 or fp16")
    if choice == "fp16" and device.type != "cuda":
        raise CicoError("amp=fp16 needs a GPU (use bf16 or none on CPU)")
    return dtypes[choice]


def _optimizer(cfg: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD on every parameter, one group (the reference), or AdamW (``optimizer=adamw``)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    raise CicoError(f"optimizer={cfg.optimizer!r}: expected sgd or adamw")


def _seed_process(seed: int, rank: int) -> None:
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2 ** 32)
    torch.manual_seed(seed + rank)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class Trainer:
    """A training run; :meth:`run` trains to the end (or resumes) and returns ``RUN_DIR/final.pt``.

    Args:
        cfg: the run's configuration.
        resume: continue from the newest checkpoint in ``cfg.out``; the stored configuration is used
            (only ``cfg.out`` is read from ``cfg``), with ``iters``/``epochs`` replaced when given.
    """

    def __init__(self, cfg: TrainConfig, resume: bool = False, iters: int | None = None,
                 epochs: int | None = None) -> None:
        self.env = Distributed.from_env()
        self.run_dir = Path(cfg.out)
        if not cfg.out:
            raise CicoError("no run folder: give --out RUN_DIR")
        self.resume_from = self._resume_point(resume)
        self.resume_state: dict[str, Any] | None = None
        if self.resume_from is not None:
            self.resume_state = load_training_state(self.resume_from)
            stored = config_from_dict(self.resume_state["train"]["config"])
            cfg = replace(stored, out=cfg.out, iters=stored.iters if iters is None else iters,
                          epochs=stored.epochs if epochs is None else epochs)
        self.cfg = cfg
        self.device = _device(cfg, self.env)
        self.amp_dtype = _amp_dtype(cfg, self.device)
        if cfg.sync_bn and self.env.world_size > 1 and self.device.type != "cuda":
            raise CicoError("sync_bn needs GPUs (PyTorch's SyncBatchNorm has no CPU implementation)")

    # -- set-up ---------------------------------------------------------------------------------

    def _resume_point(self, resume: bool) -> Path | None:
        latest = latest_checkpoint(self.run_dir)
        if resume:
            if latest is None:
                raise CicoError("--resume: no checkpoint to resume from in " f"{self.run_dir / 'checkpoints'}")
            return latest
        if latest is not None:
            raise CicoError("already holds checkpoints of a run; use --resume to continue it or choose "
                            "another --out", self.run_dir)
        return None

    def _datasets(self) -> tuple[ClipDataset, Annotations | None]:
        cfg = self.cfg
        if not cfg.train_ann or not cfg.train_frames:
            raise CicoError("no training data: give --ann FILE --frames DIR or --dataset NAME --data-root DIR")
        train_ann = load_annotations(cfg.train_ann)
        base = self._model_config(train_ann)
        data = ClipDataConfig(
            clip_frames=base.clip_frames, min_size=cfg.data.min_size or base.min_size,
            max_size=cfg.data.max_size or base.max_size, flip=cfg.data.flip, flip_prob=cfg.data.flip_prob,
            expand_prob=cfg.data.expand_prob, normalization=base.normalization,
            size_divisor=base.size_divisibility, seed=cfg.seed)
        val = load_annotations(cfg.val_ann) if cfg.val_ann else None
        if val is not None and val.category_ids != train_ann.category_ids:
            raise CicoError("the held-out split's categories differ from the training annotations", cfg.val_ann)
        return ClipDataset(train_ann, cfg.train_frames, data), val

    def _model_config(self, ann: Annotations) -> ModelConfig:
        overrides = dict(self.cfg.model)
        overrides.update(num_classes=ann.num_classes, class_names=ann.class_names)
        try:
            return get_preset(self.cfg.preset, **overrides)
        except (KeyError, TypeError, ValueError) as err:
            raise CicoError(f"model config: {err.args[0] if err.args else err}") from None

    def _build_model(self, config: ModelConfig) -> CiCo:
        cfg, env = self.cfg, self.env
        torch.manual_seed(cfg.seed)  # the same initial weights on every process
        model = CiCo(config)
        if cfg.reference_init:
            reference_init(model)
        notes = []
        if cfg.backbone_weights:
            loaded = load_imagenet_backbone(model, cfg.backbone_weights)
            notes.append(f"backbone {cfg.backbone_weights}: {loaded.summary()}")
        if cfg.init:
            notes.append(f"init {cfg.init}: {self._load_init(model, cfg.init)}")
        if env.is_main:
            for note in notes:
                print(note, flush=True)
        return model

    def _load_init(self, model: CiCo, path: str) -> str:
        """A cico checkpoint: copy every same-shaped tensor. Otherwise: a reference COCO checkpoint."""
        try:
            checkpoint = load_checkpoint(path)
        except CicoError:
            return load_coco_init(model, path, self.cfg.inflation).summary()
        own = model.state_dict()
        same = {k: v for k, v in checkpoint["model"].items() if k in own and own[k].shape == v.shape}
        if not same:
            raise CicoError("no tensor of this checkpoint fits the model", path)
        model.load_state_dict(same, strict=False)
        return f"{len(same)} of {len(own)} tensors copied from a cico checkpoint"

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> Path:
        """Train (or resume) to the configured length; returns ``RUN_DIR/final.pt``."""
        cfg, env = self.cfg, self.env
        if env.world_size > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        try:
            return self._run()
        finally:
            if env.world_size > 1 and dist.is_initialized():
                dist.destroy_process_group()

    def _run(self) -> Path:
        cfg, env = self.cfg, self.env
        dataset, val = self._datasets()
        model_config = self._model_config(dataset.annotations)
        model = self._build_model(model_config).to(self.device)
        if cfg.sync_bn and env.world_size > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        per_epoch = iterations_per_epoch(len(dataset), cfg.batch_size, env.world_size)
        if per_epoch < 1:
            raise CicoError(f"{len(dataset)} training clips cannot fill one batch of {cfg.batch_size} clips "
                            f"x {env.world_size} processes", cfg.train_ann)
        total = cfg.iters or cfg.epochs * per_epoch
        lr = scaled_lr(cfg.lr, cfg.batch_size * env.world_size, cfg.reference_batch) if cfg.scale_lr else cfg.lr
        optimizer = _optimizer(cfg, model, lr)
        scheduler = WarmupDecayLR(optimizer, total, cfg.schedule)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        criterion = CiCoLoss.for_model(model_config, cfg.loss)
        ema = _weight_average(cfg, model)

        start, best = 0, {"AP": -1.0, "iteration": 0}
        _seed_process(cfg.seed, env.rank)
        if self.resume_state is not None:
            state, self.resume_state = self.resume_state, None
            model.load_state_dict(state["model"])
            train = state["train"]
            optimizer.load_state_dict(train["optimizer"])
            scheduler.load_state_dict(train["scheduler"])
            scaler.load_state_dict(train["scaler"])
            if ema is not None:
                ema.module.load_state_dict(train["ema"])
            start, best = int(train["iteration"]), dict(train["best"])
            rng = train["rng"]
            if len(rng) == env.world_size:
                restore_rng(rng[env.rank])
            else:
                _seed_process(cfg.seed + start, env.rank)
            scheduler.total_iters = total
            scheduler.milestone_iters = [round(m * total) for m in cfg.schedule.milestones]

        ddp = model
        if env.world_size > 1:
            ddp = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        logger = _RunLogger(self.run_dir, env.is_main, start, total, per_epoch)
        if env.is_main:
            _write_json(self.run_dir / "config.json", {"train": config_to_dict(cfg),
                                                     "model": model_config.to_dict()})
            if self.resume_from is not None:
                print(f"resuming from {self.resume_from} (iteration {start} of {total})", flush=True)
        loop = _Loop(self, model, ddp, optimizer, scheduler, scaler, criterion, logger, model_config, val, best,
                     total, per_epoch, ema)
        try:
            loop.train(dataset, start)
        finally:
            logger.close()
        final = self.run_dir / "final.pt"
        if env.is_main:
            save_checkpoint(final, loop.result_model, model_config, preset=cfg.preset,
                            summary={"iterations": total, "best": loop.best, "weight_average": ema is not None})
            print(f"final weights: {final}" + (f" (best held-out mask AP {loop.best['AP']:.3f} at iteration "
                                                f"{loop.best['iteration']}: {self.run_dir / 'best.pt'})"
                                                if loop.best["AP"] >= 0 else ""), flush=True)
        env.barrier()
        return final


def _weight_average(cfg: TrainConfig, model: nn.Module) -> ModelEmaV3 | None:
    """The exponential moving average of ``model``'s weights and buffers (``None`` when ``ema_decay`` is 0).

    Updated after every optimiser step with the decay of the step's number (1-based), so a resumed run
    continues it exactly.
    """
    if cfg.ema_decay <= 0:
        return None
    return ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup_power > 0,
                      warmup_power=cfg.ema_warmup_power)


class _RunLogger:
    """tqdm progress, ``metrics.jsonl`` and TensorBoard, on the main process only."""

    def __init__(self, run_dir: Path, active: bool, start: int, total: int, per_epoch: int) -> None:
        self.active = active
        self.bar = None
        self.writer = None
        if not active:
            return
        from tqdm import tqdm

        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = run_dir / "metrics.jsonl"
        self._truncate(start)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start)
        self.bar = tqdm(total=total, initial=start, desc="train", unit="it", dynamic_ncols=True,
                        mininterval=1.0 if os.isatty(2) else 30.0)
        self.per_epoch = per_epoch

    def _truncate(self, start: int) -> None:
        """Drop the lines a killed run wrote after the checkpoint it resumes from."""
        if not self.metrics.exists():
            return
        kept = [line for line in self.metrics.read_text().splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= start]
        self.metrics.write_text("".join(line + "\n" for line in kept))

    def record(self, entry: dict[str, Any], scalars: dict[str, float]) -> None:
        if not self.active:
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

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class _Loop:
    """The iteration loop of one :class:`Trainer` run."""

    def __init__(self, trainer: Trainer, model: CiCo, ddp: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: WarmupDecayLR, scaler: torch.amp.GradScaler, criterion: CiCoLoss, logger: _RunLogger,
                 model_config: ModelConfig, val: Annotations | None, best: dict[str, Any], total: int,
                 per_epoch: int, ema: ModelEmaV3 | None) -> None:
        self.trainer, self.cfg, self.env, self.device = trainer, trainer.cfg, trainer.env, trainer.device
        self.model, self.ddp, self.optimizer, self.scheduler, self.scaler = model, ddp, optimizer, scheduler, scaler
        self.criterion, self.logger, self.model_config, self.val = criterion, logger, model_config, val
        self.best, self.total, self.per_epoch, self.ema = best, total, per_epoch, ema
        self.window: dict[str, list[float]] = {}
        self.window_start = time.perf_counter()

    def train(self, dataset: ClipDataset, start: int) -> None:
        cfg, env = self.cfg, self.env
        order = RunOrder(len(dataset), cfg.batch_size, cfg.seed, start, self.total, env.rank, env.world_size)
        loader = DataLoader(EpochItems(dataset), batch_size=cfg.batch_size, sampler=order,
                            collate_fn=dataset.collate_fn, num_workers=cfg.num_workers,
                            pin_memory=self.device.type == "cuda", drop_last=True,
                            persistent_workers=False, prefetch_factor=2 if cfg.num_workers else None,
                            worker_init_fn=configure_worker)
        self.model.train()
        iteration = start
        for batch in loader:
            self._step(batch, iteration)
            iteration += 1
            if iteration % cfg.log_every == 0 or iteration == self.total:
                self._log(iteration)
            if iteration % cfg.checkpoint_every == 0 or iteration == self.total:
                self._checkpoint(iteration)
            if self.val is not None and ((cfg.eval_every and iteration % cfg.eval_every == 0)
                                         or iteration == self.total):
                self._evaluate(iteration)

    def _step(self, batch: ClipBatch, iteration: int) -> None:
        batch = batch.to(self.device, non_blocking=True)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            outputs = self.ddp(batch.images)
        losses = self.criterion(outputs.head, batch.boxes, batch.masks, batch.labels)
        total = sum(losses.values())
        values = torch.stack([v.detach().float() for v in losses.values()])
        if self.env.world_size > 1:
            dist.all_reduce(values)
            values /= self.env.world_size
        if not bool(torch.isfinite(values).all()):
            name, value = next((n, v) for n, v in zip(losses, values.tolist()) if not math.isfinite(v))
            last = latest_checkpoint(self.trainer.run_dir)
            raise CicoError(f"iteration {iteration + 1}: loss term '{name}' is {value}; training stopped "
                            f"(last good checkpoint: {last or 'none yet'}; try a lower lr or "
                            "clip_grad_norm=10)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=iteration + 1)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        for name, value in zip(losses, values.tolist()):
            self.window.setdefault(name, []).append(value)
        self.window.setdefault("lr", []).append(lr)
        self.logger.progress(iteration + 1, float(values.sum()), lr)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return self.trainer.amp_dtype

    @property
    def result_model(self) -> CiCo:
        """The weights a run hands out (evaluation, ``best.pt``, ``final.pt``): the average when kept."""
        return self.ema.module if self.ema is not None else self.model

    def _log(self, iteration: int) -> None:
        if not self.window:
            return
        seconds = time.perf_counter() - self.window_start
        steps = len(self.window["lr"])
        means = {k: float(np.mean(v)) for k, v in self.window.items()}
        lr = means.pop("lr")
        loss = sum(means.values())
        entry = {"iteration": iteration, "epoch": (iteration - 1) // self.per_epoch, "lr": lr, "loss": loss,
                 **{f"loss_{k}": v for k, v in means.items()}, "iters_per_s": steps / max(seconds, 1e-9)}
        self.logger.record(entry, {"train/loss": loss, "train/lr": lr, "train/iters_per_s": entry["iters_per_s"],
                                   **{f"train/loss_{k}": v for k, v in means.items()}})
        self.window = {}
        self.window_start = time.perf_counter()

    def _checkpoint(self, iteration: int) -> None:
        env = self.env
        rng = capture_rng()
        if env.world_size > 1:
            gathered: list[Any] = [None] * env.world_size
            dist.all_gather_object(gathered, rng)
            rngs = gathered
        else:
            rngs = [rng]
        if env.is_main:
            train = {"iteration": iteration, "epoch": iteration // self.per_epoch,
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict(), "rng": rngs, "best": dict(self.best),
                     **({"ema": self.ema.module.state_dict()} if self.ema is not None else {}),
                     "data": {"seed": self.cfg.seed, "epoch": iteration // self.per_epoch,
                              "iteration_in_epoch": iteration % self.per_epoch,
                              "batch_size": self.cfg.batch_size, "world_size": env.world_size},
                     "config": config_to_dict(self.cfg)}
            save_checkpoint(checkpoint_path(self.trainer.run_dir, iteration), self.model, self.model_config,
                            preset=self.cfg.preset, train=train)
            prune_checkpoints(self.trainer.run_dir, self.cfg.keep_checkpoints)
        env.barrier()

    def _evaluate(self, iteration: int) -> None:
        env = self.env
        if env.is_main:
            rng = capture_rng()
            started = time.perf_counter()
            stats = evaluate_model(self.result_model, self.val, self.cfg.val_frames, self.cfg.eval_overlap)
            restore_rng(rng)
            self.model.train()
            entry = {"iteration": iteration, "eval": stats, "eval_seconds": time.perf_counter() - started}
            self.logger.record(entry, {f"eval/{k}": v for k, v in stats.items()})
            improved = stats["AP"] > self.best["AP"]
            if improved:
                self.best = {"AP": stats["AP"], "iteration": iteration}
                save_checkpoint(self.trainer.run_dir / "best.pt", self.result_model, self.model_config,
                                preset=self.cfg.preset, summary={"iteration": iteration, "eval": stats})
            self.logger.write(f"iteration {iteration}: held-out mask AP {stats['AP']:.3f} AP50 {stats['AP50']:.3f} "
                              f"AR10 {stats['AR10']:.3f}" + (" (best)" if improved else ""))
        env.barrier()


def evaluate_model(model: CiCo, annotations: Annotations, frames_dir: str | Path, overlap: int = 1) -> dict[str, float]:
    """The official YouTube-VIS metric of ``model`` on a split with ground truth (the 12 numbers).

    The model is left in eval mode.
    """
    from ..data.sources import dataset_videos
    from ..evaluation.ytvis import evaluate
    from ..inference.video import VideoPredictor

    predictor = VideoPredictor(model, overlap=overlap)
    with torch.no_grad():
        tracks = predictor.predict(dataset_videos(annotations, frames_dir), category_ids=annotations.category_ids)
    results = [track.to_result() for track in tracks]
    return dict(evaluate(annotations_to_dict(annotations), results).stats)


def train(cfg: TrainConfig, resume: bool = False, iters: int | None = None, epochs: int | None = None) -> Path:
    """Run (or resume) a training run; returns the path of its ``final.pt`` (see :class:`Trainer`)."""
    return Trainer(cfg, resume, iters, epochs).run()
