"""Back to the original frames: the tracker's clip outputs at each frame's own resolution.

Masks come out of the network at prototype resolution (a quarter of the padded input) and boxes are
normalised to the padded input; this undoes the padding and the test resize, as the reference does.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..structures import FrameResult, Instances
from .clips import Clip


@torch.inference_mode()
def original_frames(clip: Clip, tracks: Instances, resized: tuple[int, int],
                    padded: Sequence[int]) -> list[FrameResult]:
    """The clip's output frames at the original resolution.

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
        upsampled = F.interpolate(valid.float().flatten(0, 1)[None], (height, width), mode="bilinear",
                                  align_corners=False)[0] > 0.5
        full = upsampled.unflatten(0, (k, len(positions))).cpu().numpy()
    else:
        full = np.zeros((0, len(positions), height, width), dtype=bool)
    normalised = tracks.boxes[:, positions].float()  # [k, F, 4] normalised on the padded canvas
    scale = normalised.new_tensor([padded[1] / resized[1], padded[0] / resized[0]] * 2)
    boxes = ((normalised * scale).clamp(0, 1) * normalised.new_tensor([width, height] * 2)).long().cpu().numpy()
    ids = tracks.ids.cpu().numpy()
    labels = tracks.labels.cpu().numpy()
    scores = tracks.scores.float().cpu().numpy()
    tracked = tracks.tracked_mask.cpu().numpy()
    return [FrameResult(frame_id, clip.images[t], ids, labels, scores, tracked, boxes[:, i], full[:, i])
            for i, (frame_id, t) in enumerate(clip.outputs)]
