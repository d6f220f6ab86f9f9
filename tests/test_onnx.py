"""``cico export`` and ONNX Runtime as ``--weights``: the file, the same results as torch, the user errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from cico.cli import main
from cico.errors import CicoError
from cico.inference.onnx_runtime import OnnxClipNetwork, feature_sizes, max_differences
from cico.model.checkpoint import load_model
from cico.model.network import build_model
from cico.model.onnx_export import RawClipNetwork
from tests.conftest import REPO
from tests.video_helpers import disc_frames, tiny_checkpoint, write_frames


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny checkpoint (64x96 input) and its fixed-size ONNX export, made once."""
    folder = tmp_path_factory.mktemp("onnx")
    weights = tiny_checkpoint(folder / "tiny.pth")
    assert main(["export", "--weights", str(weights), "--out", str(folder / "tiny.onnx")]) == 0
    return weights, folder / "tiny.onnx"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_export_file_checks_and_carries_the_config(exported, capsys):
    weights, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["cico.config"]) == load_model(weights).config.to_dict()
    assert props["cico.clip_frames"] == "3" and props["cico.version"]
    assert json.loads(props["cico.input"])["shape"] == [1, 3, 3, 64, 96]
    assert [o["name"] for o in json.loads(props["cico.outputs"])] == [o.name for o in model.graph.output]
    ops = {node.op_type for node in model.graph.node}
    assert "NonMaxSuppression" not in ops and "Conv" in ops
    assert "BatchNormalization" not in ops  # folded into the convolutions before the export


def test_onnx_predict_equals_torch(exported, tmp_path: Path):
    weights, path = exported
    frames = write_frames(tmp_path / "clip", disc_frames(7))
    results = {}
    for name, w in (("torch", weights), ("onnx", path)):
        out = tmp_path / name
        assert main(["predict", "--weights", str(w), str(frames), "--out", str(out), "--quiet", "--batch-clips",
                     "2"]) == 0
        results[name] = json.loads((out / "results.json").read_text())
    assert results["torch"], "the tiny model should detect something"
    assert len(results["onnx"]) == len(results["torch"])
    for ours, theirs in zip(results["onnx"], results["torch"]):
        assert ours["category_id"] == theirs["category_id"]
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)
        assert ours["segmentations"] == theirs["segmentations"]


@pytest.mark.slow
def test_dynamic_size_export_takes_sizes_and_batches_the_fixed_one_refuses(exported, tmp_path: Path):
    weights, fixed = exported
    dynamic = tmp_path / "dynamic.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(dynamic), "--dynamic-size"]) == 0
    props = {p.key: p.value for p in onnx.load(str(dynamic), load_external_data=False).metadata_props}
    assert json.loads(props["cico.input"])["shape"] == ["batch", 3, 3, "height", "width"]
    model, network, fixed_network = load_model(weights), OnnxClipNetwork(dynamic), OnnxClipNetwork(fixed)
    for batch, height, width in ((1, 96, 96), (3, 64, 160), (2, 32, 32)):
        clips = torch.randn(batch, 3, 3, height, width)
        with pytest.raises(CicoError, match="re-export"):
            fixed_network.forward_raw(clips)
        for name, (difference, scale) in max_differences(model, network, clips).items():
            assert difference <= 1e-4 * max(1.0, scale), (batch, height, width, name)


def test_pt2_export_loads_and_gives_the_network_outputs(exported, tmp_path: Path):
    weights, _ = exported
    path = tmp_path / "tiny.pt2"
    assert main(["export", "--weights", str(weights), "--out", str(path), "--format", "pt2"]) == 0
    extra = {"cico.json": ""}
    loaded = torch.export.load(str(path), extra_files=extra).module()
    model = load_model(weights)
    assert json.loads(extra["cico.json"])["config"] == model.config.to_dict()
    clip = torch.randn(1, 3, 3, 64, 96)
    with torch.no_grad():
        for ours, theirs in zip(loaded(clip), RawClipNetwork(model)(clip), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def test_host_anchors_match_the_network():
    model = build_model("tiny_yolact")
    for size in ((64, 96), (96, 160), (384, 640)):
        with torch.no_grad():
            pyramid = [(f.shape[-2], f.shape[-1]) for f in model.fpn(model.backbone(torch.zeros(1, 3, *size)))]
        assert feature_sizes(*size) == pyramid


def test_wrong_files_are_one_line(exported, tmp_path: Path, capsys):
    _, path = exported
    frames = write_frames(tmp_path / "clip", disc_frames(3))

    def predict(weights: Path, *extra: str) -> int:
        return main(["predict", "--weights", str(weights), str(frames), "--out", str(tmp_path / "o"), "--quiet",
                     *extra])

    text = tmp_path / "text.onnx"
    text.write_text("not a model")
    assert predict(text) == 2
    assert "not a readable ONNX model" in error_line(capsys)

    bare = onnx.load(str(path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    assert predict(tmp_path / "bare.onnx") == 2
    assert "without cico metadata" in error_line(capsys)

    other_t = onnx.load(str(path))
    for prop in other_t.metadata_props:
        if prop.key == "cico.clip_frames":
            prop.value = "5"
    onnx.save(other_t, str(tmp_path / "other_t.onnx"))
    assert predict(tmp_path / "other_t.onnx") == 2
    assert "inconsistent cico metadata" in error_line(capsys)

    assert predict(path, "--clip-frames", "5") == 2
    assert "clips of 3 frames" in error_line(capsys)
    assert predict(path, "--amp", "bf16") == 2
    assert "not to an ONNX export" in error_line(capsys)

    network = OnnxClipNetwork(path)
    with pytest.raises(CicoError, match=r"takes 64x96 inputs, the frames pad to 96x96: re-export with '--size 96x96'"):
        network.forward_raw(torch.zeros(1, 3, 3, 96, 96))


def test_thread_policy_leaves_the_user_environment_alone(tmp_path: Path):
    script = ("import os, cico.threads as t; ok = t.configure(); import torch; "
              "print(ok, os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads(), "
              "os.environ.get('THP_MEM_ALLOC_ENABLE'), t.current_policy().huge_pages, "
              # torch honours the switch: large tensors page-aligned, for madvise(MADV_HUGEPAGE)
              "all(x.data_ptr() % 4096 == 0 for x in [torch.ones(1 << 20) for _ in range(4)]))")
    ours = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "THP_MEM_ALLOC_ENABLE")
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env["PYTHONPATH"] = str(REPO)

    def run(**extra: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", script], env={**env, **extra}, capture_output=True, text=True,
                              check=True)
        return done.stdout.split()

    default = run()
    assert default[:3] == ["True", "1000", "None"] and default[4:] == ["1", "True", "True"]
    user = run(GOMP_SPINCOUNT="7", OMP_NUM_THREADS="1", THP_MEM_ALLOC_ENABLE="0")
    assert user == ["True", "7", "1", "1", "0", "False", "False"]
    assert run(OMP_WAIT_POLICY="PASSIVE")[1] == "None"
