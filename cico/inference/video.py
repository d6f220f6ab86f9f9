"""Video prediction: clip splitting, streaming inference, linking, and masks back at the original resolution.

The reference's test loop (spec §5.1, §5.4, §5.7) for one video of ``L`` frames with clips of ``T`` frames
overlapping by ``O``: clip ``c`` holds frames ``c·(T-O) .. c·(T-O)+T-1`` (``⌈L / (T-O)⌉`` clips); a short last
clip is padded cyclically (``[a, b] -> [a, b, a]``, ★ quirk 12); each clip outputs only its first
``T-O`` frames (of its real, unpadded frames: the last clip ``[6, 6, 6]`` of a 7-frame video outputs frame 6
from position 0 only), so every frame is output once and the overlap frames only serve linking.

:class:`VideoPredictor` runs that loop as a stream: frames are decoded lazily from any
:mod:`cico.data.sources` video, clips are formed on the fly, a batch of ``batch_clips`` clips goes through
the network at a time, the tracker links them in order, and each clip's output frames are returned at
their original size as soon as they are final (:class:`ClipResult`). Only the frames of the clips in
flight and the tracker's per-track state are held, so memory does not grow with the video's length.

``VideoPredictor.predict(source)`` collects whole videos into :class:`~cico.outputs.results.Track` objects
(per-frame masks kept as RLE, decoded on access)::

    predictor = cico.inference.video.load("model.pth", device="cuda")
    for track in predictor.predict("video.mp4"):
        print(track.track_id, track.category_name, track.score, track.masks[0].shape)
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.sources import Camera, Video, open_source
from ..data.transforms import pad_to, padded_size, test_transform
from ..model.config import ModelConfig
from ..model.network import CiCo
from ..model.outputs import ClipDetections
from ..outputs.render import Mp4Writer, draw_frame, id_mask, write_png
from ..outputs.results import ResultsWriter, Track, VideoResults
from .link import ClipTracker, LinkConfig, TrackedClip
from .onnx_runtime import OnnxClipNetwork, load_network

Precision = Literal["bf16", "fp16"]
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Clip:
    """One clip of a video, as the reference forms it.

    Attributes:
        index: clip number in the video (0 resets the tracker).
        frame_ids: the ``T`` frame ids, cyclic padding included (``[6, 7, 6]``).
        images: the ``T`` frames (BGR ``uint8 [H, W, 3]``; a padded slot shares its frame's array).
        outputs: ``(frame_id, t)`` of the frames this clip outputs: its first ``min(T-O, real frames)``
            positions (the reference slices the clip's unpadded frame range).
    """

    index: int
    frame_ids: list[int]
    images: list[np.ndarray]
    outputs: list[tuple[int, int]]

    @property
    def is_first(self) -> bool:
        return self.index == 0


def split_clips(frames: Iterable[np.ndarray], clip_frames: int, overlap: int) -> Iterator[Clip]:
    """Form the clips of a video from its frames, reading ahead at most one clip.

    Args:
        frames: the video's frames in order (any iterable; consumed lazily).
        clip_frames: ``T``.
        overlap: ``O``, frames shared by consecutive clips (``0 <= O < T``).

    Yields:
        ``⌈L / (T-O)⌉`` clips (spec §5.1).
    """
    if not 0 <= overlap < clip_frames:
        raise ValueError(f"overlap must be in [0, {clip_frames - 1}] for {clip_frames}-frame clips, got {overlap}")
    step = clip_frames - overlap
    iterator = iter(frames)
    window: list[np.ndarray] = []  # frames left, left+1, ... of the current clip
    left, exhausted, index = 0, False, 0
    while True:
        while not exhausted and len(window) < clip_frames:
            frame = next(iterator, None)
            if frame is None:
                exhausted = True
            else:
                window.append(frame)
        if not window:
            return
        real = len(window)
        slots = [t % real for t in range(clip_frames)]  # cyclic padding of a short clip
        frame_ids = [left + s for s in slots]
        outputs = [(left + t, t) for t in range(min(step, real))]
        yield Clip(index, frame_ids, [window[s] for s in slots], outputs)
        del window[:step]
        left += step
        index += 1


@dataclass
class FrameResult:
    """What the tracker reports in one output frame, at the frame's original resolution.

    Attributes:
        frame_id: index of the frame in its video.
        image: the frame, BGR ``uint8 [H, W, 3]``.
        ids: ``[k]`` track ids.
        labels: ``[k]`` 1-based class labels.
        scores: ``[k]`` the tracks' scores in this clip.
        tracked: ``[k]`` clips since each track was last detected (0 = detected, > 0 = propagated).
        boxes: ``[k, 4]`` int64 pixel boxes x1y1x2y2.
        masks: ``[k, H, W]`` bool.
    """

    frame_id: int
    image: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    tracked: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


@dataclass
class ClipResult:
    """One clip of a streamed video: the raw per-clip outputs and its final frames.

    Attributes:
        video: the video.
        clip: the clip (frame ids with padding, output positions).
        detections: the network's per-clip detections (before linking).
        tracks: the tracker's output for the clip (prototype resolution, all ``T`` frames).
        frames: the clip's output frames at the original resolution.
    """

    video: Video
    clip: Clip
    detections: ClipDetections
    tracks: TrackedClip
    frames: list[FrameResult]

    def arrays(self) -> dict[str, np.ndarray]:
        """The clip's detections and tracker outputs as arrays, named like the golden ``tracker_outputs.npz``
        (``frame_ids``, ``det_class``, ``det_score``, ``trk_box_ids``, ``trk_class``, ``trk_score``,
        ``trk_tracked_mask``, ``trk_box``, ``trk_box_cir``)."""
        dets, tracks = self.detections, self.tracks
        values = {"frame_ids": torch.as_tensor(self.clip.frame_ids), "det_class": dets.labels,
                  "det_score": dets.scores, "trk_box_ids": tracks.ids, "trk_class": tracks.labels,
                  "trk_score": tracks.scores, "trk_tracked_mask": tracks.tracked_mask, "trk_box": tracks.boxes,
                  "trk_box_cir": tracks.boxes_cir}
        return {key: value.detach().cpu().numpy() for key, value in values.items()}


class VideoPredictor:
    """Streaming video instance segmentation with a loaded CiCo network.

    Args:
        model: the network (its config gives ``T``, the mask head, the test size and normalisation): a torch
            :class:`CiCo` or an ONNX export run by ONNX Runtime (:class:`OnnxClipNetwork`).
        overlap: frames shared by consecutive clips (the reference evaluates with 1).
        batch_clips: clips per network forward (useful on GPU; linking stays sequential).
        amp: ``"bf16"`` or ``"fp16"`` autocast for the network forward, or ``None`` (float32).
        channels_last: convert the network to the channels-last memory format.
        link: linking parameters (reference defaults).
        score_thresh: the reference's one confidence threshold (0.1), used by detection and by the
            tracker's output; ``None`` keeps the model's.
    """

    def __init__(self, model: CiCo | OnnxClipNetwork, *, overlap: int = 1, batch_clips: int = 1,
                 amp: Precision | None = None, channels_last: bool = False, link: LinkConfig | None = None,
                 score_thresh: float | None = None) -> None:
        config = model.config
        if not 0 <= overlap < config.clip_frames:
            raise ValueError(f"overlap must be in [0, {config.clip_frames - 1}] for a model with "
                             f"{config.clip_frames}-frame clips, got {overlap}")
        if batch_clips < 1:
            raise ValueError(f"batch_clips must be >= 1, got {batch_clips}")
        if amp is not None and amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
        if (amp or channels_last) and not isinstance(model, CiCo):
            raise ValueError("amp and channels_last apply to the torch network, not to an ONNX export")
        link = link or LinkConfig()
        if score_thresh is not None:
            model.config = replace(config, detect=replace(config.detect, score_thresh=score_thresh))
            link = replace(link, score_thresh=score_thresh)
        if channels_last:
            model = model.set_memory_format(torch.channels_last)
        self.model = model.eval()
        self.overlap = overlap
        self.batch_clips = batch_clips
        self.amp = amp
        self.tracker = ClipTracker(config.mask_head, config.clip_frames, link)

    @classmethod
    def from_checkpoint(cls, weights: str | Path, device: str | torch.device = "cpu", **options) -> VideoPredictor:
        """Load a cico checkpoint or ONNX export (:func:`cico.inference.onnx_runtime.load_network`) and wrap it."""
        return cls(load_network(weights, device), **options)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        if isinstance(self.model, OnnxClipNetwork):
            return self.model.device
        return next(self.model.parameters()).device

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.config.class_names

    def stream(self, video: Video, on_clip: Callable[[ClipResult], None] | None = None) -> Iterator[ClipResult]:
        """Predict one video clip by clip.

        Args:
            video: any :class:`~cico.data.sources.Video`.
            on_clip: called with each :class:`ClipResult` before it is yielded (a hook for inspection).

        Yields:
            One :class:`ClipResult` per clip, in order; each frame is final when yielded.
        """
        config = self.model.config
        self.tracker.reset()
        clips = split_clips(video.frames(), config.clip_frames, self.overlap)
        cache: dict[int, Tensor] = {}
        for batch in _batches(clips, self.batch_clips):
            inputs, resized, cache = self._inputs(batch, cache)
            detections = self.detect_clips(inputs)
            for clip, dets in zip(batch, detections):
                tracks = self.tracker(dets, clip.frame_ids, clip.is_first)
                frames = original_frames(clip, tracks, resized, inputs.shape[-2:])
                result = ClipResult(video, clip, dets, tracks, frames)
                if on_clip is not None:
                    on_clip(result)
                yield result

    def predict_video(self, video: Video, category_ids: Sequence[int] | None = None,
                      on_clip: Callable[[ClipResult], None] | None = None) -> list[Track]:
        """The tracks of one video (per-frame masks RLE-encoded as soon as each frame is final).

        Args:
            video: the video.
            category_ids: the dataset's category id of each 1-based label (``category_ids[label-1]``);
                ``None`` keeps the labels.
            on_clip: see :meth:`stream`.
        """
        with VideoResults(video.video_id, self.class_names, category_ids) as results:
            for clip in self.stream(video, on_clip):
                results.add(clip.frames)
            return results.tracks()

    def predict(self, source: str | Path | Video | Sequence[Video],
                category_ids: Sequence[int] | None = None) -> list[Track]:
        """The tracks of every video of ``source`` (a path or URL for :func:`~cico.data.sources.open_source`,
        a :class:`~cico.data.sources.Video`, or a list of them), videos one after another."""
        if isinstance(source, Video):
            videos: Sequence[Video] = [source]
        elif isinstance(source, (str, Path)):
            videos = open_source(source)
        else:
            videos = source
        return [track for video in videos for track in self.predict_video(video, category_ids)]

    def _inputs(self, batch: list[Clip], cache: dict[int, Tensor]) -> tuple[Tensor, tuple[int, int], dict[int, Tensor]]:
        """``[B, T, 3, Hp, Wp]`` network input of a batch, the resized size ``(H', W')``, and the frames'
        preprocessed tensors (reused for the next batch's overlap frames)."""
        config = self.model.config
        prepared: dict[int, Tensor] = {}
        for clip in batch:
            for frame_id, image in zip(clip.frame_ids, clip.images):
                if frame_id not in prepared:
                    tensor = cache.get(frame_id)
                    if tensor is None:
                        tensor = test_transform(image, config.min_size, config.max_size, config.normalization)
                    prepared[frame_id] = tensor
        resized = next(iter(prepared.values())).shape[-2:]
        size = padded_size(resized[0], resized[1], config.size_divisibility, config.min_size, config.max_size)
        inputs = torch.stack([torch.stack([pad_to(prepared[f], size) for f in clip.frame_ids]) for clip in batch])
        return inputs, (int(resized[0]), int(resized[1])), prepared

    def detect_clips(self, inputs: Tensor) -> list[ClipDetections]:
        """Network forward (with the configured autocast) of preprocessed clips ``[B, T, 3, Hp, Wp]``:
        one :class:`ClipDetections` per clip (cast back to float32 after autocast)."""
        device = self.device
        autocast = (torch.autocast(device.type, dtype=AMP_DTYPES[self.amp]) if self.amp
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            outputs = self.model(inputs.to(device, non_blocking=True))
        detections = outputs.detections
        if self.amp:
            detections = [_float32(d) for d in detections]
        return detections


@torch.inference_mode()
def original_frames(clip: Clip, tracks: TrackedClip, resized: tuple[int, int],
                    padded: Sequence[int]) -> list[FrameResult]:
    """The clip's output frames at the original resolution (spec §5.4).

    Mask probabilities ``[k, T, h4, w4]`` are cropped to the part that covers the resized image,
    ``[:int(H'/Hp·h4), :int(W'/Wp·w4)]``, resized bilinearly (``align_corners=False``) to the frame size
    and thresholded at 0.5; boxes are rescaled from the padded canvas to the resized image, clamped to
    [0, 1] and scaled to pixels.

    Args:
        clip: the clip (its frames and output positions).
        tracks: the tracker's output for the clip.
        resized: ``(H', W')`` the frames' size after the test resize.
        padded: ``(Hp, Wp)`` the network input size.
    """
    height, width = clip.images[0].shape[:2]
    positions = [t for _, t in clip.outputs]
    k = len(tracks)
    masks = tracks.masks[:, positions]  # [k, F, h4, w4] probabilities
    h4, w4 = masks.shape[-2:]
    valid = masks[..., :int(resized[0] / padded[0] * h4), :int(resized[1] / padded[1] * w4)]
    if k:
        full = F.interpolate(valid.float().flatten(0, 1)[None], (height, width), mode="bilinear",
                             align_corners=False)[0] > 0.5
        full = full.unflatten(0, (k, len(positions))).cpu().numpy()
    else:
        full = np.zeros((0, len(positions), height, width), dtype=bool)
    boxes = tracks.boxes[:, positions].float()  # [k, F, 4] normalised on the padded canvas
    scale = boxes.new_tensor([padded[1] / resized[1], padded[0] / resized[0]] * 2)
    boxes = ((boxes * scale).clamp(0, 1) * boxes.new_tensor([width, height] * 2)).long().cpu().numpy()
    ids = tracks.ids.cpu().numpy()
    labels = tracks.labels.cpu().numpy()
    scores = tracks.scores.float().cpu().numpy()
    tracked = tracks.tracked_mask.cpu().numpy()
    return [FrameResult(frame_id, clip.images[t], ids, labels, scores, tracked, boxes[:, i], full[:, i])
            for i, (frame_id, t) in enumerate(clip.outputs)]


@dataclass
class RunSummary:
    """What :func:`predict_to_dir` wrote."""

    results: Path
    videos: int
    frames: int
    tracks: int
    seconds: float


def predict_to_dir(predictor: VideoPredictor, videos: Iterable[Video], out_dir: str | Path, *,
                   category_ids: Sequence[int] | None = None, render: bool = False, save_masks: bool = False,
                   dump_tracker: bool = False, progress: bool = True) -> RunSummary:
    """Predict videos one after another and write the outputs into ``out_dir``.

    Writes ``results.json`` (YouTube-VIS results, streamed video by video and moved into place when
    complete); with ``render`` ``<video>.mp4`` (masks, boxes, ``class: score: id``) at the video's frame
    rate; with ``save_masks`` ``masks/<video>/<frame>.png`` instance-id images (track id + 1, 0 =
    background; 16-bit where an id exceeds 254); with ``dump_tracker`` ``tracker/<video>.npz`` holding
    every clip's :meth:`ClipResult.arrays` as ``clip{c}_{name}``. A live camera/stream ends cleanly on
    Ctrl-C; any other interruption leaves no partial file behind.
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
                 render: bool, save_masks: bool, dump_tracker: bool, progress: bool) -> None:
    """Stream one video into ``results`` and the optional per-frame outputs of :func:`predict_to_dir`."""
    from tqdm import tqdm

    renderer: Mp4Writer | None = None
    dump: dict[str, np.ndarray] = {}
    bar = tqdm(total=video.length, desc=video.name, unit="frame", disable=not progress, leave=False)
    try:
        try:
            for clip in predictor.stream(video):
                results.add(clip.frames)
                for frame in clip.frames:
                    if render:
                        renderer = renderer or Mp4Writer(out_dir / f"{video.name}.mp4", video.fps)
                        renderer.write(draw_frame(frame, predictor.class_names))
                    if save_masks:
                        write_png(out_dir / "masks" / video.name / f"{video.frame_name(frame.frame_id)}.png",
                                  id_mask(frame))
                if dump_tracker:
                    dump.update({f"clip{clip.clip.index}_{k}": v for k, v in clip.arrays().items()})
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
        (out_dir / "tracker").mkdir(exist_ok=True)
        np.savez(out_dir / "tracker" / f"{video.name}.npz", **dump)


def load(weights: str | Path, device: str | torch.device = "cpu", **options) -> VideoPredictor:
    """A :class:`VideoPredictor` for a cico checkpoint or ONNX export (``options`` as for :class:`VideoPredictor`)."""
    return VideoPredictor.from_checkpoint(weights, device, **options)


def _batches(clips: Iterable[Clip], size: int) -> Iterator[list[Clip]]:
    batch: list[Clip] = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _float32(dets: ClipDetections) -> ClipDetections:
    """``dets`` with its floating-point tensors in float32 (linking runs in float32 after autocast)."""
    return ClipDetections(**{f.name: (v.float() if v.is_floating_point() else v)
                             for f in fields(ClipDetections) for v in [getattr(dets, f.name)]})
