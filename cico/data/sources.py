"""Frame sources for inference: video files, frame folders, dataset splits, cameras and streams.

Every source is a sequence of :class:`Video` objects. A video knows its identity (``video_id``, ``name``)
and what is cheap to know up front (``length``, ``fps``); its frames are decoded lazily, one at a time,
by iterating :meth:`Video.frames`, as BGR ``uint8`` arrays ``[H, W, 3]`` (the layout OpenCV reads and the
reference preprocessing expects). Nothing is decoded before it is needed, so a predictor that consumes
frames clip by clip holds only the frames of the current clip.

Problems the user can fix (a missing file, an empty folder, a file that is not a video, a video that is
truncated or corrupt, frames of different sizes) raise :class:`~cico.errors.CicoError` with one line
naming the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..errors import CicoError
from .annotations import Annotations

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
DEFAULT_FPS = 25.0


class Video:
    """One video: identity, metadata and a lazy frame reader.

    Attributes:
        video_id: the id written to results (the dataset's id, or 1 for a single video).
        name: a file-system friendly name (output sub-folders use it).
        length: number of frames when known before decoding, else ``None``.
        fps: frame rate (from the stream, or the default for frame folders).
    """

    video_id: int | str
    name: str
    length: int | None
    fps: float

    def frames(self) -> Iterator[np.ndarray]:
        """Decode the frames one after another, BGR ``uint8`` ``[H, W, 3]``."""
        raise NotImplementedError

    def frame_name(self, index: int) -> str:
        """Name (without suffix) of frame ``index`` for per-frame outputs such as mask PNGs."""
        return f"{index:05d}"


@dataclass
class FrameFiles(Video):
    """A video stored as one image file per frame (a frame folder, or one video of a dataset split)."""

    paths: Sequence[Path]
    video_id: int | str = 1
    name: str = "video"
    fps: float = DEFAULT_FPS
    length: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.length = len(self.paths)

    def frames(self) -> Iterator[np.ndarray]:
        size: tuple[int, int] | None = None
        for path in self.paths:
            image = read_image(path)
            if size is None:
                size = image.shape[:2]
            elif image.shape[:2] != size:
                raise CicoError(
                    f"frame size {image.shape[1]}x{image.shape[0]} differs from the video's first frame "
                    f"({size[1]}x{size[0]})", path)
            yield image

    def frame_name(self, index: int) -> str:
        return Path(self.paths[index]).stem


@dataclass
class VideoFile(Video):
    """A video file decoded lazily with PyAV (any container/codec FFmpeg reads)."""

    path: Path
    video_id: int | str = 1
    name: str = ""
    fps: float = field(init=False)
    length: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.name = self.name or self.path.stem
        with _open_container(self.path) as container:
            stream = _video_stream(container, self.path)
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else DEFAULT_FPS
            self.length = int(stream.frames) or None

    def frames(self) -> Iterator[np.ndarray]:
        import av

        decoded = 0
        with _open_container(self.path) as container:
            stream = _video_stream(container, self.path)
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    decoded += 1
                    yield frame.to_ndarray(format="bgr24")
            except av.FFmpegError as err:
                raise CicoError(f"corrupt or truncated video: decoding failed after {decoded} frames ({err})",
                                self.path) from None
        if decoded == 0:
            raise CicoError("the video has no decodable frames", self.path)
        if self.length is not None and decoded < self.length:
            raise CicoError(f"truncated video: decoded {decoded} of {self.length} frames", self.path)


@dataclass
class Camera(Video):
    """A live source read with ``cv2.VideoCapture``: a webcam index or a stream URL (rtsp://, http://...).

    The length is unknown; frames are read until the capture ends. The frame rate is the capture's own
    (``CAP_PROP_FPS``) or the default when it reports none.
    """

    target: int | str
    video_id: int | str = 1
    name: str = ""
    fps: float = DEFAULT_FPS
    length: int | None = None

    def __post_init__(self) -> None:
        self.name = self.name or (f"camera{self.target}" if isinstance(self.target, int)
                                  else re.sub(r"[^A-Za-z0-9_.-]+", "_", str(self.target)).strip("_"))

    def frames(self) -> Iterator[np.ndarray]:
        capture = cv2.VideoCapture(self.target)
        if not capture.isOpened():
            raise CicoError("cannot open the camera or stream", str(self.target))
        try:
            fps = capture.get(cv2.CAP_PROP_FPS)
            if fps and fps > 0:
                self.fps = float(fps)
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                yield image
        finally:
            capture.release()


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_JPEG_TAIL = 256  # bytes at the end of a JPEG searched for its end marker (some writers pad after it)


def read_image(path: str | Path) -> np.ndarray:
    """One image file as BGR ``uint8`` ``[H, W, 3]`` (grey images are expanded to three channels).

    The one frame reader of cico (inference, training and ``check-data``): a truncated or corrupt file is
    an error, where ``cv2.imread`` would return a partly grey image. Recent OpenCV builds refuse a truncated
    JPEG themselves; older ones decode it partly, so a JPEG must also end with its end-of-image marker.

    Raises:
        CicoError: the file is missing, unreadable or cannot be decoded (truncated files included).
    """
    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except FileNotFoundError:
        raise CicoError("frame file not found", path) from None
    except OSError as err:
        raise CicoError(f"cannot be read: {err.strerror}", path) from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or (data[:2].tobytes() == _JPEG_START and _JPEG_END not in data[-_JPEG_TAIL:].tobytes()):
        raise CicoError("cannot be decoded as an image (truncated or corrupt)", path)
    return image


def frame_files(folder: str | Path) -> list[Path]:
    """The jpg/png frames of ``folder``, sorted by name (natural order: ``2.png`` before ``10.png``)."""
    folder = Path(folder)
    paths = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(paths, key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)])


def parse_camera(source: str) -> int | str | None:
    """The ``cv2.VideoCapture`` target for a webcam index (``"0"``) or a stream URL, else ``None``."""
    if source.isdigit():
        return int(source)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source):
        return source
    return None


def open_source(source: str | Path, fps: float | None = None) -> list[Video]:
    """The video(s) behind a command-line SOURCE.

    Args:
        source: a video file (mp4/avi/mov/webm/mkv/m4v), a folder of jpg/png frames, a webcam index
            (``"0"``) or a stream URL.
        fps: frame rate for frame folders (default 25); video files and cameras report their own.
    """
    text = str(source)
    camera = parse_camera(text)
    if camera is not None and not Path(text).exists():
        return [Camera(camera)]
    path = Path(text)
    if path.is_dir():
        paths = frame_files(path)
        if not paths:
            raise CicoError("no .jpg/.png frames in this folder", path)
        return [FrameFiles(paths, name=path.resolve().name, fps=fps or DEFAULT_FPS)]
    if not path.exists():
        raise CicoError("no such file or folder", path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [FrameFiles([path], name=path.stem, fps=fps or DEFAULT_FPS)]
    return [VideoFile(path)]


def dataset_videos(annotations: Annotations, frames_dir: str | Path, fps: float | None = None) -> list[FrameFiles]:
    """The videos of a YouTube-VIS/OVIS split, in file order, with the dataset's video ids.

    Frame paths are the videos' ``file_names`` relative to ``frames_dir``; a video is named after the
    folder of its frames (``JPEGImages/<name>/00000.jpg``).
    """
    videos = []
    for video in annotations.videos:
        if not video.file_names:
            raise CicoError(f"video {video.id} has no frames", annotations.path)
        folder = Path(video.file_names[0]).parent.as_posix()
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder).strip("_") or str(video.id)
        paths = [Path(frames_dir) / name_ for name_ in video.file_names]
        videos.append(FrameFiles(paths, video_id=video.id, name=name, fps=fps or DEFAULT_FPS))
    return videos


def _open_container(path: Path):
    import av

    if not path.is_file():
        raise CicoError("video file not found", path)
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise CicoError(f"not a readable video ({err})", path) from None


def _video_stream(container, path: Path):
    if not container.streams.video:
        container.close()
        raise CicoError("the file has no video stream", path)
    return container.streams.video[0]
