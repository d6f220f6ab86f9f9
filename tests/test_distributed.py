"""DistributedDataParallel on CPU (gloo): averaged gradients, and ``cico train`` under ``torchrun``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from cico.data.clips import ClipDataConfig, ClipDataset
from cico.data.synthetic import make_synthetic
from cico.data.transforms import TrainAugmentation
from cico.model.checkpoint import load_model
from cico.model.network import build_model
from cico.training.losses import CiCoLoss

SMALL = {"backbone_width": 16, "fpn_channels": 16, "proto_channels": 16, "mask_dim": 8, "track_dim": 8,
         "box_tower_layers": 1, "class_tower_layers": 1, "track_tower_layers": 1, "min_size": 64, "max_size": 96}


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


def test_cico_train_under_torchrun(synthetic: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "run"
    args = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "cico", "train", "--preset", "tiny_yolact",
            "--ann", str(synthetic), "--frames", str(synthetic.parent / "JPEGImages"), "--out", str(out),
            "--iters", "2", *[f"model.{k}={v}" for k, v in SMALL.items()], "batch_size=1", "num_workers=0",
            "log_every=1", "checkpoint_every=1"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("wrote ") == 2  # both processes finish; only rank 0 logs and saves
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2]
    state = torch.load(out / "checkpoints" / "iter_00000002.pt", weights_only=True)
    assert state["train"]["data"]["world_size"] == 2 and len(state["train"]["rng"]) == 2
    assert load_model(out / "final.pt").config.num_classes == 3
