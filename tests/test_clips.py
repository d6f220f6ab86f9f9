"""Training clips: index, reference-frame sampling, tubes, augmentation wiring, collate, DataLoader workers."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import SHARED
from torch.utils.data import DataLoader

from cico.data.annotations import load_annotations
from cico.data.clips import ClipBatch, ClipDataConfig, ClipDataset, collate
from cico.data.rle import encode
from cico.data.transforms import TrainAugmentation, normalize
from cico.errors import CicoError

DAVIS = SHARED / "data" / "davis2016_mini"
PLAIN = dict(flip="none", expand_prob=0.0, normalization="rgb")


def data_config(clip_frames: int = 3, seed: int = 0, max_attempts: int = 10, **augment) -> ClipDataConfig:
    return ClipDataConfig(clip_frames=clip_frames, augment=TrainAugmentation(**augment), seed=seed,
                          max_attempts=max_attempts)


def _rect(h: int, w: int, x: int, y: int, bw: int, bh: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[y:y + bh, x:x + bw] = 1
    return mask


def _track(tid: int, vid: int, cat: int, h: int, w: int, boxes: dict[int, tuple[int, int, int, int]],
           length: int, crowd: int = 0) -> dict[str, Any]:
    segs, bbs, areas = [], [], []
    for f in range(length):
        if f in boxes:
            segs.append(encode(_rect(h, w, *boxes[f])))
            bbs.append(list(boxes[f]))
            areas.append(boxes[f][2] * boxes[f][3])
        else:
            segs.append(None), bbs.append(None), areas.append(None)
    return {"id": tid, "video_id": vid, "category_id": cat, "iscrowd": crowd,
            "segmentations": segs, "bboxes": bbs, "areas": areas}


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """Video 1: 6 frames 40x64; track 21 (cat 9) in frames 0-3, track 22 (cat 4) in frames 0 and 2,
    crowd track 23 in frames 4-5 (so 4-5 are not items). Video 2: 3 frames 48x48, track 31 in frame 1."""
    frames = tmp_path / "frames"
    videos = []
    for vid, (length, h, w) in {1: (6, 40, 64), 2: (3, 48, 48)}.items():
        (frames / f"v{vid}").mkdir(parents=True)
        names = [f"v{vid}/{f:02d}.png" for f in range(length)]
        rng = np.random.default_rng(vid)
        for name in names:
            cv2.imwrite(str(frames / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        videos.append({"id": vid, "width": w, "height": h, "length": length, "file_names": names})
    tracks = [
        _track(21, 1, 9, 40, 64, {f: (10 + f, 5, 20, 12) for f in range(4)}, 6),
        _track(22, 1, 4, 40, 64, {0: (40, 20, 10, 15), 2: (42, 21, 10, 15)}, 6),
        _track(23, 1, 9, 40, 64, {4: (0, 0, 30, 30), 5: (0, 0, 30, 30)}, 6, crowd=1),
        _track(31, 2, 9, 48, 48, {1: (8, 8, 16, 24)}, 3),
    ]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"videos": videos, "annotations": tracks,
                               "categories": [{"id": 9, "name": "dog"}, {"id": 4, "name": "cat"}]}))
    return ann, frames


def test_index_keeps_frames_with_a_valid_non_crowd_box(tiny: tuple[Path, Path]) -> None:
    ds = ClipDataset(*tiny, data_config(**PLAIN))
    assert ds.items == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 1)]
    assert len(ClipDataset(DAVIS / "instances.json", DAVIS / "JPEGImages")) == 341


def test_reference_window_and_padding(tiny: tuple[Path, Path]) -> None:
    ds = ClipDataset(*tiny, data_config(**PLAIN))
    rng = np.random.default_rng(0)
    assert ds.sample_clip(0, 0, rng) == [0, 1, 1]  # only +1 valid: repeated
    assert ds.sample_clip(0, 1, rng) == [0, 1, 2]  # -1 and +1 (the window has no +2)
    assert ds.sample_clip(0, 3, rng) == [1, 2, 3]  # -2, -1 (4 is crowd-only)
    assert ds.sample_clip(1, 1, rng) == [1, 1, 1]  # no neighbour at all
    draws = Counter(tuple(ds.sample_clip(0, 2, rng)) for _ in range(300))
    assert set(draws) == {(0, 1, 2), (0, 2, 3), (1, 2, 3)}  # two of {0, 1, 3} without replacement
    assert min(draws.values()) > 60


@pytest.mark.parametrize("t, offsets", [(1, set()), (2, {-1}), (3, {-2, -1, 1}), (5, {-3, -2, -1, 1, 2})])
def test_window_for_any_clip_length(tmp_path: Path, t: int, offsets: set[int]) -> None:
    frames = tmp_path / "f"
    frames.mkdir()
    data = {"videos": [{"id": 1, "width": 8, "height": 8, "length": 20, "file_names": [f"{i}.png" for i in range(20)]}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [_track(1, 1, 1, 8, 8, {f: (1, 1, 4, 4) for f in range(20)}, 20)]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = ClipDataset(tmp_path / "a.json", frames, data_config(clip_frames=t, **PLAIN))
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(200):
        clip = ds.sample_clip(0, 10, rng)
        assert len(clip) == t and clip == sorted(clip) and 10 in clip
        assert len(set(clip)) == t  # enough neighbours: drawn without replacement
        seen |= {f - 10 for f in clip} - {0}
    assert seen == offsets


def test_tubes_match_the_annotations(tiny: tuple[Path, Path]) -> None:
    ann_path, frames = tiny
    ds = ClipDataset(ann_path, frames, data_config(min_size=40, max_size=64, **PLAIN))
    sample = ds[1]  # frame 1 of video 1: clip [0, 1, 2]
    assert sample.frame_ids == [0, 1, 2] and sample.video_id == 1
    assert sample.track_ids.tolist() == [21, 22] and sample.labels.tolist() == [2, 1]  # cat 9 -> 2, cat 4 -> 1
    assert sample.images.shape == (3, 3, 40, 64) and sample.masks.shape == (2, 3, 40, 64)
    assert sample.masks.dtype == torch.uint8 and sample.boxes.dtype == torch.float32
    for i, f in enumerate([0, 1, 2]):
        image = cv2.imread(str(frames / f"v1/{f:02d}.png"))
        np.testing.assert_array_equal(sample.images[i].numpy(), normalize(image.astype(np.float32), "rgb"))
    # track 21 in every frame: x = 10 + f, inclusive x2 = x + w - 1
    for i in range(3):
        x = 10 + i
        np.testing.assert_allclose(sample.boxes[0, i], [x / 64, 5 / 40, (x + 19) / 64, 16 / 40], rtol=1e-6)
        np.testing.assert_array_equal(sample.masks[0, i].numpy(), _rect(40, 64, x, 5, 20, 12))
    # track 22 absent in frame 1: zero box, empty mask
    assert (sample.boxes[1, 1] == 0).all() and sample.masks[1, 1].sum() == 0
    np.testing.assert_array_equal(sample.masks[1, 2].numpy(), _rect(40, 64, 42, 21, 10, 15))


def test_davis_clip_masks_equal_the_png_annotations() -> None:
    config = data_config(min_size=480, max_size=854, **PLAIN)  # 480x854 stays 480x854
    ds = ClipDataset(DAVIS / "instances.json", DAVIS / "JPEGImages", config)
    ann = load_annotations(DAVIS / "instances.json")
    index = ds.items.index((3, 20))  # 'dog', frame 20
    sample = ds[index]
    video = ann.videos[3]
    assert sample.video_id == video.id and len(sample.frame_ids) == 3 and 20 in sample.frame_ids
    (track,) = ann.tracks_of(video.id)
    assert sample.track_ids.tolist() == [track.id] and sample.labels.tolist() == [ann.label_of(track.category_id)]
    for i, f in enumerate(sample.frame_ids):
        png = cv2.imread(str(DAVIS / "Annotations" / video.file_names[f].replace(".jpg", ".png")), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(sample.masks[0, i].numpy(), (png > 127).astype(np.uint8))
        ys, xs = np.nonzero(png)
        np.testing.assert_allclose(sample.boxes[0, i], [xs.min() / 854, ys.min() / 480, xs.max() / 854, ys.max() / 480],
                                   rtol=1e-6)


def test_vertical_flip_config_reaches_the_clip(tiny: tuple[Path, Path]) -> None:
    config = data_config(min_size=40, max_size=64, flip="vertical", flip_prob=1.0, expand_prob=0.0)
    sample = ClipDataset(*tiny, config)[1]
    np.testing.assert_array_equal(sample.masks[0, 0].numpy(), _rect(40, 64, 10, 5, 20, 12)[::-1])
    np.testing.assert_allclose(sample.boxes[0, 0], [10 / 64, 1 - 16 / 40, 29 / 64, 1 - 5 / 40], rtol=1e-6)


def test_collate_pads_to_the_batch_max_and_rescales_boxes(tiny: tuple[Path, Path]) -> None:
    ds = ClipDataset(*tiny, data_config(min_size=40, max_size=64, **PLAIN))
    a, b = ds[0], ds[4]  # 40x64 and 40x40 (video 2 is square)
    assert b.images.shape[-2:] == (40, 40)
    batch = collate([a, b], size_divisor=32)
    assert isinstance(batch, ClipBatch) and len(batch) == 2
    assert batch.images.shape == (2, 3, 3, 64, 64)
    assert (batch.images[0, :, :, 40:] == 0).all() and (batch.images[1, :, :, :, 40:] == 0).all()
    torch.testing.assert_close(batch.images[1, :, :, :40, :40], b.images)
    assert batch.masks[1].shape == (1, 3, 64, 64) and batch.masks[1].sum() == b.masks.sum()
    # boxes now refer to the padded canvas: same pixels
    torch.testing.assert_close(batch.boxes[0] * 64, a.boxes * torch.tensor([64, 40, 64, 40]))
    torch.testing.assert_close(batch.boxes[1] * 64, b.boxes * 40)
    assert batch.video_ids == [1, 2] and batch.frame_ids == [[0, 1, 1], [1, 1, 1]]
    assert batch.labels[1].tolist() == [2] and batch.track_ids[1].tolist() == [31]
    moved = batch.to(torch.device("cpu"))
    assert moved.images.device.type == "cpu" and torch.equal(moved.boxes[0], batch.boxes[0])
    assert moved.video_ids == batch.video_ids and moved.frame_ids == batch.frame_ids


def test_random_draws_depend_on_seed_epoch_and_item_only(tiny: tuple[Path, Path]) -> None:
    config = data_config(min_size=40, max_size=64, seed=3)
    ds = ClipDataset(*tiny, config)
    first = [ds[i] for i in range(len(ds))]
    again = [ds[i] for i in reversed(range(len(ds)))][::-1]
    for x, y in zip(first, again):
        assert x.frame_ids == y.frame_ids and torch.equal(x.images, y.images) and torch.equal(x.boxes, y.boxes)
    ds.set_epoch(1)
    changed = [not torch.equal(x.images, ds[i].images) for i, x in enumerate(first)]
    assert any(changed)


def test_dataloader_with_two_workers_matches_the_main_process(tiny: tuple[Path, Path]) -> None:
    ds = ClipDataset(*tiny, data_config(min_size=40, max_size=64, seed=5))
    ds.set_epoch(2)
    def batches(workers: int) -> list[ClipBatch]:
        loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=workers, collate_fn=ds.collate_fn)
        return list(loader)
    parallel, serial = batches(2), batches(0)
    assert len(parallel) == len(serial) == 3
    for p, s in zip(parallel, serial):
        assert torch.equal(p.images, s.images) and p.frame_ids == s.frame_ids
        assert all(torch.equal(x, y) for x, y in zip(p.boxes, s.boxes))
        assert all(torch.equal(x, y) for x, y in zip(p.masks, s.masks))
        assert all(torch.equal(x, y) for x, y in zip(p.labels, s.labels))
        assert p.images.shape[-2:] == (64, 64)


def test_objects_are_kept_only_with_a_positive_box_after_augmentation(tiny: tuple[Path, Path]) -> None:
    ds = ClipDataset(*tiny, data_config(min_size=40, max_size=64, expand_prob=1.0, seed=0))
    for epoch in range(8):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            assert len(s.labels) >= 1
            w = s.boxes[..., 2] - s.boxes[..., 0]
            h = s.boxes[..., 3] - s.boxes[..., 1]
            assert ((w > 0) & (h > 0)).any(dim=1).all()
            assert ((w > 0) == (h > 0)).all() and (s.boxes[w <= 0] == 0).all()


def test_one_pixel_wide_object_gives_an_empty_clip_after_the_attempts(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    cv2.imwrite(str(tmp_path / "f" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    data = {"videos": [{"id": 1, "width": 8, "height": 8, "length": 1, "file_names": ["0.png"]}],
            "categories": [{"id": 1, "name": "a"}], "annotations": [_track(1, 1, 1, 8, 8, {0: (2, 2, 1, 4)}, 1)]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = ClipDataset(tmp_path / "a.json", tmp_path / "f", data_config(min_size=8, max_size=8, max_attempts=3))
    sample = ds[0]
    assert sample.labels.shape == (0,) and sample.boxes.shape == (0, 3, 4) and sample.masks.shape == (0, 3, 8, 8)
    assert collate([sample]).boxes[0].shape == (0, 3, 4)


def test_bad_frames_and_files_are_cico_errors(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    ann_path, frames = tiny
    ds = ClipDataset(ann_path, frames, data_config(**PLAIN))
    (frames / "v2" / "01.png").unlink()
    with pytest.raises(CicoError, match=r"v2/01\.png: frame file not found"):
        ds[4]
    (frames / "v1" / "00.png").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(CicoError, match=r"v1/00\.png: cannot be decoded"):
        ds[0]
    cv2.imwrite(str(frames / "v1" / "03.png"), np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(CicoError, match=r"03\.png: frame is 40x60 but video 1 is 40x64"):
        ds[3]
    data = json.loads(ann_path.read_text())
    del data["annotations"]
    (tmp_path / "test.json").write_text(json.dumps(data))
    with pytest.raises(CicoError, match="nothing to train on"):
        ClipDataset(tmp_path / "test.json", frames)
