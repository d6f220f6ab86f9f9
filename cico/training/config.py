"""The trainer's configuration: one dataclass, the named recipes, and ``KEY=VALUE`` overrides.

Recipes (``--recipe``; ``auto`` picks ``tiny`` for the ``tiny_*`` presets, else ``reference``):

* ``reference``: the published recipe: 6 clips of 3 frames per GPU (the README trains on
  4 GPUs, 24 clips per iteration), SGD lr 1e-3, momentum 0.9, weight decay 1e-4 on every parameter,
  500-iteration linear warm-up from 1e-4, ×0.1 at epoch 9 of 12, the reference's vertical flip and
  Xavier initialisation, no gradient clipping, a checkpoint and an evaluation every 2500 iterations, and
  ``model.frozen_bn=auto``: the backbone's batch norms are frozen below 4 clips per process, as the
  reference's ``freeze_bn``.
  The reference does not scale the learning rate with the number of GPUs; ``scale_lr=true`` applies
  the linear rule ``lr · (clips per iteration) / 24`` (e.g. 2.5e-4 on one GPU with 6 clips).
* ``tiny``: the CPU recipe of the ``tiny_*`` presets (the shipped demo model), see :data:`RECIPES`.
* ``finetune``: fine-tuning a cico checkpoint on a few classes, on top of the preset's recipe (``tiny``
  or ``reference``), see :data:`RECIPES`.

Overrides are ``KEY=VALUE`` with dotted keys into the dataclass (``lr=0.01``,
``schedule.warmup_iters=100``, ``loss.mask_weight=3``, ``data.flip=vertical``); ``model.KEY=VALUE`` sets
a field of the network's :class:`~cico.model.config.ModelConfig` (``model.min_size=128``).
"""
from __future__ import annotations

import ast
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from ..data.image_clips import ImageClipOptions
from ..data.transforms import FlipMode, TrainAugmentation
from ..errors import CicoError
from ..model.config import ModelConfig
from .init import InflationConfig
from .losses import LossConfig
from .schedule import ScheduleConfig

__all__ = ["DataOptions", "TrainConfig", "RECIPES", "recipe_for", "make_config", "apply_overrides",
           "config_to_dict", "config_from_dict"]


@dataclass
class DataOptions:
    """Training-clip options (:class:`~cico.data.clips.ClipDataConfig`); sizes 0 mean the model's.

    Attributes:
        flip: ``"vertical"`` (the reference), ``"horizontal"`` or ``"none"``.
        flip_prob, expand_prob: probabilities of the flip and of the expand/crop step.
        min_size, max_size: training resize; 0 takes the model's test size (the reference uses the same).
    """

    flip: FlipMode = "vertical"
    flip_prob: float = 0.5
    expand_prob: float = 0.5
    min_size: int = 0
    max_size: int = 0

    def augmentation(self, model: ModelConfig) -> TrainAugmentation:
        """The clip augmentation of these options for a network (its test size and normalisation)."""
        return TrainAugmentation(min_size=self.min_size or model.min_size, max_size=self.max_size or model.max_size,
                                 flip=self.flip, flip_prob=self.flip_prob, expand_prob=self.expand_prob,
                                 normalization=model.normalization)


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in every checkpoint.

    Attributes:
        preset: the network preset; ``model`` holds :class:`ModelConfig` overrides (the number of
            classes and their names always come from the training annotations); ``frozen_bn`` may be
            ``"auto"``: frozen backbone batch norm below 4 clips per process, as the reference.
        recipe: the recipe these values started from (informational).
        train_ann, train_frames: the training annotations and the folder their ``file_names`` are
            relative to. ``val_ann``/``val_frames``: the held-out split for the periodic evaluation
            (empty: no evaluation).
        out: the run folder.
        iters: iterations of the run; 0 means ``epochs`` full passes (``⌊clips / batch⌋`` iterations each).
        batch_size: clips per process per micro-batch (one network forward).
        accumulate: micro-batches per optimiser step. Micro-batch ``k`` of process ``r`` holds the clips
            that process ``r·accumulate + k`` of a run with ``accumulate`` times more processes would get,
            each micro-batch's loss is normalised on its own and the gradients are averaged: the same
            step as that larger DistributedDataParallel run.
        optimizer: ``sgd`` (the reference) or ``adamw``.
        lr, momentum, weight_decay: the optimiser's settings; SGD (and AdamW) update every parameter in
            one group, weight decay included, as the reference does.
        scale_lr: multiply ``lr`` by ``batch_size · accumulate · processes / reference_batch``.
        amp: mixed precision of the network forward (losses are always float32): ``auto`` (bf16 on a GPU
            that has it, else fp16 with a grad scaler; on CPU bf16 where it is native, AMX or AVX512-BF16,
            else float32), ``none``, ``bf16`` or ``fp16`` (GPU only).
        clip_grad_norm: clip the gradient norm to this (0: off, the reference).
        ema_decay: keep an exponential moving average of the weights (timm's ``ModelEmaV3``) with this
            decay (0: off, the reference); the periodic evaluation, ``best.pt`` and ``final.pt`` then use
            the averaged weights, and the checkpoints hold both.
        ema_warmup_power: with EMA, the decay at step ``s`` is ``min(ema_decay, 1 − (1 + s)^−power)``, so
            the average forgets the random start quickly (0: the fixed ``ema_decay`` from the start).
        sync_bn: synchronise batch norm over the processes (GPU only).
        seed: seeds the data order, the augmentation and the per-process generators.
        deterministic: deterministic algorithms (a killed and resumed run then reaches the same weights).
        checkpoint_every, keep_checkpoints: periodic checkpoints, and how many stay on disk (0: all, as the
            reference).
        eval_every: periodic evaluation on the held-out split, also at the end of the run (0: none).
        eval_overlap: frames shared by consecutive clips at evaluation (the reference uses 1).
        log_every: iterations per metrics line.
        num_workers: DataLoader worker processes per training process.
        reference_init: Xavier-initialise every conv/linear layer first (the reference).
        init: a reference frame-level COCO checkpoint (2D→3D inflation) or a cico checkpoint.
        backbone_weights: a local ImageNet file: torchvision ResNet ``.pth`` or timm/Microsoft Swin-T.
        freeze_at: freeze the first N backbone stages (1: the stem, ... 5: the whole backbone; 0: none),
            see :func:`~cico.training.finetune.freeze_backbone`.
        images: COCO-format image datasets trained on as pseudo-clips (``images.ann``, ``images.frames``,
            ``images.ratio``, the jitter), see :class:`~cico.data.image_clips.ImageClipOptions`.
        device: ``auto`` (the process's GPU when there is one), ``cpu`` or ``cuda``.
    """

    preset: str = "cico_yolact_r50_yt19"
    model: dict[str, Any] = field(default_factory=dict)
    recipe: str = "reference"
    train_ann: str = ""
    train_frames: str = ""
    val_ann: str = ""
    val_frames: str = ""
    out: str = ""
    iters: int = 0
    epochs: int = 12
    batch_size: int = 6
    accumulate: int = 1
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scale_lr: bool = False
    reference_batch: int = 24
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataOptions = field(default_factory=DataOptions)
    inflation: InflationConfig = field(default_factory=InflationConfig)
    amp: str = "auto"
    clip_grad_norm: float = 0.0
    ema_decay: float = 0.0
    ema_warmup_power: float = 0.75
    sync_bn: bool = False
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 2500
    keep_checkpoints: int = 2
    eval_every: int = 2500
    eval_overlap: int = 1
    log_every: int = 20
    num_workers: int = 2
    reference_init: bool = True
    init: str = ""
    backbone_weights: str = ""
    freeze_at: int = 0
    images: ImageClipOptions = field(default_factory=ImageClipOptions)
    device: str = "auto"


RECIPES: dict[str, dict[str, Any]] = {
    "reference": {"model": {"frozen_bn": "auto"}},
    # The tiny presets on a 2-core CPU, from scratch: 128x224 inputs (the model's test size too), a
    # 32-wide FPN and prototype net, 4 clips per iteration, AdamW with a short warm-up, the decay at 80 %
    # of the run, an EMA of the weights (0.999), the class loss at twice the reference weight (shape
    # classes were the main error), the horizontal flip, and torchvision's default initialisation, which
    # trains faster from scratch than Xavier on the backbone. The clips load in the training process: with
    # two network threads that is the fastest use of 2 cores. 5400 iterations are the 20-minute budget of
    # benchmarks/train_synthetic.py on a 2-core CPU with native bf16 (README); the shipped demo model is the
    # same recipe run for 14000.
    "tiny": {
        "model": {"backbone_width": 32, "fpn_channels": 32, "proto_channels": 32, "min_size": 128, "max_size": 224},
        "iters": 5400,
        "batch_size": 4,
        "optimizer": "adamw",
        "lr": 0.002,
        "weight_decay": 0.0001,
        "clip_grad_norm": 10.0,
        "ema_decay": 0.999,
        "schedule": {"warmup_iters": 100, "warmup_init": 0.0002, "milestones": [0.8]},
        "data": {"flip": "horizontal"},
        "loss": {"clamp_centerness_target": True, "class_weight": 10.0},
        "reference_init": False,
        "checkpoint_every": 250,
        "eval_every": 900,
        "num_workers": 0,
    },
    # Fine-tuning a cico checkpoint (--init) on a few classes and a few hundred frames. Applied ON TOP of
    # the preset's own recipe (tiny or reference), so the losses and input sizes stay those the checkpoint
    # was trained with; "lr_scale" multiplies that recipe's lr and warm-up start. A quarter of the
    # from-scratch rate: the transferred features need adapting, not relearning, and a small dataset is
    # over-fitted quickly at full rate. 100 warm-up iterations let the re-initialised class layer settle
    # before its gradients reach the backbone. Frozen backbone batch norms: batches of a few clips give
    # noisy statistics, the checkpoint's fit the images better. 1500 iterations of 4 clips are about 20
    # passes over 300 frames; the decay at 80 %, the weight average (EMA) smooths the noisy small-data
    # steps. freeze_at=2 (stem and first stage) is the option for even fewer frames.
    "finetune": {
        "lr_scale": 0.25,
        "iters": 1500,
        "batch_size": 4,
        "clip_grad_norm": 10.0,
        "ema_decay": 0.999,
        "schedule": {"warmup_iters": 100, "milestones": [0.8]},
        "model": {"frozen_bn": True},
        "checkpoint_every": 250,
        "eval_every": 250,
    },
}


def recipe_for(preset: str, recipe: str = "auto") -> str:
    """The recipe name ``auto`` stands for: ``tiny`` for ``tiny_*`` presets, else ``reference``."""
    if recipe != "auto":
        return recipe
    return "tiny" if preset.startswith("tiny") else "reference"


def _merge(cfg: Any, values: dict[str, Any], where: str) -> Any:
    """Set the (possibly nested) ``values`` on dataclass ``cfg``, converting to the fields' types."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in values.items():
        if key not in names:
            raise CicoError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(names))})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise CicoError(f"{where}: {key} needs KEY.SUB=VALUE settings, not a value")
            _merge(current, value, f"{where}.{key}" if where else key)
        elif isinstance(current, dict):
            current.update(value)
        else:
            setattr(cfg, key, _convert(value, hints[key], current, f"{key}"))
    return cfg


def _convert(value: Any, hint: Any, current: Any, key: str) -> Any:
    """``value`` as the type of the field (bool, int, float, str, tuple of floats)."""
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return lowered in ("true", "1", "yes")
            return bool(value)
        if isinstance(current, int):
            number = float(value)
            if number != int(number):
                raise ValueError(value)
            return int(number)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            items = _parse_value(value) if isinstance(value, str) else value
            items = items if isinstance(items, (list, tuple)) else [items]
            return tuple(float(v) for v in items)
        return str(value)
    except (TypeError, ValueError):
        raise CicoError(f"{key}={value!r}: expected {hint}") from None


def _parse_value(text: str) -> Any:
    """A command-line VALUE: JSON, else a Python literal, else the string itself."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``KEY=VALUE`` strings (dotted keys; ``model.KEY`` for the network config).

    Raises:
        CicoError: malformed item, unknown key, or a value of the wrong type.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CicoError(f"override {item!r}: expected KEY=VALUE (e.g. lr=0.01, model.min_size=128)")
        parts = key.split(".")
        if parts[0] == "model":
            if len(parts) != 2:
                raise CicoError(f"override {item!r}: use model.FIELD=VALUE")
            cfg.model[parts[1]] = _parse_value(raw)
            continue
        nested: dict[str, Any] = {parts[-1]: raw}
        for part in reversed(parts[:-1]):
            nested = {part: nested}
        _merge(cfg, nested, "")
    return cfg


def make_config(preset: str, recipe: str = "auto", overrides: list[str] | None = None, **values: Any) -> TrainConfig:
    """A :class:`TrainConfig` for ``preset``: the recipe, then ``values`` (fields), then ``overrides``.

    Raises:
        CicoError: unknown recipe or setting.
    """
    name = recipe_for(preset, recipe)
    if name not in RECIPES:
        raise CicoError(f"unknown recipe {name!r}; known recipes: auto, {', '.join(RECIPES)}")
    cfg = TrainConfig(preset=preset, recipe=name)
    layers = [recipe_for(preset), name] if name == "finetune" else [name]  # finetune: on the preset's recipe
    for layer in layers:
        settings = json.loads(json.dumps(RECIPES[layer]))
        scale = settings.pop("lr_scale", 1.0)
        cfg.lr, cfg.schedule.warmup_init = cfg.lr * scale, cfg.schedule.warmup_init * scale
        _merge(cfg, settings, f"recipe {layer}")
    _merge(cfg, values, "")
    return apply_overrides(cfg, list(overrides or []))


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """A JSON-serialisable dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """The inverse of :func:`config_to_dict`."""
    return _merge(TrainConfig(), data, "")
