"""The standard datasets: their folder layouts, class lists, and the dataset command-line options.

Layouts follow the reference's catalogue (spec §1.5) under a data root, which may be either the
folder that holds ``YouTube_VOS2019/``, ``YouTube_VOS2021/`` and ``OVIS/`` (the reference's
``../datasets``) or the dataset's own folder. Class lists are spec §1.6; the contiguous 1-based labels
follow the sorted category ids of the annotation file (:mod:`cico.data.annotations`), which for the
official files are ``1..C`` in this order.

Any other dataset in the YouTube-VIS format is given by ``--ann FILE --frames DIR``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..errors import CicoError

YTVIS2019_CLASSES: tuple[str, ...] = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake", "monkey",
    "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear",
    "motorbike", "giraffe", "leopard", "fox", "deer", "owl", "surfboard", "airplane", "truck", "zebra",
    "tiger", "elephant", "snowboard", "boat", "shark", "mouse", "frog", "eagle", "earless seal", "tennis_racket",
)
YTVIS2021_CLASSES: tuple[str, ...] = (
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck",
    "earless_seal", "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda", "giraffe", "horse", "leopard",
    "lizard", "monkey", "motorbike", "mouse", "parrot", "person", "rabbit", "shark", "skateboard", "snake",
    "snowboard", "squirrel", "surfboard", "tennis_racket", "tiger", "train", "truck", "turtle", "whale", "zebra",
)
OVIS_CLASSES: tuple[str, ...] = (
    "person", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "poultry", "giant panda", "lizard", "parrot", "monkey", "rabbit", "tiger", "fish", "turtle",
    "bicycle", "motorcycle", "airplane", "boat", "vehicle",
)

SPLITS: tuple[str, ...] = ("train", "train_sub", "valid_sub", "valid", "test")
"""``train_sub``/``valid_sub`` are the two halves written by ``cico split`` from ``train``."""


@dataclass(frozen=True)
class SplitLayout:
    """Where one split lives, relative to the dataset folder."""

    ann_file: str
    frames_dir: str
    has_gt: bool = True


@dataclass(frozen=True)
class DatasetInfo:
    """A standard dataset: its folder name under the data root, class list and splits."""

    name: str
    folder: str
    class_names: tuple[str, ...]
    splits: dict[str, SplitLayout]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS: dict[str, DatasetInfo] = {
    "ytvis2019": DatasetInfo("ytvis2019", "YouTube_VOS2019", YTVIS2019_CLASSES, {
        "train": SplitLayout("annotations_instances/train.json", "train/JPEGImages"),
        "train_sub": SplitLayout("annotations_instances/train_sub.json", "train/JPEGImages"),
        "valid_sub": SplitLayout("annotations_instances/valid_sub.json", "train/JPEGImages"),
        "valid": SplitLayout("annotations_instances/valid.json", "valid/JPEGImages", has_gt=False),
        "test": SplitLayout("annotations_instances/test.json", "test/JPEGImages", has_gt=False),
    }),
    "ytvis2021": DatasetInfo("ytvis2021", "YouTube_VOS2021", YTVIS2021_CLASSES, {
        "train": SplitLayout("train/instances.json", "train/JPEGImages"),
        "train_sub": SplitLayout("train/train_sub.json", "train/JPEGImages"),
        "valid_sub": SplitLayout("train/valid_sub_150.json", "train/JPEGImages"),
        "valid": SplitLayout("valid/instances.json", "valid/JPEGImages", has_gt=False),
        "test": SplitLayout("test/instances.json", "test/JPEGImages", has_gt=False),
    }),
    "ovis": DatasetInfo("ovis", "OVIS", OVIS_CLASSES, {
        "train": SplitLayout("annotations_train.json", "train"),
        "train_sub": SplitLayout("annotations_train_sub.json", "train"),
        "valid_sub": SplitLayout("annotations_valid_sub.json", "train"),
        "valid": SplitLayout("annotations_valid.json", "valid", has_gt=False),
        "test": SplitLayout("annotations_test.json", "test", has_gt=False),
    }),
}


@dataclass(frozen=True)
class DatasetPaths:
    """A resolved dataset split.

    Attributes:
        ann_file: the annotation JSON (``None`` only when not needed and not given).
        frames_dir: the folder the videos' ``file_names`` are relative to (``None`` likewise).
        dataset: the standard dataset's name, or ``None`` for ``--ann/--frames``.
        split: the split name (``None`` for ``--ann/--frames``).
        class_names: the standard class list, or ``None`` (then take the names from the file).
        has_gt: whether the split has ground truth (``valid``/``test`` of the standard sets do not).
    """

    ann_file: Path | None
    frames_dir: Path | None
    dataset: str | None = None
    split: str | None = None
    class_names: tuple[str, ...] | None = None
    has_gt: bool = True


def get_dataset(name: str) -> DatasetInfo:
    """The standard dataset called ``name`` (``ytvis2019``, ``ytvis2021``, ``ovis``)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise CicoError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} "
                        "or give --ann FILE --frames DIR") from None


def locate(name: str, data_root: str | Path, split: str = "train") -> DatasetPaths:
    """The files of a standard dataset split under ``data_root`` (no existence check).

    ``data_root`` may hold the dataset folder (``DIR/YouTube_VOS2019/...``) or be that folder
    itself: the first of the two that holds any of the dataset's annotation files is used, else the
    first.
    """
    info = get_dataset(name)
    if split not in info.splits:
        raise CicoError(f"unknown split {split!r} of {name}; choose one of {', '.join(info.splits)}")
    layout = info.splits[split]
    root = Path(data_root)
    candidates = [root / info.folder, root] if root.name != info.folder else [root]
    base = next((c for c in candidates if any((c / s.ann_file).is_file() for s in info.splits.values())),
                candidates[0])
    return DatasetPaths(base / layout.ann_file, base / layout.frames_dir, name, split, info.class_names, layout.has_gt)


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
    if need_ann and not paths.ann_file.is_file():
        hint = " (write it with 'cico split')" if paths.split in ("train_sub", "valid_sub") else ""
        raise CicoError(f"annotation file not found{hint}", paths.ann_file)
    if need_frames and not paths.frames_dir.is_dir():
        raise CicoError("frames folder not found", paths.frames_dir)
    return paths
