"""ONNX Runtime as the clip network: a cico ONNX export (:mod:`cico.model.onnx_export`) behind the interface of
:class:`~cico.model.network.CiCo` that the predictor uses (``config``, ``forward_raw``, calling it for detections).

Only the network runs in ONNX Runtime; the anchors, detection (with the CondInst dynamic mask head), linking and
everything after are cico's host code, shared with the torch path. :func:`load_network` is the one place that
turns a ``--weights`` path into a network: a ``.onnx`` file gives an :class:`OnnxClipNetwork`, anything else
a torch :class:`~cico.model.network.CiCo` from its checkpoint.

Needs the ``onnx`` extra (``pip install cico[onnx]``: ``onnxruntime``; ``onnxruntime-gpu`` for ``device="cuda"``).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import CicoError
from ..model.anchors import make_anchors
from ..model.config import ModelConfig
from ..model.detect import DetectConfig, detect
from ..model.network import CiCo
from ..model.onnx_export import INPUT_NAME, OUTPUT_NAMES, OnnxMetadata
from ..model.outputs import CiCoOutputs, HeadOutputs
from ..threads import ThreadPolicy, current_policy

ONNX_SUFFIX = ".onnx"
FPN_LEVELS = 5  # P3 (stride 8) .. P7 (stride 128)


def feature_sizes(height: int, width: int, levels: int = FPN_LEVELS) -> list[tuple[int, int]]:
    """``(h, w)`` of P3..P7 for a padded input ``height × width``: stride 8, then halved and rounded up per level
    (every stride-2 layer of the backbone and the FPN has kernel 3 / padding 1, or kernel 1 on even sizes)."""
    h, w = math.ceil(height / 8), math.ceil(width / 8)
    sizes = []
    for _ in range(levels):
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


class OnnxClipNetwork:
    """A cico ONNX export run by ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        device: ``cpu`` (CPU execution provider) or ``cuda[:N]`` (CUDA provider, needs ``onnxruntime-gpu``);
            the outputs come back to the host either way.
        threads: the thread policy (default: :func:`cico.threads.current_policy`).

    Raises:
        CicoError: not an ONNX file, no cico metadata, onnxruntime missing, or the CUDA provider unavailable.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: ThreadPolicy | None = None
                 ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise CicoError("running an ONNX model needs onnxruntime: pip install 'cico[onnx]'", path) from None
        self.path = Path(path)
        if not self.path.is_file():
            raise CicoError("ONNX model not found", path)
        device = torch.device(device)
        providers: list = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise CicoError("--device cuda with an ONNX model needs onnxruntime-gpu (CUDAExecutionProvider)")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        (threads or current_policy()).apply_onnxruntime(options)
        # without ONNX Runtime's CPU arena a run's buffers go back to the heap: a lower peak at the same speed
        options.enable_cpu_mem_arena = False
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NotImplemented

        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except (Fail, InvalidGraph, InvalidProtobuf, NotImplemented, OSError) as err:
            first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise CicoError(f"not a readable ONNX model ({first})", path) from None
        try:
            self.metadata = OnnxMetadata.from_props(self.session.get_modelmeta().custom_metadata_map)
        except ValueError as err:
            raise CicoError(str(err), path) from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = tuple(o.name for o in self.session.get_outputs())
        if inputs != [INPUT_NAME] or outputs != OUTPUT_NAMES:
            raise CicoError(f"the graph's inputs {inputs} / outputs {list(outputs)} do not match its cico metadata",
                            path)
        self.config: ModelConfig = self.metadata.config
        self.device = torch.device("cpu")  # where inputs are prepared and outputs come back
        self._anchors: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    def eval(self) -> OnnxClipNetwork:
        """Inference is all it does (the ``nn.Module`` call the predictor makes); returns ``self``."""
        return self

    def forward_raw(self, clips: Tensor, candidates_for: DetectConfig | None = None) -> HeadOutputs:
        """``clips [B, T, 3, H, W]`` (normalised, zero-padded) -> :class:`HeadOutputs`, as
        :meth:`cico.model.network.CiCo.forward_raw`; a fixed-batch export runs in chunks of its batch (the last
        one padded by repeating a clip). The exported graph computes every anchor's outputs, so
        ``candidates_for`` changes nothing.

        Raises:
            CicoError: ``T`` or the input size does not match the export.
        """
        meta, frames = self.metadata, self.config.clip_frames
        if clips.dim() != 5 or clips.shape[1] != frames or clips.shape[2] != 3:
            raise CicoError(f"this export takes clips [B, {frames}, 3, H, W], got {list(clips.shape)}", self.path)
        height, width = int(clips.shape[-2]), int(clips.shape[-1])
        if meta.fixed_size is not None and (height, width) != meta.fixed_size:
            raise CicoError(f"this export takes {meta.fixed_size[0]}x{meta.fixed_size[1]} inputs, the frames pad to "
                            f"{height}x{width}: re-export with '--size {height}x{width}' or '--dynamic-size'",
                            self.path)
        if height % 32 or width % 32:
            raise CicoError(f"input size {height}x{width} must be multiples of 32", self.path)
        array = clips.detach().to("cpu", torch.float32).contiguous().numpy()
        chunk = meta.batch_clips or len(array)
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(array), chunk):
            part = array[start:start + chunk]
            real = len(part)
            if real < chunk:
                part = np.concatenate([part, np.repeat(part[-1:], chunk - real, axis=0)])
            outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: part})
            parts.append([o[:real * frames] if name != "proto" else o[:real]
                          for name, o in zip(OUTPUT_NAMES, outputs)])
        values = {name: torch.from_numpy(np.concatenate([p[i] for p in parts]) if len(parts) > 1 else parts[0][i])
                  for i, name in enumerate(OUTPUT_NAMES)}
        priors, levels = self._priors(height, width)
        return HeadOutputs(**values, priors=priors, prior_levels=levels)

    def __call__(self, clips: Tensor) -> CiCoOutputs:
        """Raw outputs and per-clip detections, as the torch network's eval-mode ``forward``."""
        head = self.forward_raw(clips)
        config = self.config
        return CiCoOutputs(head, detect(head, classifier=config.classifier, mask_head=config.mask_head,
                                        config=config.detect))

    def _priors(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        if (height, width) not in self._anchors:
            self._anchors[(height, width)] = make_anchors(feature_sizes(height, width), self.config.aspect_ratios)
        return self._anchors[(height, width)]


def is_onnx(weights: str | Path) -> bool:
    """Whether ``weights`` names an ONNX export (by its ``.onnx`` suffix)."""
    return Path(weights).suffix.lower() == ONNX_SUFFIX


def load_network(weights: str | Path, device: str | torch.device = "cpu") -> CiCo | OnnxClipNetwork:
    """The clip network of ``--weights``: ONNX Runtime for a ``.onnx`` export, else the torch network of a cico
    checkpoint (:func:`cico.model.checkpoint.load_model`), in eval mode on ``device``, its batch norms folded
    into the convolutions (:meth:`~cico.model.network.CiCo.fold_batch_norm`).

    Raises:
        CicoError: a file that is neither (one line naming it).
    """
    if is_onnx(weights):
        return OnnxClipNetwork(weights, device)
    from ..model.checkpoint import load_model

    return load_model(weights, device).fold_batch_norm()


def max_differences(model: CiCo, network: OnnxClipNetwork, clips: Tensor) -> dict[str, tuple[float, float]]:
    """``(max |export - torch|, max |torch|)`` of every output (and the anchors) of the torch network and the
    export on ``clips [B, T, 3, H, W]`` (the torch side in float32 with its default 3D-convolution path)."""
    with torch.inference_mode():
        ours = model.forward_raw(clips.to(next(model.parameters()).device)).__dict__
    theirs = network.forward_raw(clips).__dict__
    return {name: (float((ours[name].cpu().double() - theirs[name].double()).abs().max()),
                   float(ours[name].double().abs().max())) for name in ours}
