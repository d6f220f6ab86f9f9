"""The standard dataset catalogue: class lists, layouts, and the shared --dataset/--ann options."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cico.commands.options import add_dataset_arguments, resolve_dataset
from cico.constants import OVIS_CLASSES, YTVIS2019_CLASSES, YTVIS2021_CLASSES
from cico.data.catalogue import DATASETS, locate
from cico.errors import CicoError


def _parse(argv: list[str], default_split: str = "train") -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser, default_split=default_split)
    return parser.parse_args(argv)


def test_class_lists() -> None:
    assert len(YTVIS2019_CLASSES) == len(YTVIS2021_CLASSES) == 40 and len(OVIS_CLASSES) == 25
    assert YTVIS2019_CLASSES[0] == "person" and YTVIS2019_CLASSES[38] == "earless seal"
    assert YTVIS2021_CLASSES == tuple(sorted(YTVIS2021_CLASSES)) and "flying_disc" in YTVIS2021_CLASSES
    assert set(YTVIS2019_CLASSES) != set(YTVIS2021_CLASSES)
    assert OVIS_CLASSES[12] == "giant panda" and OVIS_CLASSES[-1] == "vehicle"
    assert all(len(set(d.class_names)) == d.num_classes for d in DATASETS.values())


def _make(root: Path, rel: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


def test_resolve_standard_layout_from_parent_or_dataset_folder(tmp_path: Path) -> None:
    ann = _make(tmp_path, "YouTube_VOS2019/annotations_instances/valid_sub.json")
    (tmp_path / "YouTube_VOS2019/train/JPEGImages").mkdir(parents=True)
    for root in (tmp_path, tmp_path / "YouTube_VOS2019"):
        paths = resolve_dataset(_parse(["--dataset", "ytvis2019", "--data-root", str(root), "--split", "valid_sub"]))
        assert paths.ann_file == ann and paths.frames_dir == tmp_path / "YouTube_VOS2019/train/JPEGImages"
        assert paths.dataset == "ytvis2019" and paths.split == "valid_sub" and paths.has_gt
        assert paths.class_names == YTVIS2019_CLASSES


def test_layouts_of_every_dataset(tmp_path: Path) -> None:
    assert locate("ytvis2021", tmp_path, "valid").ann_file == tmp_path / "YouTube_VOS2021/valid/instances.json"
    assert not locate("ytvis2021", tmp_path, "valid").has_gt
    ovis = locate("ovis", tmp_path, "valid_sub")
    assert ovis.ann_file == tmp_path / "OVIS/annotations_valid_sub.json" and ovis.frames_dir == tmp_path / "OVIS/train"
    assert locate("ytvis2019", tmp_path, "test").frames_dir == tmp_path / "YouTube_VOS2019/test/JPEGImages"


def test_split_override_and_explicit_files(tmp_path: Path) -> None:
    _make(tmp_path, "OVIS/annotations_train.json")
    valid_sub = _make(tmp_path, "OVIS/annotations_valid_sub.json")
    (tmp_path / "OVIS/train").mkdir()
    args = _parse(["--dataset", "ovis", "--data-root", str(tmp_path)])
    assert resolve_dataset(args).split == "train"
    assert resolve_dataset(args, split="valid_sub").ann_file == valid_sub
    custom = _make(tmp_path, "custom.json")
    args = _parse(["--ann", str(custom), "--frames", str(tmp_path / "OVIS/train")])
    paths = resolve_dataset(args)
    assert paths.ann_file == custom and paths.dataset is None and paths.class_names is None
    # frames not needed (e.g. scoring): --ann alone is enough
    assert resolve_dataset(_parse(["--ann", str(custom)]), need_frames=False).frames_dir is None


@pytest.mark.parametrize("argv, message", [
    ([], "no dataset given"),
    (["--dataset", "ytvis2019"], "needs --data-root"),
    (["--ann", "x.json"], "--frames DIR is needed"),
    (["--dataset", "ovis", "--data-root", "{tmp}"], "annotation file not found"),
    (["--dataset", "ovis", "--data-root", "{tmp}", "--split", "valid_sub"], "cico split"),
    (["--ann", "{tmp}/a.json", "--frames", "{tmp}/nope"], "frames folder not found"),
])
def test_clear_errors(tmp_path: Path, argv: list[str], message: str) -> None:
    (tmp_path / "a.json").write_text("{}")
    args = _parse([a.format(tmp=tmp_path) for a in argv])
    with pytest.raises(CicoError, match=message) as err:
        resolve_dataset(args)
    assert "\n" not in str(err.value)


def test_unknown_split_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CicoError, match="unknown split"):
        locate("ovis", tmp_path, "val")
    with pytest.raises(CicoError, match="unknown dataset"):
        locate("coco", tmp_path)
