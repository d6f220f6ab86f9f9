"""Streaming video prediction: clips through the network, linked into tracks, frames at the original size.

:class:`VideoPredictor` runs the reference's test loop as a stream: frames are decoded lazily from any
:mod:`cico.data.sources` video, clips are formed on the fly (:mod:`cico.inference.clips`), a batch of
``batch_clips`` clips goes through the network at a time, the tracker links them in order, and each clip's
output frames are returned at their original size as soon as they are final
(:class:`~cico.structures.ClipResult`). Only the frames of the clips in flight and the tracker's per-track
state are held, so memory does not grow with the video's length.

``VideoPredictor.predict(source)`` collects whole videos into :class:`~cico.inference.tracks.Track`
objects (per-frame masks kept as RLE, decoded on access)::

    predictor = cico.inference.predictor.load("model.pth", device="cuda")
    for track in predictor.predict("video.mp4"):
        print(track.track_id, track.category_name, track.score, track.masks[0].shape)

Writing files (results.json, mp4, PNG masks) is :mod:`cico.outputs`' job.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import torch
from torch import Tensor

from ..data.sources import Video, open_source
from ..data.transforms import pad_to, padded_size, preprocess_frame
from ..model.config import ModelConfig
from ..model.detect import detect
from ..model.network import CiCo
from ..structures import ClipResult, Instances
from .clips import Clip, batches, split_clips
from .link import ClipTracker, LinkConfig
from .onnx_runtime import OnnxClipNetwork, load_network
from .postprocess import original_frames
from .tracks import Track, VideoResults

Precision = Literal["bf16", "fp16"]
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def clip_inputs(batch: Sequence[Clip], config: ModelConfig, cache: dict[int, Tensor] | None = None
                ) -> tuple[Tensor, tuple[int, int], dict[int, Tensor]]:
    """The network input of a batch of clips, as the predictor prepares it.

    Each frame is preprocessed once (:func:`~cico.data.transforms.preprocess_frame` at the config's test
    size and normalisation) and zero-padded to ``padded_size(H', W', size_divisibility, min_size,
    max_size)``.

    Args:
        batch: the clips.
        config: the model's config.
        cache: preprocessed frames of the previous batch by frame id (its overlap frames are reused).

    Returns:
        ``[B, T, 3, Hp, Wp]`` input, the resized size ``(H', W')`` before padding, and the batch's
        preprocessed frames by id (the next batch's ``cache``).
    """
    cache = cache or {}
    prepared: dict[int, Tensor] = {}
    for clip in batch:
        for frame_id, image in zip(clip.frame_ids, clip.images, strict=True):
            if frame_id not in prepared:
                tensor = cache.get(frame_id)
                if tensor is None:
                    tensor = preprocess_frame(image, config.min_size, config.max_size, config.normalization)
                prepared[frame_id] = tensor
    resized = next(iter(prepared.values())).shape[-2:]
    size = padded_size(resized[0], resized[1], config.size_divisibility, config.min_size, config.max_size)
    inputs = torch.stack([torch.stack([pad_to(prepared[f], size) for f in clip.frame_ids]) for clip in batch])
    return inputs, (int(resized[0]), int(resized[1])), prepared


class VideoPredictor:
    """Streaming video instance segmentation with a loaded CiCo network.

    Args:
        model: the network (its config gives ``T``, the mask head, the test size and normalisation): a torch
            :class:`CiCo` or an ONNX export run by ONNX Runtime (:class:`OnnxClipNetwork`). It is used as it is:
            :func:`load` folds a checkpoint's batch norms (:meth:`CiCo.fold_batch_norm`), a model passed here
            keeps them unless you fold them.
        overlap: frames shared by consecutive clips (the reference evaluates with 1).
        batch_clips: clips per network forward (useful on GPU; linking stays sequential).
        amp: ``"bf16"`` or ``"fp16"`` autocast for the network forward, or ``None`` (float32).
        channels_last: convert the network to the channels-last memory format.
        link: linking parameters (reference defaults).
        score_thresh: the reference's one confidence threshold (0.1), used by detection and by the
            tracker's output; ``None`` keeps the model's. The predictor keeps its own detection config:
            the caller's model and its config are left unchanged.
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
        self.detect_config = config.detect
        if score_thresh is not None:
            self.detect_config = replace(config.detect, score_thresh=score_thresh)
            link = replace(link, score_thresh=score_thresh)
        if channels_last and isinstance(model, CiCo):
            model = model.set_memory_format(torch.channels_last)
        self.model = model.eval()
        self.overlap = overlap
        self.batch_clips = batch_clips
        self.amp = amp
        self.tracker = ClipTracker(config.mask_head, config.clip_frames, link)

    @classmethod
    def from_checkpoint(cls, weights: str | Path, device: str | torch.device = "cpu",
                        **options: Any) -> VideoPredictor:
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
        for batch in batches(clips, self.batch_clips):
            inputs, resized, cache = clip_inputs(batch, config, cache)
            detections = self.detect_clips(inputs)
            for clip, dets in zip(batch, detections, strict=True):
                tracks = self.tracker(dets, clip.frame_ids, clip.is_first)
                frames = original_frames(clip, tracks, resized, (int(inputs.shape[-2]), int(inputs.shape[-1])))
                result = ClipResult(clip.index, clip.frame_ids, dets, tracks, frames)
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

    def detect_clips(self, inputs: Tensor) -> list[Instances]:
        """Network forward (with the configured autocast) of preprocessed clips ``[B, T, 3, Hp, Wp]``, then
        detection with the predictor's thresholds: one :class:`~cico.structures.Instances` per clip (float32
        after autocast)."""
        device = self.device
        config = self.model.config
        autocast = (torch.autocast(device.type, dtype=AMP_DTYPES[self.amp]) if self.amp
                    else contextlib.nullcontext())
        with torch.inference_mode():
            with autocast:
                head = self.model.forward_raw(inputs.to(device, non_blocking=True),
                                               candidates_for=self.detect_config)
            detections = detect(head, classifier=config.classifier, mask_head=config.mask_head,
                                config=self.detect_config)
        return [d.float() for d in detections] if self.amp else detections


def load(weights: str | Path, device: str | torch.device = "cpu", **options: Any) -> VideoPredictor:
    """A :class:`VideoPredictor` for a cico checkpoint or ONNX export (``options`` as for
    :class:`VideoPredictor`)."""
    return VideoPredictor.from_checkpoint(weights, device, **options)
