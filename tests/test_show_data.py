"""``cico show-data`` (ground truth rendered like predictions, statistics) and the first hour: ``--weights demo``,
``--device auto``, rendering only the best tracks."""
from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from cico.cli import main
from cico.data.annotations import load_annotations
from cico.data.synthetic import make_synthetic
from cico.model.checkpoint import load_checkpoint
from cico.weights import shipped_weights


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("syn"), 2, 5, (96, 160), seed=3, classes=3, max_objects=3,
                          workers=1)


def test_show_data_writes_playable_videos_stats_and_plot(dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "show"
    assert main(["show-data", "--ann", str(dataset), "--frames", str(dataset.parent / "JPEGImages"),
                 "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    ann = load_annotations(dataset)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["videos"] == 2 and stats["frames_per_video"] == [5, 5] and stats["tracks"] == len(ann.tracks)
    assert sum(stats["tracks_per_class"].values()) == len(ann.tracks) == sum(stats["sizes"].values())
    assert 0 <= stats["absent_fraction"] < 1 and "videos             2" in stdout
    assert (out / "stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with av.open(str(out / "video00001.mp4")) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (96, 160, 3)
    # the first track's mask is drawn in its track colour over the frame
    track = ann.tracks_of(1)[0]
    f = next(i for i, s in enumerate(track.segmentations) if s)
    original = cv2.imread(str(dataset.parent / "JPEGImages" / ann.video(1).file_names[f]))
    mask = ann.mask(track, f).astype(bool)
    assert np.abs(frames[f][mask].astype(int) - original[mask].astype(int)).mean() > 20
    assert main(["show-data", "--ann", str(dataset), "--frames", str(dataset.parent / "JPEGImages"),
                 "--out", str(tmp_path / "gif"), "--gif", "--videos", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "gif").iterdir()) == ["stats.json", "stats.png", "video00001.gif"]


def test_show_data_bad_frames_folder(dataset: Path, tmp_path: Path, capsys) -> None:
    assert main(["show-data", "--ann", str(dataset), "--frames", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "nope: frames folder not found" in capsys.readouterr().err


def test_weights_demo_device_auto_and_top_k(dataset: Path, tmp_path: Path, capsys) -> None:
    assert load_checkpoint("demo")["preset"] == load_checkpoint(shipped_weights("demo"))["preset"]
    out = tmp_path / "pred"
    assert main(["predict", "--weights", "demo", str(dataset.parent / "JPEGImages" / "video00001"), "--out",
                 str(out), "--render-top-k", "1", "--quiet"]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0] in ("device: cpu (auto: no CUDA GPU found)", "device: cuda (auto: CUDA is available)")
    assert (out / "video00001.mp4").stat().st_size > 0 and "wrote" in stdout[-1]
    assert main(["benchmark", "--weights", "demo", "--size", "64x96", "--warmup", "0", "--repeats", "1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == "demo" and record["device"] in ("cpu", "cuda")
