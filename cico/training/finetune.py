"""Fine-tuning from a cico checkpoint: weight transfer with a class-aware classifier, and frozen stages.

* :func:`transfer_checkpoint` copies every tensor of a cico checkpoint whose meaning carries over to a
  model built for other data. The classification layer (``head.conf_layer``) is the one tensor pair whose
  meaning depends on the class list: its rows are matched by class NAME, so a checkpoint trained on 40
  YouTube-VIS classes never silently lends its rows to 40 other classes. Rows of classes the checkpoint
  knows are copied (reordered when the order differs), the other rows are re-initialised (zero weights,
  the initial bias: the focal prior of a sigmoid classifier), and a change of classifier type
  re-initialises the whole layer.
* :func:`checkpoint_architecture` reads the network settings a checkpoint was trained with, so a run
  started with ``--init`` builds a model that fits it (only the classes come from the new data).
* :func:`freeze_backbone` freezes the first ``N`` backbone stages (stem = 1), detectron2's ``FREEZE_AT``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from ..errors import CicoError
from ..model.backbone import ResNetBackbone, SwinBackbone
from ..model.checkpoint import load_checkpoint
from ..model.config import ModelConfig
from ..model.network import CiCo

__all__ = [
    "CLASS_LAYER",
    "TransferReport",
    "checkpoint_architecture",
    "freeze_backbone",
    "transfer_checkpoint",
]

CLASS_LAYER = "head.conf_layer."
"""Prefix of the class-dependent tensors (the classifier's ``weight`` ``[A·L, F, 3, 3]`` and ``bias`` ``[A·L]``)."""

# Settings that are the data's (classes) or the fine-tuning run's choice, never taken from the checkpoint.
_NOT_ARCHITECTURE = ("num_classes", "class_names", "frozen_bn", "drop_path_rate")
_COUNTER = ".num_batches_tracked"


@dataclass
class TransferReport:
    """What :func:`transfer_checkpoint` did.

    Attributes:
        copied: model keys copied unchanged from the checkpoint (the class layer included when kept).
        kept: model keys left at their initialisation because the checkpoint lacks them or shapes differ.
        unused: checkpoint keys the model has no use for (batch-norm counters not counted).
        class_layer: ``"copied"``, ``"remapped"`` (rows matched by name) or ``"reinitialised"``.
        shared, new: class names carried over from the checkpoint and those initialised afresh.
        reason: why the class layer was (partly) re-initialised; empty when copied.
    """

    copied: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    class_layer: str = "copied"
    shared: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    reason: str = ""

    def summary(self) -> str:
        """One line: tensors copied, the class layer's fate and why, tensors left at their init, unused."""
        total = len(self.copied) + len(self.kept) + (0 if self.class_layer == "copied" else 2)
        if self.class_layer == "copied":
            head = "class layer copied (same classes)"
        elif self.class_layer == "remapped":
            head = (f"class layer: {len(self.shared)} classes carried over by name, {len(self.new)} new "
                    f"re-initialised ({_names(self.new)}; {self.reason})")
        else:
            head = f"class layer re-initialised ({self.reason})"
        kept = f"; left at their init: {len(self.kept)} ({_names(self.kept)})" if self.kept else ""
        unused = f"; {len(self.unused)} checkpoint tensors unused" if self.unused else ""
        return f"{len(self.copied)} of {total} tensors copied; {head}{kept}{unused}"


def _names(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... {len(items) - limit} more" if len(items) > limit else "")


def _class_rows(config: ModelConfig) -> dict[str, int]:
    """Logit index per class name (a softmax classifier's logit 0 is the background)."""
    offset = 1 if config.classifier == "softmax" else 0
    return {name: i + offset for i, name in enumerate(config.class_names)}


def _fresh_class_layer(own: dict[str, Tensor]) -> dict[str, Tensor]:
    """The re-initialised class layer: zero weights and the model's initial bias (the focal prior), so every
    anchor starts at the prior probability whatever the scale of the transferred features (random weights on
    trained features give logits in the hundreds), and the class tower gets no gradient before the layer
    has learnt something."""
    weight, bias = CLASS_LAYER + "weight", CLASS_LAYER + "bias"
    return {weight: torch.zeros_like(own[weight]), bias: own[bias].clone()}


def _transfer_class_layer(model: CiCo, source: ModelConfig, state: Mapping[str, Tensor],
                          own: dict[str, Tensor], report: TransferReport) -> dict[str, Tensor]:
    """The class-layer tensors to load (rows matched by name, the others fresh), recording the outcome."""
    target = model.config
    keys = [k for k in own if k.startswith(CLASS_LAYER)]
    src_names, dst_names = list(source.class_names), list(target.class_names)
    if (src_names == dst_names and source.classifier == target.classifier
            and all(k in state and state[k].shape == own[k].shape for k in keys)):
        report.copied.extend(keys)
        return {k: state[k] for k in keys}
    shared = [n for n in dst_names if n in src_names]
    report.shared, report.new = shared, [n for n in dst_names if n not in src_names]
    report.class_layer = "reinitialised"
    if source.classifier != target.classifier:
        report.reason = f"classifier {source.classifier} in the checkpoint, {target.classifier} here"
        report.new = dst_names
        return _fresh_class_layer(own)
    if not shared:
        report.new = dst_names
        report.reason = f"no class in common: checkpoint {_names(src_names)}; data {_names(dst_names)}"
        return _fresh_class_layer(own)
    weight, bias = CLASS_LAYER + "weight", CLASS_LAYER + "bias"
    anchors = target.num_anchors
    if (weight not in state or bias not in state or source.num_anchors != anchors
            or state[weight].shape[1:] != own[weight].shape[1:]):
        report.new = dst_names
        report.reason = "the checkpoint's class layer has another shape"
        return _fresh_class_layer(own)
    src_rows, dst_rows = _class_rows(source), _class_rows(target)
    pairs = [(dst_rows[n], src_rows[n]) for n in shared]
    if target.classifier == "softmax":
        pairs.append((0, 0))  # the background logit means the same in both
    fresh = _fresh_class_layer(own)
    out_w = fresh[weight].view(anchors, target.num_logits, *own[weight].shape[1:])
    out_b = fresh[bias].view(anchors, target.num_logits)
    src_w = state[weight].view(anchors, source.num_logits, *state[weight].shape[1:])
    src_b = state[bias].view(anchors, source.num_logits)
    for dst, src in pairs:
        out_w[:, dst] = src_w[:, src]
        out_b[:, dst] = src_b[:, src]
    report.class_layer = "remapped"
    if report.new:
        report.reason = f"not in the checkpoint's classes {_names(src_names)}"
    else:
        report.reason = "same classes in another order"
    return {weight: out_w.reshape(own[weight].shape), bias: out_b.reshape(own[bias].shape)}


def transfer_checkpoint(model: CiCo, checkpoint: Mapping[str, Any],
                        source: str | Path = "checkpoint") -> TransferReport:
    """Load a cico checkpoint (:func:`~cico.model.checkpoint.load_checkpoint`'s dict) into ``model``.

    Every same-named, same-shaped tensor is copied except the class layer, which follows its classes by
    name (see the module docstring); the others stay at ``model``'s initialisation and are reported.

    Raises:
        CicoError: the checkpoint's stored config is invalid, or no tensor of it fits the model.
    """
    try:
        config = ModelConfig.from_dict(checkpoint["config"])
    except (TypeError, ValueError) as err:
        raise CicoError(f"invalid model config in checkpoint ({err})", source) from None
    state: Mapping[str, Tensor] = checkpoint["model"]
    own = model.state_dict()
    report = TransferReport()
    loaded = _transfer_class_layer(model, config, state, own, report)
    for key, ref in own.items():
        if key.startswith(CLASS_LAYER):
            continue
        value = state.get(key)
        if value is not None and value.shape == ref.shape:
            loaded[key] = value
            report.copied.append(key)
        else:
            report.kept.append(key)
    report.unused = [k for k in state if k not in own and not k.endswith(_COUNTER)]
    if not report.copied:
        raise CicoError("no tensor of this checkpoint fits the model", source)
    loaded = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in loaded.items()}
    model.load_state_dict(loaded, strict=False)
    return report


def checkpoint_architecture(path: str | Path) -> tuple[str | None, dict[str, Any]] | None:
    """``(preset, model settings)`` of a cico checkpoint, ``None`` for any other weights file.

    The settings are every :class:`ModelConfig` field except the classes (the new data's) and the
    training-only ``frozen_bn``/``drop_path_rate``, as ``TrainConfig.model`` overrides.
    """
    try:
        checkpoint = load_checkpoint(path)
    except CicoError:
        return None
    try:
        config = ModelConfig.from_dict(checkpoint["config"]).to_dict()
    except (TypeError, ValueError) as err:
        raise CicoError(f"invalid model config in checkpoint ({err})", path) from None
    names = {f.name for f in fields(ModelConfig)} - set(_NOT_ARCHITECTURE)
    return checkpoint.get("preset"), {k: v for k, v in config.items() if k in names}


def _backbone_stages(backbone: ResNetBackbone | SwinBackbone) -> list[list[tuple[nn.Module, str]]]:
    """The backbone's stages in order, stem first, each as ``(parent, attribute)`` pairs."""
    blocks: nn.ModuleList
    stem: list[tuple[nn.Module, str]]
    if isinstance(backbone, SwinBackbone):
        stem, blocks = [(backbone, "patch_embed")], backbone.layers
    else:
        stem, blocks = [(backbone, "conv1"), (backbone, "bn1")], backbone.layer
    return [stem] + [[(blocks, str(i))] for i in range(len(blocks))]


def _frozen_norms(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced by a ``FrozenBatchNorm2d`` holding its statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, module.eps)
        with torch.no_grad():
            frozen.weight.copy_(module.weight)
            frozen.bias.copy_(module.bias)
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        setattr(module, name, _frozen_norms(child))
    return module


def freeze_backbone(model: CiCo, freeze_at: int) -> int:
    """Freeze the first ``freeze_at`` backbone stages: 1 the stem, 2 also the first residual/Swin stage,
    ... 5 the whole backbone. Their parameters stop training and their batch norms become
    ``FrozenBatchNorm2d`` (fixed statistics). Call after loading the initial weights.

    Returns:
        The number of parameters frozen.

    Raises:
        CicoError: ``freeze_at`` outside ``0..number of stages``.
    """
    stages = _backbone_stages(model.backbone)
    if not 0 <= freeze_at <= len(stages):
        raise CicoError(f"freeze_at={freeze_at}: expected 0 (nothing) to {len(stages)} (the whole backbone)")
    frozen = 0
    for stage in stages[:freeze_at]:
        for parent, name in stage:
            module = _frozen_norms(getattr(parent, name))
            setattr(parent, name, module)
            for parameter in module.parameters():
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen
