"""Checkpoints: the cico format, and import of reference CiCo checkpoints.

cico checkpoint (``.pth``): a ``torch.save`` dict loadable with ``weights_only=True``::

    {"format": "cico", "version": 1, "config": ModelConfig.to_dict(), "preset": name or None,
     "model": state_dict, ...}   # other keys (e.g. the trainer's optimizer state) are kept and ignored here

or ``.safetensors``: the state dict, with ``format``, ``version``, ``config`` (JSON) and ``preset`` in the
metadata. Either way the stored config rebuilds the network, so a checkpoint alone is enough to run it.

Reference checkpoints (spec §7) are plain ``CoreNet.state_dict()``s, possibly wrapped in
``{"state_dict": ...}`` / ``{"model": ...}``, with ``module.`` prefixes and legacy names
(``mask_refine|proto_net|proto_conv.*`` for ``ProtoNet.*``, ``prediction_layers.0.*``, extra
``fpn.downsample_layers.{i>=2}``). :func:`reference_to_cico` maps them to cico's names (``ProtoNet.`` ->
``protonet.``, ``prediction_layers.`` -> ``head.``; everything below is unchanged).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.models.swin_transformer import get_relative_position_index
from torch import Tensor, nn

from ..errors import CicoError
from ..weights import resolve_weights
from .config import PRESETS, ModelConfig
from .network import CiCo

FORMAT = "cico"
VERSION = 1

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
    """Map reference key names (current and legacy, spec §7) to cico's, recording legacy renames and drops."""
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


def empty_model(config: ModelConfig) -> CiCo:
    """A network on the meta device (no memory, no initialisation), for shapes and fast loading."""
    with torch.device("meta"):
        return CiCo(config)


def matching_presets(state: Mapping[str, Tensor]) -> list[str]:
    """The presets whose model keys and shapes all match ``state`` (cico names)."""
    names = []
    for name, config in PRESETS.items():
        expected = empty_model(config).state_dict()
        if all(k in state and state[k].shape == v.shape for k, v in expected.items()
               if not k.endswith(_DERIVED)):
            names.append(name)
    return names


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig | None = None, *,
                    preset: str | None = None, **extra: Any) -> Path:
    """Write ``model``'s weights and ``config`` (default ``model.config``) atomically (tmp file + rename).

    ``.safetensors`` paths get the safetensors variant (no ``extra`` allowed); anything else a ``torch.save``
    dict with ``extra`` entries added (e.g. ``optimizer=..., epoch=...``).
    """
    path = Path(path)
    config = config if config is not None else model.config
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        if extra:
            raise ValueError(f"cannot store {', '.join(extra)} in a .safetensors checkpoint")
        from safetensors.torch import save_file

        metadata = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(config.to_dict()),
                    "preset": preset or ""}
        tensors = {k: v.contiguous().cpu() for k, v in state.items()}
        _atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    else:
        payload = {"format": FORMAT, "version": VERSION, "config": config.to_dict(), "preset": preset,
                   "model": state, **extra}
        _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def _looks_like_reference(obj: Any) -> bool:
    try:
        keys = unwrap_state_dict(obj).keys()
    except ValueError:
        return False
    return any(k.removeprefix("module.").startswith(("prediction_layers.", "ProtoNet.", "fpn.lat_layers"))
               for k in keys)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a cico checkpoint: ``{"format", "version", "config" (dict), "preset", "model", ...}``.

    ``path`` may name a model shipped with cico (``demo``, see :mod:`cico.weights`).

    Raises:
        CicoError: missing, unreadable or corrupt file, a reference checkpoint (convert it first), a
            checkpoint of a newer format version.
    """
    path = resolve_weights(path)
    if not path.is_file():
        raise CicoError("checkpoint not found", path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path, map_location)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as err:
        raise CicoError(f"not a readable PyTorch checkpoint ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:160] if str(err) else 'corrupt'})", path) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        if _looks_like_reference(obj):
            raise CicoError("this is a reference CiCo checkpoint; convert it first with "
                            "'cico convert REF.pth OUT.pth --preset NAME'", path)
        raise CicoError("not a cico checkpoint (no 'format': 'cico' entry)", path)
    _check_version(obj.get("version"), path)
    if not isinstance(obj.get("config"), dict) or not isinstance(obj.get("model"), dict):
        raise CicoError("cico checkpoint without 'config' or 'model'", path)
    return obj


def _check_version(version: Any, path: Path) -> None:
    if not isinstance(version, int) or version < 1:
        raise CicoError(f"invalid cico checkpoint version {version!r}", path)
    if version > VERSION:
        raise CicoError(f"checkpoint format version {version} is newer than this cico supports ({VERSION})", path)


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CicoError(f"not a readable safetensors file ({str(err).splitlines()[0][:160]})", path) from None
    if metadata.get("format") != FORMAT:
        raise CicoError("safetensors file without cico metadata (format/config)", path)
    try:
        version, config = int(metadata.get("version", "")), json.loads(metadata["config"])
    except (ValueError, KeyError) as err:
        raise CicoError(f"corrupt cico metadata ({err})", path) from None
    _check_version(version, path)
    return {"format": FORMAT, "version": version, "config": config, "preset": metadata.get("preset") or None,
            "model": state}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> CiCo:
    """Rebuild the network stored in a cico checkpoint, load its weights, move it to ``device``; eval mode.

    Raises:
        CicoError: see :func:`load_checkpoint`; also an invalid stored config or weights that do not fit it.
    """
    checkpoint = load_checkpoint(path)
    try:
        config = ModelConfig.from_dict(checkpoint["config"])
    except (TypeError, ValueError) as err:
        raise CicoError(f"invalid model config in checkpoint ({err})", path) from None
    return model_from_state_dict(config, checkpoint["model"], source=path).to(device).eval()


def model_from_state_dict(config: ModelConfig, state: Mapping[str, Tensor], source: str | Path = "weights") -> CiCo:
    """A CPU network of ``config`` holding exactly ``state`` (cico names), without random initialisation.

    Raises:
        CicoError: keys missing or mis-shaped (the message names the first ones).
    """
    model = empty_model(config)
    matched, report = match_state_dict(state, model.state_dict())
    if not report.ok:
        problems = report.missing + report.misshaped
        raise CicoError(f"weights do not fit the model config: {len(report.missing)} missing and "
                        f"{len(report.misshaped)} mis-shaped tensors (e.g. {'; '.join(problems[:2])})", source)
    matched = {k: v.to("cpu") for k, v in matched.items()}
    model.load_state_dict(matched, strict=True, assign=True)
    return model
