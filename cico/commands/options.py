"""Command-line options shared by several commands: the dataset options.

``--dataset NAME --data-root DIR --split S`` names a standard dataset (:mod:`cico.data.catalogue`);
``--ann FILE --frames DIR`` any dataset in the YouTube-VIS format.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.catalogue import DATASETS, SPLITS, DatasetPaths, locate
from ..errors import CicoError


def add_dataset_arguments(parser: argparse.ArgumentParser, default_split: str = "train") -> None:
    """Add ``--dataset NAME --data-root DIR --split S`` and ``--ann FILE --frames DIR`` to ``parser``.

    ``--ann``/``--frames`` alone name any YouTube-VIS-format dataset; given together with
    ``--dataset`` they replace that part of the standard layout.
    """
    group = parser.add_argument_group("dataset (a standard one, or any with --ann/--frames)")
    group.add_argument("--dataset", choices=sorted(DATASETS), help="a standard dataset")
    group.add_argument("--data-root", type=Path, metavar="DIR",
                       help="folder holding the dataset folder (e.g. YouTube_VOS2019/) or that folder itself")
    group.add_argument("--split", choices=SPLITS, default=default_split,
                       help=f"split of --dataset (default {default_split})")
    group.add_argument("--ann", type=Path, metavar="FILE", help="annotation JSON in the YouTube-VIS format")
    group.add_argument("--frames", type=Path, metavar="DIR", help="folder the videos' file_names are relative to")


def resolve_dataset(args: argparse.Namespace, split: str | None = None, need_ann: bool = True,
                    need_frames: bool = True) -> DatasetPaths:
    """Resolve the options of :func:`add_dataset_arguments` to existing files.

    Args:
        args: the parsed options.
        split: resolve this split of ``--dataset`` instead of ``--split`` (e.g. ``valid_sub`` for the
            periodic evaluation during training).
        need_ann, need_frames: which of the two must exist.

    Raises:
        CicoError: options missing or contradictory, or a needed file/folder does not exist.
    """
    ann, frames = getattr(args, "ann", None), getattr(args, "frames", None)
    if getattr(args, "dataset", None):
        if args.data_root is None and (need_ann and ann is None or need_frames and frames is None):
            raise CicoError(f"--dataset {args.dataset} needs --data-root DIR")
        paths = locate(args.dataset, args.data_root or ".", split or args.split)
        paths = DatasetPaths(ann or paths.ann_file, frames or paths.frames_dir, paths.dataset, paths.split,
                             paths.class_names, paths.has_gt)
    else:
        if need_ann and ann is None:
            raise CicoError("no dataset given: use --dataset NAME --data-root DIR or --ann FILE --frames DIR")
        if need_frames and frames is None:
            raise CicoError("--frames DIR is needed with --ann (the folder the file_names are relative to)")
        paths = DatasetPaths(ann, frames)
    if need_ann and (paths.ann_file is None or not paths.ann_file.is_file()):
        hint = " (write it with 'cico split')" if paths.split in ("train_sub", "valid_sub") else ""
        raise CicoError(f"annotation file not found{hint}", paths.ann_file)
    if need_frames and (paths.frames_dir is None or not paths.frames_dir.is_dir()):
        raise CicoError("frames folder not found", paths.frames_dir)
    return paths
