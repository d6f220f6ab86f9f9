"""``cico predict``, ``cico eval`` and ``cico benchmark`` end to end with a tiny model: outputs and bad inputs."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cico.cli import main
from cico.data.rle import decode
from cico.data.sources import open_source
from cico.data.synthetic import make_synthetic
from cico.model.checkpoint import save_checkpoint
from cico.model.config import get_preset
from tests.conftest import SHARED
from tests.video_helpers import disc_frames, tiny_checkpoint, tiny_model, write_frames, write_mp4


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pth")


def predict(weights: Path, source, out: Path, *extra: str) -> int:
    return main(["predict", "--weights", str(weights), str(source), "--out", str(out), "--quiet", *extra])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("length", [1, 2])
def test_one_and_two_frame_videos(weights: Path, tmp_path: Path, length: int, capsys):
    video = write_mp4(tmp_path / "short.mp4", disc_frames(length))
    assert predict(weights, video, tmp_path / "out", "--score-thresh", "0.05") == 0
    assert "wrote" in capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results and all(len(r["segmentations"]) == length and r["video_id"] == 1 for r in results)
    assert all(r["category_id"] in (1, 2) for r in results)


def test_render_save_masks_and_tracker_dump(weights: Path, tmp_path: Path):
    frames = write_frames(tmp_path / "clip", disc_frames(4))
    out = tmp_path / "out"
    assert predict(weights, frames, out, "--render", "--save-masks", "--dump-tracker", "--fps", "5") == 0
    results = json.loads((out / "results.json").read_text())
    assert results
    (video,) = open_source(out / "clip.mp4")
    assert video.fps == 5 and len(list(video.frames())) == 4
    pngs = sorted(p.name for p in (out / "masks" / "clip").iterdir())
    assert pngs == [f"{i:05d}.png" for i in range(4)]
    for f in range(4):
        ids = cv2.imread(str(out / "masks" / "clip" / pngs[f]), cv2.IMREAD_UNCHANGED)
        union = np.zeros(ids.shape, bool)
        for r in results:
            if r["segmentations"][f] is not None:
                union |= decode(r["segmentations"][f]).astype(bool)
        np.testing.assert_array_equal(ids > 0, union)
    dump = np.load(out / "tracker" / "clip.npz")
    assert dump["clip1_frame_ids"].tolist() == [2, 3, 2]
    assert sorted({k.split("_")[0] for k in dump.files}) == ["clip0", "clip1"]
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "masks", "results.json", "tracker"]


def test_failure_mid_video_leaves_previous_outputs_intact(weights: Path, tmp_path: Path, capsys):
    frames = write_frames(tmp_path / "clip", disc_frames(5))
    (frames / "00003.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("[]\n")
    assert predict(weights, frames, out, "--render") == 2
    assert "00003.png: cannot be decoded as an image" in error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
    assert (out / "results.json").read_text() == "[]\n"


def test_bad_inputs_are_one_line_errors(weights: Path, tmp_path: Path, capsys):
    video = write_mp4(tmp_path / "ok.mp4", disc_frames(3))
    text = tmp_path / "text.mp4"
    text.write_text("hello\n" * 50)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    empty = tmp_path / "empty"
    empty.mkdir()
    truncated = tmp_path / "truncated"  # cv2.imread would return its last frame half grey
    truncated.mkdir()
    for i, frame in enumerate(disc_frames(3)):
        data = cv2.imencode(".jpg", frame)[1].tobytes()
        (truncated / f"{i:05d}.jpg").write_bytes(data if i < 2 else data[: len(data) // 2])
    not_ckpt = tmp_path / "weights.pth"
    not_ckpt.write_bytes(b"\x00not a checkpoint")
    other = save_checkpoint(tmp_path / "other.pth", tiny_model(), config=get_preset("tiny_condinst", num_classes=2))
    out = tmp_path / "out"
    davis = SHARED / "data" / "davis2016_mini"
    cases = [
        (lambda: predict(weights, text, out), "text.mp4: not a readable video"),
        (lambda: predict(weights, cut, out), "cut.mp4: "),
        (lambda: predict(weights, empty, out), "no .jpg/.png frames"),
        (lambda: predict(weights, truncated, out), "00002.jpg: cannot be decoded as an image (truncated"),
        (lambda: predict(weights, tmp_path / "nothing.mp4", out), "nothing.mp4: no such file"),
        (lambda: predict(not_ckpt, video, out), "weights.pth"),
        (lambda: predict(tmp_path / "missing.pth", video, out), "missing.pth"),
        (lambda: predict(other, video, out), "other.pth: weights do not fit the model config"),
        (lambda: predict(weights, video, out, "--clip-frames", "5"), "clips of 3 frames"),
        (lambda: predict(weights, video, out, "--overlap", "3"), "--overlap"),
        (lambda: main(["predict", "--weights", str(weights), "--out", str(out)]), "give either a SOURCE or a dataset"),
        (lambda: main(["predict", "--weights", str(weights), str(video), "--out", str(out), "--ann", "x.json",
                       "--frames", "y"]), "give either a SOURCE or a dataset"),
        (lambda: main(["predict", "--weights", str(weights), "--out", str(out), "--quiet",
                       "--ann", str(davis / "instances.json"), "--frames", str(davis / "JPEGImages")]),
         "has 4 categories but the model predicts 2 classes"),
    ]
    if not torch.cuda.is_available():
        cases.append((lambda: predict(weights, video, out, "--device", "cuda"), "CUDA is not available"))
    for call, message in cases:
        code = call()
        line = error_line(capsys)
        assert code == 2 and message in line and line.startswith("cico predict: error:"), line
    assert not out.exists() or not any(out.iterdir())


def test_eval_writes_results_zip_and_scores(weights: Path, tmp_path: Path, capsys):
    ann = make_synthetic(tmp_path / "data", videos=2, frames=2, size=(72, 128), seed=3, classes=2, workers=1)
    capsys.readouterr()
    out = tmp_path / "eval"
    frames = str(tmp_path / "data" / "JPEGImages")
    assert main(["eval", "--weights", str(weights), "--ann", str(ann), "--frames", frames,
                 "--out", str(out), "--quiet", "--json"]) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    stats = json.loads(stdout[-1])
    assert list(stats) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
                           "tracking"]
    assert any("Average Precision" in line for line in stdout)
    assert (out / "report" / "report.html").is_file() and (out / "report" / "metrics.json").is_file()
    results = json.loads((out / "results.json").read_text())
    gt = json.loads(ann.read_text())
    assert {r["video_id"] for r in results} <= {v["id"] for v in gt["videos"]}
    with zipfile.ZipFile(out / "submission.zip") as z:
        assert z.namelist() == ["results.json"] and json.loads(z.read("results.json")) == results
    # the same split without ground truth: results and zip only
    del gt["annotations"]
    no_gt = tmp_path / "test.json"
    no_gt.write_text(json.dumps(gt))
    assert main(["eval", "--weights", str(weights), "--ann", str(no_gt), "--frames", frames,
                 "--out", str(tmp_path / "eval2"), "--quiet"]) == 0
    assert "no ground truth" in capsys.readouterr().out
    assert (tmp_path / "eval2" / "submission.zip").exists()


def test_benchmark_prints_one_json_line(weights: Path, tmp_path: Path, capsys):
    assert main(["benchmark", "--weights", str(weights), "--size", "60x100", "--warmup", "0", "--repeats", "1"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["mode"] == "network" and record["input_size"] == [64, 96] and record["frames_per_s"] > 0
    folder = write_frames(tmp_path / "clip", disc_frames(3))
    assert main(["benchmark", "--weights", str(weights), "--end-to-end", "--source", str(folder)]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["mode"] == "end-to-end" and record["frames"] == 3 and record["frame_size"] == [90, 160]
    assert record["frames_per_s"] > 0 and record["detections_per_clip"] > 0
    assert main(["benchmark", "--preset", "no_such_preset"]) == 2
    assert "unknown model preset" in error_line(capsys)
    for size in ("60", "1x100"):
        assert main(["benchmark", "--weights", str(weights), "--size", size]) == 2
        assert "--size" in error_line(capsys)
