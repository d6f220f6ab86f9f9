"""Predicting a dataset split over ``torchrun`` processes, and the periodic evaluation given to the trainer.

The split's videos are cut into ``W`` contiguous shares of about equal frame counts; process ``r``
predicts share ``r`` into its own folder, the main process gathers the results entries (through the
process group, so no shared file system is needed for them) and writes one ``results.json`` in the
split's video order: the same file, byte for byte, as one process writes, since every video is predicted
on its own. Per-video outputs (mp4, PNG masks, tracker dumps) are moved from the share's folder into the
output folder by the process that wrote them.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..data.annotations import annotations_to_dict
from ..data.sources import Video, dataset_videos
from ..evaluation import evaluate
from ..inference.predictor import VideoPredictor
from ..model.network import CiCo
from ..outputs.results import ResultsWriter
from ..outputs.writer import RunSummary, predict_to_dir
from ..training.distributed import Distributed
from ..training.loop import EvalRequest, Evaluator
from ..training.run_log import write_json

__all__ = ["share", "process_device", "predict_sharded", "held_out_evaluator"]


def process_device(name: str, env: Distributed) -> str:
    """The inference device of this process: under ``torchrun``, ``cuda`` (or ``auto`` where CUDA is
    available) means the process's own GPU."""
    if env.world_size > 1 and (name == "cuda" or (name == "auto" and torch.cuda.is_available())):
        return f"cuda:{env.local_rank}"
    return name


def share(videos: Sequence[Video], rank: int, world_size: int) -> list[Video]:
    """Process ``rank``'s contiguous share of ``videos``, cut at about equal cumulative frame counts."""
    if world_size == 1:
        return list(videos)
    sizes = [max(1, video.length or 1) for video in videos]
    total, bounds, seen = sum(sizes), [], 0
    for size in sizes:
        bounds.append(seen)
        seen += size
    def owner(start: int) -> int:  # the share whose frame range holds the video's first frame
        return min(world_size - 1, start * world_size // total)
    return [video for video, start in zip(videos, bounds) if owner(start) == rank]


def predict_sharded(predictor: VideoPredictor, videos: Sequence[Video], out_dir: Path, env: Distributed,
                    **options: Any) -> RunSummary | None:
    """:func:`~cico.outputs.writer.predict_to_dir` of ``videos`` sharded over the processes.

    Every process must call it; returns the summary of the whole split on the main process, ``None``
    elsewhere. ``options`` are those of ``predict_to_dir``.
    """
    if env.world_size == 1:
        return predict_to_dir(predictor, videos, out_dir, **options)
    out_dir = Path(out_dir)
    part = out_dir / f".rank{env.rank}-of-{env.world_size}"
    shutil.rmtree(part, ignore_errors=True)
    mine = predict_to_dir(predictor, share(videos, env.rank, env.world_size), part,
                          **{**options, "progress": options.get("progress", True) and env.is_main})
    entries = json.loads(mine.results.read_text())
    mine.results.unlink()
    for path in sorted(p for p in part.rglob("*") if p.is_file()):
        target = out_dir / path.relative_to(part)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(part, ignore_errors=True)
    gathered: list[Any] | None = [None] * env.world_size if env.is_main else None
    dist.gather_object((entries, mine.videos, mine.frames, mine.tracks, mine.seconds), gathered, dst=0)
    if gathered is None:
        return None
    with ResultsWriter(out_dir / "results.json") as writer:
        for part_entries, *_ in gathered:
            writer.write(part_entries)
    return RunSummary(writer.path, sum(g[1] for g in gathered), sum(g[2] for g in gathered),
                      sum(g[3] for g in gathered), max(g[4] for g in gathered))


def held_out_evaluator(env: Distributed | None = None) -> Evaluator:
    """The trainer's periodic evaluation: the held-out videos predicted over all processes, the main one
    writing ``results.json`` and ``stats.json`` (the 12 numbers) into the request's folder and returning
    the numbers."""
    env = env or Distributed.from_env()

    def run(model: CiCo, request: EvalRequest) -> dict[str, float] | None:
        # a folded copy: the network as cico eval loads the checkpoint, so that both write the same results
        network = model.folded_copy()
        predictor = VideoPredictor(network, overlap=request.overlap)
        videos = dataset_videos(request.annotations, request.frames_dir)
        with torch.no_grad():
            summary = predict_sharded(predictor, videos, request.out_dir, env,
                                      category_ids=request.annotations.category_ids, progress=False)
        if summary is None:
            return None
        stats = dict(evaluate(annotations_to_dict(request.annotations), summary.results).stats)
        write_json(request.out_dir / "stats.json", stats)
        return stats

    return run
