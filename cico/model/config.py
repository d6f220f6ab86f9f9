"""Model configurations: the :class:`ModelConfig` dataclass and the named presets.

The 18 reference presets ``cico_{yolact,condinst}_{r50,r101,swint}_{yt19,yt21,ovis}`` carry the
resolved hyper-parameters of the reference configs: ResNet-50/101 or Swin-T, a 256-wide
FPN (192 for CondInst-Swin), 4-layer towers, 3 anchors per location, 32 Yolact prototypes or 8 CondInst
mask features, 64-d track embeddings, T = 3, test size 384/640, the reference input normalisation, and a
sigmoid (focal) classifier for YouTube-VIS or a softmax one with a background class for OVIS.

``tiny_yolact`` / ``tiny_condinst`` are small ResNet-18 models for CPU training and tests (64-wide FPN and
heads, 2-layer towers, 192/320 input, correct RGB normalisation); the trainer sets ``num_classes`` and
``class_names`` from its dataset with :func:`dataclasses.replace`.

A config is JSON-serialisable (:meth:`ModelConfig.to_dict` / :meth:`ModelConfig.from_dict`) because
checkpoints store it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

from ..constants import NORMALIZATIONS, OVIS_CLASSES, YTVIS2019_CLASSES, YTVIS2021_CLASSES, Normalization
from .detect import Classifier, DetectConfig
from .masks import MaskHead

BackboneName = Literal["resnet18", "resnet50", "resnet101", "swin_t"]

BACKBONES: tuple[str, ...] = get_args(BackboneName)
CLASSIFIERS: tuple[str, ...] = get_args(Classifier)
MASK_HEADS: tuple[MaskHead, ...] = get_args(MaskHead)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a CiCo network and turn its outputs into detections.

    Attributes:
        backbone: ``resnet18``, ``resnet50``, ``resnet101`` or ``swin_t``.
        num_classes: number of object classes ``C`` (without background).
        class_names: ``C`` names, label ``c`` (1-based) is ``class_names[c-1]``; empty means
            ``class_1 .. class_C``.
        classifier: ``sigmoid`` (focal loss, ``C`` logits) or ``softmax`` (OHEM, ``C+1`` logits,
            channel 0 is the background).
        mask_head: ``yolact`` (prototypes and coefficients) or ``condinst`` (dynamic mask head).
        clip_frames: frames per clip ``T``; the 3D convolutions tie a model to one ``T``.
        fpn_channels: width ``F`` of the FPN, the towers and the mask-refine convs.
        proto_channels: width of the 3D ``proto_net`` and of ``proto_conv``.
        mask_dim: ``D'``: Yolact prototypes or CondInst mask-feature channels.
        track_dim: size of the track embedding.
        box_tower_layers, class_tower_layers, track_tower_layers: conv layers per tower.
        aspect_ratios: anchor aspect ratios (w/h), in the anchor order of every location.
        frozen_bn: freeze the backbone's batch norms (``FrozenBatchNorm2d``); the reference trains them.
        backbone_width: ResNet stem/first-stage width (stages are 1x, 2x, 4x, 8x it); 64 is the standard
            ResNet, smaller values give a narrow ResNet (no ImageNet weights; the CPU demo recipe uses 32).
        drop_path_rate: stochastic depth of the Swin backbone (the reference's effective value is 0.2).
        normalization: input normalisation (``reference``: the channel-order quirk; ``rgb``).
        min_size, max_size: test-time resize (short side, long-side cap).
        size_divisibility: the padded input size is a multiple of this.
        detect: thresholds of per-clip detection.
    """

    backbone: BackboneName = "resnet50"
    num_classes: int = 40
    class_names: tuple[str, ...] = ()
    classifier: Classifier = "sigmoid"
    mask_head: MaskHead = "yolact"
    clip_frames: int = 3
    fpn_channels: int = 256
    proto_channels: int = 256
    mask_dim: int = 32
    track_dim: int = 64
    box_tower_layers: int = 4
    class_tower_layers: int = 4
    track_tower_layers: int = 4
    aspect_ratios: tuple[float, ...] = (1.0, 0.5, 2.0)
    frozen_bn: bool = False
    backbone_width: int = 64
    drop_path_rate: float = 0.2
    normalization: Normalization = "reference"
    min_size: int = 384
    max_size: int = 640
    size_divisibility: int = 32
    detect: DetectConfig = field(default_factory=DetectConfig)

    def __post_init__(self) -> None:
        _check_choice("backbone", self.backbone, BACKBONES)
        _check_choice("classifier", self.classifier, CLASSIFIERS)
        _check_choice("mask_head", self.mask_head, MASK_HEADS)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        for name in ("num_classes", "clip_frames", "fpn_channels", "proto_channels", "mask_dim", "track_dim",
                     "backbone_width", "min_size", "max_size", "size_divisibility"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.aspect_ratios:
            raise ValueError("aspect_ratios must not be empty")
        names = tuple(str(n) for n in self.class_names) or tuple(f"class_{i}" for i in range(1, self.num_classes + 1))
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class_names for num_classes={self.num_classes}")
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "aspect_ratios", tuple(float(a) for a in self.aspect_ratios))

    @property
    def num_logits(self) -> int:
        """Class logits per anchor: ``C`` (sigmoid) or ``C + 1`` (softmax, with background)."""
        return self.num_classes + (1 if self.classifier == "softmax" else 0)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.aspect_ratios)

    @property
    def mask_param_dim(self) -> int:
        """Mask parameters per anchor: ``D'`` Yolact coefficients, or the CondInst dynamic-head weights
        (3 layers of 1×1 convs: ``(D'+1)·D' + D'·D' + D' + D' + D' + 1`` = 161 for ``D' = 8``)."""
        d = self.mask_dim
        return d if self.mask_head == "yolact" else (d + 1) * d + d * d + d + d + d + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of plain types (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """The inverse of :meth:`to_dict`. Unknown keys raise ``ValueError``; missing keys take defaults."""
        if not isinstance(data, dict):
            raise ValueError(f"a model config must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        values = dict(data)
        if "detect" in values and isinstance(values["detect"], dict):
            values["detect"] = DetectConfig(**values["detect"])
        for key in ("class_names", "aspect_ratios"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


_REFERENCE_BACKBONES: dict[str, BackboneName] = {"r50": "resnet50", "r101": "resnet101", "swint": "swin_t"}


def _reference_preset(mask_head: MaskHead, backbone: str, dataset: str) -> ModelConfig:
    """One of the 18 reference configs ``configs/CiCo/cico_{mask_head}_{backbone}_{dataset}.py``."""
    classes = {"yt19": YTVIS2019_CLASSES, "yt21": YTVIS2021_CLASSES, "ovis": OVIS_CLASSES}[dataset]
    swin = backbone == "swint"
    # CondInst-Swin narrows FPN and heads to 192; Yolact-Swin keeps 256 but its proto_net is 192 wide.
    fpn = 192 if swin and mask_head == "condinst" else 256
    return ModelConfig(
        backbone=_REFERENCE_BACKBONES[backbone],
        num_classes=len(classes),
        class_names=classes,
        classifier="softmax" if dataset == "ovis" else "sigmoid",
        mask_head=mask_head,
        fpn_channels=fpn,
        proto_channels=192 if swin else 256,
        mask_dim=32 if mask_head == "yolact" else 8,
    )


def _tiny_preset(mask_head: MaskHead) -> ModelConfig:
    return ModelConfig(
        backbone="resnet18",
        num_classes=8,
        mask_head=mask_head,
        fpn_channels=64,
        proto_channels=64,
        mask_dim=32 if mask_head == "yolact" else 8,
        box_tower_layers=2,
        class_tower_layers=2,
        track_tower_layers=2,
        normalization="rgb",
        min_size=192,
        max_size=320,
    )


PRESETS: dict[str, ModelConfig] = {
    f"cico_{head}_{backbone}_{dataset}": _reference_preset(head, backbone, dataset)
    for head in MASK_HEADS
    for backbone in ("r50", "r101", "swint")
    for dataset in ("yt19", "yt21", "ovis")
}
PRESETS["tiny_yolact"] = _tiny_preset("yolact")
PRESETS["tiny_condinst"] = _tiny_preset("condinst")


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """A copy of the preset called ``name``, with ``overrides`` applied by :func:`dataclasses.replace`.

    Overriding ``num_classes`` without ``class_names`` resets the names to ``class_1 .. class_C``.

    Raises:
        KeyError: unknown preset name (the message lists the known ones).
    """
    try:
        config = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}") from None
    return with_overrides(config, **overrides)


def with_overrides(config: ModelConfig, **overrides: Any) -> ModelConfig:
    """A copy of ``config`` with ``overrides`` applied (``num_classes`` alone resets ``class_names``)."""
    if "num_classes" in overrides and "class_names" not in overrides:
        overrides["class_names"] = ()
    if isinstance(overrides.get("detect"), dict):
        overrides["detect"] = DetectConfig(**overrides["detect"])
    return replace(config, **overrides)
