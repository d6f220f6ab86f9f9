"""Test helper for the golden vectors (golden README §1-3): find the cases, read their files, and regenerate
the reference's synthetic weights from a manifest's seeded recipe (README §2), checking every tensor's sha256.

Used by the network golden tests and by the end-to-end video test (``e2e_car-shadow/<model>/manifest.json``
holds a full weights recipe too)::

    manifest = read_manifest(case_dir)
    write_reference_checkpoint(manifest, tmp_path / "ref.pth")   # a plain reference state_dict
    cico.cli.main(["convert", str(tmp_path / "ref.pth"), str(out), "--preset", preset_name(manifest)])
"""
from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

CASE_KINDS = ("preprocess", "cico", "e2e", "train")


def cases(golden_dir: Path, kind: str) -> list[Path]:
    """The case folders of one kind in ``golden_dir``, sorted by name.

    The kind is the folder-name prefix (golden README §1): ``preprocess_*`` (preprocessing), ``cico_*``
    (network and detection), ``e2e_*`` (a whole video) and ``train_*`` (one training step). A folder of
    that prefix is returned whatever it holds, so a case with a missing or broken file fails its test.
    """
    if kind not in CASE_KINDS:
        raise ValueError(f"unknown golden case kind {kind!r}; expected one of {CASE_KINDS}")
    return sorted(p for p in Path(golden_dir).glob(f"{kind}_*") if p.is_dir())


def network_cases(golden_dir: Path) -> list[Path]:
    """The network-level case folders of ``golden_dir`` (``cico_*``), sorted by name."""
    return cases(golden_dir, "cico")


def read_manifest(case_dir: Path) -> dict[str, Any]:
    """``case_dir/manifest.json`` (or ``case_dir`` itself when it is the manifest file)."""
    path = Path(case_dir)
    path = path if path.suffix == ".json" else path / "manifest.json"
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, loaded eagerly."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def preset_name(manifest: dict[str, Any]) -> str:
    """The cico preset of a case: its ``config`` without the ``.py`` suffix (``cico_yolact_r50_yt19``)."""
    return str(manifest["config"]).removesuffix(".py")


def make_tensor(seed: int, entry: dict[str, Any]) -> np.ndarray:
    """One tensor of the recipe (README §2): zeros, the Swin relative-position index, or seeded normals."""
    if entry["kind"] == "zeros":
        return np.zeros(entry["shape"], entry["dtype"])
    if entry["kind"] == "swin_relative_position_index":
        ws = 7
        coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
        rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (ws - 1)
        rel[:, :, 0] *= 2 * ws - 1
        return rel.sum(-1).astype(np.int64)
    if entry["kind"] != "normal":
        raise ValueError(f"unknown tensor kind {entry['kind']!r} of {entry['name']}")
    rng = np.random.default_rng([seed, zlib.crc32(entry["name"].encode())])
    z = rng.standard_normal(tuple(entry["shape"]))
    if entry["abs"]:
        z = np.abs(z)
    return (entry["mean"] + entry["std"] * z).astype(np.float32)


def reference_state_dict(manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The reference model's state dict of a manifest, in the reference's key order.

    Raises:
        ValueError: a tensor's sha256 (of its C-contiguous little-endian bytes) differs from the manifest.
    """
    weights = manifest["weights"]
    state: dict[str, torch.Tensor] = {}
    for entry in weights["tensors"]:
        array = make_tensor(weights["seed"], entry)
        array = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
        digest = hashlib.sha256(array.tobytes()).hexdigest()
        if digest != entry["sha256"]:
            raise ValueError(f"regenerated {entry['name']} does not match its sha256 in the manifest")
        state[entry["name"]] = torch.from_numpy(array)
    if len(state) != weights["n_tensors"]:
        raise ValueError(f"manifest lists {len(state)} tensors, says n_tensors={weights['n_tensors']}")
    return state


def cico_names(reference_names: Iterable[str]) -> dict[str, str]:
    """Reference state-dict name -> cico name, through the mapping ``cico convert`` uses (``reference_to_cico``)."""
    from cico.model.convert import reference_to_cico

    dummy = torch.zeros(())
    return {name: next(iter(reference_to_cico({name: dummy}))) for name in reference_names}


def write_reference_checkpoint(manifest: dict[str, Any], path: Path) -> Path:
    """Save :func:`reference_state_dict` as a plain reference ``.pth`` (what ``cico convert`` reads)."""
    torch.save(reference_state_dict(manifest), path)
    return Path(path)
