"""Import of reference CiCo checkpoints: key names mapped to cico's, every key and shape checked.

Reference checkpoints are plain ``CoreNet.state_dict()``s, possibly wrapped in ``{"state_dict": ...}`` /
``{"model": ...}``, with ``module.`` prefixes and legacy names (``mask_refine|proto_net|proto_conv.*`` for
``ProtoNet.*``, ``prediction_layers.0.*``, extra ``fpn.downsample_layers.{i>=2}``).
:func:`reference_to_cico` maps them to cico's names (``ProtoNet.`` -> ``protonet.``,
``prediction_layers.`` -> ``head.``; everything below is unchanged); :func:`match_state_dict` checks them
against a model.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.models.swin_transformer import get_relative_position_index
from torch import Tensor

from .config import PRESETS
from .network import empty_model

_DOWNSAMPLE_EXTRA = re.compile(r"^fpn\.downsample_layers\.(\d+)\.")
_PREFIXES = (("ProtoNet.", "protonet."), ("prediction_layers.", "head."))
# constants a checkpoint may omit (older PyTorch, other exporters): filled in by _derived_value
_DERIVED = (".num_batches_tracked", ".relative_position_index")


@dataclass
class ConversionReport:
    """What :func:`reference_to_cico` and :func:`match_state_dict` found.

    Attributes:
        renamed: legacy names mapped to current ones (``old -> new``).
        dropped: keys the reference itself drops on load (extra FPN downsample layers).
        missing: model keys absent from the checkpoint.
        unexpected: checkpoint keys the model does not have (ignored).
        misshaped: ``key: checkpoint shape vs model shape``.
        derived: missing constants filled from the model (BN ``num_batches_tracked``, Swin index).
    """

    renamed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[str] = field(default_factory=list)
    derived: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every model tensor has a checkpoint tensor of the right shape."""
        return not self.missing and not self.misshaped

    def lines(self) -> list[str]:
        """A human-readable report, one finding per line."""
        out = []
        for title, items in (("renamed legacy keys", self.renamed), ("dropped (as the reference does)", self.dropped),
                             ("filled constants", self.derived), ("unexpected, ignored", self.unexpected),
                             ("missing", self.missing), ("mis-shaped", self.misshaped)):
            out.append(f"  {title}: {len(items)}")
            out.extend(f"    {item}" for item in items[:20])
            if len(items) > 20:
                out.append(f"    ... and {len(items) - 20} more")
        return out


def _shape(tensor: Tensor) -> str:
    return "[" + ",".join(str(s) for s in tensor.shape) + "]"


def unwrap_state_dict(obj: Any) -> dict[str, Tensor]:
    """The state dict inside a loaded reference checkpoint (plain, or under ``state_dict`` / ``model``).

    Raises:
        ValueError: no dict of tensors found.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError("no state dict (a mapping of names to tensors) found")
    return dict(obj)


def reference_to_cico(state: Mapping[str, Tensor], report: ConversionReport | None = None) -> dict[str, Tensor]:
    """Map reference key names (current and legacy) to cico's, recording legacy renames and drops."""
    report = report if report is not None else ConversionReport()
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key
        while name.startswith("module."):
            name = name[len("module."):]
        if name.split(".", 1)[0] in ("mask_refine", "proto_net", "proto_conv"):
            name = "ProtoNet." + name
        if name.startswith("prediction_layers.0."):
            name = "prediction_layers." + name[len("prediction_layers.0."):]
        match = _DOWNSAMPLE_EXTRA.match(name)
        if match and int(match.group(1)) >= 2:
            report.dropped.append(key)
            continue
        if name != key:
            report.renamed.append(f"{key} -> {name}")
        for old, new in _PREFIXES:
            if name.startswith(old):
                name = new + name[len(old):]
        out[name] = value
    return out


def _derived_value(key: str, ref: Tensor) -> Tensor:
    """The constant value of a derived tensor ``key`` shaped like ``ref`` (which may be on the meta device)."""
    if key.endswith(".num_batches_tracked"):
        return torch.zeros(ref.shape, dtype=ref.dtype)
    window = int(round(ref.shape[0] ** 0.5))
    return get_relative_position_index(window, window)


def match_state_dict(state: Mapping[str, Tensor], expected: Mapping[str, Tensor],
                     report: ConversionReport | None = None) -> tuple[dict[str, Tensor], ConversionReport]:
    """Pick ``expected``'s keys from ``state``, in ``expected``'s order and dtypes, reporting the differences.

    Missing constants (BN ``num_batches_tracked``, Swin ``relative_position_index``) are filled in.
    """
    report = report if report is not None else ConversionReport()
    out: dict[str, Tensor] = {}
    for key, ref in expected.items():
        value = state.get(key)
        if value is None:
            if key.endswith(_DERIVED):
                out[key] = _derived_value(key, ref)
                report.derived.append(key)
            else:
                report.missing.append(f"{key} {_shape(ref)}")
        elif value.shape != ref.shape:
            report.misshaped.append(f"{key}: checkpoint {_shape(value)} vs model {_shape(ref)}")
        else:
            out[key] = value.to(ref.dtype) if value.is_floating_point() and ref.is_floating_point() else value
    report.unexpected.extend(k for k in state if k not in expected)
    return out, report


def matching_presets(state: Mapping[str, Tensor]) -> list[str]:
    """The presets whose model keys and shapes all match ``state`` (cico names)."""
    names = []
    for name, config in PRESETS.items():
        expected = empty_model(config).state_dict()
        if all(k in state and state[k].shape == v.shape for k, v in expected.items()
               if not k.endswith(_DERIVED)):
            names.append(name)
    return names


def looks_like_reference(obj: Any) -> bool:
    try:
        keys = unwrap_state_dict(obj).keys()
    except ValueError:
        return False
    return any(k.removeprefix("module.").startswith(("prediction_layers.", "ProtoNet.", "fpn.lat_layers"))
               for k in keys)
