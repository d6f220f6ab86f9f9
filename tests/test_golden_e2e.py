"""End-to-end golden test (golden README §5-6): the reference's whole test loop on 8 DAVIS frames.

For every model folder of every ``e2e_*`` case: regenerate the reference weights from the manifest, import
them with ``cico convert``, run ``cico predict`` on the case's PNG frames (T, overlap and sizes from the
manifest's ``driver``) and compare ``results.json`` and the per-clip detections/tracker outputs (written by
``--dump-tracker``) with the reference's. The same again through ONNX Runtime: the converted weights exported
with ``cico export`` (once per model) and ``cico predict --weights model.onnx``, with the same acceptance.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cico.cli import main
from cico.data.rle import decode
from cico.model.config import get_preset
from tests.conftest import GOLDEN_DIR
from tests.golden import cases, preset_name, read_manifest, read_npz, write_reference_checkpoint


def _model_dirs() -> list[Path]:
    """Every model folder of every ``e2e_*`` case; a case without one is returned itself (to fail)."""
    dirs = []
    for case in cases(GOLDEN_DIR, "e2e"):
        models = sorted(d for d in case.iterdir() if d.is_dir() and d.name != "frames")
        dirs.extend(models or [case])
    return dirs


MODEL_DIRS = _model_dirs()
PARAMS = [pytest.param(d, id=f"{d.parent.name}/{d.name}") for d in MODEL_DIRS] or [
    pytest.param(None, id="no-e2e-case-found")]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    """``weights(model_dir, suffix)``: the case's reference weights imported with ``cico convert`` (``.pth``) or
    that checkpoint exported with ``cico export`` (``.onnx``); each made once per module."""
    made: dict[tuple[Path, str], Path] = {}

    def weights(model_dir: Path, suffix: str) -> Path:
        if (model_dir, suffix) in made:
            return made[model_dir, suffix]
        manifest = read_manifest(model_dir)
        folder = tmp_path_factory.mktemp(model_dir.name)
        if suffix == ".pth":
            reference = write_reference_checkpoint(manifest, folder / "reference.pth")
            path = folder / "cico.pth"
            assert main(["convert", str(reference), str(path), "--preset", preset_name(manifest)]) == 0
        else:
            path = folder / "cico.onnx"
            assert main(["export", "--weights", str(weights(model_dir, ".pth")), "--out", str(path)]) == 0
        made[model_dir, suffix] = path
        return path

    return weights


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".pth", ".onnx"], ids=["torch", "onnx"])
@pytest.mark.parametrize("model_dir", PARAMS)
def test_e2e_matches_reference(model_dir: Path | None, suffix: str, converted, tmp_path: Path):
    if model_dir is None:
        pytest.fail(f"no e2e_*/<model>/manifest.json under {GOLDEN_DIR}")
    manifest = read_manifest(model_dir)
    driver = manifest["driver"]
    preset = preset_name(manifest)
    config = get_preset(preset)
    assert (config.min_size, config.max_size) == (driver["min_size_test"], driver["max_size_test"])
    frame_paths = [(model_dir / f).resolve() for f in manifest["video"]["frames"]]
    frames_dir = frame_paths[0].parent
    assert sorted(frames_dir.glob("*.png")) == frame_paths

    weights = converted(model_dir, suffix)
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), str(frames_dir), "--out", str(out),
                 "--clip-frames", str(driver["T"]), "--overlap", str(driver["overlap_frames"]),
                 "--dump-tracker", "--quiet"]) == 0

    # per clip: detections and tracker outputs
    ours = read_npz(out / "tracker" / f"{frames_dir.name}.npz")
    golden = read_npz(model_dir / "tracker_outputs.npz")
    clips = sorted({key.split("_")[0] for key in golden})
    assert clips == sorted({key.split("_")[0] for key in ours})
    for clip in clips:
        exact = ["frame_ids", "det_class", "trk_box_ids", "trk_class", "trk_tracked_mask"]
        if clip == "clip0":  # the golden file has tracked_mask from clip 1 on; the first clip's are all 0
            assert not ours["clip0_trk_tracked_mask"].any()
            exact.remove("trk_tracked_mask")
        for key in exact:
            assert f"{clip}_{key}" in golden, f"golden {clip}_{key} missing"
            np.testing.assert_array_equal(ours[f"{clip}_{key}"], golden[f"{clip}_{key}"], err_msg=f"{clip}_{key}")
        for key in ("det_score", "trk_score", "trk_box", "trk_box_cir"):
            np.testing.assert_allclose(ours[f"{clip}_{key}"], golden[f"{clip}_{key}"], rtol=0, atol=1e-4,
                                       err_msg=f"{clip}_{key}")

    # video results
    with open(out / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    with open(model_dir / "results.json", encoding="utf-8") as f:
        expected = json.load(f)
    assert len(results) == len(expected) == manifest["n_results"]
    for i, (res, ref) in enumerate(zip(results, expected)):
        assert res["video_id"] == ref["video_id"]
        assert res["category_id"] == ref["category_id"], f"result {i}"
        assert res["score"] == pytest.approx(ref["score"], abs=1e-4), f"result {i}"
        assert len(res["segmentations"]) == len(ref["segmentations"]) == len(frame_paths)
        for frame, (seg, ref_seg) in enumerate(zip(res["segmentations"], ref["segmentations"])):
            assert (seg is None) == (ref_seg is None), f"result {i} frame {frame}"
            if seg is not None:
                assert seg["size"] == ref_seg["size"]
                assert mask_iou(decode(seg), decode(ref_seg)) >= 0.99, f"result {i} frame {frame}"
