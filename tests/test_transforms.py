"""Preprocessing: the golden reference inputs (bitwise), resize/pad rules, and the training augmentation."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import GOLDEN_DIR
from golden import cases, network_cases, read_manifest

from cico.data import transforms
from cico.data.transforms import TrainAugmentation, fill_value, normalize, pad_to, padded_size, resize_shape
from cico.inference.clips import Clip
from cico.inference.predictor import clip_inputs
from cico.model.config import get_preset


def _read(path) -> np.ndarray:
    if not path.is_file():
        pytest.fail(f"golden file missing: {path} (set CICO_GOLDEN_DIR)")
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        pytest.fail(f"golden frame unreadable: {path}")
    return frame


def _npz(path, key: str) -> np.ndarray:
    if not path.is_file():
        pytest.fail(f"golden file missing: {path} (set CICO_GOLDEN_DIR)")
    return np.load(path)[key]


PREPROCESS_CASES = cases(GOLDEN_DIR, "preprocess")


def _network_cases_of(case: Path) -> list[Path]:
    """The network cases whose clip comes from this preprocessing case's frames (their manifest names the
    folder); when none names it, every network case (a golden set has one clip for all of them)."""
    network = network_cases(GOLDEN_DIR)
    named = [n for n in network if case.name in json.dumps(read_manifest(n).get("clip", {}))]
    return named or network


def test_golden_preprocess_cases_present() -> None:
    assert PREPROCESS_CASES, f"no preprocess_* case in {GOLDEN_DIR}"


@pytest.mark.parametrize("case", PREPROCESS_CASES, ids=[c.name for c in PREPROCESS_CASES])
def test_golden_preprocess_384x640_is_bitwise(case: Path) -> None:
    spec = read_manifest(case)["outputs"]["x_384x640"]
    (source,) = spec["from_frames"]
    frame = _read(case / source)
    expected = _npz(case / "outputs.npz", "x_384x640")
    x = transforms.preprocess_frame(frame, spec["min_size"], spec["max_size"], "reference")
    assert list(x.shape[1:]) == spec["resize_hw"]
    x = pad_to(x, padded_size(*spec["resize_hw"], 32, *spec["pad_hw"]))[None]
    assert x.dtype == torch.float32 and tuple(x.shape) == expected.shape
    assert np.abs(x.numpy() - expected).max() <= 1e-5
    assert np.array_equal(x.numpy(), expected)  # cv2.resize on float32 is deterministic
    assert (x[0, :, spec["resize_hw"][0]:] == 0).all()


@pytest.mark.parametrize("case", PREPROCESS_CASES, ids=[c.name for c in PREPROCESS_CASES])
def test_golden_network_input(case: Path) -> None:
    frames = [_read(case / name) for name in read_manifest(case)["inputs"]["frames"]]
    network = _network_cases_of(case)
    assert network, f"no network case in {GOLDEN_DIR} to compare {case.name} with"
    for net_case in network:
        clip = read_manifest(net_case)["clip"]
        expected = _npz(net_case / "input.npz", "x")
        height, width = clip["input_hw"]
        config = replace(get_preset("tiny_yolact"), min_size=height, max_size=width, normalization="reference")
        x, resized, _ = clip_inputs([Clip(0, list(range(len(frames))), frames, [])], config)  # the predictor's path
        x = x[0]
        assert list(resized) == clip["resized_hw"], net_case.name
        assert tuple(x.shape) == expected.shape, net_case.name
        assert np.abs(x.numpy() - expected).max() <= 1e-5, net_case.name
        assert np.array_equal(x.numpy(), expected), net_case.name


def test_reference_and_rgb_normalisations() -> None:
    pixel = np.array([[[10.0, 20.0, 30.0]]], np.float32)  # B, G, R
    ref = normalize(pixel, "reference")[:, 0, 0]
    rgb = normalize(pixel, "rgb")[:, 0, 0]
    # the quirk: ch0 = (R - 103.53)/57.375, ch2 = (B - 123.675)/58.395
    np.testing.assert_allclose(ref, [(30 - 103.53) / 57.375, (20 - 116.28) / 57.12, (10 - 123.675) / 58.395], rtol=1e-6)
    np.testing.assert_allclose(rgb, [(30 - 123.675) / 58.395, (20 - 116.28) / 57.12, (10 - 103.53) / 57.375], rtol=1e-6)
    for mode in ("reference", "rgb"):
        assert (normalize(fill_value(mode)[None, None], mode) == 0).all()
    with pytest.raises(ValueError):
        normalize(pixel, "bgr")  # type: ignore[arg-type]


@pytest.mark.parametrize("hw, expected", [((480, 854), (359, 640)), ((720, 1280), (360, 640)),
                                          ((480, 640), (384, 512)), ((480, 800), (384, 640))])
def test_resize_shape(hw, expected) -> None:
    assert resize_shape(*hw) == expected
    assert resize_shape(480, 854, 128, 224) == (125, 224)


def test_padding() -> None:
    assert padded_size(359, 640) == (384, 640)
    assert padded_size(359, 640, 32, 384, 640) == (384, 640)
    assert padded_size(125, 224, 32, 128, 224) == (128, 224)
    assert padded_size(300, 400, 32, 384, 640) == (384, 640)
    assert padded_size(385, 641) == (416, 672)
    x = torch.ones(2, 3, 5, 7)
    y = pad_to(x, (8, 9))
    assert y.shape == (2, 3, 8, 9) and y[..., :5, :7].eq(1).all() and y.sum() == x.sum()
    with pytest.raises(ValueError):
        pad_to(x, (4, 9))


def _clip(t: int = 3, h: int = 60, w: int = 100) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """One object (a filled rectangle) in frames 0 and 2, absent in frame 1; gradient frames."""
    frames = [np.tile(np.arange(w, dtype=np.uint8)[None, :, None] * 2, (h, 1, 3)) + i for i in range(t)]
    masks = np.zeros((1, t, h, w), np.uint8)
    boxes = np.zeros((1, t, 4), np.float32)
    for i in (0, 2):
        masks[0, i, 10:30, 20:50] = 1
        boxes[0, i] = [20 / w, 10 / h, 49 / w, 29 / h]
    return frames, masks, boxes


@pytest.mark.parametrize("flip", ["horizontal", "vertical"])
def test_flip_moves_images_masks_and_boxes_together(flip: str) -> None:
    frames, masks, boxes = _clip()
    aug = TrainAugmentation(min_size=60, max_size=100, flip=flip, flip_prob=1.0, expand_prob=0.0,
                            normalization="rgb")
    images, out_masks, out_boxes = aug(frames, masks, boxes, np.random.default_rng(0))
    assert images.shape == (3, 3, 60, 100) and out_masks.shape == (1, 3, 60, 100)
    axis = -1 if flip == "horizontal" else -2
    np.testing.assert_array_equal(out_masks, np.flip(masks, axis))
    plain = TrainAugmentation(60, 100, flip="none", expand_prob=0.0, normalization="rgb")
    ref_images, _, _ = plain(frames, masks, boxes, np.random.default_rng(0))
    np.testing.assert_array_equal(images, np.flip(ref_images, axis))
    expected = boxes.copy()
    if flip == "horizontal":
        expected[..., [0, 2]] = 1 - boxes[..., [2, 0]]
    else:
        expected[..., [1, 3]] = 1 - boxes[..., [3, 1]]
    expected[0, 1] = 0  # absent stays [0, 0, 0, 0]
    np.testing.assert_allclose(out_boxes, expected, atol=1e-6)


def test_resize_keeps_boxes_and_masks_consistent() -> None:
    frames, masks, boxes = _clip(h=120, w=200)
    aug = TrainAugmentation(min_size=60, max_size=100, flip="none", expand_prob=0.0)
    images, out_masks, out_boxes = aug(frames, masks, boxes, np.random.default_rng(0))
    assert images.shape == (3, 3, 60, 100) and images.dtype == np.float32
    np.testing.assert_allclose(out_boxes, boxes)  # normalised boxes do not change on resize
    ys, xs = np.nonzero(out_masks[0, 0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (5, 14, 10, 24)
    assert not out_masks[0, 1].any()
    expected = transforms.preprocess_frame(frames[0], 60, 100, "reference").numpy()
    np.testing.assert_array_equal(images[0], expected)  # same resize+normalise as the test path


def test_expand_shrink_fills_with_zero_after_normalisation() -> None:
    frames, masks, boxes = _clip()
    aug = TrainAugmentation(min_size=60, max_size=100, flip="none", expand_prob=1.0)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        images, out_masks, out_boxes = aug(frames, masks, boxes, rng)
        s = np.random.default_rng(seed)
        s.random()
        s.random()
        scale = s.uniform(0.5, 1.5)
        if scale <= 1:
            break
    else:
        pytest.fail("no shrinking draw in 40 seeds")
    hs, ws = int(60 * scale), int(100 * scale)
    assert (images[:, :, hs:, :] == 0).all() and (images[:, :, :, ws:] == 0).all()
    np.testing.assert_allclose(out_boxes[0, 0], boxes[0, 0] * scale, rtol=1e-6)
    assert not out_masks[..., hs:, :].any()


def test_expand_crop_clips_boxes_and_drops_objects_cropped_away() -> None:
    frames, masks, boxes = _clip()
    aug = TrainAugmentation(min_size=60, max_size=100, flip="none", expand_prob=1.0, normalization="rgb")
    seen_crop = False
    for seed in range(60):
        images, out_masks, out_boxes = aug(frames, masks, boxes, np.random.default_rng(seed))
        assert images.shape == (3, 3, 60, 100)
        assert ((out_boxes >= 0) & (out_boxes <= 1)).all()
        for t in range(3):
            box = out_boxes[0, t]
            if out_masks[0, t].sum() > 4:
                ys, xs = np.nonzero(out_masks[0, t])
                # the box follows the mask within a couple of pixels of interpolation
                assert abs(box[0] * 100 - xs.min()) <= 2.5 and abs(box[2] * 100 - xs.max()) <= 2.5
                assert abs(box[1] * 60 - ys.min()) <= 2.5 and abs(box[3] * 60 - ys.max()) <= 2.5
            if not (box[2] > box[0] and box[3] > box[1]):
                assert (box == 0).all()
        seen_crop |= bool(np.abs(images[:, :, -1, -1]).sum() > 0 and out_boxes[0, 0, 0] < boxes[0, 0, 0])
    assert seen_crop


def test_augmentation_is_deterministic_per_seed_and_clip_consistent() -> None:
    frames, masks, boxes = _clip()
    frames = [frames[0]] * 3
    masks[0, 1], boxes[0, 1] = masks[0, 0], boxes[0, 0]
    aug = TrainAugmentation(min_size=60, max_size=100)
    a = aug(frames, masks, boxes, np.random.default_rng(7))
    b = aug(frames, masks, boxes, np.random.default_rng(7))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    images, out_masks, out_boxes = a
    # identical frames stay identical: every decision is shared by the clip
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[0], images[2])
    np.testing.assert_array_equal(out_masks[0, 0], out_masks[0, 2])
    np.testing.assert_array_equal(out_boxes[0, 0], out_boxes[0, 2])


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError):
        TrainAugmentation(flip="diagonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TrainAugmentation(normalization="bgr")  # type: ignore[arg-type]
