"""Presets: every reference preset builds with the reference's parameter counts (spec §2.10); configs
round-trip through JSON; ``build_model`` accepts names, configs and overrides."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import pytest

import cico
from cico.constants import OVIS_CLASSES, YTVIS2019_CLASSES, YTVIS2021_CLASSES
from cico.inference.predictor import VideoPredictor
from cico.model.config import PRESETS, ModelConfig, get_preset
from cico.model.network import empty_model

# spec §2.10 (verified by instantiating the reference): tensors in the state dict, parameters, and
# parameters of backbone / fpn / ProtoNet / prediction_layers
YT19 = {
    "yolact_r50": (419, 52_606_495, 23_508_032, 3_868_672, 7_681_312, 17_548_479),
    "condinst_r50": (419, 53_492_362, 23_508_032, 3_868_672, 7_675_144, 18_440_514),
    "yolact_r101": (725, 71_598_623, 42_500_160, 3_868_672, 7_681_312, 17_548_479),
    "condinst_r101": (725, 72_484_490, 42_500_160, 3_868_672, 7_675_144, 18_440_514),
    "yolact_swint": (290, 53_794_201, 27_520_698, 3_295_232, 5_429_792, 17_548_479),
    "condinst_swint": (290, 44_491_844, 27_520_698, 1_918_464, 4_318_664, 10_734_018),
}
OVIS_SPEC = {"yolact_r50": 52_509_685, "condinst_r50": 53_395_552}  # the two OVIS rows of §2.10


def _expected(name: str) -> tuple[int, ...]:
    _, head, backbone, dataset = name.split("_")
    tensors, total, bb, fpn, proto, pred = YT19[f"{head}_{backbone}"]
    if dataset == "ovis":
        # OVIS: softmax with background, conf_layer 3·(25+1) = 78 outputs instead of 3·40 = 120
        width = 192 if (head, backbone) == ("condinst", "swint") else 256
        delta = (120 - 78) * (width * 9 + 1)
        total, pred = total - delta, pred - delta
    return tensors, total, bb, fpn, proto, pred


REFERENCE = [n for n in PRESETS if n.startswith("cico_")]


def test_eighteen_reference_presets() -> None:
    assert len(REFERENCE) == 18
    assert {"tiny_yolact", "tiny_condinst"} <= set(PRESETS)


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_parameter_counts(name: str) -> None:
    model = empty_model(PRESETS[name])
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    got = (len(model.state_dict()), count(model), count(model.backbone), count(model.fpn),
           count(model.protonet), count(model.head))
    assert got == _expected(name)
    if name.removeprefix("cico_").removesuffix("_ovis") in OVIS_SPEC and name.endswith("_ovis"):
        assert got[1] == OVIS_SPEC[name.removeprefix("cico_").removesuffix("_ovis")]


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_preset_settings(name: str) -> None:
    config = PRESETS[name]
    dataset = name.rsplit("_", 1)[1]
    classes = {"yt19": YTVIS2019_CLASSES, "yt21": YTVIS2021_CLASSES, "ovis": OVIS_CLASSES}[dataset]
    assert config.class_names == classes and config.num_classes == len(classes)
    assert config.classifier == ("softmax" if dataset == "ovis" else "sigmoid")
    assert config.num_logits == len(classes) + (dataset == "ovis")
    assert config.mask_param_dim == (32 if "yolact" in name else 161)
    assert (config.clip_frames, config.track_dim, config.aspect_ratios) == (3, 64, (1.0, 0.5, 2.0))
    assert (config.min_size, config.max_size, config.normalization) == (384, 640, "reference")
    assert config.detect.score_thresh == 0.1 and config.detect.nms_iou_thresh == 0.5


def test_tiny_presets() -> None:
    for name, mask_dim in (("tiny_yolact", 32), ("tiny_condinst", 8)):
        config = PRESETS[name]
        assert config.backbone == "resnet18" and config.normalization == "rgb"
        assert (config.min_size, config.max_size, config.clip_frames, config.num_classes) == (192, 320, 3, 8)
        assert config.fpn_channels <= 96 and config.box_tower_layers == 2 and config.mask_dim == mask_dim
        assert sum(p.numel() for p in empty_model(config).parameters()) < 14_000_000


def test_config_json_round_trip() -> None:
    for config in (PRESETS["cico_condinst_swint_ovis"], get_preset("tiny_yolact", num_classes=3)):
        data = json.loads(json.dumps(config.to_dict()))
        assert data == config.to_dict()
        assert ModelConfig.from_dict(data) == config


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="class_names"):
        ModelConfig(num_classes=2, class_names=("a",))
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"backbone": "resnet50", "colour": "red"})
    with pytest.raises(KeyError, match="tiny_yolact"):
        get_preset("cico_yolact_r18_yt19")


def test_build_model_from_name_config_and_overrides() -> None:
    model = cico.build_model("tiny_condinst", num_classes=3, clip_frames=2)
    assert model.config.class_names == ("class_1", "class_2", "class_3")
    assert model.head.conf_layer.out_channels == 3 * 3
    assert model.head.bbox_layer.out_channels == 3 * 4 * 2
    trainer_config = replace(PRESETS["tiny_yolact"], num_classes=2, class_names=("cat", "dog"))
    assert cico.build_model(trainer_config).config.class_names == ("cat", "dog")
    assert cico.build_model(trainer_config, detect={"score_thresh": 0.2}).config.detect.score_thresh == 0.2


def test_presets_cannot_be_changed_through_a_config_model_or_predictor() -> None:
    config = get_preset("tiny_yolact")
    assert config == PRESETS["tiny_yolact"] and config is not PRESETS["tiny_yolact"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.detect.score_thresh = 0.5  # type: ignore[misc]
    model = cico.build_model("tiny_yolact")
    predictor = VideoPredictor(model, score_thresh=0.3)
    assert predictor.detect_config.score_thresh == 0.3 and predictor.tracker.config.score_thresh == 0.3
    assert model.config.detect.score_thresh == PRESETS["tiny_yolact"].detect.score_thresh == 0.1
