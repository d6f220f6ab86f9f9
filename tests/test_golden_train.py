"""One training step against the reference's golden training cases (golden README §8).

For every ``train_*`` case in GOLDEN_DIR: regenerate the reference weights from the manifest's recipe
(sha256-checked), map their names with ``cico convert``'s table, build the case's model in the case's
batch-norm mode, run cico's training forward, matcher and loss on the case's batch, backward, and
compare with the README's acceptance criteria (§8.9): the matcher's assignment exactly, the
supplemented boxes, every loss term, every gradient norm, the full gradients of the last layers and the
batch-norm running statistics. One step per case is shared by the tests (module cache).

Below 4 clips the reference freezes the backbone's BatchNorm2d (eval mode, no gradient; §8.2); cico
freezes them with ``frozen_bn=True`` (``FrozenBatchNorm2d``), which is what its trainer runs then.
The ProtoNet batch norms train in both modes.

The data side: the training dataset, with augmentation off, builds the cases' inputs from the same DAVIS
frames, and a clip of the DAVIS sample as the reference's ``pull_item`` does, worked out by hand.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import GOLDEN_DIR, SHARED
from golden import cases, cico_names, preset_name, read_manifest, read_npz, reference_state_dict
from pycocotools import mask as mask_utils

from cico.data.annotations import parse_annotations
from cico.data.clips import ClipBatch, ClipDataConfig, ClipDataset, reference_object_order
from cico.data.rle import decode, encode
from cico.data.transforms import TrainAugmentation
from cico.model.checkpoint import model_from_state_dict
from cico.model.config import get_preset
from cico.model.convert import reference_to_cico
from cico.training.losses import CiCoLoss
from cico.training.matcher import match_batch

CASES = cases(GOLDEN_DIR, "train")
IDS = [c.name for c in CASES]
# the reference's loss keys (multibox_loss.py) -> cico's
LOSS_NAMES = {"B": "box", "BIoU": "box_diou", "center": "centerness", "M_bce": "mask", "C_focal": "class",
              "C": "class", "T": "track"}
DAVIS = SHARED / "data" / "davis2016_mini"
# the training cases' data pipeline: min/max size 128/224, no flip, no expand (README §8.3)
MIN_SIZE, MAX_SIZE = 128, 224


def test_golden_train_cases_present() -> None:
    assert CASES, f"no training cases (train_* folders) in {GOLDEN_DIR}"


@dataclass
class Step:
    """What one case's step produced, on both sides (the model itself is not kept)."""

    manifest: dict[str, Any]
    inputs: dict[str, np.ndarray]
    ref: dict[str, np.ndarray]
    names: dict[str, str]  # reference name -> cico name
    losses: dict[str, float]
    total: float
    conf_t: np.ndarray  # [B*T, N]
    gt_idx: np.ndarray  # [B*T, N], -1 off the positives
    boxes_supp: list[np.ndarray]
    grad_norms: dict[str, float]  # cico name -> L2 norm of the gradient, for the parameters that have one
    full_grads: dict[str, np.ndarray]  # the gradients of manifest["full_grads"], by cico name
    trainable: set[str]  # cico names of the parameters with requires_grad
    buffers: dict[str, np.ndarray]  # cico name -> value, for the batch norms of manifest["bn_tracked"]


_STEPS: dict[Path, Step] = {}


def _step(case: Path) -> Step:
    if case in _STEPS:
        return _STEPS[case]
    manifest = read_manifest(case)
    inputs, ref = read_npz(case / "input.npz"), read_npz(case / "outputs.npz")
    reference = reference_state_dict(manifest)
    config = get_preset(preset_name(manifest), frozen_bn=bool(manifest["train_mode"]["freeze_bn"]))
    model = model_from_state_dict(config, reference_to_cico(reference)).train()
    x = torch.from_numpy(inputs["x"])
    clips = range(x.shape[0])
    boxes = [torch.from_numpy(inputs[f"boxes_{b}"]) for b in clips]
    labels = [torch.from_numpy(inputs[f"labels_{b}"]) for b in clips]
    masks = [torch.from_numpy(inputs[f"masks_{b}"]) for b in clips]
    head = model(x).head
    losses = CiCoLoss.for_model(config)(head, boxes, masks, labels)
    total = sum(losses.values())
    total.backward()
    # the loss matched internally; the matcher is deterministic, so this is the same assignment
    targets = match_batch(boxes, labels, head.priors.detach(), loc_pred=head.loc.detach())
    conf_t = targets.labels.numpy()
    names = cico_names(reference)
    params = dict(model.named_parameters())
    tracked = tuple(names[f"{module}.running_mean"].removesuffix("running_mean") for module in manifest["bn_tracked"])
    _STEPS[case] = Step(
        manifest=manifest, inputs=inputs, ref=ref, names=names,
        losses={k: float(v.detach()) for k, v in losses.items()}, total=float(total.detach()), conf_t=conf_t,
        gt_idx=np.where(conf_t > 0, targets.matched.numpy(), -1), boxes_supp=[b.numpy() for b in targets.boxes],
        grad_norms={n: float(p.grad.double().norm()) for n, p in params.items() if p.grad is not None},
        full_grads={names[n]: params[names[n]].grad.numpy().copy() for n in manifest["full_grads"]},
        trainable={n for n, p in params.items() if p.requires_grad},
        buffers={n: b.numpy().copy() for n, b in model.named_buffers() if n.startswith(tracked)})
    return _STEPS[case]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matcher(case: Path) -> None:
    step = _step(case)
    ref = step.ref
    np.testing.assert_array_equal(step.conf_t, ref["match_conf_t"].astype(np.int64), "match_conf_t")
    np.testing.assert_array_equal(step.gt_idx, ref["match_gt_idx"].astype(np.int64), "match_gt_idx")
    clips, frames = ref["match_num_pos"].shape
    num_pos = (step.conf_t > 0).sum(1).reshape(clips, frames)
    np.testing.assert_array_equal(num_pos, ref["match_num_pos"], "match_num_pos")
    for b, supplemented in enumerate(step.boxes_supp):
        np.testing.assert_allclose(supplemented, step.inputs[f"boxes_supp_{b}"], rtol=0, atol=1e-7,
                                   err_msg=f"boxes_supp_{b}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_losses(case: Path) -> None:
    step = _step(case)
    keys = step.manifest["loss_keys"]
    assert sorted(LOSS_NAMES[k] for k in keys) == sorted(step.losses), f"loss keys {keys} vs {list(step.losses)}"
    # README §8.9: 1e-4 with frozen backbone BN (input noise moves the losses by <= 5e-7), 1e-3 with the
    # backbone BN in training mode (batch statistics: up to 2.5e-5)
    rel = 1e-4 if step.manifest["train_mode"]["freeze_bn"] else 1e-3
    for key in keys:
        ours, expected = step.losses[LOSS_NAMES[key]], float(step.ref[f"loss_{key}"])
        assert ours == pytest.approx(expected, rel=rel), f"{key} ({LOSS_NAMES[key]}): {ours} vs {expected}"
    assert step.total == pytest.approx(float(step.ref["loss_total"]), rel=rel)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_norms(case: Path) -> None:
    step = _step(case)
    manifest, ref, names = step.manifest, step.ref, step.names
    with_grad = manifest["grad_norm_names"]
    # cico trains exactly the parameters the reference trains: no more, none without a gradient. A frozen
    # reference BN parameter (params_without_grad) is a FrozenBatchNorm2d buffer or a parameter without grad.
    assert set(step.grad_norms) == {names[n] for n in with_grad}
    assert step.trainable == set(step.grad_norms)
    assert not {names[n] for n in manifest["params_without_grad"]} & set(step.grad_norms)
    exempt = set(manifest["grads_zero_in_exact_arithmetic"])
    failures = []
    for name, expected, sensitivity in zip(with_grad, ref["grad_norms"], ref["grad_norm_rel_sensitivity"]):
        norm = step.grad_norms[names[name]]
        if name in exempt:  # zero in exact arithmetic: only rounding noise on both sides
            if norm > 1e-4:
                failures.append(f"{name}: {norm:.3g} > 1e-4 (zero in exact arithmetic)")
            continue
        tol = max(1e-3, 20 * sensitivity) * expected
        if abs(norm - expected) > tol:
            failures.append(f"{name}: {norm:.7g} vs {expected:.7g} (rel {abs(norm - expected) / expected:.2e})")
    assert not failures, f"{len(failures)} gradient norms differ:\n" + "\n".join(failures)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_full_gradients(case: Path) -> None:
    step = _step(case)
    for name in step.manifest["full_grads"]:
        expected = step.ref[f"grad.{name}"].astype(np.float64)
        ours = step.full_grads[step.names[name]].astype(np.float64)
        assert ours.shape == expected.shape, name
        err, scale = np.abs(ours - expected).max(), np.abs(expected).max()
        assert err <= 1e-3 * scale, f"{name}: max|ours-ref| = {err:.3g} > 1e-3·{scale:.3g}"
        cosine = (ours * expected).sum() / (np.linalg.norm(ours) * np.linalg.norm(expected))
        assert cosine >= 0.9999, f"{name}: cosine {cosine:.6f}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_batch_norm_statistics(case: Path) -> None:
    step = _step(case)
    keys = [k for k in step.ref if k.startswith("bn_after_forward.")]
    assert {k.split(".", 1)[1].rsplit(".", 1)[0] for k in keys} == set(step.manifest["bn_tracked"])
    for key in keys:
        name = step.names[key.split(".", 1)[1]]
        expected = step.ref[key]
        if name.endswith(".num_batches_tracked"):
            # FrozenBatchNorm2d has no counter: it never updates, which the reference's frozen BN shows as 0
            ours = step.buffers.get(name, np.zeros((), np.int64))
            assert int(ours) == int(expected), f"{key}: {int(ours)} vs {int(expected)}"
        else:
            # relative to the tensor's scale: some channel means are ~1e-4 of the largest, pure cancellation
            # (0.1 x a batch mean near 0), where an element-wise relative error measures only rounding
            err, scale = np.abs(step.buffers[name] - expected).max(), np.abs(expected).max()
            assert err <= 1e-4 * scale, f"{key}: max|ours-ref| = {err:.3g} > 1e-4·{scale:.3g}"


# -- the data side: what the training dataset builds from a YouTube-VIS video ----------------------------

def _davis_dataset(sequence: str, frames: list[int], extra: list[dict[str, Any]] = (),
                   object_id: int | None = None, absent: tuple[int, ...] = ()) -> ClipDataset:
    """A one-video dataset of DAVIS ``sequence``'s ``frames``, augmentation off, at the golden size.

    The DAVIS object keeps its annotation (id ``object_id`` if given), without the frames in ``absent``;
    ``extra`` annotations (per-frame lists over ``frames``) are added.
    """
    full = json.loads((DAVIS / "instances.json").read_text())
    video = next(v for v in full["videos"] if v["file_names"][0].startswith(sequence + "/"))
    davis = next(a for a in full["annotations"] if a["video_id"] == video["id"])
    per_frame = ("bboxes", "areas", "segmentations")
    davis = dict(davis, **{k: [None if i in absent else davis[k][f] for i, f in enumerate(frames)]
                           for k in per_frame})
    if object_id is not None:
        davis["id"] = object_id
    video = dict(video, length=len(frames), file_names=[video["file_names"][f] for f in frames])
    data = dict(full, videos=[video], annotations=[davis, *[dict(a, video_id=video["id"]) for a in extra]])
    config = ClipDataConfig(augment=TrainAugmentation(min_size=MIN_SIZE, max_size=MAX_SIZE, flip="none", flip_prob=0.0,
                                                      expand_prob=0.0))
    return ClipDataset(parse_annotations(data), DAVIS / "JPEGImages", config)


def _middle_clip(dataset: ClipDataset) -> ClipBatch:
    """The batch of the 3-frame video's middle item: its clip is frames [0, 1, 2] (window {-2, -1, +1})."""
    sample = dataset[dataset.items.index((0, 1))]
    assert sample.frame_ids == [0, 1, 2]
    return dataset.collate_fn([sample])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_training_clips_as_in_the_golden_inputs(case: Path) -> None:
    """Each golden clip is real DAVIS frames with painted objects: cico's dataset, fed the same frames and
    the DAVIS object, builds the case's ``x`` (away from the painted objects), box and mask bit for bit."""
    manifest, inputs = read_manifest(case), read_npz(case / "input.npz")
    sample = {p.name for p in (DAVIS / "JPEGImages").iterdir()}
    clips = [(b, clip) for b, clip in enumerate(manifest["clips"]) if clip["source"].split("'")[1] in sample]
    assert clips, f"no clip of {case.name} comes from a sequence of {DAVIS}"
    for b, clip in clips:
        sequence = clip["source"].split("'")[1]
        batch = _middle_clip(_davis_dataset(sequence, clip["davis_frames"]))
        x = inputs["x"][b]
        assert tuple(batch.images.shape[1:]) == x.shape
        davis = next(o for o in clip["objects"] if o["kind"] == "davis")["index"]
        np.testing.assert_array_equal(batch.boxes[0][0].numpy(), inputs[f"boxes_{b}"][davis], f"clip {b} box")
        np.testing.assert_array_equal(batch.masks[0][0].numpy(), inputs[f"masks_{b}"][davis], f"clip {b} mask")
        painted = np.zeros(x.shape[-2:], np.uint8)
        for obj in clip["objects"]:
            if obj["kind"] != "davis":
                painted |= inputs[f"masks_{b}"][obj["index"]].any(0)
        # the resize mixes each output pixel with its neighbours: keep 2 pixels away from the paint
        clean = ~cv2.dilate(painted, np.ones((5, 5), np.uint8)).astype(bool)
        assert clean.mean() > 0.5
        np.testing.assert_allclose(batch.images[0].numpy()[..., clean], x[..., clean], rtol=0, atol=1e-5,
                                   err_msg=f"clip {b} x")
        ids = [[o["id"] for o in clip["objects"] if o["present"][t]] for t in range(len(clip["davis_frames"]))]
        assert reference_object_order(ids) == [o["id"] for o in clip["objects"]], f"clip {b} object order"


def _rectangle(x: int, y: int, w: int, h: int, present: list[bool], object_id: int, category: int) -> dict:
    mask = np.zeros((480, 854), np.uint8)
    mask[y:y + h, x:x + w] = 1
    return {"id": object_id, "category_id": category, "iscrowd": 0,
            "bboxes": [[x, y, w, h] if p else None for p in present],
            "areas": [w * h if p else None for p in present],
            "segmentations": [encode(mask) if p else None for p in present]}


def test_training_clip_follows_the_reference_pull_item() -> None:
    """The reference's clip worked out by hand on DAVIS 'dog' frames 10, 15, 20 (480x854 -> 125x224, padded
    to 128): the channel-order quirk, inclusive boxes rescaled onto the padded canvas, absent frames,
    padding, the reference's object order."""
    frames = [10, 15, 20]
    extra = [_rectangle(500, 100, 120, 60, [True, True, True], 31, 4),
             _rectangle(40, 300, 90, 150, [False, True, True], 33, 4)]
    batch = _middle_clip(_davis_dataset("dog", frames, extra, object_id=32, absent=(1,)))
    full = json.loads((DAVIS / "instances.json").read_text())
    dog = next(a for a in full["annotations"] if a["video_id"] == 4)

    # objects: the ids {31, 32, 33} in a Python set's order, as the reference's pull_item iterates them
    assert batch.track_ids[0].tolist() == [32, 33, 31]
    assert batch.labels[0].tolist() == [2, 4, 4]  # dog, bird: the sorted category ids' 1-based ranks

    # images: cv2 INTER_LINEAR on float32 BGR to 125x224; ch0 = (R - 103.53)/57.375, ch1 = (G - 116.28)/57.12,
    # ch2 = (B - 123.675)/58.395 (the ImageNet RGB constants on BGR data, then BGR->RGB); zero rows 125-127
    images = batch.images[0].numpy()
    assert images.shape == (3, 3, 128, 224)
    for t, f in enumerate(frames):
        bgr = cv2.resize(cv2.imread(str(DAVIS / "JPEGImages" / "dog" / f"{f:05d}.jpg")).astype(np.float32),
                         (224, 125), interpolation=cv2.INTER_LINEAR)
        expected = np.stack([(bgr[..., 2] - 103.53) / 57.375, (bgr[..., 1] - 116.28) / 57.12,
                             (bgr[..., 0] - 123.675) / 58.395])
        np.testing.assert_allclose(images[t, :, :125], expected, rtol=0, atol=1e-5)
        assert not images[t, :, 125:].any()

    # boxes: [x/854, y/480·125/128, (x+w-1)/854, (y+h-1)/480·125/128]; an absent frame is [0, 0, 0, 0]
    def box(x: float, y: float, w: float, h: float) -> list[float]:
        return [x / 854, y / 480 * 125 / 128, (x + w - 1) / 854, (y + h - 1) / 480 * 125 / 128]

    zero = [0.0] * 4
    expected_boxes = [[box(*dog["bboxes"][10]), zero, box(*dog["bboxes"][20])],
                      [zero, box(40, 300, 90, 150), box(40, 300, 90, 150)],
                      [box(500, 100, 120, 60)] * 3]
    np.testing.assert_allclose(batch.boxes[0].numpy(), expected_boxes, rtol=0, atol=1e-7)

    # masks: the 0/1 uint8 mask resized by the same cv2 resize, zero-padded; empty where absent
    masks = batch.masks[0].numpy()
    assert masks.shape == (3, 3, 128, 224) and not masks[:, :, 125:].any()
    assert not masks[0, 1].any() and not masks[1, 0].any()
    for j, annotation in ((0, dict(dog, segmentations=[dog["segmentations"][f] for f in frames])),
                          (1, extra[1]), (2, extra[0])):
        for t in range(3):
            rle = annotation["segmentations"][t]
            if rle is None or (j == 0 and t == 1):
                continue
            full_mask = decode(rle if isinstance(rle["counts"], str) else mask_utils.frPyObjects(rle, 480, 854))
            expected = cv2.resize(full_mask, (224, 125), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(masks[j, t, :125], expected, f"object {j} frame {t}")
