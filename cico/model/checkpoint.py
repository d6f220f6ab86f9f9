"""Checkpoints: the cico format, and the one reader of PyTorch weight files.

cico checkpoint (``.pth``): a ``torch.save`` dict loadable with ``weights_only=True``::

    {"format": "cico", "version": 1, "config": ModelConfig.to_dict(), "preset": name or None,
     "model": state_dict, ...}   # other keys (e.g. the trainer's optimizer state) are kept and ignored here

or ``.safetensors``: the state dict, with ``format``, ``version``, ``config`` (JSON) and ``preset`` in the
metadata. Either way the stored config rebuilds the network, so a checkpoint alone is enough to run it.

Reference CiCo checkpoints are imported by :mod:`cico.model.convert` (``cico convert``).
"""
from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CicoError
from ..fileio import atomic_write
from ..weights import resolve_weights
from .config import ModelConfig
from .convert import looks_like_reference, match_state_dict
from .network import CiCo, empty_model

FORMAT = "cico"
VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig | None = None, *,
                    preset: str | None = None, **extra: Any) -> Path:
    """Write ``model``'s weights and ``config`` (default ``model.config``) atomically (tmp file + rename).

    ``.safetensors`` paths get the safetensors variant (no ``extra`` allowed); anything else a ``torch.save``
    dict with ``extra`` entries added (e.g. ``optimizer=..., epoch=...``).
    """
    path = Path(path)
    if getattr(model, "batch_norm_folded", False):
        raise ValueError("the model's batch norms are folded (an inference network): save the unfolded model")
    if config is None:
        if not isinstance(model.config, ModelConfig):
            raise ValueError("the model has no ModelConfig: pass config=")
        config = model.config
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        if extra:
            raise ValueError(f"cannot store {', '.join(extra)} in a .safetensors checkpoint")
        from safetensors.torch import save_file

        metadata = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(config.to_dict()),
                    "preset": preset or ""}
        tensors = {k: v.contiguous().cpu() for k, v in state.items()}
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    else:
        payload = {"format": FORMAT, "version": VERSION, "config": config.to_dict(), "preset": preset,
                   "model": state, **extra}
        with atomic_write(path) as tmp:
            torch.save(payload, tmp)
    return path


def read_torch_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: the one reader of PyTorch weight files (cico checkpoints,
    reference checkpoints, backbone weights), so every unreadable file gets the same one-line error.

    Raises:
        CicoError: the file is missing, or not a PyTorch file loadable with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise CicoError("checkpoint not found", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as err:
        raise CicoError(f"not a readable PyTorch checkpoint ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:160] if str(err) else 'corrupt'})", path) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a cico checkpoint: ``{"format", "version", "config" (dict), "preset", "model", ...}``.

    ``path`` may name a model shipped with cico (``demo``, see :mod:`cico.weights`).

    Raises:
        CicoError: missing, unreadable or corrupt file, a reference checkpoint (convert it first), a
            checkpoint of a newer format version.
    """
    path = resolve_weights(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CicoError("checkpoint not found", path)
        return _load_safetensors(path, map_location)
    obj = read_torch_file(path, map_location)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        if looks_like_reference(obj):
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
