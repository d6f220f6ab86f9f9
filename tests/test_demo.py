"""The out-of-the-box demo and the shipped model (``cico.load("demo")``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import cico
from cico.cli import main
from cico.data.annotations import load_annotations
from cico.data.sources import dataset_videos
from cico.data.synthetic import SYNTHETIC_CLASSES, make_synthetic
from cico.demo import DemoData, shipped_weights
from cico.errors import CicoError
from cico.evaluation import STAT_NAMES


def test_shipped_model_is_small_and_knows_the_synthetic_classes() -> None:
    path = shipped_weights("demo")
    assert path.stat().st_size <= 20 * 2**20
    predictor = cico.load("demo")
    assert predictor.class_names == SYNTHETIC_CLASSES[: DemoData.classes]
    assert predictor.config.clip_frames == 3


def test_unknown_shipped_model_is_a_one_line_error() -> None:
    with pytest.raises(CicoError, match="unknown shipped model"):
        shipped_weights("nope")


def test_demo_writes_results_video_gif_and_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo as a user runs it (48 videos); the shipped model scores AP 0.605 there (a regression guard)."""
    assert main(["demo", "--out", str(tmp_path), "--quiet", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(stats) == set(STAT_NAMES)
    assert stats["AP"] > 0.55, stats
    results = json.loads((tmp_path / "results.json").read_text())
    assert results and all(len(r["segmentations"]) == DemoData.frames for r in results)
    assert (tmp_path / "video00001.mp4").stat().st_size > 0
    assert (tmp_path / "demo.gif").read_bytes()[:6] == b"GIF89a"


def test_predict_api_returns_typed_tracks_with_lazy_masks(tmp_path: Path) -> None:
    data = DemoData()
    ann = make_synthetic(tmp_path, 1, 7, data.size, seed=data.seed, classes=data.classes,
                         max_objects=data.max_objects, workers=1)
    tracks = cico.load("demo").predict(ann.parent / "JPEGImages" / "video00001")
    assert tracks, "the shipped model finds the synthetic shapes"
    track = tracks[0]
    assert track.category_name in SYNTHETIC_CLASSES
    present = [mask for mask in track.masks if mask is not None]
    assert present and present[0].shape == data.size


def test_cico_predict_with_the_trained_model_gives_results_cico_evaluate_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = DemoData()
    ann = make_synthetic(tmp_path / "data", 2, 8, data.size, seed=data.seed + 1, classes=data.classes,
                         max_objects=data.max_objects, workers=1)
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(shipped_weights("demo")), "--ann", str(ann),
                 "--frames", str(ann.parent / "JPEGImages"), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(ann), str(out / "results.json"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(stats) == set(STAT_NAMES) and stats["AP"] > 0.5, stats  # 0.692 on these two videos
    # the command line writes exactly what the Python API predicts
    annotations = load_annotations(ann)
    category_ids = [annotations.category_id_of(label) for label in range(1, annotations.num_classes + 1)]
    tracks = cico.load("demo").predict(dataset_videos(annotations, ann.parent / "JPEGImages"), category_ids)
    assert json.loads((out / "results.json").read_text()) == [track.to_result() for track in tracks]
