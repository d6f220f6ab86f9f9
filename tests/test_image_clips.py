"""COCO-format images as pseudo-clips: the warp, the dataset (T frames, consistent ids, boxes and masks
following the jitter, absent objects), class matching by name, the image/video mix, and synthetic data
with a chosen class set."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cico.data.annotations import load_annotations
from cico.data.clips import ClipDataConfig, ClipDataset
from cico.data.image_clips import (
    ImageClipDataset,
    ImageClipOptions,
    MixedClipDataset,
    images_from_videos,
    load_image_annotations,
    warp_clip,
)
from cico.data.synthetic import make_synthetic
from cico.data.transforms import TrainAugmentation
from cico.errors import CicoError

H, W = 64, 96


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic videos of star, ring and cross (64x96, 4 frames)."""
    return make_synthetic(tmp_path_factory.mktemp("videos"), 3, 4, (H, W), seed=11,
                          class_names=("star", "ring", "cross"), max_objects=3, workers=1)


@pytest.fixture(scope="module")
def images(videos: Path) -> Path:
    """The videos' frames as a COCO image file."""
    path = videos.parent / "images.json"
    path.write_text(json.dumps(images_from_videos(load_annotations(videos))))
    return path


def _config(frames: int = 5) -> ClipDataConfig:
    """No flip, no expand, no resize: the clip shows the jitter alone."""
    return ClipDataConfig(clip_frames=frames, augment=TrainAugmentation(min_size=H, max_size=W, flip_prob=0.0,
                                                                        expand_prob=0.0, normalization="rgb"))


def _box_of(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min() / W, ys.min() / H, xs.max() / W, ys.max() / H]


def test_a_shift_moves_masks_and_boxes_and_an_object_moved_out_is_absent() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    masks = np.zeros((3, 40, 60), np.uint8)
    masks[0, 10:20, 5:15] = 1
    masks[1, 5:25, 40:50] = 1
    boxes = np.array([[5, 10, 14, 19], [40, 5, 49, 24], [20, 30, 29, 35]], np.float32)  # object 2: box only
    shifts = [0, 10, 50]
    matrices = np.array([[[1, 0, dx], [0, 1, 0]] for dx in shifts], np.float64)
    frames, out_masks, out_boxes = warp_clip(image, masks, boxes, matrices, border=(7, 7, 7))
    assert len(frames) == 3 and out_masks.shape == (3, 3, 40, 60) and out_boxes.shape == (3, 3, 4)
    scale = np.array([60, 40, 60, 40], np.float32)
    for t, dx in enumerate(shifts):
        expected = np.roll(masks[0], dx, axis=1)
        expected[:, :dx] = 0
        assert np.array_equal(out_masks[0, t], expected)
        assert (frames[t][:, :dx] == 7).all()  # the uncovered area is the border colour
    np.testing.assert_allclose(out_boxes[0, 2] * scale, [55, 10, 59, 19])  # partly out: clipped by the mask
    np.testing.assert_allclose(out_boxes[1, 1] * scale, [50, 5, 59, 24])
    assert not out_boxes[1, 2].any() and not out_masks[1, 2].any()  # moved out: absent
    np.testing.assert_allclose(out_boxes[2, 1] * scale, [30, 30, 39, 35])  # box only: its corners move
    assert not out_boxes[2, 2].any() and not out_masks[2].any()


def test_pseudo_clips_have_t_frames_consistent_ids_and_boxes_from_their_masks(images: Path, videos: Path) -> None:
    ann = load_image_annotations(images)
    dataset = ImageClipDataset(ann, videos.parent / "JPEGImages", _config(), class_names=("star", "ring", "cross"))
    assert len(dataset) == len(ann.videos) == 12
    names = {c.id: c.name for c in ann.categories}
    for index in range(len(dataset)):
        sample = dataset[index]
        image_id = dataset.images[dataset.items[index]].id
        tracks = {t.id: t for t in ann.tracks_of(image_id)}
        assert sample.images.shape == (5, 3, H, W) and sample.frame_ids == [0] * 5 and sample.video_id == image_id
        assert not torch.equal(sample.images[0], sample.images[-1])  # the frames move
        n = len(sample.track_ids)
        assert n >= 1 and sample.boxes.shape == (n, 5, 4) and sample.masks.shape == (n, 5, H, W)
        for j, track_id in enumerate(sample.track_ids.tolist()):
            assert ("star", "ring", "cross")[int(sample.labels[j]) - 1] == names[tracks[track_id].category_id]
            for t in range(5):
                box, mask = sample.boxes[j, t], sample.masks[j, t]
                if box.any():
                    np.testing.assert_allclose(box.tolist(), _box_of(mask), atol=1e-6)
                else:
                    assert not mask.any()


def test_objects_moved_out_of_some_frames_are_absent_there(images: Path, videos: Path) -> None:
    ann = load_image_annotations(images)
    far = ImageClipOptions(translate=0.6)
    dataset = ImageClipDataset(ann, videos.parent / "JPEGImages", _config(), far)
    partly = 0
    for epoch in range(2):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            sample = dataset[index]
            present = (sample.boxes[..., 2] > sample.boxes[..., 0]) & (sample.boxes[..., 3] > sample.boxes[..., 1])
            assert present.any(dim=1).all()  # objects out of every frame are dropped
            assert not sample.masks[~present].any()
            partly += int((~present).any(dim=1).sum())
    assert partly > 0


def test_classes_match_by_name_and_other_classes_are_left_out(tmp_path: Path, videos: Path) -> None:
    coco = images_from_videos(load_annotations(videos))
    coco["categories"] = [{"id": 1, "name": "cross"}, {"id": 2, "name": "ring"}, {"id": 3, "name": "star"}]
    renumber = {6: 1, 5: 2, 4: 3}
    for a in coco["annotations"]:
        a["category_id"] = renumber[a["category_id"]]
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(coco))
    ann = load_image_annotations(path)
    dataset = ImageClipDataset(ann, videos.parent / "JPEGImages", _config(3), class_names=("star", "ring"))
    assert dataset.labels == {3: 1, 2: 2}
    assert dataset.left_out == sum(a["category_id"] == 1 for a in coco["annotations"]) > 0
    for index in range(len(dataset)):
        image_id = dataset.images[dataset.items[index]].id
        by_id = {t.id: t.category_id for t in ann.tracks_of(image_id)}
        sample = dataset[index]
        pairs = zip(sample.track_ids.tolist(), sample.labels.tolist())
        assert all(by_id[i] == {1: 3, 2: 2}[label] for i, label in pairs)
    with pytest.raises(CicoError, match="no image has a valid non-crowd box of a training class"):
        ImageClipDataset(ann, videos.parent / "JPEGImages", _config(3), class_names=("disc",))


def test_a_video_file_is_not_an_image_file(videos: Path) -> None:
    with pytest.raises(CicoError, match="not a COCO instance file"):
        load_image_annotations(videos)


def test_the_mix_serves_video_clips_then_pseudo_clips_in_the_given_share(images: Path, videos: Path) -> None:
    config = _config(3)
    clips = ClipDataset(load_annotations(videos), videos.parent / "JPEGImages", config)
    pseudo = ImageClipDataset(load_image_annotations(images), videos.parent / "JPEGImages", config)
    mixed = MixedClipDataset(clips, pseudo, ratio=0.25)
    assert mixed.video_items == len(clips) and mixed.image_items == round(len(clips) / 3)
    assert mixed.annotations is clips.annotations
    mixed.set_epoch(1)
    assert torch.equal(mixed[0].images, clips[0].images)
    last = mixed[len(mixed) - 1]
    assert last.frame_ids == [0, 0, 0] and len(last.labels) >= 1
    assert len(MixedClipDataset(None, pseudo)) == len(pseudo)
    with pytest.raises(CicoError, match="images.ratio=1"):
        MixedClipDataset(clips, pseudo, ratio=1.0)


def test_synthetic_videos_of_a_chosen_class_set(videos: Path) -> None:
    data = json.loads(videos.read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(4, "star"), (5, "ring"), (6, "cross")]
    assert {a["category_id"] for a in data["annotations"]} <= {4, 5, 6}
    with pytest.raises(CicoError, match="class names must be distinct names"):
        make_synthetic(videos.parent / "bad", 1, 2, (H, W), class_names=("star", "kite"), workers=1)
