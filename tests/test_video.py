"""Clip splitting (spec §5.1), back to the original resolution (§5.4) and the streaming predictor."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cico.data.rle import decode
from cico.data.sources import Video
from cico.inference.clips import Clip, split_clips
from cico.inference.postprocess import original_frames
from cico.inference.predictor import VideoPredictor
from cico.structures import Instances
from tests.video_helpers import disc_frames, tiny_model, write_frames


def frame_list(n: int) -> list[np.ndarray]:
    return [np.full((4, 4, 3), i, np.uint8) for i in range(n)]


def test_reference_clips_of_eight_frames():
    clips = list(split_clips(frame_list(8), 3, 1))
    assert [c.frame_ids for c in clips] == [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 6]]
    assert [c.outputs for c in clips] == [[(0, 0), (1, 1)], [(2, 0), (3, 1)], [(4, 0), (5, 1)], [(6, 0), (7, 1)]]
    assert [c.is_first for c in clips] == [True, False, False, False]
    last = clips[-1]
    assert last.images[2] is last.images[0]  # cyclic padding repeats the frame itself


def test_short_last_clip_outputs_only_its_real_frames():
    # L=7: the last clip is [6, 6, 6]; the reference outputs frame 6 from position 0 only
    # (eval.py slices the clip's unpadded frame range to its first T-O frames)
    assert list(split_clips(frame_list(7), 3, 1))[-1].outputs == [(6, 0)]
    assert [(c.frame_ids, c.outputs) for c in split_clips(frame_list(1), 3, 1)] == [([0, 0, 0], [(0, 0)])]
    assert [(c.frame_ids, c.outputs) for c in split_clips(frame_list(2), 3, 1)] == [([0, 1, 0], [(0, 0), (1, 1)])]
    # no overlap: [0, 1, 2], [3, 3, 3]
    assert [c.outputs for c in split_clips(frame_list(4), 3, 0)] == [[(0, 0), (1, 1), (2, 2)], [(3, 0)]]
    # T=5, O=3: the last two clips [4..7, 4] and [6, 7, 6, 7, 6] output 2 frames each
    clips = list(split_clips(frame_list(8), 5, 3))
    assert [c.frame_ids for c in clips[-2:]] == [[4, 5, 6, 7, 4], [6, 7, 6, 7, 6]]
    assert [c.outputs for c in clips[-2:]] == [[(4, 0), (5, 1)], [(6, 0), (7, 1)]]


@pytest.mark.parametrize("clip_frames,overlap", [(3, 1), (3, 0), (3, 2), (5, 3), (1, 0), (4, 1)])
def test_every_frame_is_output_exactly_once(clip_frames, overlap):
    for length in range(1, 14):
        clips = list(split_clips(frame_list(length), clip_frames, overlap))
        assert len(clips) == math.ceil(length / (clip_frames - overlap))
        outputs = [f for c in clips for f, _ in c.outputs]
        assert outputs == list(range(length))
        for clip in clips:
            assert len(clip.frame_ids) == len(clip.images) == clip_frames
            assert all(int(image[0, 0, 0]) == f for f, image in zip(clip.frame_ids, clip.images))


def test_frames_are_read_lazily_one_clip_ahead():
    pulled = []

    def frames():
        for i, frame in enumerate(frame_list(20)):
            pulled.append(i)
            yield frame

    clips = split_clips(frames(), 3, 1)
    next(clips)
    assert len(pulled) == 3
    next(clips)
    assert len(pulled) == 5
    with pytest.raises(ValueError, match="overlap"):
        next(split_clips(frame_list(3), 3, 3))


def test_masks_and_boxes_back_at_the_original_resolution():
    # 480x854 -> 359x640, padded to 384x640; prototypes 96x160: rows 89.. cover only padding
    image = np.zeros((480, 854, 3), np.uint8)
    clip = Clip(0, [0, 1, 2], [image] * 3, [(0, 0), (1, 1)])
    masks = torch.zeros(2, 3, 96, 160)
    masks[0, :, :89] = 1.0  # all of the image
    masks[1, :, 89:] = 1.0  # only the padding
    masks[1, 1, :10, :10] = 0.9  # a corner in frame 1
    boxes = torch.tensor([[0.0, 0.0, 1.0, 359 / 384], [0.5, 0.0, 1.2, 0.5]])[:, None].repeat(1, 3, 1)
    tracks = Instances(labels=torch.tensor([1, 2]), scores=torch.tensor([0.5, 0.3]), boxes=boxes,
                       boxes_cir=boxes[:, 0], masks=masks, track=torch.zeros(2, 4), mask_coeff=torch.zeros(2, 4),
                       prior_levels=torch.zeros(2, dtype=torch.int64), centerness=torch.ones(2),
                       ids=torch.tensor([0, 3]), tracked_mask=torch.tensor([0, 2]), proto=torch.zeros(96, 160, 3, 4))
    frames = original_frames(clip, tracks, (359, 640), (384, 640))
    assert [f.frame_id for f in frames] == [0, 1]
    assert frames[0].masks.shape == (2, 480, 854)
    assert frames[0].masks[0].all() and not frames[0].masks[1].any()
    corner = frames[1].masks[1]
    # 10/89 of 480 rows and 10/160 of 854 columns, give or take the bilinear edge
    assert 50 <= corner.any(1).sum() <= 56 and 50 <= corner.any(0).sum() <= 56 and corner[0, 0]
    assert frames[0].boxes.tolist() == [[0, 0, 854, 480], [427, 0, 854, 256]]
    assert frames[1].ids.tolist() == [0, 3] and frames[1].tracked.tolist() == [0, 2]


class Frames(Video):
    """An in-memory video."""

    def __init__(self, frames, video_id=1):
        self._frames, self.video_id, self.name, self.length, self.fps = frames, video_id, "mem", len(frames), 10.0

    def frames(self):
        yield from self._frames


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def streamed(model):
    seen = []
    results = list(VideoPredictor(model).stream(Frames(disc_frames(5)), on_clip=seen.append))
    assert seen == results
    return results


def test_stream_outputs_each_frame_once_at_its_size(streamed):
    assert [r.frame_ids for r in streamed] == [[0, 1, 2], [2, 3, 4], [4, 4, 4]]
    frames = [f for r in streamed for f in r.frames]
    assert [f.frame_id for f in frames] == [0, 1, 2, 3, 4]
    assert sum(len(r.detections) for r in streamed) > 0, "the test model should detect something"
    for result in streamed:
        k = len(result.tracks)
        for frame in result.frames:
            assert frame.masks.shape == (k, 90, 160) and frame.masks.dtype == bool
            assert frame.boxes.shape == (k, 4) and (frame.boxes >= 0).all()
            assert (frame.boxes[:, [0, 2]] <= 160).all() and (frame.boxes[:, [1, 3]] <= 90).all()
            np.testing.assert_array_equal(frame.ids, result.tracks.ids.numpy())
    arrays = streamed[1].arrays()
    assert arrays["frame_ids"].tolist() == [2, 3, 4]
    assert arrays["trk_box"].shape == (len(streamed[1].tracks), 3, 4)


def test_batched_clips_give_the_same_results(model, streamed):
    batched = list(VideoPredictor(model, batch_clips=2).stream(Frames(disc_frames(5))))
    assert len(batched) == len(streamed)
    for a, b in zip(batched, streamed):
        torch.testing.assert_close(a.tracks.ids, b.tracks.ids)
        torch.testing.assert_close(a.tracks.scores, b.tracks.scores, rtol=0, atol=1e-5)
        for fa, fb in zip(a.frames, b.frames):
            assert (fa.masks != fb.masks).mean() < 1e-3


def test_predict_collects_tracks_with_lazy_rle_masks(model, streamed, tmp_path):
    folder = write_frames(tmp_path / "frames", disc_frames(5))
    tracks = VideoPredictor(model).predict(folder)
    assert {t.track_id for t in tracks} == {int(i) for r in streamed for i in r.tracks.ids}
    frames = {f.frame_id: f for r in streamed for f in r.frames}
    for track in tracks:
        assert track.video_id == 1 and len(track.segmentations) == 5
        assert track.category_name == ("disc", "square")[track.category_id - 1]
        for f in range(5):
            present = track.track_id in frames[f].ids.tolist()
            assert (track.segmentations[f] is not None) == present
            if present:
                row = frames[f].ids.tolist().index(track.track_id)
                np.testing.assert_array_equal(track.masks[f], frames[f].masks[row])
                np.testing.assert_array_equal(decode(track.segmentations[f]), frames[f].masks[row])


@pytest.mark.parametrize("length", [1, 2])
def test_one_and_two_frame_videos_give_results(model, length):
    predictor = VideoPredictor(model, score_thresh=0.05)
    tracks = predictor.predict(Frames(disc_frames(length), video_id=7))
    assert tracks, "expected some tracks"
    assert all(t.video_id == 7 and len(t.segmentations) == length for t in tracks)
    assert all(all(s is not None for s in t.segmentations) for t in tracks)  # first clip: all output


def test_bf16_autocast_and_channels_last_run(model):
    predictor = VideoPredictor(tiny_model(), amp="bf16", channels_last=True)
    (result,) = list(predictor.stream(Frames(disc_frames(2))))
    assert result.tracks.scores.dtype == torch.float32
    assert result.detections.masks.dtype == torch.float32


def test_predictor_rejects_bad_options(model):
    with pytest.raises(ValueError, match="overlap"):
        VideoPredictor(model, overlap=3)
    with pytest.raises(ValueError, match="amp"):
        VideoPredictor(model, amp="int8")
