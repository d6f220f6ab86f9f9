"""cico checkpoints (save/load, .pth and .safetensors, atomic writes, one-line errors) and ``cico convert`` of
reference-style checkpoints with current and legacy key names."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import cico
from cico.cli import main
from cico.errors import CicoError
from cico.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from cico.model.convert import reference_to_cico


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return cico.build_model("tiny_yolact", num_classes=3).eval()


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 3, 64, 64)


def _reference_style(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict under the reference's names (``ProtoNet.*``, ``prediction_layers.*``)."""
    renames = {"protonet.": "ProtoNet.", "head.": "prediction_layers."}
    out = {}
    for key, value in model.state_dict().items():
        for new, old in renames.items():
            if key.startswith(new):
                key = old + key[len(new):]
        out[key] = value.clone()
    return out


def _same_outputs(a: nn.Module, b: nn.Module, clip: torch.Tensor) -> None:
    with torch.no_grad():
        ha, hb = a.forward_raw(clip), b.forward_raw(clip)
    for name in ("loc", "conf", "mask_coeff", "track", "proto"):
        torch.testing.assert_close(getattr(ha, name), getattr(hb, name), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_load_round_trip(tiny: nn.Module, clip: torch.Tensor, tmp_path: Path, suffix: str) -> None:
    path = save_checkpoint(tmp_path / f"model{suffix}", tiny, preset="tiny_yolact")
    loaded = load_model(path)
    assert not loaded.training and loaded.config == tiny.config
    _same_outputs(tiny, loaded, clip)
    assert load_checkpoint(path)["preset"] == "tiny_yolact"
    assert [p.name for p in tmp_path.iterdir()] == [f"model{suffix}"]  # no temporary file left behind


def test_pth_is_weights_only_and_keeps_extra_entries(tiny: nn.Module, tmp_path: Path) -> None:
    optimizer = torch.optim.SGD(tiny.parameters(), lr=0.1, momentum=0.9)
    path = save_checkpoint(tmp_path / "train.pth", tiny, epoch=3, optimizer=optimizer.state_dict())
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "cico" and raw["version"] == 1 and raw["epoch"] == 3 and "optimizer" in raw
    assert raw["config"] == tiny.config.to_dict() and raw["preset"] is None
    with pytest.raises(ValueError, match="optimizer"):
        save_checkpoint(tmp_path / "x.safetensors", tiny, optimizer={})


def test_failed_save_keeps_the_previous_file(tiny: nn.Module, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "model.pth", tiny)
    before = path.read_bytes()
    with pytest.raises((AttributeError, pickle.PicklingError)):
        save_checkpoint(path, tiny, callback=lambda: None)  # a lambda cannot be pickled
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_load_errors_are_one_line_cico_errors(tiny: nn.Module, tmp_path: Path) -> None:
    cases = {
        "missing.pth": (None, "not found"),
        "garbage.pth": (b"\x00not a checkpoint" * 10, "not a readable PyTorch checkpoint"),
        "list.pth": ([1, 2, 3], "not a cico checkpoint"),
        "reference.pth": (_reference_style(tiny), "convert it first"),
        "newer.pth": ({"format": "cico", "version": 99, "config": {}, "model": {}}, "newer"),
        "badconfig.pth": ({"format": "cico", "version": 1, "config": {"backbone": "vgg"}, "model": {}},
                          "invalid model config"),
        "mismatch.pth": ({"format": "cico", "version": 1, "model": tiny.state_dict(),
                          "config": cico.build_model("tiny_condinst").config.to_dict()}, "do not fit"),
        "garbage.safetensors": (b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage", "not a readable safetensors"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(CicoError, match=message) as info:
            load_model(path)
        assert name in str(info.value) and "\n" not in str(info.value), name


def test_reference_key_names_current_and_legacy() -> None:
    weight = torch.zeros(1)
    state = {
        "module.backbone.conv1.weight": weight,
        "proto_net.0.weight": weight,  # legacy, outside ProtoNet
        "prediction_layers.0.conf_layer.bias": weight,  # legacy per-level head list
        "ProtoNet.proto_conv.3.bias": weight,
        "fpn.downsample_layers.1.weight": weight,
        "fpn.downsample_layers.2.weight": weight,  # dropped like the reference does
    }
    assert list(reference_to_cico(state)) == [
        "backbone.conv1.weight", "protonet.proto_net.0.weight", "head.conf_layer.bias",
        "protonet.proto_conv.3.bias", "fpn.downsample_layers.1.weight"]


def test_convert_reference_checkpoint(clip: torch.Tensor, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(3)
    original = cico.build_model("tiny_yolact").eval()
    legacy = {}
    for key, value in _reference_style(original).items():
        if key.startswith("ProtoNet.mask_refine"):
            key = key[len("ProtoNet."):]
        elif key.startswith("prediction_layers."):
            key = "prediction_layers.0." + key[len("prediction_layers."):]
        legacy["module." + key] = value
    legacy["module.fpn.downsample_layers.2.weight"] = torch.zeros(64, 64, 3, 3)
    del legacy["module.backbone.bn1.num_batches_tracked"]
    src = tmp_path / "ref.pth"
    torch.save({"state_dict": legacy, "epoch": 7}, src)
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(src), str(out), "--preset", "tiny_yolact"]) == 0
    report = capsys.readouterr().out
    assert "dropped (as the reference does): 1" in report and "filled constants: 1" in report
    assert "missing: 0" in report and "mis-shaped: 0" in report
    converted = load_model(out)
    assert converted.config == original.config and load_checkpoint(out)["preset"] == "tiny_yolact"
    _same_outputs(original, converted, clip)


def test_convert_refuses_weights_of_another_preset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(2)
    condinst = cico.build_model("tiny_condinst")
    src = tmp_path / "ref.pth"
    torch.save(_reference_style(condinst), src)
    assert main(["convert", str(src), str(tmp_path / "out.pth"), "--preset", "tiny_yolact"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "do not fit preset tiny_yolact" in err and "tiny_condinst" in err
    assert not (tmp_path / "out.pth").exists()


def test_convert_input_errors(tiny: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["convert", str(tmp_path / "none.pth"), str(tmp_path / "o.pth"), "--preset", "tiny_yolact"]) == 2
    assert "not found" in capsys.readouterr().err
    cico_ckpt = save_checkpoint(tmp_path / "c.pth", tiny)
    assert main(["convert", str(cico_ckpt), str(tmp_path / "o.pth"), "--preset", "tiny_yolact"]) == 2
    assert "already a cico checkpoint" in capsys.readouterr().err
