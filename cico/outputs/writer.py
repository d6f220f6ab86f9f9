"""Prediction into a folder: results.json, and on request rendered mp4s, PNG id masks and tracker dumps."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..data.sources import Camera, Video
from ..fileio import atomic_write
from ..inference.predictor import VideoPredictor
from ..inference.tracks import VideoResults
from ..media import Mp4Writer
from .render import RenderStyle, draw_frame, id_mask, write_png
from .results import ResultsWriter


@dataclass
class RunSummary:
    """What :func:`predict_to_dir` wrote."""

    results: Path
    videos: int
    frames: int
    tracks: int
    seconds: float


def predict_to_dir(predictor: VideoPredictor, videos: Iterable[Video], out_dir: str | Path, *,
                   category_ids: Sequence[int] | None = None, render: bool | RenderStyle = False,
                   save_masks: bool = False, dump_tracker: bool = False, progress: bool = True) -> RunSummary:
    """Predict videos one after another and write the outputs into ``out_dir``.

    Writes ``results.json`` (YouTube-VIS results, streamed video by video and moved into place when
    complete); with ``render`` ``<video>.mp4`` (masks, boxes, ``class: score: id``) at the video's frame
    rate; with ``save_masks`` ``masks/<video>/<frame>.png`` instance-id images (track id + 1, 0 =
    background; 16-bit where an id exceeds 254); with ``dump_tracker`` ``tracker/<video>.npz`` holding
    every clip's :meth:`ClipResult.arrays` as ``clip{c}_{name}``. A live camera/stream ends cleanly on
    Ctrl-C; any other interruption leaves no partial file behind. ``render`` may be a
    :class:`~cico.outputs.render.RenderStyle` (top-k, score threshold).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, frames, tracks, count = time.perf_counter(), 0, 0, 0
    with ResultsWriter(out_dir / "results.json") as writer:
        for video in videos:
            with VideoResults(video.video_id, predictor.class_names, category_ids) as results:
                _write_video(predictor, video, out_dir, results, render=render, save_masks=save_masks,
                             dump_tracker=dump_tracker, progress=progress)
                writer.write(results.results())
            frames, tracks, count = frames + results.length, tracks + len(results), count + 1
    return RunSummary(writer.path, count, frames, tracks, time.perf_counter() - start)


def _write_video(predictor: VideoPredictor, video: Video, out_dir: Path, results: VideoResults, *,
                 render: bool | RenderStyle, save_masks: bool, dump_tracker: bool, progress: bool) -> None:
    """Stream one video into ``results`` and the optional per-frame outputs of :func:`predict_to_dir`."""
    from tqdm import tqdm

    renderer: Mp4Writer | None = None
    style = render if isinstance(render, RenderStyle) else RenderStyle()
    dump: dict[str, np.ndarray] = {}
    bar = tqdm(total=video.length, desc=video.name, unit="frame", disable=not progress, leave=False)
    try:
        try:
            for clip in predictor.stream(video):
                results.add(clip.frames)
                for frame in clip.frames:
                    if render:
                        renderer = renderer or Mp4Writer(out_dir / f"{video.name}.mp4", video.fps)
                        renderer.write(draw_frame(frame, predictor.class_names, style))
                    if save_masks:
                        write_png(out_dir / "masks" / video.name / f"{video.frame_name(frame.frame_id)}.png",
                                  id_mask(frame))
                if dump_tracker:
                    dump.update({f"clip{clip.index}_{k}": v for k, v in clip.arrays().items()})
                bar.update(len(clip.frames))
        except KeyboardInterrupt:
            if not isinstance(video, Camera):  # a live source ends on Ctrl-C with what it has
                raise
    except BaseException:
        if renderer is not None:
            renderer.abort()
        raise
    finally:
        bar.close()
    if renderer is not None:
        renderer.close()
    if dump_tracker:
        with atomic_write(out_dir / "tracker" / f"{video.name}.npz") as tmp:
            np.savez(tmp, **dump)  # type: ignore[arg-type]  # numpy's stub types **kwds like allow_pickle
