"""The deterministic held-out split and ``cico split``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SHARED

from cico.cli import main
from cico.data.annotations import annotations_to_dict, load_annotations, parse_annotations
from cico.data.split import held_out_split
from cico.errors import CicoError

DAVIS_ANN = SHARED / "data" / "davis2016_mini" / "instances.json"


def test_last_videos_are_held_out_with_their_tracks() -> None:
    ann = load_annotations(DAVIS_ANN)
    train, held = held_out_split(ann, count=2)
    assert [v.id for v in train.videos] == [1, 2, 3, 4] and [v.id for v in held.videos] == [5, 6]
    assert {t.video_id for t in held.tracks} == {5, 6} and {t.video_id for t in train.tracks} == {1, 2, 3, 4}
    assert train.categories == held.categories == ann.categories
    assert held_out_split(ann, fraction=0.5)[1].videos == ann.videos[3:]
    with pytest.raises(CicoError, match="holds out 0 of 6 videos"):
        held_out_split(ann)  # int(6 * 0.1) == 0
    with pytest.raises(CicoError, match="holds out 6 of 6"):
        held_out_split(ann, count=6)


def test_split_selects_by_id_not_position() -> None:
    data = {"videos": [{"id": i, "width": 4, "height": 4, "length": 1, "file_names": [f"{i}.jpg"]} for i in (10, 3, 7)],
            "categories": [{"id": 2, "name": "x"}],
            "annotations": [{"id": i, "video_id": v, "category_id": 2, "iscrowd": 0, "segmentations": [None]}
                            for i, v in ((1, 7), (2, 10), (3, 7))]}
    train, held = held_out_split(parse_annotations(data), count=1)
    assert [v.id for v in held.videos] == [7] and [t.id for t in held.tracks] == [1, 3]
    assert [t.id for t in train.tracks] == [2]


def test_cli_writes_both_halves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_out, held_out = tmp_path / "t.json", tmp_path / "h.json"
    argv = ["split", "--ann", str(DAVIS_ANN), "--count", "1",
            "--train-out", str(train_out), "--held-out", str(held_out)]
    assert main(argv) == 0
    assert "held-out: 1 videos, 1 tracks" in capsys.readouterr().out
    train, held = load_annotations(train_out), load_annotations(held_out)
    original = annotations_to_dict(load_annotations(DAVIS_ANN))
    joined = annotations_to_dict(train)
    assert joined["videos"] + annotations_to_dict(held)["videos"] == original["videos"]
    assert joined["annotations"] + annotations_to_dict(held)["annotations"] == original["annotations"]
    assert main(argv) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


def test_cli_default_outputs_follow_the_catalogue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "OVIS"
    folder.mkdir()
    shutil.copy(DAVIS_ANN, folder / "annotations_train.json")
    assert main(["split", "--dataset", "ovis", "--data-root", str(tmp_path), "--fraction", "0.5"]) == 0
    assert len(load_annotations(folder / "annotations_valid_sub.json").videos) == 3
    assert len(load_annotations(folder / "annotations_train_sub.json").videos) == 3
    assert main(["split", "--ann", str(folder / "annotations_train.json"), "--count", "2"]) == 0
    assert len(load_annotations(folder / "annotations_train_valid_sub.json").videos) == 2
