"""DistributedDataParallel on CPU (gloo): averaged gradients, ``cico train`` under ``torchrun``, gradient
accumulation as virtual processes, and ``cico eval`` sharded over processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from cico.commands.sharding import share
from cico.data.clips import ClipDataConfig, ClipDataset
from cico.data.synthetic import make_synthetic
from cico.data.transforms import TrainAugmentation
from cico.model.checkpoint import load_model
from cico.model.network import build_model
from cico.training.losses import CiCoLoss

SMALL = {"backbone_width": 16, "fpn_channels": 16, "proto_channels": 16, "mask_dim": 8, "track_dim": 8,
         "box_tower_layers": 1, "class_tower_layers": 1, "track_tower_layers": 1, "min_size": 64, "max_size": 96}
DEMO_WEIGHTS = Path(__file__).parents[1] / "cico" / "weights" / "demo_tiny_yolact.safetensors"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic(root / "train", 4, 6, (64, 96), seed=3, classes=3, max_objects=2, workers=1)


def _setup(ann: Path):
    torch.manual_seed(0)
    model = build_model("tiny_condinst", num_classes=3, normalization="rgb", **SMALL).train()
    data = ClipDataset(ann, ann.parent / "JPEGImages",
                       ClipDataConfig(augment=TrainAugmentation(min_size=64, max_size=96, normalization="rgb",
                                                                expand_prob=0.0)))
    batch = data.collate_fn([data[i] for i in (0, 5, 9, 14)])  # the global batch: 4 clips
    return model, batch, CiCoLoss.for_model(model.config)


def _half(batch, part: int):
    take = slice(2 * part, 2 * part + 2)
    return batch.images[take], batch.boxes[take], batch.masks[take], batch.labels[take]


def _worker(rank: int, ann: Path, store: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model, batch, criterion = _setup(ann)
        ddp = DistributedDataParallel(model)
        images, boxes, masks, labels = _half(batch, rank)  # each process gets its half of the global batch
        sum(criterion(ddp(images).head, boxes, masks, labels).values()).backward()
        torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, out / f"grad{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_average_the_per_process_gradients(synthetic: Path, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(synthetic, tmp_path / "store", tmp_path), nprocs=2, join=True)
    ddp = [torch.load(tmp_path / f"grad{r}.pt") for r in range(2)]

    # one process, the same global batch, processed as the reference's per-GPU chunks: each chunk's
    # own normalised loss, gradients averaged over the chunks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same summation order in the kernels
    model, batch, criterion = _setup(synthetic)
    grads = []
    for part in range(2):
        model.zero_grad()
        images, boxes, masks, labels = _half(batch, part)
        sum(criterion(model(images).head, boxes, masks, labels).values()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.set_num_threads(threads)
    assert set(ddp[0]) == set(grads[0]) == {n for n, p in model.named_parameters() if p.requires_grad}
    for name, grad in ddp[0].items():
        expected = (grads[0][name] + grads[1][name]) / 2
        assert torch.equal(grad, ddp[1][name]), name  # every process holds the same average
        assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item()), name
    # the halves really differ, so the average is not trivially either of them
    assert not torch.allclose(grads[0]["head.conf_layer.weight"], grads[1]["head.conf_layer.weight"])


@pytest.mark.slow
def test_cico_train_under_torchrun(synthetic: Path, tmp_path: Path) -> None:
    """Two processes train; the periodic evaluation shares the held-out videos out and scores what one
    process scores."""
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "run"
    val = make_synthetic(tmp_path / "val", 3, 5, (64, 96), seed=4, classes=3, max_objects=2, workers=1)
    args = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "cico", "train", "--preset", "tiny_yolact",
            "--ann", str(synthetic), "--frames", str(synthetic.parent / "JPEGImages"), "--out", str(out),
            "--val-ann", str(val), "--val-frames", str(val.parent / "JPEGImages"),
            "--iters", "2", "--init", str(DEMO_WEIGHTS), "model.min_size=64", "model.max_size=96", "batch_size=1",
            "num_workers=0", "log_every=1", "checkpoint_every=1", "eval_every=2"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("wrote ") == 2  # both processes finish; only rank 0 logs and saves
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 2] and lines[-1]["held_out"]
    state = torch.load(out / "checkpoints" / "iter_00000002.pt", weights_only=True)
    assert state["train"]["data"]["world_size"] == 2 and len(state["train"]["rng"]) == 2
    assert load_model(out / "final.pt").config.num_classes == 3

    single = _run(["eval", "--weights", str(out / "final.pt"), "--ann", str(val), "--frames",
                   str(val.parent / "JPEGImages"), "--out", str(tmp_path / "one"), "--json", "--quiet"])
    printed, _ = single.communicate(timeout=300)
    assert single.returncode == 0, printed
    periodic = out / "eval" / "iter_00000002"
    assert len(json.loads((periodic / "results.json").read_text())) > 0
    assert (periodic / "results.json").read_bytes() == (tmp_path / "one" / "results.json").read_bytes()
    numbers = json.loads(printed.strip().splitlines()[-1])
    numbers.pop("tracking")  # cico eval adds the tracking metrics to the 12 numbers of the periodic evaluation
    assert numbers == lines[-1]["eval"] == json.loads((periodic / "stats.json").read_text())
    assert load_model(out / "final.pt").config.num_classes == 3


def test_shares_are_contiguous_cover_every_video_and_balance_frames() -> None:
    videos = [SimpleNamespace(length=n) for n in (30, 5, 5, 5, 5, 30, 10, 10)]
    for world in (1, 2, 3, 5, 8, 11):
        shares = [share(videos, r, world) for r in range(world)]
        assert [v for part in shares for v in part] == videos  # in order, each video once
    halves = [sum(v.length for v in share(videos, r, 2)) for r in range(2)]
    assert halves == [50, 50]


def _run(args: list[str], torchrun: bool = False) -> subprocess.Popen:
    launcher = ([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2"] if torchrun
                else [sys.executable])
    return subprocess.Popen([*launcher, "-m", "cico", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_accumulate_2_in_one_process_equals_two_gloo_processes(synthetic: Path, tmp_path: Path) -> None:
    """Micro-batch k of the one process holds rank k's clips, each normalised on its own: the same steps."""
    def args(out: str, accumulate: int) -> list[str]:
        return ["train", "--preset", "tiny_yolact", "--ann", str(synthetic), "--frames",
                str(synthetic.parent / "JPEGImages"), "--out", str(tmp_path / out), "--iters", "3", "--deterministic",
                *[f"model.{k}={v}" for k, v in SMALL.items()], "model.frozen_bn=true", "batch_size=1",
                f"accumulate={accumulate}", "num_workers=0", "optimizer=sgd", "lr=0.01", "ema_decay=0", "amp=none",
                "eval_every=0", "checkpoint_every=3"]

    two = _run(args("ddp", 1), torchrun=True)
    one = _run(args("accumulate", 2))
    for proc in (two, one):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    # the weights (batch-norm running statistics outside the backbone are buffers: under DDP the saved ones
    # are rank 0's, with accumulation they saw every micro-batch)
    ddp, accumulated = (dict(load_model(tmp_path / name / "final.pt").named_parameters())
                        for name in ("ddp", "accumulate"))
    worst = 0.0
    for name, value in ddp.items():
        scale = value.abs().max().item() or 1.0
        worst = max(worst, (accumulated[name] - value).abs().max().item() / scale)
        torch.testing.assert_close(accumulated[name], value, rtol=1e-5, atol=1e-5 * scale, msg=name)
    print(f"largest difference relative to the tensor's largest value: {worst:.2e}")
    first = torch.load(tmp_path / "ddp" / "checkpoints" / "iter_00000003.pt", weights_only=True)
    assert first["train"]["data"]["world_size"] == 2


@pytest.mark.slow
def test_sharded_eval_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    data = make_synthetic(tmp_path / "data", 3, 5, (64, 96), seed=11, classes=3, max_objects=2, workers=1)
    args = ["eval", "--weights", str(DEMO_WEIGHTS), "--ann", str(data), "--frames", str(data.parent / "JPEGImages"),
            "--json", "--quiet"]
    sharded = _run([*args, "--out", str(tmp_path / "two")], torchrun=True)
    single = _run([*args, "--out", str(tmp_path / "one")])
    predicted = _run(["predict", "--weights", str(DEMO_WEIGHTS), "--ann", str(data), "--frames",
                      str(data.parent / "JPEGImages"), "--out", str(tmp_path / "predict"), "--save-masks", "--quiet"],
                     torchrun=True)
    outputs = []
    for proc in (sharded, single, predicted):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        outputs.append(out)
    one, two = ((tmp_path / name / "results.json").read_bytes() for name in ("one", "two"))
    assert one == two and len(json.loads(one)) > 0
    with zipfile.ZipFile(tmp_path / "two" / "submission.zip") as archive:
        assert archive.read("results.json") == one
    numbers = [json.loads(out.strip().splitlines()[-1]) for out in outputs[:2]]
    assert numbers[0] == numbers[1] and len(numbers[0]) == 13  # the 12 numbers and the tracking metrics
    assert outputs[0].count("wrote ") == 1  # only the main process writes and reports
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["report", "results.json", "submission.zip"]
    # cico predict on a dataset split: the same results.json, every video's masks, no share folder left
    assert (tmp_path / "predict" / "results.json").read_bytes() == one
    assert sorted(p.name for p in (tmp_path / "predict").iterdir()) == ["masks", "results.json"]
    assert len(list((tmp_path / "predict" / "masks").iterdir())) == 3
