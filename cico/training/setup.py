"""A run's set-up: device and precision, data (checked before the first step), model, initialisation,
optimiser.

Every function here reads the :class:`~cico.training.config.TrainConfig` and returns what the loop needs;
nothing keeps state.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.annotations import Annotations, load_annotations
from ..data.check import check_frames
from ..data.clips import ClipDataConfig, ClipDataset
from ..data.image_clips import ImageClipDataset, MixedClipDataset, load_image_annotations
from ..errors import CicoError
from ..model.checkpoint import load_checkpoint
from ..model.config import ModelConfig, get_preset
from ..model.network import CiCo
from .config import TrainConfig
from .distributed import Distributed
from .finetune import freeze_backbone, transfer_checkpoint
from .init import load_coco_init, load_imagenet_backbone, reference_init

__all__ = ["RunData", "FROZEN_BN_BELOW", "device_for", "amp_dtype", "cpu_has_fast_bf16", "load_data",
           "model_config", "frozen_bn", "build_model", "build_optimizer", "seed_process", "missing_frames",
           "shared_videos"]

FROZEN_BN_BELOW = 4
"""``model.frozen_bn=auto`` freezes the backbone's batch norms below this many clips per process (the
reference's ``freeze_bn`` condition)."""


@dataclass(frozen=True)
class RunData:
    """The training clips, the held-out split (``None``: no periodic evaluation) and the network config.

    Attributes:
        model: the preset with the overrides and the training annotations' classes.
        shared: held-out videos that are also training videos (same frame files); > 0 means the
            periodic evaluation is not held-out.
    """

    train: ClipDataset | MixedClipDataset
    val: Annotations | None
    model: ModelConfig
    shared: int = 0
    note: str = ""


def device_for(cfg: TrainConfig, env: Distributed) -> torch.device:
    """The process's device: its GPU (``LOCAL_RANK``) when there is one and ``device`` allows it."""
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CicoError("device=cuda but no CUDA GPU is available")
    return torch.device("cuda", env.local_rank)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16: oneDNN convolutions about twice as fast)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check is not None and check() for check in checks)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the network forward (``None``: float32)."""
    choice = cfg.amp
    if choice == "auto":
        if device.type == "cuda":
            choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            choice = "bf16" if cpu_has_fast_bf16() else "none"
    dtypes = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if choice not in dtypes:
        raise CicoError(f"amp={cfg.amp!r}: expected auto, none, bf16 or fp16")
    if choice == "fp16" and device.type != "cuda":
        raise CicoError("amp=fp16 needs a GPU (use bf16 or none on CPU)")
    return dtypes[choice]


def missing_frames(annotations: Annotations, frames_dir: str | Path) -> list[str]:
    """One line per missing frame file (a stat per file; a video missing entirely is one line)."""
    videos = [{"id": v.id, "file_names": v.file_names, "height": v.height, "width": v.width}
              for v in annotations.videos]
    return check_frames({"videos": videos}, Path(frames_dir), decode=False)


def shared_videos(train: Annotations, train_frames: str | Path, val: Annotations, val_frames: str | Path) -> int:
    """How many videos of ``val`` are also in ``train``: the same first frame file."""
    def firsts(ann: Annotations, frames: str | Path) -> set[str]:
        return {os.path.normpath(os.path.abspath(Path(frames) / v.file_names[0])) for v in ann.videos if v.file_names}

    seen = firsts(train, train_frames)
    return sum(first in seen for first in firsts(val, val_frames))


def load_data(cfg: TrainConfig, frozen: bool) -> RunData:
    """The training clips and the held-out annotations, after checking that every frame file exists.

    Raises:
        CicoError: no training data, categories that differ, or frame files missing (all named).
    """
    if (not cfg.train_ann or not cfg.train_frames) and not cfg.images.ann:
        raise CicoError("no training data: give --ann FILE --frames DIR or --dataset NAME --data-root DIR "
                        "(or --images FILE --image-frames DIR)")
    # COCO images as pseudo-clips, alone or mixed with videos (cico.data.image_clips)
    image_ann = load_image_annotations(cfg.images.ann) if cfg.images.ann else None
    train_ann = load_annotations(cfg.train_ann) if cfg.train_ann else image_ann
    assert train_ann is not None
    if image_ann is not None and not cfg.images.frames:
        raise CicoError("no image folder: give --image-frames DIR with --images", cfg.images.ann)
    base = model_config(cfg, train_ann, frozen)
    val = load_annotations(cfg.val_ann) if cfg.val_ann else None
    if val is not None and val.category_ids != train_ann.category_ids:
        raise CicoError("the held-out split's categories differ from the training annotations", cfg.val_ann)
    missing = missing_frames(train_ann, cfg.train_frames) if cfg.train_ann else []
    if image_ann is not None:
        missing += missing_frames(image_ann, cfg.images.frames)
    if val is not None:
        missing += missing_frames(val, cfg.val_frames)
    if missing:
        shown = "; ".join(missing[:20]) + (f"; and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise CicoError(f"{len(missing)} frame file(s) missing before training: {shown}")
    data = ClipDataConfig(clip_frames=base.clip_frames, augment=cfg.data.augmentation(base),
                          size_divisor=base.size_divisibility, seed=cfg.seed)
    shared = shared_videos(train_ann, cfg.train_frames, val, cfg.val_frames) if val is not None and cfg.train_ann else 0
    if image_ann is None:
        return RunData(ClipDataset(train_ann, cfg.train_frames, data), val, base, shared)
    videos = ClipDataset(train_ann, cfg.train_frames, data) if cfg.train_ann else None
    images = ImageClipDataset(image_ann, cfg.images.frames, data, cfg.images, train_ann.class_names)
    mixed = MixedClipDataset(videos, images, cfg.images.ratio)
    note = (f"images {cfg.images.ann}: {len(images)} images as pseudo-clips, {mixed.image_items} of {len(mixed)} "
            f"clips per epoch; {images.left_out} annotations of other classes left out")
    return RunData(mixed, val, base, shared, note)


def frozen_bn(cfg: TrainConfig) -> tuple[bool, str]:
    """``model.frozen_bn`` resolved (``auto``: frozen below 4 clips per process) and why, for the log."""
    value = cfg.model.get("frozen_bn", False)
    if value == "auto":
        frozen = cfg.batch_size < FROZEN_BN_BELOW
        return frozen, (f"model.frozen_bn=auto: {cfg.batch_size} clips per process "
                        f"{'<' if frozen else '>='} {FROZEN_BN_BELOW}, backbone batch norm "
                        f"{'frozen' if frozen else 'trained'} (as the reference)")
    if not isinstance(value, bool):
        raise CicoError(f"model.frozen_bn={value!r}: expected auto, true or false")
    return value, f"model.frozen_bn={str(value).lower()}: backbone batch norm {'frozen' if value else 'trained'}"


def model_config(cfg: TrainConfig, ann: Annotations, frozen: bool) -> ModelConfig:
    """The preset with the ``model.KEY`` overrides, the annotations' classes and the resolved ``frozen_bn``."""
    overrides = dict(cfg.model)
    overrides.update(num_classes=ann.num_classes, class_names=ann.class_names, frozen_bn=frozen)
    try:
        return get_preset(cfg.preset, **overrides)
    except (KeyError, TypeError, ValueError) as err:
        raise CicoError(f"model config: {err.args[0] if err.args else err}") from None


def build_model(cfg: TrainConfig, config: ModelConfig) -> tuple[CiCo, list[str]]:
    """The initialised network (the same weights on every process) and one note per initialisation step.

    A reference-recipe run without ``init`` or ``backbone_weights`` gets a warning note: the published
    recipe starts from the reference's frame-level COCO checkpoint.
    """
    torch.manual_seed(cfg.seed)
    model = CiCo(config)
    if cfg.reference_init:
        reference_init(model)
    notes = []
    if cfg.backbone_weights:
        loaded = load_imagenet_backbone(model, cfg.backbone_weights)
        notes.append(f"backbone {cfg.backbone_weights}: {loaded.summary()}")
    if cfg.init:
        notes.append(f"init {cfg.init}: {_load_init(cfg, model, cfg.init)}")
    if cfg.freeze_at:
        frozen = freeze_backbone(model, cfg.freeze_at)
        notes.append(f"freeze_at={cfg.freeze_at}: {frozen} backbone parameters frozen")
    if cfg.recipe == "reference" and not cfg.init and not cfg.backbone_weights:
        notes.append(f"warning: {cfg.preset} starts from random weights; the published recipe starts from the "
                     f"reference's frame-level COCO checkpoint of its backbone ({config.backbone}; --init FILE), "
                     "or at least from ImageNet backbone weights (--backbone-weights FILE)")
    return model, notes


def _load_init(cfg: TrainConfig, model: CiCo, path: str) -> str:
    """A cico checkpoint: every tensor whose meaning carries over, the class layer by class name
    (:func:`~cico.training.finetune.transfer_checkpoint`). Otherwise: a reference COCO checkpoint."""
    try:
        checkpoint = load_checkpoint(path)
    except CicoError:
        return load_coco_init(model, path, cfg.inflation).summary()
    return transfer_checkpoint(model, checkpoint, path).summary()


def build_optimizer(cfg: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD on every parameter, one group (the reference), or AdamW (``optimizer=adamw``)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    raise CicoError(f"optimizer={cfg.optimizer!r}: expected sgd or adamw")


def seed_process(seed: int, rank: int) -> None:
    """Seed Python, NumPy and torch for this process."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2 ** 32)
    torch.manual_seed(seed + rank)
