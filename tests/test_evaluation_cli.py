"""``cico evaluate``, malformed inputs as one-line errors, and the CodaLab submission writer."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cico.cli import main
from cico.data.rle import encode
from cico.errors import CicoError
from cico.evaluation import STAT_NAMES, evaluate
from cico.outputs.codalab import write_submission

H, W = 6, 8
MASK = np.zeros((H, W), dtype=np.uint8)
MASK[1:4, 2:6] = 1


def _gt() -> dict:
    return {
        "videos": [{"id": 1, "height": H, "width": W, "length": 2}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "giant_panda"}],
        "annotations": [
            {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [encode(MASK), None],
             "areas": [int(MASK.sum()), None]},
        ],
    }  # fmt: skip


def _results() -> list:
    return [{"video_id": 1, "category_id": 1, "score": 0.8, "segmentations": [encode(MASK), None]}]


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    gt, res = tmp_path / "gt.json", tmp_path / "results.json"
    gt.write_text(json.dumps(_gt()))
    res.write_text(json.dumps(_results()))
    return gt, res


def test_json_flag_ends_with_the_12_numbers(files, capsys: pytest.CaptureFixture[str]) -> None:
    gt, res = files
    assert main(["evaluate", str(gt), str(res), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    stats = json.loads(out[-1])
    assert list(stats) == list(STAT_NAMES)
    assert all(type(v) is float for v in stats.values())
    assert stats["AP"] == 0.9999999999999998 and stats["APl"] == -1.0
    text = "\n".join(out[:-1])
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in text
    assert "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = -1.000" in text
    assert "person" in text and "giant_panda" in text  # per-class table with the GT's names


def test_fix_options_change_the_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = _gt()
    gt["annotations"][0]["segmentations"][1] = encode(MASK)
    gt["annotations"][0]["id"] = 0
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    short = [{"video_id": 1, "category_id": 1, "score": 0.8, "segmentations": [encode(MASK)]}]
    (tmp_path / "r.json").write_text(json.dumps(short))
    args = ["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "r.json"), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1])["AP"] == 0.0  # GT id 0: never a TP
    assert captured.err.count("\n") == 1 and "warning: " in captured.err and "id 0" in captured.err
    assert main(args + ["--match-gt-id-zero"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["AP"] == 0.9999999999999998  # IoU 1 (zip)
    assert main(args + ["--match-gt-id-zero", "--count-missing-frames"]) == 0
    stats = json.loads(capsys.readouterr().out.splitlines()[-1])  # the missing frame 1 counts: IoU 0.5
    assert stats["AP50"] == 0.9999999999999999 and stats["AP75"] == 0.0


def _entry(**changes) -> dict:
    entry = _results()[0]
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not KeyError}


BAD_RESULTS = [
    ("{broken", "broken JSON"),
    ({"video_id": 1}, "must be a JSON list"),
    ([_entry(video_id=KeyError)], "result 0 has no 'video_id'"),
    ([_entry(segmentations=KeyError)], "result 0 has no 'segmentations'"),
    ([_entry(), _entry(video_id=42)], "result 1: video_id 42 is not a video of the ground truth"),
    ([_entry(score="high")], "'score' must be a number"),
    ([_entry(category_id="person")], "category_id must be an integer"),
    ([_entry(segmentations={"0": None})], "'segmentations' must be a list"),
    ([_entry(segmentations=[{"size": [H, W], "counts": 17}])], "segmentations[0] is not a valid"),
    ([_entry(segmentations=[None, {"counts": "abc"}])], "segmentations[1] is not a valid"),
    ([_entry(segmentations=[{"size": [H, W], "counts": [-5, 10]}])], "segmentations[0] is not a valid"),
    ([_entry(segmentations=[{"size": "6x8", "counts": "PPYo1"}])], "segmentations[0] is not a valid"),
    ([_entry(segmentations=[{"size": [2, 2], "counts": "0;"}])], "counts do not fit size [2, 2]"),
    ([_entry(segmentations=["a mask"])], "segmentations[0] is not a valid"),
    ([_entry(segmentations=[[["x", "y"]]])], "segmentations[0] is not a valid"),
]


@pytest.mark.parametrize(("content", "message"), BAD_RESULTS)
def test_malformed_results_are_one_line_errors(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CicoError) as err:
        evaluate(_gt(), path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text


def _gt_with(**changes) -> dict:
    gt = _gt()
    for key, value in changes.items():
        if value is KeyError:
            del gt["annotations"][0][key]
        else:
            gt["annotations"][0][key] = value
    return gt


BAD_GT = [
    ([1, 2], "must be a JSON object"),
    ({"videos": [], "categories": []}, "no 'annotations' (an unannotated split cannot be evaluated)"),
    (_gt_with(segmentations=KeyError), "annotations[0] (id 1) has no 'segmentations'"),
    (_gt_with(areas=["big"]), "'areas' must be a list of numbers or null"),
    (_gt_with(iscrowd="no"), "'iscrowd' must be 0 or 1"),
    ({**_gt(), "annotations": _gt()["annotations"] * 2}, "duplicate annotation id"),
    ({**_gt(), "videos": [{"id": 1}]}, "is a polygon but the video has no height/width"),
]


@pytest.mark.parametrize(("content", "message"), BAD_GT)
def test_malformed_ground_truth_is_a_one_line_error(tmp_path: Path, content, message: str) -> None:
    if "polygon" in message:
        content["annotations"][0]["segmentations"][0] = [[2.0, 1.0, 6.0, 1.0, 6.0, 4.0]]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(content))
    with pytest.raises(CicoError) as err:
        evaluate(path, _results())
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CicoError, match="file not found"):
        evaluate(tmp_path / "nope.json", [])
    (tmp_path / "empty.zip").write_bytes(b"not a zip")
    with pytest.raises(CicoError, match="not a valid zip"):
        evaluate(_gt(), tmp_path / "empty.zip")


@pytest.mark.parametrize(
    ("results", "message"),
    [("{broken", "broken JSON"), ('[{"video_id": 9, "category_id": 1, "score": 1, "segmentations": []}]', "video_id 9"),
     ('[{"video_id": 1}]', "has no 'category_id'")],
)  # fmt: skip
def test_cli_user_errors_exit_2_with_one_line(files, results: str, message: str) -> None:
    gt, res = files
    res.write_text(results)
    proc = subprocess.run(
        [sys.executable, "-m", "cico", "evaluate", str(gt), str(res), "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and str(res) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_does_not_load_torch(files) -> None:
    gt, res = files
    code = (
        "import sys; from cico.cli import main; "
        f"rc = main(['evaluate', {str(gt)!r}, {str(res)!r}]); assert 'torch' not in sys.modules; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_codalab_zip_holds_results_json_at_the_root(tmp_path: Path) -> None:
    results = _results()
    results[0]["score"] = np.float32(0.5)  # numpy numbers and bytes counts become JSON
    results[0]["segmentations"][0] = {"size": [H, W], "counts": results[0]["segmentations"][0]["counts"].encode()}
    out = write_submission(results, tmp_path / "sub" / "submission.zip")
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["results.json"]
        written = json.loads(archive.read("results.json"))
    assert written[0]["score"] == 0.5 and written[0]["segmentations"][0] == encode(MASK)
    assert [p.name for p in out.parent.iterdir()] == ["submission.zip"]  # no partial file left
    assert evaluate(_gt(), out).stats["AP"] == 0.9999999999999998


def test_codalab_from_a_file_copies_it_and_checks_it_first(files, tmp_path: Path) -> None:
    _, res = files
    out = write_submission(res, tmp_path / "a.zip")
    with zipfile.ZipFile(out) as archive:
        assert archive.read("results.json") == res.read_bytes()
    res.write_text('{"not": "a list"}')
    with pytest.raises(CicoError, match="must be a JSON list"):
        write_submission(res, tmp_path / "a.zip")
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:  # the previous submission is intact
        assert json.loads(archive.read("results.json"))[0]["video_id"] == 1


def test_codalab_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    class Boom:
        def __iter__(self):
            raise KeyboardInterrupt

    target = tmp_path / "sub.zip"
    write_submission(_results(), target)
    before = target.read_bytes()
    bad = _results() + [{"video_id": 1, "category_id": 1, "score": object(), "segmentations": []}]
    with pytest.raises(TypeError):
        write_submission(bad, target)
    with pytest.raises(KeyboardInterrupt):
        write_submission(Boom(), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.zip"]


def test_speed_benchmark_prints_one_json_line() -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_speed.py"
    args = ["--videos", "2", "--frames", "3", "--gt-per-video", "2", "--results-per-video", "8", "--from-files"]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["result_tracks"] == 16 and report["evaluate_s"] >= 0 and 0 <= report["AP"] <= 1
