"""Fine-tuning benchmark: a new synthetic class set, from the shipped demo model vs from scratch, and the
image stage (pseudo-clips of COCO-format images) as a start for a video run.

1. ``make_synthetic`` with shapes the demo model has not seen (default ``star, ring, cross``; the demo
   model knows ``disc, square, triangle``): a small training set (default 32 videos of 12 frames, 384
   frames: the "few classes, a few hundred frames" case) and a held-out set (other seeds).
2. Three video runs of the same length, each evaluated on the held-out set every ``--eval-every``
   iterations with cico's exact YouTube-VIS metric:

   * ``finetune_demo``: ``--init`` the shipped demo model, the ``finetune`` recipe (the class layer is
     re-initialised: no class in common);
   * ``scratch``: the ``tiny`` recipe (the demo model's own from-scratch recipe), same iterations;
   * ``video_from_images``: ``--init`` the image stage's weights, the ``finetune`` recipe.

3. The image stage before the last run: the training videos' frames exported as a COCO image file
   (:func:`~cico.data.image_clips.images_from_videos`: the same annotations, as images), trained on alone
   as pseudo-clips from scratch with the ``tiny`` recipe for ``--image-iters`` iterations.

Prints ONE JSON line: the settings, each run's held-out AP curve ``[[iteration, AP], ...]``, its final 12
numbers and its training time. The runs are deterministic (fixed seeds, deterministic data order and
augmentation), so the AP numbers do not depend on the machine's load, nor on ``--jobs``; the times do.
The defaults are the README's numbers (three processes of one network thread each). Usage::

    python benchmarks/finetune_synthetic.py --out /tmp/cico_finetune [--iters 500] [--eval-every 100] [--jobs 1]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from cico.commands.make_synthetic import parse_size
from cico.data.annotations import load_annotations
from cico.data.image_clips import images_from_videos
from cico.data.synthetic import make_synthetic
from cico.demo import DemoData, shipped_weights


def _curve(run_dir: Path) -> tuple[list[list[float]], dict[str, float] | None, float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [line for line in lines if "eval" in line]
    curve = [[line["iteration"], round(line["eval"]["AP"], 4)] for line in evals]
    final = {k: round(v, 4) for k, v in evals[-1]["eval"].items()} if evals else None
    return curve, final, sum(line["eval_seconds"] for line in evals)


def _train(run_dir: Path, recipe: str, values: dict[str, Any], init: Path | None) -> dict[str, Any]:
    """One training run; its held-out curve, final numbers and training time."""
    from cico.training.config import make_config
    from cico.training.engine import train
    from cico.training.finetune import checkpoint_architecture

    shutil.rmtree(run_dir, ignore_errors=True)
    values = {**values, "out": str(run_dir)}
    preset = "tiny_yolact"
    if init is not None:  # what `cico train --init` does
        carried = checkpoint_architecture(init)
        assert carried is not None
        preset, values["model"], values["init"] = carried[0] or preset, carried[1], str(init)
    cfg = make_config(preset, recipe, [], **values)
    started = time.perf_counter()
    train(cfg)
    curve, stats, eval_seconds = _curve(run_dir)
    result = {"recipe": recipe, "init": str(init) if init else None, "lr": cfg.lr, "iterations": cfg.iters,
              "curve": curve, "final": stats, "train_seconds": round(time.perf_counter() - started - eval_seconds, 1)}
    print(f"{run_dir.name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def _chain(name: str, out: Path, data: dict[str, Path], common: dict[str, Any], video: dict[str, Any],
           image_iters: int, threads: int) -> dict[str, Any]:
    """One video run (after the image stage for ``video_from_images``), in its own process when parallel."""
    torch.set_num_threads(threads)
    if name == "finetune_demo":
        return {name: _train(out / name, "finetune", {**common, **video}, shipped_weights("demo"))}
    if name == "scratch":
        return {name: _train(out / name, "tiny", {**common, **video}, None)}
    coco = images_from_videos(load_annotations(data["train"]))
    image_file = out / "train_images.json"
    image_file.write_text(json.dumps(coco))
    images = {"ann": str(image_file), "frames": str(data["train"].parent / "JPEGImages")}
    stage = _train(out / "image_stage", "tiny", {**common, "images": images, "iters": image_iters,
                                                 "checkpoint_every": image_iters, "eval_every": image_iters // 2},
                   None)
    stage["images"] = {"images": len(coco["images"]), "objects": len(coco["annotations"])}
    return {"image_stage": stage,
            name: _train(out / name, "finetune", {**common, **video}, out / "image_stage" / "final.pt")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/cico_finetune"), help="work folder")
    parser.add_argument("--classes", default="star,ring,cross", help="the new class set (synthetic shape names)")
    parser.add_argument("--train-videos", type=int, default=32)
    parser.add_argument("--val-videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=DemoData.frames)
    parser.add_argument("--size", default="{}x{}".format(*DemoData.size))
    parser.add_argument("--max-objects", type=int, default=DemoData.max_objects)
    parser.add_argument("--iters", type=int, default=500, help="iterations of each video run")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--image-iters", type=int, default=200, help="iterations of the image stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="network threads per run (1 on a shared machine)")
    parser.add_argument("--runs", default="finetune_demo,scratch,video_from_images",
                        help="which video runs (video_from_images includes the image stage)")
    parser.add_argument("--jobs", type=int, default=3,
                        help="runs side by side in separate processes (same numbers: every run is deterministic)")
    args = parser.parse_args()

    classes = tuple(n.strip() for n in args.classes.split(","))
    size = parse_size(args.size)
    data = {}
    splits = (("train", args.train_videos, args.seed + 7), ("val", args.val_videos, args.seed + 1007))
    for split, videos, seed in splits:
        data[split] = make_synthetic(args.out / split, videos, args.frames, size, seed=seed, class_names=classes,
                                     max_objects=args.max_objects, overwrite=True)
    common = {"val_ann": str(data["val"]), "val_frames": str(data["val"].parent / "JPEGImages"), "seed": args.seed,
              "deterministic": True, "eval_every": args.eval_every, "num_workers": 0}
    video = {"train_ann": str(data["train"]), "train_frames": str(data["train"].parent / "JPEGImages"),
             "iters": args.iters, "checkpoint_every": args.iters}
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    jobs = [(n, args.out, data, common, video, args.image_iters, args.threads) for n in names]
    started = time.perf_counter()
    runs: dict[str, Any] = {}
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            for part in pool.map(_chain, *zip(*jobs)):
                runs.update(part)
    else:
        for job in jobs:
            runs.update(_chain(*job))
    print(json.dumps({
        "benchmark": "finetune_synthetic", "classes": list(classes),
        "train": {"videos": args.train_videos, "frames": args.train_videos * args.frames, "size": list(size)},
        "val_videos": args.val_videos, "iterations": args.iters, "threads": args.threads, "jobs": args.jobs,
        "wall_seconds": round(time.perf_counter() - started, 1), "runs": runs}))


if __name__ == "__main__":
    main()
