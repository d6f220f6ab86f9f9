"""``cico check-data`` on the real DAVIS excerpt and on broken datasets: one line per problem, exit code 2."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest
from conftest import SHARED

from cico.cli import main
from cico.data.check import check_dataset
from cico.data.rle import encode

DAVIS = SHARED / "data" / "davis2016_mini"


def test_davis_excerpt_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check-data", "--ann", str(DAVIS / "instances.json"), "--frames", str(DAVIS / "JPEGImages")])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert "videos: 6  frames: 341  tracks: 6" in out
    assert "person 1, dog 2, car 2, bird 1" in out and "OK" in out


def _dataset(root: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Two videos of 3 frames at 24x32 (PNG), one track each."""
    frames = root / "frames"
    mask = np.zeros((24, 32), np.uint8)
    mask[4:12, 6:20] = 1
    categories = [{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}]
    data: dict[str, Any] = {"videos": [], "annotations": [], "categories": categories}
    for vid in (1, 2):
        (frames / f"v{vid}").mkdir(parents=True)
        names = [f"v{vid}/{f}.png" for f in range(3)]
        for name in names:
            cv2.imwrite(str(frames / name), np.full((24, 32, 3), 40 * vid, np.uint8))
        data["videos"].append({"id": vid, "width": 32, "height": 24, "length": 3, "file_names": names})
        data["annotations"].append({"id": 10 + vid, "video_id": vid, "category_id": 9, "iscrowd": 0,
                                    "segmentations": [encode(mask)] * 3, "bboxes": [[6, 4, 14, 8]] * 3,
                                    "areas": [112] * 3})
    ann = root / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, frames, data


def _run(ann: Path, frames: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["check-data", "--ann", str(ann), "--frames", str(frames), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_small_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann, frames, _ = _dataset(tmp_path)
    code, out, err = _run(ann, frames, capsys)
    assert code == 0 and err == "" and "tracks per class: dog 2 (1 classes without tracks)" in out


def _edit_json(change: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path, dict[str, Any]], None]:
    def apply(ann: Path, frames: Path, data: dict[str, Any]) -> None:
        change(data)
        ann.write_text(json.dumps(data))
    return apply


def _missing_frame(ann: Path, frames: Path, data: dict[str, Any]) -> None:
    (frames / "v2" / "1.png").unlink()


def _corrupt_frame(ann: Path, frames: Path, data: dict[str, Any]) -> None:
    (frames / "v1" / "2.png").write_bytes(b"not an image")


def _wrong_size_frame(ann: Path, frames: Path, data: dict[str, Any]) -> None:
    cv2.imwrite(str(frames / "v1" / "0.png"), np.zeros((24, 30, 3), np.uint8))


def _broken_json(ann: Path, frames: Path, data: dict[str, Any]) -> None:
    ann.write_text(json.dumps(data)[:-20])


@pytest.mark.parametrize("breakage, message", [
    (_broken_json, "broken JSON"),
    (_missing_frame, "v2/1.png: frame 1 of video 2 is missing"),
    (_corrupt_frame, "v1/2.png: frame 2 of video 1 cannot be decoded"),
    (_wrong_size_frame, "v1/0.png: frame 0 of video 1 is 24x30 but the video is 24x32"),
    (_edit_json(lambda d: d["annotations"][0]["segmentations"].__setitem__(1, encode(np.zeros((24, 31), np.uint8)))),
     "annotation 11 (video 1) frame 1: mask size 24x31 but the video is 24x32"),
    (_edit_json(lambda d: d["videos"][1].update(length=4)), "video 2: 'length' is 4 but 'file_names' has 3"),
    (_edit_json(lambda d: d["annotations"][1]["areas"].append(5)), "'areas' has 4 entries but the video has 3"),
    (_edit_json(lambda d: d["annotations"][1].update(category_id=1)), "annotation 12: category_id 1 is not in"),
    (_edit_json(lambda d: d["annotations"][1].update(video_id=3)), "annotation 12: video_id 3 is not in 'videos'"),
    (_edit_json(lambda d: d["annotations"][1].update(id=11)), "annotation 11: duplicate annotation id"),
])
def test_each_problem_is_one_line_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   breakage: Callable[..., None], message: str) -> None:
    ann, frames, data = _dataset(tmp_path)
    breakage(ann, frames, data)
    code, out, err = _run(ann, frames, capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_whole_missing_video_is_one_line_and_no_decode_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann, frames, _ = _dataset(tmp_path)
    for path in (frames / "v1").iterdir():
        path.unlink()
    (frames / "v2" / "0.png").write_bytes(b"junk")
    code, out, err = _run(ann, frames, capsys, "--no-decode")
    assert code == 2 and err.splitlines() == [f"{frames / 'v1'}: all 3 frames of video 1 are missing"]
    assert "FAILED: 1 problem" in out
    report = check_dataset(ann, frames)  # decoding also finds the junk frame
    assert len(report.problems) == 2 and not report.ok


def test_test_split_without_annotations_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann, frames, data = _dataset(tmp_path)
    del data["annotations"]
    ann.write_text(json.dumps(data))
    code, out, err = _run(ann, frames, capsys)
    assert code == 0 and "no annotations (test split)" in out


def test_missing_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann, frames, _ = _dataset(tmp_path)
    code, _, err = _run(tmp_path / "nope.json", frames, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "nope.json: annotation file not found" in err
    code, _, err = _run(ann, tmp_path / "nowhere", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "frames folder not found" in err


def test_problem_list_is_capped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann, frames, _ = _dataset(tmp_path)
    for path in frames.glob("*/*.png"):
        path.write_bytes(b"junk")
    code, out, err = _run(ann, frames, capsys, "--max-problems", "2")
    assert code == 2 and len(err.splitlines()) == 3 and "and 4 more problems" in err and "FAILED: 6 problems" in out
