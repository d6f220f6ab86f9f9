"""The structures that flow between the pipeline's stages, shared by all of them.

:class:`Instances` is the one container of per-instance tensors: detection's candidates and its output,
the tracker's memory and what it reports per clip. :class:`FrameResult` is one output frame at the
video's original resolution; :class:`ClipResult` one clip of a streamed video. The predictor produces
them, :mod:`cico.outputs` writes them.

Conventions: boxes are ``(x1, y1, x2, y2)`` normalised to the padded network input; class labels are
1-based.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor


@dataclass
class Instances:
    """``k`` instances of one clip of ``T`` frames, every per-instance field indexed alike along dim 0.

    Detection's candidates, its detections (sorted by raw class score), the tracker's memory (one row
    per track) and the tracks it reports for a clip are all ``Instances``.

    Attributes:
        labels: ``[k]`` int64 1-based class labels (a candidate's best class before NMS).
        scores: ``[k]`` class probabilities of ``labels``, not rescored by centerness; a candidate before
            NMS holds every class's probability, ``[k, C]``; a propagated track its decayed score.
        boxes: ``[k, T, 4]`` box tubes, not clipped.
        boxes_cir: ``[k, 4]`` circumscribed boxes of the tubes.
        masks: ``[k, T, h4, w4]`` mask probabilities at prototype resolution, zero outside the crop (the
            tracker's memory keeps them binarised, bool); ``[k, T, 0, 0]`` before they are computed.
        track: ``[k, E]`` track embeddings of the source anchors.
        mask_coeff: ``[k, D]`` mask coefficients / dynamic parameters of the source anchors.
        prior_levels: ``[k]`` int64 FPN level (0 = P3) of the source anchors.
        centerness: ``[k]`` mean centerness of the source anchors over the clip.
        ids: ``[k]`` int64 track ids, ``-1`` before linking.
        tracked_mask: ``[k]`` int64 clips since the instance was last detected (0: detected in this clip).
        proto: ``[h4, w4, T, D']`` the clip's prototypes, shared by every instance (not indexed).
    """

    labels: Tensor
    scores: Tensor
    boxes: Tensor
    boxes_cir: Tensor
    masks: Tensor
    track: Tensor
    mask_coeff: Tensor
    prior_levels: Tensor
    centerness: Tensor
    ids: Tensor
    tracked_mask: Tensor
    proto: Tensor

    SHARED = ("proto",)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _map(self, fn: Callable[[Tensor], Tensor], shared: bool = True) -> Instances:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Instances(**{name: fn(value) if shared or name not in self.SHARED else value
                            for name, value in values.items()})

    def __getitem__(self, index: Tensor | slice | int) -> Instances:
        """The instances at ``index`` (indices, a bool mask or a slice along dim 0)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda x: x[index], shared=False)

    def to(self, device: torch.device | str) -> Instances:
        """Every tensor on ``device``."""
        return self._map(lambda x: x.to(device))

    def clone(self) -> Instances:
        """A copy with every tensor cloned."""
        return self._map(torch.clone)

    def float(self) -> Instances:
        """Every floating-point tensor in float32 (masks kept bool, ids int64)."""
        return self._map(lambda x: x.float() if x.is_floating_point() else x)

    def replace(self, **fields: Tensor) -> Instances:
        """A copy with ``fields`` replaced."""
        return dataclasses.replace(self, **fields)

    @staticmethod
    def cat(parts: Sequence[Instances]) -> Instances:
        """The instances of ``parts`` one after another (the shared fields of the last part)."""
        if not parts:
            raise ValueError("cat needs at least one Instances")
        names = [f.name for f in dataclasses.fields(Instances)]
        return Instances(**{name: parts[-1].proto if name in Instances.SHARED
                            else torch.cat([getattr(p, name) for p in parts]) for name in names})


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
    """One clip of a streamed video: its detections, the tracker's output and its final frames.

    Attributes:
        index: the clip's number in its video.
        frame_ids: the clip's ``T`` frame ids, cyclic padding included (``[6, 7, 6]``).
        detections: the network's per-clip detections (before linking).
        tracks: the tracker's output for the clip (prototype resolution, all ``T`` frames).
        frames: the clip's output frames at the original resolution.
    """

    index: int
    frame_ids: list[int]
    detections: Instances
    tracks: Instances
    frames: list[FrameResult]

    def arrays(self) -> dict[str, np.ndarray]:
        """The clip's detections and tracker outputs as arrays, named as ``cico predict --dump-tracker``
        writes them (``frame_ids``, ``det_class``, ``det_score``, ``trk_box_ids``, ``trk_class``, ``trk_score``,
        ``trk_tracked_mask``, ``trk_box``, ``trk_box_cir``)."""
        dets, tracks = self.detections, self.tracks
        values = {"frame_ids": torch.as_tensor(self.frame_ids), "det_class": dets.labels,
                  "det_score": dets.scores, "trk_box_ids": tracks.ids, "trk_class": tracks.labels,
                  "trk_score": tracks.scores, "trk_tracked_mask": tracks.tracked_mask, "trk_box": tracks.boxes,
                  "trk_box_cir": tracks.boxes_cir}
        return {key: value.detach().cpu().numpy() for key, value in values.items()}
