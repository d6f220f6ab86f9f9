"""``cico train`` as a researcher runs it: the split it is told, a leaky evaluation set flagged, the
reference's frozen batch norm, missing and broken frames, SIGTERM with a checkpoint and an exact resume."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cico.cli import main
from cico.data.synthetic import make_synthetic
from cico.model.checkpoint import load_checkpoint, load_model
from cico.training.config import make_config
from cico.training.loop import too_many_failed_loads
from cico.training.preemption import INTERRUPTED_EXIT
from cico.training.setup import frozen_bn
from cico.training.state import list_checkpoints

SMALL = [f"model.{k}={v}" for k, v in {
    "backbone_width": 16, "fpn_channels": 16, "proto_channels": 16, "mask_dim": 8, "track_dim": 8,
    "box_tower_layers": 1, "class_tower_layers": 1, "track_tower_layers": 1, "min_size": 64, "max_size": 96}.items()]
COMMON = [*SMALL, "batch_size=2", "num_workers=0", "log_every=1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YouTube-VIS 2019 layout of 5 tiny synthetic videos, split by ``cico split`` (the last one held out)."""
    root = tmp_path_factory.mktemp("datasets")
    dataset = root / "YouTube_VOS2019"
    ann = make_synthetic(dataset / "train", 5, 6, (64, 96), seed=3, classes=3, max_objects=2, workers=1)
    (dataset / "annotations_instances").mkdir()
    shutil.copy(ann, dataset / "annotations_instances" / "train.json")
    assert main(["split", "--dataset", "ytvis2019", "--data-root", str(root), "--count", "1"]) == 0
    return root


def _dataset(root: Path, out: Path, split: str, *overrides: str, flags: tuple[str, ...] = ()) -> list[str]:
    return ["train", "--preset", "tiny_yolact", "--dataset", "ytvis2019", "--data-root", str(root), "--split", split,
            "--out", str(out), "--iters", "2", *flags, *COMMON, *overrides]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_split_is_honoured_and_a_leaky_evaluation_set_is_flagged(data_root: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(_dataset(data_root, tmp_path / "leaky", "train", "eval_every=1", "keep_checkpoints=0",
                         "checkpoint_every=1")) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("warning: the periodic evaluation set") and "valid_sub.json" in first
    assert "shares 1 of its 1 videos" in first
    evals = [m for m in _metrics(tmp_path / "leaky") if "eval" in m]
    assert [(m["iteration"], m["held_out"]) for m in evals] == [(1, False), (2, False)]
    config = json.loads((tmp_path / "leaky" / "config.json").read_text())
    assert config["train"]["train_ann"].endswith("annotations_instances/train.json") and not config["held_out"]
    # every periodic evaluation keeps its results and its 12 numbers; keep_checkpoints=0 keeps them all
    for iteration in (1, 2):
        folder = tmp_path / "leaky" / "eval" / f"iter_{iteration:08d}"
        stats = json.loads((folder / "stats.json").read_text())
        assert stats == evals[iteration - 1]["eval"] and len(stats) == 12
        assert isinstance(json.loads((folder / "results.json").read_text()), list)
    assert [i for i, _ in list_checkpoints(tmp_path / "leaky")] == [1, 2]

    assert main(_dataset(data_root, tmp_path / "honest", "train_sub", "eval_every=0")) == 0
    out = capsys.readouterr().out
    assert "warning: the periodic evaluation" not in out
    config = json.loads((tmp_path / "honest" / "config.json").read_text())
    assert config["train"]["train_ann"].endswith("train_sub.json") and config["held_out"]
    assert not any("eval" in m for m in _metrics(tmp_path / "honest"))  # eval_every=0: no evaluation at all
    assert not (tmp_path / "honest" / "eval").exists()


def test_reference_recipe_freezes_backbone_bn_below_four_clips_and_warns_without_init(
        data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert frozen_bn(make_config("cico_yolact_r50_yt19", overrides=["batch_size=3"]))[0]
    assert not frozen_bn(make_config("cico_yolact_r50_yt19", overrides=["batch_size=4"]))[0]
    assert not frozen_bn(make_config("tiny_yolact", overrides=["batch_size=2"]))[0]  # the tiny recipe trains BN
    capsys.readouterr()
    assert main(_dataset(data_root, tmp_path / "run", "train_sub", "eval_every=0", "amp=none", "checkpoint_every=100",
                         flags=("--recipe", "reference"))) == 0
    out = capsys.readouterr().out
    assert "model.frozen_bn=auto: 2 clips per process < 4, backbone batch norm frozen" in out
    warning = next(line for line in out.splitlines() if line.startswith("warning: tiny_yolact starts from random"))
    assert "COCO checkpoint" in warning and "--init" in warning and "--backbone-weights" in warning
    model = load_model(tmp_path / "run" / "final.pt")
    assert model.config.frozen_bn
    norms = [m for m in model.backbone.modules() if type(m).__name__ == "FrozenBatchNorm2d"]
    assert norms and all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in norms)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)  # neither trained nor updated


def test_missing_frames_are_all_named_before_the_first_step(data_root: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    frames = tmp_path / "frames"
    shutil.copytree(data_root / "YouTube_VOS2019" / "train" / "JPEGImages", frames)
    ann = data_root / "YouTube_VOS2019" / "annotations_instances" / "train_sub.json"
    names = json.loads(ann.read_text())["videos"]
    gone = [frames / names[0]["file_names"][2], frames / names[-1]["file_names"][5]]
    for path in gone:
        path.unlink()
    capsys.readouterr()
    assert main(["train", "--preset", "tiny_yolact", "--ann", str(ann), "--frames", str(frames),
                 "--out", str(tmp_path / "run"), "--iters", "2", *COMMON]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "2 frame file(s) missing before training" in err
    assert all(str(path) in err for path in gone)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_frame_that_does_not_decode_is_reported_replaced_and_counted(data_root: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    frames = tmp_path / "frames"
    shutil.copytree(data_root / "YouTube_VOS2019" / "train" / "JPEGImages", frames)
    ann = data_root / "YouTube_VOS2019" / "annotations_instances" / "train_sub.json"
    first = json.loads(ann.read_text())["videos"][0]
    for name in first["file_names"]:  # the whole first video is unreadable
        (frames / name).write_bytes(b"not a jpeg")
    capsys.readouterr()
    assert main(["train", "--preset", "tiny_yolact", "--ann", str(ann), "--frames", str(frames),
                 "--out", str(tmp_path / "run"), "--iters", "4", *COMMON]) == 0
    err = capsys.readouterr().err
    reports = [line for line in err.splitlines() if "a clip failed to load and was replaced" in line]
    assert reports and all(re.search(r"(^|\r|\])iteration \d: a clip failed", line) for line in reports)
    assert "cannot be decoded as an image" in reports[0] and str(frames) in reports[0]
    last = _metrics(tmp_path / "run")[-1]
    assert last["failed_loads"] == len(reports) and last["loads"] == 4 * 2 + len(reports)
    # the run stops only when more than 1 % of at least 100 loads failed
    assert not too_many_failed_loads(5, 60) and not too_many_failed_loads(1, 100)
    assert too_many_failed_loads(2, 100) and too_many_failed_loads(11, 1000)


def _cico(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cico", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_of_the_step_and_resume_ends_on_the_same_weights(data_root: Path,
                                                                                     tmp_path: Path) -> None:
    args = [*_dataset(data_root, tmp_path / "RUN", "train_sub", "eval_every=0", "checkpoint_every=1000",
                      flags=("--deterministic",))]
    args[args.index("--iters") + 1] = "8"
    straight = _cico([a.replace("RUN", "straight") for a in args])
    stopped = _cico([a.replace("RUN", "stopped") for a in args])
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert stopped.poll() is None and time.time() < deadline, stopped.communicate()[0]
        time.sleep(0.05)
    os.killpg(stopped.pid, signal.SIGTERM)  # as a scheduler does: the whole process group
    time.sleep(0.05)
    os.killpg(stopped.pid, signal.SIGTERM)  # a second signal changes nothing
    signalled = time.time()
    out, _ = stopped.communicate(timeout=60)
    assert stopped.returncode == INTERRUPTED_EXIT, out
    assert time.time() - signalled < 30
    (iteration, path), = list_checkpoints(tmp_path / "stopped")
    assert 2 <= iteration < 8 and f"stopped by a signal after iteration {iteration}" in out
    assert load_checkpoint(path)["train"]["interrupted"] is True
    assert not (tmp_path / "stopped" / "final.pt").exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left

    resumed = _cico(["train", "--out", str(tmp_path / "stopped"), "--resume", str(path)])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and f"resuming from {path} (iteration {iteration} of 8)" in out, out
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out
    a, b = (load_model(tmp_path / name / "final.pt").state_dict() for name in ("straight", "stopped"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["iteration"] for m in _metrics(tmp_path / "stopped")] == list(range(1, 9))
