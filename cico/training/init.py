"""Weight initialisation for training, from local files only. Nothing is downloaded.

* :func:`reference_init`: Xavier-uniform on every Conv2d/Conv3d/Linear (the backbone included), zero
  biases, and the focal prior ``-log(99)`` on the class bias of a sigmoid classifier.
* :func:`load_imagenet_backbone`: a torchvision ImageNet ResNet ``.pth`` (``resnet18-*.pth`` ...) or a
  timm / Microsoft Swin-T file (``.pth`` or ``.safetensors``) into ``model.backbone``.
* :func:`load_coco_init`: the reference's frame-level COCO checkpoints (``resnet50_coco_yolact.pth``
  ...) with its 2D→3D inflation:

  - same shape: copied; a differently shaped ``conf_layer`` tensor: skipped (COCO has 80 classes);
  - 1-D tensors whose size divides the model's: tiled. For ``bbox_layer.bias`` (COCO ``A·4`` →
    CiCo ``A·4T``) this gives channel ``a·4T + t·4 + k`` the COCO channel ``t·4 + k``, i.e. COCO anchor
    ``t``'s bias lands in frame slot ``t`` of every anchor. ``InflationConfig(tile_bbox_bias=False)``
    gives every frame slot of anchor ``a`` COCO anchor ``a``'s bias instead (the intent);
  - 4-D conv weights into 5-D ones (same ``kh, kw``, ``c_in``, and ``c_out`` dividing): repeated along
    time (and ``c_out``) and divided by ``t``. For ``protonet.*`` with ``t == 3`` the reference means
    the temporal profile ``[0.125, 0.75, 0.125]`` but multiplies the **kw** axis with it and does not
    divide by ``t``; ``InflationConfig(kw_axis_quirk=False)`` applies the profile along time;
  - other shape mismatches stay at their initialisation (e.g. ``bbox_layer.weight``; the track branch,
    absent from the COCO checkpoints).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from ..errors import CicoError
from ..model.checkpoint import read_torch_file
from ..model.convert import match_state_dict, reference_to_cico, unwrap_state_dict
from ..model.head import ClipConv3d
from ..model.network import CiCo

__all__ = ["InflationConfig", "InitReport", "reference_init", "read_state_dict", "load_imagenet_backbone",
           "load_coco_init", "inflate_state_dict"]

_PROTO_PROFILE = (0.125, 0.75, 0.125)


@dataclass
class InflationConfig:
    """How the frame-level COCO weights become clip-level ones.

    Attributes:
        kw_axis_quirk: reference: the protonet's ``[0.125, 0.75, 0.125]`` multiplies the kw axis and
            there is no division by ``t``. ``False``: the profile multiplies the time axis.
        tile_bbox_bias: reference: the ``bbox_layer`` bias is tiled as a flat vector (misaligned with
            the anchors). ``False``: each anchor's 4 biases are repeated over its ``T`` frame slots.
    """

    kw_axis_quirk: bool = True
    tile_bbox_bias: bool = True


@dataclass
class InitReport:
    """What an initialisation loaded: key lists per outcome."""

    copied: list[str] = field(default_factory=list)
    tiled: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts per outcome."""
        return (f"{len(self.copied)} copied, {len(self.tiled)} tiled, {len(self.inflated)} inflated 2D->3D, "
                f"{len(self.skipped)} left at their init, {len(self.unexpected)} unused")


def reference_init(model: CiCo) -> None:
    """The reference's ``init_weights_coco`` step 1: Xavier-uniform weights, zero biases, focal prior."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear, ClipConv3d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    model.head.reset_parameters()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a local weights file (``.pth``/``.pt`` via ``torch.load(weights_only=True)``,
    unwrapping ``state_dict``/``model``; or ``.safetensors``).

    Raises:
        CicoError: missing or unreadable file, or no state dict inside.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        obj = read_torch_file(path)
        try:
            return unwrap_state_dict(obj)
        except ValueError as err:
            raise CicoError(f"not a weights file: {err}", path) from None
    if not path.is_file():
        raise CicoError("weights file not found", path)
    try:
        from safetensors.torch import load_file

        return load_file(str(path))
    except Exception as err:  # any reader failure is a bad user file
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise CicoError(f"not a readable safetensors file ({first})", path) from None


def _swin_to_cico(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm (merge at the start of stages 1-3) or Microsoft (merge at the end of stages 0-2) Swin names ->
    ``backbone.*``; the classifier, final norm and buffers are dropped."""
    timm_layout = any(k.startswith("layers.3.downsample.") for k in state)
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("backbone.")
        if key.startswith(("head", "norm.")) or key.endswith(("attn_mask", "relative_position_index")):
            continue
        match = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
        if match and timm_layout:
            key = f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
        out["backbone." + key] = value
    return out


def _resnet_to_cico(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ResNet names (``layer1.0.conv1``...) -> ``backbone.layer.0.0.conv1``; ``fc`` dropped."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("fc."):
            continue
        match = re.match(r"layer(\d)\.(.*)", key)
        if match:
            key = f"layer.{int(match.group(1)) - 1}.{match.group(2)}"
        out["backbone." + key] = value
    return out


def load_imagenet_backbone(model: CiCo, path: str | Path) -> InitReport:
    """Load ImageNet weights into ``model.backbone`` (every backbone tensor must be found).

    Raises:
        CicoError: the file does not fit the backbone (wrong depth, wrong architecture).
    """
    raw = read_state_dict(path)
    swin = model.config.backbone == "swin_t"
    state = _swin_to_cico(raw) if swin else _resnet_to_cico(raw)
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    matched, report = match_state_dict(state, expected)
    if not report.ok:
        problems = report.missing + report.misshaped
        raise CicoError(f"does not fit the {model.config.backbone} backbone: {len(report.missing)} missing, "
                        f"{len(report.misshaped)} mis-shaped tensors (e.g. {'; '.join(problems[:2])})", path)
    model.load_state_dict(matched, strict=False)
    return InitReport(copied=sorted(matched), unexpected=report.unexpected)


def _tile(source: Tensor, size: int) -> Tensor:
    return source.repeat(size // source.numel())


def inflate_state_dict(source: Mapping[str, Tensor], target: Mapping[str, Tensor], num_anchors: int,
                       clip_frames: int, cfg: InflationConfig | None = None) -> tuple[dict[str, Tensor], InitReport]:
    """Apply the reference's COCO→CiCo rules to ``source`` (cico names) for a model whose state is ``target``.

    Returns:
        The tensors to load (a subset of ``target``'s keys) and what happened to each key.
    """
    cfg = cfg or InflationConfig()
    out: dict[str, Tensor] = {}
    report = InitReport()
    for key, value in source.items():
        ref = target.get(key)
        if ref is None:
            report.unexpected.append(key)
            continue
        value = value.to(ref.dtype) if value.is_floating_point() else value
        if value.shape == ref.shape:
            out[key] = value
            report.copied.append(key)
        elif "conf_layer" in key:
            report.skipped.append(key)
        elif value.dim() == 1 and ref.dim() == 1 and ref.numel() % value.numel() == 0:
            if (key.endswith("bbox_layer.bias") and not cfg.tile_bbox_bias
                    and value.numel() == num_anchors * 4 and ref.numel() == num_anchors * 4 * clip_frames):
                out[key] = value.view(num_anchors, 1, 4).expand(-1, clip_frames, -1).reshape(-1)
            else:
                out[key] = _tile(value, ref.numel())
            report.tiled.append(key)
        elif (value.dim() == 4 and ref.dim() == 5 and value.shape[-2:] == ref.shape[-2:]
              and value.shape[1] == ref.shape[1] and ref.shape[0] % value.shape[0] == 0):
            t = ref.shape[2]
            weight = value.unsqueeze(2).repeat(ref.shape[0] // value.shape[0], 1, t, 1, 1)
            if key.startswith("protonet.") and t == len(_PROTO_PROFILE):
                profile = weight.new_tensor(_PROTO_PROFILE)
                if cfg.kw_axis_quirk and ref.shape[-1] == len(_PROTO_PROFILE):
                    weight = weight * profile.view(1, 1, -1)  # broadcasts over kw, no division by t
                else:
                    weight = weight * profile.view(1, 1, -1, 1, 1)
            else:
                weight = weight / t
            out[key] = weight
            report.inflated.append(key)
        else:
            report.skipped.append(key)
    report.skipped.extend(k for k in target if k not in source)
    return out, report


def load_coco_init(model: CiCo, path: str | Path, cfg: InflationConfig | None = None) -> InitReport:
    """Initialise ``model`` from a reference frame-level COCO checkpoint (after :func:`reference_init`).

    Raises:
        CicoError: unreadable file, or one that shares no tensor with the model.
    """
    state = reference_to_cico(read_state_dict(path))
    loaded, report = inflate_state_dict(state, model.state_dict(), model.config.num_anchors,
                                        model.config.clip_frames, cfg)
    if not loaded:
        raise CicoError("no tensor of this file fits the model (is it a CiCo/Yolact COCO checkpoint "
                        f"for {model.config.backbone}?)", path)
    model.load_state_dict(loaded, strict=False)
    return report

