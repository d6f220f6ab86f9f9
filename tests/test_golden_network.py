"""The network against the reference's golden vectors (golden README §2-3, §6).

For every network case in GOLDEN_DIR (a folder with ``input.npz``): regenerate the reference state dict from
the manifest's recipe (sha256-checked), save it as a reference ``.pth``, import it with ``cico convert``,
load the result with ``load_model``, run the clip in eval mode and compare every raw output, the FPN levels
and the per-clip detections with the README's tolerances.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GOLDEN_DIR
from golden import network_cases, preset_name, read_manifest, read_npz, write_reference_checkpoint

from cico.cli import main
from cico.model.checkpoint import load_model

CASES = network_cases(GOLDEN_DIR)
RAW_KEYS = ("loc", "conf_logits", "conf_score_max", "centerness", "mask_coeff", "track", "proto")


def test_golden_network_cases_present() -> None:
    assert CASES, f"no network cases (folders with input.npz) in {GOLDEN_DIR}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, dict]:
    return {}


def _run(case: Path, runs: dict[Path, dict], tmp: Path) -> dict:
    """Convert, load and run one case once per module; returns the manifest, references and our outputs."""
    if case not in runs:
        manifest = read_manifest(case)
        ref_pth = write_reference_checkpoint(manifest, tmp / "reference.pth")
        out_pth = tmp / "converted.pth"
        assert main(["convert", str(ref_pth), str(out_pth), "--preset", preset_name(manifest)]) == 0
        ref_pth.unlink()
        model = load_model(out_pth)
        out_pth.unlink()
        pyramid: list[torch.Tensor] = []
        model.fpn.register_forward_hook(lambda module, args, output: pyramid.extend(output))
        x = torch.from_numpy(read_npz(case / "input.npz")["x"])[None]
        with torch.no_grad():
            head = model.forward_raw(x)  # every anchor's outputs
            del pyramid[:]  # the pyramid of the forward below
            outputs = model(x)  # the detections, the box and track branches run only around the candidates
        ours = {
            "priors": head.priors[None], "prior_levels": head.prior_levels[None].float(), "loc": head.loc,
            "conf_logits": head.conf, "conf_score_max": head.conf.sigmoid().amax(-1),
            "centerness": head.centerness, "mask_coeff": head.mask_coeff, "track": head.track, "proto": head.proto,
            **{f"fpn_p{level + 3}": p for level, p in enumerate(pyramid)},
        }
        runs[case] = {"manifest": manifest, "ref": read_npz(case / "outputs.npz"),
                      "ours": {k: v.numpy() for k, v in ours.items()}, "detections": outputs.detections}
    return runs[case]


def _close(ours: np.ndarray, ref: np.ndarray, name: str, rel: float = 1e-4) -> None:
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} vs reference {ref.shape}"
    err, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    assert err <= rel * scale, f"{name}: max|ours-ref| = {err:.3g} > {rel:g}·{scale:.3g}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_raw_outputs(case: Path, runs: dict, tmp_path: Path) -> None:
    run = _run(case, runs, tmp_path)
    ours, ref = run["ours"], run["ref"]
    np.testing.assert_allclose(ours["priors"], ref["priors"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ours["prior_levels"], ref["prior_levels"])
    for key in RAW_KEYS:
        _close(ours[key], ref[key], key)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fpn_levels(case: Path, runs: dict, tmp_path: Path) -> None:
    run = _run(case, runs, tmp_path)
    ours, ref = run["ours"], run["ref"]
    for key in ("fpn_p5", "fpn_p6", "fpn_p7"):
        _close(ours[key], ref[key], key)
    for stats in run["manifest"]["fpn_stats"]:
        level = ours[f"fpn_{stats['level'].lower()}"].astype(np.float64)
        assert list(level.shape) == stats["shape"], stats["level"]
        # The statistics follow from the element-wise criterion |ours - ref| <= eps = 1e-4·max-abs: then the
        # mean, the max-abs and sum/n move by at most eps, and the std by at most eps·sqrt(n/(n-1)) (the
        # centred difference has norm <= sqrt(n)·eps). The reference's std is torch's default, the sample
        # std (n-1): the population std sits std/(2n) below it, which is ~1e-4 at P7 (n = 1536 values), as
        # much as eps itself, so it must be ddof=1 here.
        n = level.size
        eps = 1e-4 * stats["max_abs"]
        for name, value, tol in (("mean", level.mean(), eps), ("std", level.std(ddof=1), eps * np.sqrt(n / (n - 1))),
                                 ("max_abs", np.abs(level).max(), eps), ("sum", level.sum() / n, eps)):
            expected = stats[name] / n if name == "sum" else stats[name]
            assert abs(value - expected) <= tol, f"{stats['level']} {name}: {value} vs {expected}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_detections(case: Path, runs: dict, tmp_path: Path) -> None:
    run = _run(case, runs, tmp_path)
    ref, manifest = run["ref"], run["manifest"]
    assert run["detections"] is not None and len(run["detections"]) == 1
    det = run["detections"][0]
    assert len(det) == manifest["n_detections"]
    np.testing.assert_array_equal(det.labels.numpy(), ref["det_class"])
    np.testing.assert_allclose(det.scores.numpy(), ref["det_score"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(det.boxes.numpy(), ref["det_box"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(det.boxes_cir.numpy(), ref["det_box_cir"], rtol=0, atol=1e-4)
    _close(det.track.numpy(), ref["det_track"], "det_track")
    _close(det.mask_coeff.numpy(), ref["det_mask_coeff"], "det_mask_coeff")
    np.testing.assert_array_equal(det.prior_levels.reshape(-1).float().numpy(), ref["det_prior_levels"].reshape(-1))
    masks, ref_masks = det.masks.numpy(), ref["det_mask"]
    np.testing.assert_allclose(masks, ref_masks, rtol=0, atol=1e-3)
    ours_bin, ref_bin = masks > 0.5, ref_masks > 0.5
    inter = (ours_bin & ref_bin).sum((-1, -2))
    union = (ours_bin | ref_bin).sum((-1, -2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    assert iou.min() >= 0.99, f"binarised mask IoU {iou.min():.4f} < 0.99"
