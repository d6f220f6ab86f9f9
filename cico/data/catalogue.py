"""The standard datasets: their folder layouts, class lists and splits.

Layouts follow the reference's catalogue under a data root, which may be either the folder that holds
``YouTube_VOS2019/``, ``YouTube_VOS2021/`` and ``OVIS/`` (the reference's ``../datasets``) or the
dataset's own folder. The class lists (:mod:`cico.constants`) are the official files'; the contiguous
1-based labels follow the sorted category ids of the annotation file (:mod:`cico.data.annotations`),
which for the official files are ``1..C`` in this order.

Any other dataset in the YouTube-VIS format is given by ``--ann FILE --frames DIR``
(:mod:`cico.commands.options`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..constants import OVIS_CLASSES, YTVIS2019_CLASSES, YTVIS2021_CLASSES
from ..errors import CicoError

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
