"""Video files: the one mp4 writer (PyAV), used by rendering, the synthetic data and the benchmarks, and GIFs."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from .fileio import atomic_write


class Mp4Writer:
    """Encodes BGR frames into an mp4 file (H.264 when available, else MPEG-4), moved into place by :meth:`close`.

    Args:
        path: the output file.
        fps: frame rate.
        crf: H.264 quality (lower is better; 23 is FFmpeg's default).
        preset: H.264 speed/size preset (``None``: FFmpeg's default, ``medium``).
        faststart: put the index at the front of the file (playable while downloading).

    Frames may have odd sizes; they are padded by one pixel where the 4:2:0 encoder needs even ones.
    Use as a context manager: on an exception the partial file is removed.
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 20, preset: str | None = None,
                 faststart: bool = True) -> None:
        import av

        self._target = atomic_write(path)
        self.path = self._target.path
        self._container = av.open(str(self._target.tmp), mode="w",
                                  options={"movflags": "faststart"} if faststart else {})
        self._codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        stream: Any = self._container.add_stream(self._codec, rate=self._rate)
        stream.pix_fmt = "yuv420p"
        self._stream = stream
        if self._codec == "libx264":
            self._stream.options = {"crf": str(crf), **({"preset": preset} if preset else {})}
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        """Append one BGR ``uint8 [H, W, 3]`` frame."""
        import av

        h, w = image.shape[:2]
        if self._size is None:
            self._size = (h + h % 2, w + w % 2)
            self._stream.height, self._stream.width = self._size
            if self._codec == "mpeg4":  # no crf for MPEG-4: 8 bits per pixel and frame, close to the H.264 quality
                self._stream.bit_rate = 8 * self._size[0] * self._size[1] * math.ceil(self._rate)
        if (h, w) != self._size:
            image = cv2.copyMakeBorder(image, 0, self._size[0] - h, 0, self._size[1] - w, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the file into place; returns its path."""
        if self.frames:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        if not self.frames:
            self._target.discard()
            raise ValueError(f"no frames were written to {self.path}")
        return self._target.commit()

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self._container.close()
        finally:
            self._target.discard()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_gif(path: str | Path, images: Iterable[np.ndarray], fps: float, scale: int = 1) -> Path:
    """A looping GIF of BGR ``uint8 [H, W, 3]`` frames, upscaled ``scale``x (nearest), written atomically."""
    from PIL import Image

    frames = [Image.fromarray(np.ascontiguousarray(np.repeat(np.repeat(f[..., ::-1], scale, 0), scale, 1)))
              for f in images]
    if not frames:
        raise ValueError(f"no frames for {path}")
    with atomic_write(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps),
                       loop=0, optimize=False)
    return Path(path)
