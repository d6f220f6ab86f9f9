"""COCO-format image datasets as training clips: one image, jittered into ``T`` frames (pseudo-clips).

Joint image+video training (and the reference's frame-level COCO pre-training stage run inside cico):

* :func:`load_image_annotations` reads a COCO instance file (``images``, ``annotations`` with ``bbox``,
  ``segmentation`` as polygons or RLE, ``area``, ``iscrowd``; ``categories``) as one-frame videos, so
  the masks, boxes and labels go through the same :class:`~cico.data.annotations.Annotations` as videos;
* :class:`ImageClipDataset` turns an image into a clip: a random motion (zoom, rotation, shift) drawn
  as two random affine poses interpolated over the ``T`` frames warps the image and every instance mask
  the same way, so an object keeps its instance id through the clip; boxes are taken from the warped
  masks, and an object warped out of a frame is absent there. The clip then gets the video clips'
  augmentation (:class:`~cico.data.transforms.TrainAugmentation`) and :class:`~cico.data.clips.ClipSample`
  form, so batches mix freely with video clips;
* :class:`MixedClipDataset` serves video clips and pseudo-clips with a given share of pseudo-clips;
* :func:`images_from_videos` exports the frames of a video dataset as a COCO image file.

Classes are matched by NAME to the training class list; annotations of other classes are left out.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import CicoError
from .annotations import Annotations, Track, parse_annotations, read_json
from .clips import (
    ClipBatch,
    ClipDataConfig,
    ClipDataset,
    ClipSample,
    collate,
)
from .sources import read_image
from .transforms import fill_value

__all__ = [
    "ImageClipDataset",
    "ImageClipOptions",
    "MixedClipDataset",
    "images_from_videos",
    "jitter_matrices",
    "load_image_annotations",
    "warp_clip",
]


@dataclass
class ImageClipOptions:
    """Image datasets in training (``images.*`` training settings).

    Attributes:
        ann: a COCO-format instance file ('' : no images).
        frames: the folder its ``file_name``s are relative to.
        ratio: share of the training clips that are pseudo-clips when videos are trained on too
            (0.5: as many pseudo-clips as video clips per epoch); image-only runs use every image once.
        scale: the zoom of each end pose is drawn in ``[1 - scale, 1 + scale]``.
        rotation: the rotation of each end pose in ``[-rotation, rotation]`` degrees.
        translate: the shift of each end pose in ``[-translate, translate]`` of the width and height.
    """

    ann: str = ""
    frames: str = ""
    ratio: float = 0.5
    scale: float = 0.2
    rotation: float = 10.0
    translate: float = 0.15


def _coco_to_videos(data: Any) -> dict[str, Any]:
    """A COCO image dict as a YouTube-VIS dict of one-frame videos (video id = image id)."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError("not a COCO instance file (no 'images' list)")
    if not isinstance(data.get("annotations"), list) or not isinstance(data.get("categories"), list):
        raise ValueError("a COCO instance file needs 'annotations' and 'categories' lists")
    videos = []
    for image in data["images"]:
        if not isinstance(image, dict) or not all(k in image for k in ("id", "file_name", "width", "height")):
            raise ValueError("an image entry needs id, file_name, width and height")
        videos.append({"id": image["id"], "file_names": [image["file_name"]], "width": image["width"],
                       "height": image["height"], "length": 1})
    tracks = []
    for a in data["annotations"]:
        if not isinstance(a, dict) or not all(k in a for k in ("id", "image_id", "category_id")):
            raise ValueError("an annotation needs id, image_id and category_id")
        track = {"id": a["id"], "video_id": a["image_id"], "category_id": a["category_id"],
                 "iscrowd": a.get("iscrowd", 0), "segmentations": [a.get("segmentation") or None]}
        if a.get("bbox") is not None and a.get("area") is not None:
            track.update(bboxes=[a["bbox"]], areas=[a["area"]])
        tracks.append(track)
    return {"videos": videos, "categories": data["categories"], "annotations": tracks}


def load_image_annotations(path: str | Path) -> Annotations:
    """Read a COCO-format image file as :class:`Annotations` of one-frame videos.

    Raises:
        CicoError: one line naming the file and its first problem.
    """
    try:
        data = _coco_to_videos(read_json(path))
    except ValueError as err:
        raise CicoError(str(err), path) from None
    return parse_annotations(data, path)


def images_from_videos(annotations: Annotations, stride: int = 1) -> dict[str, Any]:
    """A COCO image dict of every ``stride``-th frame of each video (file names unchanged, so the
    video dataset's frames folder serves as the image folder), with its masks, boxes and classes."""
    images: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    for video in annotations.videos:
        for frame in range(0, video.length, stride):
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": video.file_names[frame], "width": video.width,
                           "height": video.height})
            for track in annotations.tracks_of(video.id):
                if not track.has_valid_box(frame):
                    continue
                objects.append({"id": len(objects) + 1, "image_id": image_id, "category_id": track.category_id,
                                "iscrowd": int(track.iscrowd), "bbox": list(track.bboxes[frame] or ()),
                                "area": track.areas[frame], "segmentation": track.segmentations[frame] or []})
    categories = [{"id": c.id, "name": c.name} for c in annotations.categories]
    return {"images": images, "annotations": objects, "categories": categories}


def jitter_matrices(rng: np.random.Generator, frames: int, height: int, width: int,
                    options: ImageClipOptions) -> np.ndarray:
    """``[T, 2, 3]`` affine maps (image pixel -> frame pixel) of a random motion: two poses (zoom about
    the centre, rotation, shift) drawn from ``options``, interpolated linearly over the ``T`` frames."""
    poses = np.stack([rng.uniform(1 - options.scale, 1 + options.scale, 2),
                      rng.uniform(-options.rotation, options.rotation, 2),
                      rng.uniform(-options.translate, options.translate, 2) * width,
                      rng.uniform(-options.translate, options.translate, 2) * height], axis=1)  # [2, 4]
    weights = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    matrices = np.zeros((frames, 2, 3), np.float64)
    for t, w in enumerate(weights):
        scale, angle, dx, dy = (1 - w) * poses[0] + w * poses[1]
        matrices[t] = cv2.getRotationMatrix2D((width / 2, height / 2), float(angle), float(scale))
        matrices[t, :, 2] += (dx, dy)
    return matrices


def _box_of(mask: np.ndarray) -> np.ndarray | None:
    """Inclusive pixel box ``[x1, y1, x2, y2]`` of a binary mask, ``None`` when empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def warp_clip(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, matrices: np.ndarray,
              border: Sequence[float] | np.ndarray = (0.0, 0.0, 0.0),
              ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Warp one image and its objects into ``T`` frames.

    Args:
        image: BGR ``uint8 [H, W, 3]``.
        masks: ``uint8 [n, H, W]`` 0/1; an all-zero mask means the object has a box only.
        boxes: ``float32 [n, 4]`` inclusive pixel boxes ``[x, y, x + w - 1, y + h - 1]``.
        matrices: ``[T, 2, 3]`` affine maps (see :func:`jitter_matrices`).
        border: BGR fill of the uncovered area.

    Returns:
        ``T`` frames ``uint8 [H, W, 3]``, masks ``uint8 [n, T, H, W]`` and boxes ``float32 [n, T, 4]``
        normalised by ``(W, H)`` as :class:`~cico.data.clips.ClipDataset` makes them: from the warped
        mask (or the warped box corners, clipped, for box-only objects), ``[0, 0, 0, 0]`` and an empty
        mask where the object left the frame.
    """
    height, width = image.shape[:2]
    n, t = masks.shape[0], len(matrices)
    frames = [cv2.warpAffine(image, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=tuple(float(b) for b in border)) for m in matrices]
    out_masks = np.zeros((n, t, height, width), np.uint8)
    out_boxes = np.zeros((n, t, 4), np.float32)
    scale = np.array([width, height, width, height], np.float32)
    for j in range(n):
        has_mask = bool(masks[j].any())
        for i, m in enumerate(matrices):
            if has_mask:
                warped = cv2.warpAffine(masks[j], m, (width, height), flags=cv2.INTER_NEAREST,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                box = _box_of(warped)
                if box is None or box[2] <= box[0] or box[3] <= box[1]:
                    continue
                out_masks[j, i] = warped
            else:
                x1, y1, x2, y2 = boxes[j]
                corners = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]], np.float64) @ m.T
                box = np.array([*corners.min(axis=0), *corners.max(axis=0)], np.float32)
                box = np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.float32)
                if box[2] <= box[0] or box[3] <= box[1]:
                    continue
            out_boxes[j, i] = box / scale
    return frames, out_masks, out_boxes


class ImageClipDataset(Dataset[ClipSample]):
    """Pseudo-clips of a COCO image dataset (one item per image with a valid non-crowd box).

    Args:
        annotations: :func:`load_image_annotations`'s result.
        frames_dir: the folder the images' ``file_name``s are relative to.
        config: the clip options (``T``, sizes, flip, expand, normalisation, seed), shared with video clips.
        options: the jitter.
        class_names: the training classes (label ``c`` is ``class_names[c - 1]``); default the file's.

    Raises:
        CicoError: no annotation of a training class with a valid box.
    """

    def __init__(self, annotations: Annotations, frames_dir: str | Path, config: ClipDataConfig | None = None,
                 options: ImageClipOptions | None = None, class_names: Sequence[str] | None = None) -> None:
        self.annotations = annotations
        self.frames_dir = Path(frames_dir)
        self.config = config or ClipDataConfig()
        self.options = options or ImageClipOptions()
        self.augment = self.config.augment
        self.border = fill_value(self.augment.normalization)
        self.epoch = 0
        names = list(class_names) if class_names is not None else list(annotations.class_names)
        self.labels = {c.id: names.index(c.name) + 1 for c in annotations.categories if c.name in names}
        where = annotations.path or "image annotations"
        self.images = annotations.videos
        self._tracks: list[list[Track]] = [
            sorted((t for t in annotations.tracks_of(v.id)
                    if not t.iscrowd and t.category_id in self.labels and t.has_valid_box(0)), key=lambda t: t.id)
            for v in self.images]
        self.left_out = sum(1 for t in annotations.tracks if t.category_id not in self.labels)
        """Annotations whose class is not a training class."""
        self.items = [i for i, tracks in enumerate(self._tracks) if tracks]
        if not self.items:
            raise CicoError("no image has a valid non-crowd box of a training class "
                            f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})", where)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws for a new epoch."""
        self.epoch = epoch

    @property
    def collate_fn(self) -> Callable[[Sequence[ClipSample]], ClipBatch]:
        """:func:`~cico.data.clips.collate` with this dataset's ``size_divisor``."""
        return partial(collate, size_divisor=self.config.size_divisor)

    def __getitem__(self, index: int) -> ClipSample:
        return self.clip(index, index)

    def clip(self, index: int, draw: int) -> ClipSample:
        """The pseudo-clip of item ``index`` with the random draws of ``(seed, epoch, draw)``."""
        rng = np.random.default_rng([self.config.seed, self.epoch, draw, 1])  # 1: apart from video clips' streams
        image_index = self.items[index]
        video, tracks = self.images[image_index], self._tracks[image_index]
        path = self.frames_dir / video.file_names[0]
        image = read_image(path)
        if image.shape[:2] != (video.height, video.width):
            raise CicoError(f"image is {image.shape[0]}x{image.shape[1]} but the annotations say "
                            f"{video.height}x{video.width}", path)
        masks = np.zeros((len(tracks), video.height, video.width), np.uint8)
        boxes = np.zeros((len(tracks), 4), np.float32)
        for j, track in enumerate(tracks):
            x, y, w, h = track.bboxes[0] or (0.0, 0.0, 0.0, 0.0)  # valid: the items have boxes
            boxes[j] = [x, y, x + w - 1, y + h - 1]
            mask = self.annotations.mask(track, 0)
            if mask is not None:
                masks[j] = mask
        labels = torch.tensor([self.labels[t.category_id] for t in tracks], dtype=torch.int64)
        ids = torch.tensor([t.id for t in tracks], dtype=torch.int64)
        for _ in range(self.config.max_attempts):
            matrices = jitter_matrices(rng, self.config.clip_frames, video.height, video.width, self.options)
            frames, clip_masks, clip_boxes = warp_clip(image, masks, boxes, matrices, self.border)
            images, clip_masks, clip_boxes = self.augment(frames, clip_masks, clip_boxes, rng)
            keep = ((clip_boxes[..., 2] > clip_boxes[..., 0]) & (clip_boxes[..., 3] > clip_boxes[..., 1])).any(axis=1)
            if keep.any():
                break
        kept = torch.from_numpy(keep)
        return ClipSample(images=torch.from_numpy(images), boxes=torch.from_numpy(clip_boxes[keep]),
                          masks=torch.from_numpy(np.ascontiguousarray(clip_masks[keep])), labels=labels[kept],
                          track_ids=ids[kept], video_id=video.id, frame_ids=[0] * self.config.clip_frames)


class MixedClipDataset(Dataset[ClipSample]):
    """Video clips and image pseudo-clips in one index space, for the run's data order.

    With videos, an epoch holds every video item and ``round(N · ratio / (1 - ratio))`` pseudo-clips
    (images cycled, each draw with its own randomness); without, every image once.

    Raises:
        CicoError: ``ratio`` outside ``[0, 1)`` with videos.
    """

    def __init__(self, videos: ClipDataset | None, images: ImageClipDataset, ratio: float = 0.5) -> None:
        self.videos, self.images = videos, images
        if videos is None:
            self.video_items, self.image_items = 0, len(images)
        else:
            if not 0 <= ratio < 1:
                raise CicoError(f"images.ratio={ratio}: the share of pseudo-clips must be in [0, 1) with videos")
            self.video_items = len(videos)
            self.image_items = round(len(videos) * ratio / (1 - ratio))

    @property
    def annotations(self) -> Annotations:
        """The annotations that define the classes: the videos', else the images'."""
        return self.videos.annotations if self.videos is not None else self.images.annotations

    @property
    def collate_fn(self) -> Callable[[Sequence[ClipSample]], ClipBatch]:
        return self.images.collate_fn

    def __len__(self) -> int:
        return self.video_items + self.image_items

    def set_epoch(self, epoch: int) -> None:
        if self.videos is not None:
            self.videos.set_epoch(epoch)
        self.images.set_epoch(epoch)

    def __getitem__(self, index: int) -> ClipSample:
        if index < self.video_items:
            return self.videos[index]  # type: ignore[index]
        draw = index - self.video_items
        return self.images.clip(draw % len(self.images), draw)

