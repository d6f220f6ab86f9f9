"""Frame sources: video files (PyAV), frame folders, dataset splits, camera arguments, and bad inputs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cico.data.annotations import load_annotations
from cico.data.sources import Camera, FrameFiles, VideoFile, dataset_videos, frame_files, open_source, parse_camera
from cico.errors import CicoError
from tests.conftest import SHARED
from tests.video_helpers import disc_frames, write_frames, write_mp4


def test_video_file_is_decoded_lazily_with_its_fps(tmp_path: Path):
    frames = disc_frames(7)
    path = write_mp4(tmp_path / "clip.mp4", frames, fps=12.5)
    (video,) = open_source(path)
    assert isinstance(video, VideoFile)
    assert (video.name, video.video_id, video.length, video.fps) == ("clip", 1, 7, 12.5)
    iterator = video.frames()
    first = next(iterator)  # only one frame decoded so far
    assert first.shape == (90, 160, 3) and first.dtype == np.uint8
    decoded = [first, *iterator]
    assert len(decoded) == 7
    # lossy, but close to what was encoded (BGR order kept: the disc is orange, the square blue)
    assert np.abs(decoded[3].astype(int) - frames[3].astype(int)).mean() < 6


def test_frame_folder_sorted_naturally_png_and_jpg(tmp_path: Path):
    frames = disc_frames(3)
    for name, frame in zip(["10.png", "9.jpg", "100.PNG"], frames):
        cv2.imwrite(str(tmp_path / name), frame)
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [p.name for p in frame_files(tmp_path)] == ["9.jpg", "10.png", "100.PNG"]
    (video,) = open_source(tmp_path, fps=8)
    assert isinstance(video, FrameFiles)
    assert (video.length, video.fps, video.name) == (3, 8, tmp_path.name)
    assert [video.frame_name(i) for i in range(3)] == ["9", "10", "100"]
    out = list(video.frames())
    np.testing.assert_array_equal(out[1], frames[0])  # 10.png is lossless


def test_frame_folder_errors_name_the_file(tmp_path: Path):
    with pytest.raises(CicoError, match="no .jpg/.png frames"):
        open_source(tmp_path)
    write_frames(tmp_path, disc_frames(2))
    cv2.imwrite(str(tmp_path / "00002.png"), np.zeros((10, 10, 3), np.uint8))
    (video,) = open_source(tmp_path)
    with pytest.raises(CicoError, match=r"00002.png: frame size 10x10 differs"):
        list(video.frames())
    (tmp_path / "00002.png").write_bytes(b"not a png")
    (video,) = open_source(tmp_path)
    frames = video.frames()
    next(frames), next(frames)  # the good frames come first: reading is lazy
    with pytest.raises(CicoError, match=r"00002.png: cannot be decoded as an image"):
        next(frames)


def test_bad_video_files(tmp_path: Path):
    with pytest.raises(CicoError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(CicoError, match=r"notes.mp4: not a readable video"):
        open_source(text)
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), disc_frames(1)[0])
    (single,) = open_source(image)  # a single image is a one-frame video
    assert single.length == 1


@pytest.mark.parametrize("faststart", [True, False])
def test_truncated_video_is_an_error(tmp_path: Path, faststart: bool):
    path = write_mp4(tmp_path / "full.mp4", disc_frames(12), faststart=faststart)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CicoError, match=r"cut.mp4: .*(truncated|no video stream)"):
        (video,) = open_source(cut)
        list(video.frames())


def test_camera_and_stream_arguments():
    assert parse_camera("0") == 0 and parse_camera("12") == 12
    assert parse_camera("rtsp://camera.local:554/stream") == "rtsp://camera.local:554/stream"
    assert parse_camera("video.mp4") is None and parse_camera("frames/") is None
    (camera,) = open_source("2")
    assert isinstance(camera, Camera) and camera.target == 2 and camera.length is None
    (stream,) = open_source("http://host/live.m3u8")
    assert isinstance(stream, Camera) and stream.name == "http_host_live.m3u8"


def test_an_existing_folder_named_like_a_camera_index_is_a_folder(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "0", disc_frames(2))
    (video,) = open_source("0")
    assert isinstance(video, FrameFiles) and video.length == 2


def test_dataset_split_videos_in_file_order_with_dataset_ids():
    root = SHARED / "data" / "davis2016_mini"
    annotations = load_annotations(root / "instances.json")
    videos = dataset_videos(annotations, root / "JPEGImages", fps=24)
    assert [v.video_id for v in videos] == [v.id for v in annotations.videos]
    first = videos[0]
    assert first.name == Path(annotations.videos[0].file_names[0]).parent.name
    assert first.length == annotations.videos[0].length and first.fps == 24
    frame = next(first.frames())
    assert frame.shape == (annotations.videos[0].height, annotations.videos[0].width, 3)
    assert first.frame_name(0) == Path(annotations.videos[0].file_names[0]).stem
