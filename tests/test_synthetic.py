"""Synthetic YouTube-VIS videos: format, determinism, the hard cases they must contain, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cico.cli import main
from cico.data.annotations import annotation_problems, load_annotations
from cico.data.synthetic import SYNTHETIC_CLASSES, SceneConfig, make_synthetic, render_video, video_name
from cico.errors import CicoError

SEED, VIDEOS, FRAMES, SIZE = 3, 8, 12, (96, 128)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset written in-process: ``OUT/instances.json``."""
    return make_synthetic(tmp_path_factory.mktemp("syn") / "out", VIDEOS, FRAMES, SIZE, seed=SEED, workers=1)


@pytest.fixture(scope="module")
def data(dataset: Path) -> dict:
    return json.loads(dataset.read_text())


def _decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_with_or_without_workers(dataset: Path, tmp_path: Path) -> None:
    again = make_synthetic(tmp_path / "again", VIDEOS, FRAMES, SIZE, seed=SEED, workers=2)
    assert _files(again.parent) == _files(dataset.parent)
    other = make_synthetic(tmp_path / "other", 2, FRAMES, SIZE, seed=SEED + 1, workers=1)
    assert other.read_bytes() != dataset.read_bytes()
    first = (dataset.parent / "JPEGImages" / video_name(0) / "00000.jpg").read_bytes()
    assert (other.parent / "JPEGImages" / video_name(0) / "00000.jpg").read_bytes() != first


def test_youtube_vis_layout_and_masks_match_boxes_and_areas(dataset: Path, data: dict) -> None:
    root = dataset.parent
    assert [v["id"] for v in data["videos"]] == list(range(1, VIDEOS + 1))
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    assert [c["name"] for c in data["categories"]] == list(SYNTHETIC_CLASSES[:6])
    assert [c["id"] for c in data["categories"]] == list(range(1, 7))
    for video in data["videos"]:
        assert (video["height"], video["width"], video["length"]) == (*SIZE, FRAMES)
        assert len(video["file_names"]) == FRAMES
        image = cv2.imread(str(root / "JPEGImages" / video["file_names"][-1]))
        assert image.shape == (*SIZE, 3)
    assert all(len([a for a in data["annotations"] if a["video_id"] == v["id"]]) >= 1 for v in data["videos"])
    for ann in data["annotations"]:
        assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 6
        assert len(ann["segmentations"]) == len(ann["bboxes"]) == len(ann["areas"]) == FRAMES
        assert any(seg is not None for seg in ann["segmentations"])
        for seg, box, area in zip(ann["segmentations"], ann["bboxes"], ann["areas"]):
            if seg is None:
                assert box is None and area is None
                continue
            assert isinstance(seg["counts"], str) and seg["size"] == list(SIZE)
            mask = _decode(seg)
            assert area == int(mask.sum()) > 0
            ys, xs = np.nonzero(mask)
            assert box == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert annotation_problems(data) == []
    loaded = load_annotations(dataset)
    assert loaded.num_classes == 6 and len(loaded.videos) == VIDEOS


def test_written_masks_and_frames_are_the_rendered_ones(dataset: Path, data: dict) -> None:
    video = render_video(1, SEED, SceneConfig(frames=FRAMES, size=SIZE))
    tracks = [a for a in data["annotations"] if a["video_id"] == 2]
    assert [a["category_id"] for a in tracks] == video.category_ids
    for n, ann in enumerate(tracks):
        for t, seg in enumerate(ann["segmentations"]):
            written = np.zeros(SIZE, bool) if seg is None else _decode(seg).astype(bool)
            np.testing.assert_array_equal(written, video.masks[n, t])
    jpeg = cv2.imread(str(dataset.parent / "JPEGImages" / data["videos"][1]["file_names"][4]))[..., ::-1]
    error = np.abs(jpeg.astype(int) - video.frames[4]).mean()  # JPEG q90 of a grainy frame
    other = render_video(0, SEED, SceneConfig(frames=FRAMES, size=SIZE)).frames[4]
    assert error < 8.0 and error < 0.3 * np.abs(jpeg.astype(int) - other).mean()


def test_absent_frames_entering_leaving_and_repeated_classes(data: dict) -> None:
    height, width = SIZE
    entered = left = 0
    for ann in data["annotations"]:
        present = [seg is not None for seg in ann["segmentations"]]
        first, last = present.index(True), FRAMES - 1 - present[::-1].index(True)
        x, y, w, h = ann["bboxes"][first]
        entered += first > 0 and (x == 0 or y == 0 or x + w == width or y + h == height)
        x, y, w, h = ann["bboxes"][last]
        left += last < FRAMES - 1 and (x == 0 or y == 0 or x + w == width or y + h == height)
    assert entered >= 1 and left >= 1  # came in through a border / went out through one
    repeated = 0
    for video in data["videos"]:
        classes = [a["category_id"] for a in data["annotations"] if a["video_id"] == video["id"]]
        repeated += len(classes) > len(set(classes))
    assert repeated >= 1


def test_masks_are_visible_parts_with_occlusion() -> None:
    occluded = 0
    for index in range(VIDEOS):
        video = render_video(index, SEED, SceneConfig(frames=FRAMES, size=SIZE))
        assert not (video.masks & ~video.amodal).any()  # visible part of the shape
        assert (video.masks.sum(axis=0) <= 1).all()  # objects never share a pixel
        visible, full = video.masks.sum(axis=(2, 3)), video.amodal.sum(axis=(2, 3))
        occluded += int(((visible > 0) & (visible < full)).sum())
        assert video.frames.shape == (FRAMES, *SIZE, 3) and video.frames.dtype == np.uint8
    assert occluded >= 1


def _shape_features(mask: np.ndarray) -> list[float]:
    """Colour-free, scale- and rotation-invariant: solidity, circularity, hole, extent, corners."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    outer = max(contours, key=cv2.contourArea)
    area, perimeter = float(mask.sum()), cv2.arcLength(outer, True)
    hull = cv2.convexHull(outer)
    _, (rect_w, rect_h), _ = cv2.minAreaRect(outer)
    corners = len(cv2.approxPolyDP(hull, 0.06 * perimeter, True))
    return [area / cv2.contourArea(hull), 4 * np.pi * area / perimeter**2, float(len(contours) > 1),
            area / (rect_w * rect_h), corners / 6]


def test_classes_differ_by_shape_not_colour() -> None:
    """Whole, unoccluded objects: nearest neighbour on shape features finds the class, on mean colour
    it does not (every class comes in many colours)."""
    size = 128
    features, colours, labels = [], [], []
    for index in range(60):
        video = render_video(index, 5, SceneConfig(frames=1, size=(size, size), classes=len(SYNTHETIC_CLASSES)))
        for n, category_id in enumerate(video.category_ids):
            mask = video.masks[n, 0]
            ys, xs = np.nonzero(mask)
            if (mask.sum() < 150 or mask.sum() != video.amodal[n, 0].sum()
                    or min(ys.min(), xs.min()) == 0 or max(ys.max(), xs.max()) == size - 1):
                continue
            features.append(_shape_features(mask))
            colours.append(video.frames[0][mask].mean(axis=0))
            labels.append(category_id)
    labels_np = np.array(labels)
    assert set(labels) == set(range(1, len(SYNTHETIC_CLASSES) + 1)) and len(labels) >= 40

    def nearest_neighbour_accuracy(x: np.ndarray) -> float:
        distance = np.linalg.norm(x[:, None] - x[None], axis=2)
        np.fill_diagonal(distance, np.inf)
        return float((labels_np[distance.argmin(axis=1)] == labels_np).mean())

    assert nearest_neighbour_accuracy(np.array(features)) > 0.9
    assert nearest_neighbour_accuracy(np.array(colours)) < 0.3


def test_video_files_decode_to_the_frames(tmp_path: Path) -> None:
    import av

    path = make_synthetic(tmp_path / "out", 1, 5, (64, 96), seed=1, video_files=True, fps=6.0, workers=1)
    with av.open(str(path.parent / "videos" / f"{video_name(0)}.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4") and float(stream.average_rate) == 6.0
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(frames) == 5 and frames[0].shape == (64, 96, 3)
    jpeg = cv2.imread(str(path.parent / "JPEGImages" / video_name(0) / "00002.jpg"))[..., ::-1]
    assert np.abs(frames[2].astype(int) - jpeg).mean() < 8.0


def test_api_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(CicoError, match="classes"):
        make_synthetic(tmp_path / "a", 1, 2, (32, 32), classes=len(SYNTHETIC_CLASSES) + 1)
    with pytest.raises(CicoError, match="even"):
        make_synthetic(tmp_path / "b", 1, 2, (33, 32), video_files=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CicoError, match="not a directory"):
        make_synthetic(tmp_path / "file", 1, 2, (32, 32))
    with pytest.raises(CicoError, match="cannot create"):
        make_synthetic(tmp_path / "file" / "sub", 1, 2, (32, 32))


def test_cli_writes_summary_and_refuses_non_empty_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    argv = ["make-synthetic", str(out), "--videos", "2", "--frames", "3", "--size", "48x64", "--workers", "1"]
    assert main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and "2 videos x 3 frames (48x64)" in summary[0]
    before = (out / "instances.json").read_bytes()

    assert main(argv[:2] + ["--size", "48x64", "--seed", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and str(out) in err[0]
    assert (out / "instances.json").read_bytes() == before  # nothing lost

    assert main(argv + ["--seed", "9", "--overwrite"]) == 0
    assert (out / "instances.json").read_bytes() != before
    capsys.readouterr()


@pytest.mark.parametrize("size", ["640", "360x", "axb", "10x10"])
def test_cli_bad_size_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, size: str) -> None:
    assert main(["make-synthetic", str(tmp_path / "out"), "--size", size]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cico make-synthetic: error:") and "size" in err[0]
    assert not (tmp_path / "out").exists()


def test_check_data_passes_on_the_output(dataset: Path, capsys: pytest.CaptureFixture) -> None:
    from cico.data.check import check_dataset

    report = check_dataset(dataset, dataset.parent / "JPEGImages", workers=1)
    assert report.ok, report.problems
    assert report.videos == VIDEOS and report.frames == VIDEOS * FRAMES and report.tracks >= VIDEOS
    assert main(["check-data", "--ann", str(dataset), "--frames", str(dataset.parent / "JPEGImages")]) == 0
    assert "OK" in capsys.readouterr().out


def test_object_size_sets_the_diameters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--object-size`` moves the objects' sizes; a bad range is one line and exit 2."""
    areas = {}
    for name, size in (("small", "0.1-0.15"), ("large", "0.4-0.5")):
        assert main(["make-synthetic", str(tmp_path / name), "--videos", "3", "--frames", "2", "--size", "64x96",
                     "--object-size", size, "--workers", "1"]) == 0
        data = json.loads((tmp_path / name / "instances.json").read_text())
        assert data["info"]["object_size"] == [float(v) for v in size.split("-")]
        areas[name] = np.median([a for ann in data["annotations"] for a in ann["areas"] if a])
    assert areas["large"] > 4 * areas["small"]
    capsys.readouterr()
    for bad in ("0.5-0.2", "big", "0.01-0.2"):
        assert main(["make-synthetic", str(tmp_path / bad), "--object-size", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "object" in err[0] and not (tmp_path / bad).exists()
