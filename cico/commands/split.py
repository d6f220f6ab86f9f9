"""``cico split``: write a deterministic held-out split ("valid_sub") of a training annotation file."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.annotations import load_annotations, save_annotations
from ..data.catalogue import locate
from ..data.split import held_out_split
from ..errors import CicoError
from .options import add_dataset_arguments, resolve_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--fraction", type=float, default=0.1,
                     help="share of the videos held out: the last int(n * fraction) in file order (default 0.1)")
    how.add_argument("--count", type=int, help="number of videos held out (the last ones in file order)")
    parser.add_argument("--train-out", type=Path, metavar="FILE",
                        help="remaining training videos (default: the dataset's train_sub file, "
                             "or STEM_train_sub.json beside --ann)")
    parser.add_argument("--held-out", type=Path, metavar="FILE",
                        help="held-out videos (default: the dataset's valid_sub file, "
                             "or STEM_valid_sub.json beside --ann)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    paths = resolve_dataset(args, need_frames=False)
    assert paths.ann_file is not None  # need_ann
    if paths.dataset is not None and args.ann is None:
        default_train = locate(paths.dataset, args.data_root, "train_sub").ann_file
        default_held = locate(paths.dataset, args.data_root, "valid_sub").ann_file
    else:
        stem = paths.ann_file.with_suffix("")
        default_train = stem.with_name(stem.name + "_train_sub.json")
        default_held = stem.with_name(stem.name + "_valid_sub.json")
    train_out, held_out = args.train_out or default_train, args.held_out or default_held
    assert train_out is not None and held_out is not None  # the standard layouts name both files
    for out in (train_out, held_out):
        if out.resolve() == paths.ann_file.resolve():
            raise CicoError("output would replace the input annotation file", out)
        if out.exists() and not args.overwrite:
            raise CicoError("already exists (use --overwrite to replace it)", out)

    ann = load_annotations(paths.ann_file)
    train, held = held_out_split(ann, args.fraction, args.count)
    save_annotations(train, train_out)
    save_annotations(held, held_out)
    for name, part, out in (("train", train, train_out), ("held-out", held, held_out)):
        print(f"{name}: {len(part.videos)} videos, {len(part.tracks)} tracks -> {out}")
    return 0
