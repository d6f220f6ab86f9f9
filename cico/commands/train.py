"""``cico train``: train a CiCo model (one process, or under ``torchrun`` with DDP), resumable.

Examples::

    cico train --preset tiny_yolact --ann data/instances.json --frames data/JPEGImages --out runs/tiny
    torchrun --nproc_per_node=4 -m cico train --preset cico_yolact_r50_yt19 --dataset ytvis2019 \\
        --data-root datasets --split train_sub --init weights/resnet50_coco_yolact.pth --out runs/r50
    cico train --out runs/r50 --resume
    cico train --out runs/r50 --resume runs/r50/checkpoints/iter_00005000.pt
    cico train --preset tiny_condinst --ann a.json --frames f --out runs/x lr=0.005 model.min_size=160
    cico train --init final.pt --recipe finetune --ann mine.json --frames f --out runs/ft freeze_at=2
    cico train --preset tiny_yolact --images coco.json --image-frames images --out runs/img

SIGTERM or SIGINT stops a run after its current step with a checkpoint of that step, and the exit code
75; ``--resume`` continues it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import CicoError
from .options import add_dataset_arguments, resolve_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "KEY=VALUE overrides set any training setting (lr=0.01, batch_size=4, schedule.warmup_iters=100,\n"
        "loss.mask_weight=3, data.flip=horizontal, amp=bf16, clip_grad_norm=10, sync_bn=true, ...) or,\n"
        "as model.KEY=VALUE, a field of the network config (model.min_size=160). The 'reference' recipe\n"
        "is the published one (per GPU: 6 clips, lr 1e-3; the README uses 4 GPUs); the learning rate is\n"
        "not scaled with the number of GPUs unless scale_lr=true (lr * clips per iteration / 24).")
    parser.add_argument("--preset", help="network preset, e.g. tiny_yolact, cico_yolact_r50_yt19")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder")
    parser.add_argument("--recipe", default="auto",
                        help="training recipe: reference, tiny, finetune (fine-tuning an --init checkpoint, on top "
                             "of the preset's recipe), or auto (tiny for tiny_* presets, else reference; default)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, help="train for N iterations")
    length.add_argument("--epochs", type=int, help="train for E epochs (passes over the training clips)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="FILE",
                        help="continue the run in RUN_DIR from its newest checkpoint, or from checkpoint FILE "
                             "(its settings are kept; --iters/--epochs may extend it)")
    add_dataset_arguments(parser)
    parser.add_argument("--val-ann", type=Path, metavar="FILE",
                        help="held-out annotations for the periodic evaluation (default with --dataset: "
                             "its valid_sub split when present, see 'cico split'; with --split train its "
                             "videos are training videos, which the run reports)")
    parser.add_argument("--val-frames", type=Path, metavar="DIR", help="frames of --val-ann (default: --frames)")
    parser.add_argument("--init", type=Path, metavar="FILE",
                        help="initial weights: a reference frame-level COCO checkpoint (2D->3D inflation) or "
                             "any cico checkpoint (fine-tuning: its network settings are kept, every tensor "
                             "copied except the class layer rows of classes it does not know, matched by name; "
                             "--preset then defaults to the checkpoint's)")
    images = parser.add_argument_group("images as clips (COCO-format image datasets, alone or with videos)")
    images.add_argument("--images", type=Path, metavar="FILE",
                        help="COCO instance file; each image becomes pseudo-clips of T jittered frames")
    images.add_argument("--image-frames", type=Path, metavar="DIR", help="folder the images' file_name are relative to")
    images.add_argument("--image-ratio", type=float, metavar="R",
                        help="share of pseudo-clips among the training clips when videos are given too (default 0.5)")
    parser.add_argument("--backbone-weights", type=Path, metavar="FILE",
                        help="local ImageNet weights: torchvision ResNet .pth or timm/Microsoft Swin-T")
    parser.add_argument("--seed", type=int, help="run seed (default 0)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms: a killed run resumed with --resume ends identical")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training-setting overrides")


def _data_values(args: argparse.Namespace) -> dict[str, object]:
    values: dict[str, object] = {}
    if args.images is not None:  # image datasets as pseudo-clips
        if not args.images.is_file():
            raise CicoError("image annotation file not found", args.images)
        if args.image_frames is None or not args.image_frames.is_dir():
            raise CicoError("--image-frames DIR (an existing folder) is needed with --images", args.images)
        images = {"ann": str(args.images), "frames": str(args.image_frames)}
        values["images"] = images if args.image_ratio is None else {**images, "ratio": args.image_ratio}
    train_frames = None
    if args.images is None or args.ann is not None or args.dataset:
        train = resolve_dataset(args)
        values.update(train_ann=str(train.ann_file), train_frames=str(train.frames_dir))
        train_frames = train.frames_dir
    if args.val_ann is not None:
        frames = args.val_frames or args.frames or train_frames
        if frames is None:
            raise CicoError("--val-frames DIR is needed with --val-ann in an image-only run", args.val_ann)
        if not args.val_ann.is_file():
            raise CicoError("held-out annotation file not found", args.val_ann)
        values.update(val_ann=str(args.val_ann), val_frames=str(frames))
    elif args.dataset:
        try:
            held_out = resolve_dataset(argparse.Namespace(**{**vars(args), "ann": None, "frames": None}),
                                       split="valid_sub")
        except CicoError:
            print("no held-out split found (write one with 'cico split'): no periodic evaluation", flush=True)
        else:
            values.update(val_ann=str(held_out.ann_file), val_frames=str(held_out.frames_dir))
    return values


def run(args: argparse.Namespace) -> int:
    from ..training.preemption import INTERRUPTED_EXIT, TrainingInterrupted, ignore_stop_signals

    try:
        final = _train(args)
    except TrainingInterrupted as stopped:
        ignore_stop_signals()  # the process ends now: a further SIGTERM/SIGINT must not cut its exit short
        print(f"cico train: {stopped}", file=sys.stderr, flush=True)
        return INTERRUPTED_EXIT
    print(f"wrote {final}")
    return 0


def _train(args: argparse.Namespace) -> Path:
    """Start or resume the run; the periodic evaluation shares the held-out videos out over the processes."""
    from ..training.config import TrainConfig, make_config
    from ..training.engine import train
    from ..training.finetune import checkpoint_architecture
    from .sharding import held_out_evaluator

    evaluate = held_out_evaluator()
    if args.resume:
        if args.overrides:
            raise CicoError("--resume keeps the run's settings; KEY=VALUE overrides are not allowed with it")
        return train(TrainConfig(out=str(args.out)), resume=args.resume, iters=args.iters, epochs=args.epochs,
                     evaluate=evaluate)
    # a cico checkpoint given to --init brings its network settings (and preset)
    carried = checkpoint_architecture(args.init) if args.init is not None else None
    preset = args.preset or (carried[0] if carried is not None else None)
    if not preset:
        raise CicoError("--preset NAME is needed to start a run (e.g. tiny_yolact, cico_yolact_r50_yt19)"
                        + ("; the --init checkpoint names none" if args.init is not None else ""))
    values: dict[str, object] = {"out": str(args.out), **_data_values(args)}
    if carried is not None:
        values["model"] = carried[1]
    if args.iters is not None:
        values.update(iters=args.iters)
    if args.epochs is not None:
        values.update(iters=0, epochs=args.epochs)
    for key in ("seed", "device"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.deterministic:
        values["deterministic"] = True
    if args.init is not None:
        values["init"] = str(args.init)
    if args.backbone_weights is not None:
        values["backbone_weights"] = str(args.backbone_weights)
    cfg = make_config(preset, args.recipe, list(args.overrides), **values)
    return train(cfg, evaluate=evaluate)
