"""Detect against the reference, isolated from the network: the reference's raw head outputs of each
golden network case go in, its per-clip detections (``det_*``) must come out (golden README §3, §6)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GOLDEN_DIR
from golden import network_cases

from cico.model.detect import detect
from cico.model.outputs import HeadOutputs
from cico.structures import Instances as ClipDetections


def _network_cases() -> list:
    """Every network case folder (``cico_*``); unreadable ones are kept (to fail)."""
    cases = [pytest.param(case, id=case.name) for case in network_cases(GOLDEN_DIR)]
    return cases or [pytest.param(GOLDEN_DIR / "<no network case>", id="no-golden-network-case")]


def _run_reference_inputs(case: Path, dtype: torch.dtype = torch.float32
                          ) -> tuple[dict[str, np.ndarray], ClipDetections]:
    manifest = json.loads((case / "manifest.json").read_text())
    config = manifest["config"]
    ref = dict(np.load(case / "outputs.npz"))
    def tensor(key: str) -> torch.Tensor:
        return torch.from_numpy(ref[key]).to(dtype)

    head = HeadOutputs(
        loc=tensor("loc"),
        conf=tensor("conf_logits"),
        centerness=tensor("centerness"),
        mask_coeff=tensor("mask_coeff"),
        track=tensor("track"),
        priors=tensor("priors").reshape(-1, 4),
        prior_levels=tensor("prior_levels").reshape(-1),
        proto=tensor("proto"),
    )
    (dets,) = detect(
        head,
        classifier="softmax" if "ovis" in config else "sigmoid",
        mask_head="condinst" if "condinst" in config else "yolact",
    )
    return ref, dets


@pytest.mark.parametrize("case", _network_cases())
def test_detect_matches_reference(case: Path):
    if not (case / "outputs.npz").is_file():
        pytest.fail(f"no golden network case with outputs.npz under {GOLDEN_DIR}")
    ref, dets = _run_reference_inputs(case)

    assert dets.labels.tolist() == ref["det_class"].tolist()
    np.testing.assert_allclose(dets.scores.numpy(), ref["det_score"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(dets.boxes.numpy(), ref["det_box"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(dets.boxes_cir.numpy(), ref["det_box_cir"], atol=1e-4, rtol=0)
    for ours, key in ((dets.track, "det_track"), (dets.mask_coeff, "det_mask_coeff")):
        np.testing.assert_allclose(ours.numpy(), ref[key], atol=1e-4 * np.abs(ref[key]).max(), rtol=0)
    np.testing.assert_array_equal(dets.prior_levels.numpy(), ref["det_prior_levels"].reshape(-1))

    ref_masks = torch.from_numpy(ref["det_mask"])
    assert dets.masks.shape == ref_masks.shape
    np.testing.assert_allclose(dets.masks.numpy(), ref["det_mask"], atol=1e-3, rtol=0)
    ours_bin, ref_bin = dets.masks > 0.5, ref_masks > 0.5
    inter = (ours_bin & ref_bin).sum(dim=(-1, -2)).double()
    union = (ours_bin | ref_bin).sum(dim=(-1, -2)).double()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    assert iou.min() >= 0.99, f"binarised mask IoU {iou.min():.4f} < 0.99"
    torch.testing.assert_close(dets.proto, torch.from_numpy(ref["proto"][0]), rtol=0, atol=0)


@pytest.mark.parametrize("case", _network_cases())
def test_detect_ignores_an_enclosing_autocast_and_computes_in_float64_when_given(case: Path):
    if not (case / "outputs.npz").is_file():
        pytest.fail(f"no golden network case with outputs.npz under {GOLDEN_DIR}")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, dets = _run_reference_inputs(case)
    assert dets.labels.tolist() == ref["det_class"].tolist() and dets.masks.dtype == torch.float32
    np.testing.assert_allclose(dets.masks.numpy(), ref["det_mask"], atol=1e-3, rtol=0)
    ref, dets = _run_reference_inputs(case, torch.float64)
    assert dets.labels.tolist() == ref["det_class"].tolist() and dets.masks.dtype == torch.float64
    np.testing.assert_allclose(dets.scores.numpy(), ref["det_score"], atol=1e-4, rtol=0)
