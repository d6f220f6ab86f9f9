"""Fine-tuning: checkpoint transfer with the class layer matched by class name, the summary line, the
``finetune`` recipe, frozen backbone stages, and ``cico train --init`` of a mixed image+video run."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from cico.cli import main
from cico.data.annotations import load_annotations
from cico.data.image_clips import images_from_videos
from cico.data.synthetic import make_synthetic
from cico.demo import shipped_weights
from cico.errors import CicoError
from cico.model.checkpoint import load_checkpoint, save_checkpoint
from cico.model.network import CiCo, build_model
from cico.training.config import make_config
from cico.training.finetune import (
    CLASS_LAYER,
    checkpoint_architecture,
    freeze_backbone,
    transfer_checkpoint,
)

SMALL = {"backbone_width": 16, "fpn_channels": 16, "proto_channels": 16, "mask_dim": 8, "track_dim": 8,
         "box_tower_layers": 1, "class_tower_layers": 1, "track_tower_layers": 1, "min_size": 64, "max_size": 96}
WEIGHT, BIAS = CLASS_LAYER + "weight", CLASS_LAYER + "bias"


def _model(names: tuple[str, ...], seed: int, classifier: str = "sigmoid") -> CiCo:
    torch.manual_seed(seed)
    return build_model("tiny_yolact", num_classes=len(names), class_names=names, classifier=classifier, **SMALL)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cico checkpoint trained (here: randomly initialised) on disc, square, triangle."""
    path = tmp_path_factory.mktemp("ckpt") / "source.pt"
    source = _model(("disc", "square", "triangle"), seed=1)
    for module in source.modules():  # batch-norm statistics of real inputs, as a trained model has them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        source.train()(torch.rand(2, 3, 3, 64, 96) * 4 - 2)
        for value in source.state_dict().values():  # no tensor equals a fresh model's (BN weights are all 1)
            if value.is_floating_point():
                value.add_(torch.randn_like(value) * 1e-3)
    save_checkpoint(path, source, preset="tiny_yolact")
    return load_checkpoint(path)


def _prior(model: CiCo) -> float:
    return -math.log((1 - model.head.prior_prob) / model.head.prior_prob)


def test_other_class_names_of_the_same_count_reinitialise_the_class_layer_and_copy_everything_else(
        checkpoint: dict) -> None:
    model = _model(("star", "ring", "cross"), seed=2)
    report = transfer_checkpoint(model, checkpoint)
    state, source = model.state_dict(), checkpoint["model"]
    assert report.class_layer == "reinitialised"
    assert torch.equal(state[WEIGHT], torch.zeros_like(state[WEIGHT]))  # fresh: zero weights, the focal prior
    assert torch.allclose(state[BIAS], torch.full_like(state[BIAS], _prior(model)))
    others = [k for k in state if not k.startswith(CLASS_LAYER)]
    assert sorted(report.copied) == sorted(others) and not report.kept
    for key in others:
        assert torch.equal(state[key], source[key]), key
    line = report.summary()
    assert "\n" not in line
    assert line.startswith(f"{len(others)} of {len(state)} tensors copied; class layer re-initialised (no class in "
                           "common: checkpoint disc, square, triangle; data star, ring, cross)")


def test_shared_class_names_carry_their_rows_over_in_the_new_order(checkpoint: dict) -> None:
    model = _model(("triangle", "star", "disc"), seed=2)
    report = transfer_checkpoint(model, checkpoint)
    anchors = model.config.num_anchors
    new_w = model.state_dict()[WEIGHT].view(anchors, 3, -1)
    new_b = model.state_dict()[BIAS].view(anchors, 3)
    old_w = checkpoint["model"][WEIGHT].view(anchors, 3, -1)
    old_b = checkpoint["model"][BIAS].view(anchors, 3)
    assert torch.equal(new_w[:, 0], old_w[:, 2]) and torch.equal(new_b[:, 0], old_b[:, 2])  # triangle
    assert torch.equal(new_w[:, 2], old_w[:, 0]) and torch.equal(new_b[:, 2], old_b[:, 0])  # disc
    assert not new_w[:, 1].any() and torch.allclose(new_b[:, 1], torch.full_like(new_b[:, 1], _prior(model)))
    assert report.class_layer == "remapped" and report.shared == ["triangle", "disc"] and report.new == ["star"]
    assert "class layer: 2 classes carried over by name, 1 new re-initialised (star;" in report.summary()


def test_same_classes_copy_the_class_layer(checkpoint: dict) -> None:
    model = _model(("disc", "square", "triangle"), seed=2)
    report = transfer_checkpoint(model, checkpoint)
    assert report.class_layer == "copied" and "class layer copied (same classes)" in report.summary()
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["model"][key]), key


def test_another_classifier_type_reinitialises_and_other_shapes_stay_at_their_init(checkpoint: dict) -> None:
    torch.manual_seed(3)
    model = build_model("tiny_yolact", num_classes=3, class_names=("disc", "square", "triangle"),
                        classifier="softmax", **{**SMALL, "track_dim": 4})
    fresh_track = model.head.track_layer.weight.detach().clone()
    report = transfer_checkpoint(model, checkpoint)
    assert report.class_layer == "reinitialised"
    assert "classifier sigmoid in the checkpoint, softmax here" in report.reason
    assert torch.equal(model.head.track_layer.weight, fresh_track)
    assert "head.track_layer.weight" in report.kept and "left at their init: 2" in report.summary()


def test_checkpoint_architecture_of_the_demo_model_leaves_the_classes_to_the_data() -> None:
    preset, model = checkpoint_architecture(shipped_weights("demo"))
    assert preset == "tiny_yolact"
    assert model["backbone_width"] == 32 and model["min_size"] == 128
    assert not {"num_classes", "class_names", "frozen_bn"} & set(model)
    assert checkpoint_architecture(Path(__file__)) is None  # not a cico checkpoint


def test_finetune_recipe_sits_on_the_presets_recipe() -> None:
    tiny, fine = make_config("tiny_yolact", "tiny"), make_config("tiny_yolact", "finetune")
    assert fine.recipe == "finetune" and fine.optimizer == tiny.optimizer == "adamw"
    assert fine.lr == pytest.approx(tiny.lr / 4)
    assert fine.schedule.warmup_init == pytest.approx(tiny.schedule.warmup_init / 4)
    assert fine.loss == tiny.loss and fine.model["frozen_bn"] is True and fine.model["min_size"] == 128
    assert fine.iters == 1500 and fine.freeze_at == 0
    reference = make_config("cico_yolact_r50_yt19", "finetune", ["freeze_at=2", "lr=1e-4"])
    assert reference.optimizer == "sgd" and reference.lr == 1e-4 and reference.freeze_at == 2


def test_freeze_at_freezes_the_first_stages_and_their_batch_norms() -> None:
    model = _model(("a",), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = freeze_backbone(model, 2)
    backbone = model.backbone
    assert isinstance(backbone.bn1, FrozenBatchNorm2d) and isinstance(backbone.layer[0][0].bn1, FrozenBatchNorm2d)
    assert isinstance(backbone.layer[1][0].bn1, torch.nn.BatchNorm2d)
    expected = [p for m in (backbone.conv1, backbone.layer[0]) for p in m.parameters()]
    assert frozen == sum(p.numel() for p in expected) and not any(p.requires_grad for p in expected)
    assert all(p.requires_grad for p in backbone.layer[1].parameters())
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after)  # same weights and statistics
    with pytest.raises(CicoError, match="freeze_at=6"):
        freeze_backbone(model, 6)


def test_init_of_a_mixed_image_and_video_run_trains(tmp_path: Path, checkpoint: dict,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ann = make_synthetic(tmp_path / "data", 2, 4, (64, 96), seed=5, class_names=("star", "ring", "cross"),
                         max_objects=2, workers=1)
    images = tmp_path / "images.json"
    images.write_text(json.dumps(images_from_videos(load_annotations(ann), stride=2)))
    source = tmp_path / "source.pt"
    torch.save(checkpoint, source)
    out = tmp_path / "run"
    code = main(["train", "--init", str(source), "--recipe", "finetune", "--ann", str(ann),
                 "--frames", str(ann.parent / "JPEGImages"), "--images", str(images),
                 "--image-frames", str(ann.parent / "JPEGImages"), "--image-ratio", "0.5", "--out", str(out),
                 "--iters", "3", "--device", "cpu", "batch_size=2", "num_workers=0", "log_every=1", "amp=none",
                 "freeze_at=1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "class layer re-initialised (no class in common: checkpoint disc, square, triangle; data " in printed
    assert "as pseudo-clips, 8 of 16 clips per epoch" in printed
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(math.isfinite(line["loss"]) for line in lines)
    stored = load_checkpoint(out / "final.pt")
    assert stored["config"]["class_names"] == ["star", "ring", "cross"] and stored["config"]["backbone_width"] == 16
    assert json.loads((out / "config.json").read_text())["train"]["images"]["ratio"] == 0.5
