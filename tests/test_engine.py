"""The training engine: schedule, data order, configuration, checkpoints, initialisation, learning,
NaN handling and an exact kill-and-resume of the real ``cico train`` command."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from cico.cli import main
from cico.commands.sharding import held_out_evaluator
from cico.data.clips import ClipDataConfig, ClipDataset
from cico.data.synthetic import make_synthetic
from cico.data.transforms import TrainAugmentation
from cico.errors import CicoError
from cico.model.checkpoint import load_checkpoint, load_model
from cico.model.network import build_model
from cico.training.config import TrainConfig, apply_overrides, config_from_dict, config_to_dict, make_config
from cico.training.engine import train as run_training
from cico.training.init import (
    InflationConfig,
    _swin_to_cico,
    inflate_state_dict,
    load_coco_init,
    load_imagenet_backbone,
    reference_init,
)
from cico.training.losses import CiCoLoss
from cico.training.sampler import RunOrder, epoch_permutation
from cico.training.schedule import ScheduleConfig, WarmupDecayLR
from cico.training.setup import amp_dtype, cpu_has_fast_bf16
from cico.training.state import capture_rng, latest_checkpoint, list_checkpoints, prune_checkpoints, restore_rng

# a very small network for CPU tests: 64x96 inputs, 16-wide FPN and heads, one-layer towers
SMALL = {"backbone_width": 16, "fpn_channels": 16, "proto_channels": 16, "mask_dim": 8, "track_dim": 8,
         "box_tower_layers": 1, "class_tower_layers": 1, "track_tower_layers": 1, "min_size": 64, "max_size": 96}
SMALL_OVERRIDES = [f"model.{k}={v}" for k, v in SMALL.items()]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four tiny synthetic videos (64x96, 6 frames, 3 classes) and a held-out pair."""
    root = tmp_path_factory.mktemp("synthetic")
    train = make_synthetic(root / "train", 4, 6, (64, 96), seed=3, classes=3, max_objects=2, workers=1)
    val = make_synthetic(root / "val", 2, 6, (64, 96), seed=4, classes=3, max_objects=2, workers=1)
    return train, val


# -- schedule, data order, configuration ----------------------------------------------------------


def test_warmup_then_step_decay() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1e-3)
    sched = WarmupDecayLR(opt, total_iters=2000, cfg=ScheduleConfig(warmup_iters=500, warmup_init=1e-4))
    lrs = []
    for _ in range(2000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[250] == pytest.approx(1e-4 + (1e-3 - 1e-4) * 0.5)  # (LR - 1e-4) * it / 500 + 1e-4
    assert lrs[500] == pytest.approx(1e-3)
    assert lrs[1499] == pytest.approx(1e-3) and lrs[1500] == pytest.approx(1e-4)  # x0.1 at 75 % (epoch 9/12)
    state = sched.state_dict()
    torch.save(state, "/dev/null")  # plain values only
    assert set(state) == {"last_epoch", "base_lrs", "_last_lr", "_step_count"}


def test_warmup_then_cosine_decay() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=3e-3)
    sched = WarmupDecayLR(opt, total_iters=1100, cfg=ScheduleConfig(warmup_iters=100, warmup_init=2e-4,
                                                                     decay="cosine"))
    lrs = []
    for _ in range(1100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-4) and lrs[100] == pytest.approx(3e-3)
    assert lrs[600] == pytest.approx(1.5e-3)  # half-way through the decay: half the rate
    assert lrs[350] == pytest.approx(3e-3 * (1 + np.cos(np.pi / 4)) / 2)
    assert all(a > b for a, b in zip(lrs[100:], lrs[101:])) and 0 < lrs[-1] < 1e-7
    with pytest.raises(CicoError, match="schedule.decay"):
        WarmupDecayLR(opt, 10, ScheduleConfig(decay="linear"))


def test_data_order_is_split_over_processes_and_resumable() -> None:
    size, batch = 23, 2
    one = list(RunOrder(size, 2 * batch, seed=7, start=0, stop=12))
    ranks = [list(RunOrder(size, batch, seed=7, start=0, stop=12, rank=r, world_size=2)) for r in range(2)]
    for it in range(12):  # the global batch of each iteration is the same however it is split
        merged = ranks[0][it * batch:(it + 1) * batch] + ranks[1][it * batch:(it + 1) * batch]
        assert merged == one[it * 2 * batch:(it + 1) * 2 * batch]
    per_epoch = 23 // 4
    assert [e for e, _ in one[::4]] == [i // per_epoch for i in range(12)]
    assert [i for _, i in one[:4 * per_epoch]] == epoch_permutation(size, 7, 0)[:4 * per_epoch].tolist()
    assert list(RunOrder(size, 4, seed=7, start=7, stop=12)) == one[7 * 4:]  # resuming mid-epoch
    assert list(RunOrder(size, 4, seed=8, start=0, stop=1)) != one[:4]


def test_accumulated_micro_batches_are_the_clips_of_the_processes_they_stand_for() -> None:
    """2 processes x 2 micro-batches: micro-batch k of process r is process 2r+k's slice of a 4-process run."""
    size, batch = 41, 2
    virtual = [list(RunOrder(size, batch, seed=5, start=0, stop=9, rank=r, world_size=4)) for r in range(4)]
    for rank in range(2):
        items = list(RunOrder(size, batch, seed=5, start=0, stop=9, rank=rank, world_size=2, accumulate=2))
        for it in range(9):
            step = items[it * 2 * batch:(it + 1) * 2 * batch]
            assert step[:batch] == virtual[2 * rank][it * batch:(it + 1) * batch]
            assert step[batch:] == virtual[2 * rank + 1][it * batch:(it + 1) * batch]
    order = RunOrder(size, batch, seed=5, start=3, stop=9, accumulate=2)
    assert order.per_epoch == 41 // 4 and len(order) == 6 * 2 * batch


def test_overrides_and_round_trip() -> None:
    cfg = make_config("tiny_yolact", overrides=["lr=0.02", "schedule.milestones=[0.5,0.9]", "loss.mask_weight=3",
                                                "loss.match.forced_match_stall=false", "model.min_size=96",
                                                "data.flip=vertical", "iters=10"])
    assert cfg.recipe == "tiny" and cfg.lr == 0.02 and cfg.iters == 10
    assert cfg.schedule.milestones == (0.5, 0.9) and cfg.loss.mask_weight == 3.0
    assert cfg.loss.match.forced_match_stall is False
    assert cfg.model["min_size"] == 96 and cfg.model["backbone_width"] == 32
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    assert make_config("cico_yolact_r50_yt19").recipe == "reference"
    for bad in (["nope=1"], ["lr=fast"], ["lr"], ["schedule=3"], ["model.a.b=1"]):
        with pytest.raises(CicoError):
            apply_overrides(make_config("tiny_yolact"), bad)


# -- checkpoints and generators -------------------------------------------------------------------


def test_rng_states_round_trip() -> None:
    state = capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    torch.save(state, "/dev/null")


def test_latest_checkpoint_ignores_partial_writes(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("iter_00000002.pt", "iter_00000010.pt", ".iter_00000012.pt.tmp-99", "iter_00000004.pt"):
        (folder / name).write_bytes(b"x")
    assert latest_checkpoint(tmp_path).name == "iter_00000010.pt"
    prune_checkpoints(tmp_path, keep=2)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [4, 10]


# -- initialisation -------------------------------------------------------------------------------


def test_inflation_quirks_and_the_intended_variants() -> None:
    w2d = torch.arange(2 * 4 * 3 * 3, dtype=torch.float).reshape(2, 4, 3, 3)
    source = {"protonet.proto_net.0.weight": w2d, "head.bbox_extra.0.weight": w2d,
              "head.bbox_layer.bias": torch.arange(12, dtype=torch.float),
              "head.bbox_layer.weight": torch.ones(12, 4, 3, 3), "head.conf_layer.bias": torch.ones(80),
              "fpn.x": torch.ones(3)}
    target = {"protonet.proto_net.0.weight": torch.zeros(4, 4, 3, 3, 3),
              "head.bbox_extra.0.weight": torch.zeros(2, 4, 3, 3, 3),
              "head.bbox_layer.bias": torch.zeros(36), "head.bbox_layer.weight": torch.zeros(36, 4, 3, 3),
              "head.conf_layer.bias": torch.zeros(6), "fpn.x": torch.zeros(3)}
    out, report = inflate_state_dict(source, target, num_anchors=3, clip_frames=3)
    profile = torch.tensor([0.125, 0.75, 0.125])
    proto = out["protonet.proto_net.0.weight"]
    assert proto.shape == (4, 4, 3, 3, 3)
    for t in range(3):  # the reference's kw-axis quirk: every [t, kh] slice scaled along kw, no /t
        assert torch.equal(proto[:2, :, t], w2d * profile)
    assert torch.equal(proto[2:], proto[:2])  # c_out tiled
    assert torch.allclose(out["head.bbox_extra.0.weight"], w2d.unsqueeze(2).expand(2, 4, 3, 3, 3) / 3)
    bias = out["head.bbox_layer.bias"].view(3, 3, 4)  # [anchor, frame, 4]
    assert torch.equal(bias[1, 2], torch.arange(8, 12, dtype=torch.float))  # COCO anchor t -> frame slot t
    assert "head.bbox_layer.weight" in report.skipped and "head.conf_layer.bias" in report.skipped
    assert torch.equal(out["fpn.x"], torch.ones(3))

    fixed, _ = inflate_state_dict(source, target, 3, 3, InflationConfig(kw_axis_quirk=False, tile_bbox_bias=False))
    for t in range(3):
        assert torch.equal(fixed["protonet.proto_net.0.weight"][:2, :, t], w2d * profile[t])
    fixed_bias = fixed["head.bbox_layer.bias"].view(3, 3, 4)
    assert torch.equal(fixed_bias[1, 2], torch.arange(4, 8, dtype=torch.float))  # COCO anchor a -> anchor a


def test_coco_checkpoint_and_imagenet_resnet_from_local_files(tmp_path: Path) -> None:
    model = build_model("tiny_yolact", num_classes=3, **{k: v for k, v in SMALL.items() if k != "backbone_width"})
    reference_init(model)
    assert torch.allclose(model.head.conf_layer.bias.detach(), torch.tensor(-4.59512), atol=1e-4)
    resnet = torchvision.models.resnet18()
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    report = load_imagenet_backbone(model, tmp_path / "resnet18.pth")
    assert len(report.copied) == len([k for k in model.state_dict() if k.startswith("backbone.")])
    assert torch.equal(model.backbone.layer[2][1].conv2.weight, resnet.layer3[1].conv2.weight)
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(CicoError, match="does not fit the resnet18 backbone"):
        load_imagenet_backbone(model, tmp_path / "resnet50.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CicoError, match="not a readable PyTorch checkpoint"):
        load_imagenet_backbone(model, tmp_path / "broken.pth")

    # a frame-level checkpoint in the reference's legacy names: 2D protonet convs, 12-channel bbox layer
    coco = {}
    for key, value in model.state_dict().items():
        name = key.replace("protonet.", "").replace("head.", "prediction_layers.0.")
        if value.dim() == 5:
            value = value[:, :, 1].clone()
        if "bbox_layer" in key:
            value = value[: value.shape[0] // 3].clone()
        coco["module." + name] = value + 1
    torch.save(coco, tmp_path / "coco.pth")
    report = load_coco_init(model, tmp_path / "coco.pth")
    assert "protonet.proto_net.0.weight" in report.inflated and "head.bbox_layer.bias" in report.tiled
    assert torch.equal(model.fpn.lat_layers[0].weight, coco["module.fpn.lat_layers.0.weight"])


def test_swin_names_from_timm_and_microsoft_layouts() -> None:
    timm = {"layers.1.downsample.reduction.weight": 1, "layers.3.downsample.norm.bias": 2, "norm.weight": 3,
            "head.fc.weight": 4, "layers.0.blocks.0.attn.relative_position_index": 5, "patch_embed.proj.weight": 6}
    assert _swin_to_cico(timm) == {"backbone.layers.0.downsample.reduction.weight": 1,
                                   "backbone.layers.2.downsample.norm.bias": 2, "backbone.patch_embed.proj.weight": 6}
    microsoft = {"layers.0.downsample.reduction.weight": 1, "layers.0.blocks.1.attn_mask": 2, "head.weight": 3}
    assert _swin_to_cico(microsoft) == {"backbone.layers.0.downsample.reduction.weight": 1}


# -- it learns ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset, amp", [("tiny_yolact", None), ("tiny_condinst", None),
                                        ("tiny_yolact", torch.bfloat16)])
def test_a_few_iterations_decrease_the_loss_on_a_fixed_batch(preset: str, amp: torch.dtype | None,
                                                             synthetic: tuple[Path, Path]) -> None:
    """As the engine steps: the forward under autocast when ``amp`` is set (bf16 on CPU), float32 losses."""
    torch.manual_seed(0)
    train, _ = synthetic
    model = build_model(preset, num_classes=3, normalization="rgb", **SMALL).train()
    data = ClipDataset(train, train.parent / "JPEGImages",
                       ClipDataConfig(augment=TrainAugmentation(min_size=64, max_size=96, normalization="rgb",
                                                                expand_prob=0.0)))
    batch = data.collate_fn([data[0], data[7]])
    criterion = CiCoLoss.for_model(model.config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(12):
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            head = model(batch.images).head
        terms = criterion(head, batch.boxes, batch.masks, batch.labels)
        total = sum(terms.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # as the tiny recipe
        optimizer.step()
        losses.append(total.item())
    assert min(losses[-3:]) < 0.7 * losses[0], losses


# -- the engine end to end ------------------------------------------------------------------------


def _train_args(train: Path, val: Path, out: Path, *overrides: str) -> list[str]:
    return ["train", "--preset", "tiny_yolact", "--ann", str(train), "--frames", str(train.parent / "JPEGImages"),
            "--val-ann", str(val), "--val-frames", str(val.parent / "JPEGImages"), "--out", str(out), "--iters", "6",
            "--deterministic", *SMALL_OVERRIDES, "batch_size=2", "num_workers=0", "log_every=1", *overrides]


def _cico(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cico", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kwargs)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).state_dict()


def test_kill_and_resume_reaches_the_same_weights(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = synthetic
    common = ["checkpoint_every=2", "eval_every=3", "keep_checkpoints=5", "ema_decay=0.9"]
    straight = _cico(_train_args(train, val, tmp_path / "straight", *common))
    killed = _cico(_train_args(train, val, tmp_path / "killed", *common))
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoints" / "iter_00000004.pt").exists():
        assert killed.poll() is None and time.time() < deadline, killed.communicate()[0]
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)  # somewhere in iteration 5 or 6
    killed.wait()
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out
    assert not (tmp_path / "killed" / "final.pt").exists()

    resumed = _cico(["train", "--out", str(tmp_path / "killed"), "--resume"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resuming from" in out
    a, b = _weights(tmp_path / "straight" / "final.pt"), _weights(tmp_path / "killed" / "final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # every checkpoint is a cico checkpoint usable as --weights; metrics and TensorBoard were written
    assert load_model(tmp_path / "killed" / "checkpoints" / "iter_00000002.pt").config.num_classes == 3
    metrics = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics if "loss" in m] == [1, 2, 3, 4, 5, 6]
    assert [m["iteration"] for m in metrics if "eval" in m] == [3, 6]
    assert len(metrics[-1]["eval"]) == 12 and (tmp_path / "killed" / "best.pt").exists()
    assert list((tmp_path / "killed" / "tb").iterdir())


def test_weight_average_is_the_exponential_average_of_the_steps(synthetic: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    """With ``ema_decay`` the run hands out the average: step 1 copies the weights, later steps lerp."""
    train, val = synthetic
    cfg = make_config("tiny_yolact", overrides=SMALL_OVERRIDES + [
        "ema_decay=0.6", "ema_warmup_power=0", "checkpoint_every=1", "keep_checkpoints=10", "num_workers=0",
        "batch_size=2", "eval_every=4"],
        train_ann=str(train), train_frames=str(train.parent / "JPEGImages"), val_ann=str(val),
        val_frames=str(val.parent / "JPEGImages"), out=str(tmp_path / "run"), iters=4)
    final = run_training(cfg, evaluate=held_out_evaluator())
    steps = [load_checkpoint(path) for _, path in list_checkpoints(tmp_path / "run")]
    expected = {k: v.clone() for k, v in steps[0]["model"].items()}
    for step in steps[1:]:
        for name, value in step["model"].items():
            if value.is_floating_point():
                expected[name] = 0.6 * expected[name] + 0.4 * value
            else:
                expected[name] = value
    averaged, live = _weights(final), steps[-1]["model"]
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(steps[-1]["train"]["ema"][name], value, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(averaged[k], live[k]) for k in live)  # the average, not the last weights
    best = _weights(tmp_path / "run" / "best.pt")  # evaluated at the end and kept: the average
    assert all(torch.equal(best[k], averaged[k]) for k in averaged)


def test_nan_loss_stops_naming_the_iteration_and_term(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    train, _ = synthetic
    cfg = make_config("tiny_yolact", overrides=SMALL_OVERRIDES + ["lr=1e12", "checkpoint_every=1", "num_workers=0",
                                                                "schedule.warmup_iters=0", "batch_size=2"],
                      train_ann=str(train), train_frames=str(train.parent / "JPEGImages"), out=str(tmp_path / "run"),
                      iters=30)
    with pytest.raises(CicoError, match=r"iteration (\d+): loss term '\w+' is (nan|inf|-inf)") as err:
        run_training(cfg)
    iteration = int(str(err.value).split("iteration ")[1].split(":")[0])
    last = latest_checkpoint(tmp_path / "run")
    assert last is not None and last.name == f"iter_{iteration - 1:08d}.pt"
    load_model(last)  # the last good checkpoint is intact
    assert not (tmp_path / "run" / "final.pt").exists()


def test_mixed_precision_choice_on_cpu() -> None:
    """``auto`` uses bf16 only on a CPU that computes it natively; fp16 and unknown names are user errors."""
    cpu = torch.device("cpu")
    native = cpu_has_fast_bf16()
    assert amp_dtype(TrainConfig(amp="auto"), cpu) == (torch.bfloat16 if native else None)
    assert amp_dtype(TrainConfig(amp="bf16"), cpu) == torch.bfloat16
    assert amp_dtype(TrainConfig(amp="none"), cpu) is None
    for bad, message in (("fp16", "needs a GPU"), ("half", "expected auto")):
        with pytest.raises(CicoError, match=message):
            amp_dtype(TrainConfig(amp=bad), cpu)


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny_yolact", "--ann", str(tmp_path / "missing.json"), "--frames",
                 str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["train", "--ann", str(tmp_path), "--frames", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "--preset NAME is needed" in capsys.readouterr().err
