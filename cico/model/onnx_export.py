"""Export of the clip network to ONNX, with everything a runtime needs stored in the file.

The exported graph is the network alone (backbone, FPN, clip prediction head, clip mask head): input
``clips [B, T, 3, H, W]`` float32, normalised and zero-padded exactly as the predictor prepares them, and the
raw head outputs (:class:`~cico.model.outputs.HeadOutputs` without the anchors, which depend only on the input
size and are rebuilt on the host). Detection, the CondInst dynamic mask head, linking and everything after stay
on the host: the same code as the torch path.

The file's ``metadata_props`` hold the model config JSON, the cico version, ``T`` and the input/output names and
layouts (:data:`INPUT_LAYOUT`, :data:`OUTPUT_LAYOUTS`), so a ``.onnx`` file is a ``--weights`` like a checkpoint.

The export goes through ``torch.export`` (``torch.onnx.export(..., dynamo=True)``); the 3D convolutions run their
``"taps"`` form (plain 2D convolutions, which every ONNX runtime optimises), never the float32-CPU Winograd one.
With ``dynamic_size`` the batch, height and width are symbolic; heights and widths must be multiples of 32 (the
FPN's coarsest input is stride 32; P6/P7 round up, as the anchors do).
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..fileio import atomic_write
from .config import ModelConfig
from .convolution import set_implementations
from .network import CiCo

FORMAT = "cico-onnx"
FORMAT_VERSION = 1
INPUT_NAME = "clips"
INPUT_LAYOUT = "[B, T, 3, H, W] float32, normalised, zero-padded at the bottom/right to multiples of 32"
OUTPUT_LAYOUTS: dict[str, str] = {
    "loc": "[B*T, N, 4*T] encoded box tubes",
    "conf": "[B*T, N, C] (sigmoid) or [B*T, N, C+1] (softmax) class logits",
    "centerness": "[B*T, N, 1] after sigmoid",
    "mask_coeff": "[B*T, N, D] after tanh (Yolact coefficients or CondInst dynamic parameters)",
    "track": "[B*T, N, E] L2-normalised track embeddings",
    "proto": "[B, H/4, W/4, T, D'] clip prototypes (Yolact) or mask features (CondInst)",
}
OUTPUT_NAMES = tuple(OUTPUT_LAYOUTS)
SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class OnnxMetadata:
    """What a cico ONNX file says about itself (its ``metadata_props``).

    Attributes:
        config: the model config.
        cico_version: the cico version that exported it.
        input_shape: ``[B, T, 3, H, W]``; ``B``, ``H`` and ``W`` are names (strings) when dynamic.
        output_names: the graph's outputs in order (:data:`OUTPUT_NAMES`).
    """

    config: ModelConfig
    cico_version: str
    input_shape: tuple[int | str, ...]
    output_names: tuple[str, ...] = OUTPUT_NAMES

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of a fixed-size export, ``None`` when the size is dynamic."""
        h, w = self.input_shape[3:]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None

    @property
    def batch_clips(self) -> int | None:
        """Clips per run of a fixed-batch export, ``None`` when the batch is dynamic."""
        b = self.input_shape[0]
        return b if isinstance(b, int) else None

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries (all strings)."""
        return {
            "cico.format": FORMAT,
            "cico.format_version": str(FORMAT_VERSION),
            "cico.version": self.cico_version,
            "cico.config": json.dumps(self.config.to_dict()),
            "cico.clip_frames": str(self.config.clip_frames),
            "cico.input": json.dumps({"name": INPUT_NAME, "shape": list(self.input_shape), "layout": INPUT_LAYOUT}),
            "cico.outputs": json.dumps([{"name": n, "layout": OUTPUT_LAYOUTS[n]} for n in self.output_names]),
        }

    @classmethod
    def from_props(cls, props: dict[str, str]) -> OnnxMetadata:
        """Parse ``metadata_props``.

        Raises:
            ValueError: not a cico export, a newer format, or inconsistent entries (the message says which).
        """
        if props.get("cico.format") != FORMAT:
            raise ValueError("an ONNX model without cico metadata (export it with 'cico export')")
        version = int(props.get("cico.format_version", "0"))
        if version > FORMAT_VERSION:
            raise ValueError(f"cico ONNX format version {version} is newer than this cico supports ({FORMAT_VERSION})")
        try:
            config = ModelConfig.from_dict(json.loads(props["cico.config"]))
            shape = tuple(json.loads(props["cico.input"])["shape"])
            outputs = tuple(o["name"] for o in json.loads(props["cico.outputs"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"corrupt cico metadata ({type(err).__name__}: {err})") from None
        if len(shape) != 5 or shape[1] != config.clip_frames or int(props.get("cico.clip_frames", -1)) != shape[1]:
            raise ValueError(f"inconsistent cico metadata: input shape {list(shape)} for a model of "
                             f"{config.clip_frames}-frame clips")
        if outputs != OUTPUT_NAMES:
            raise ValueError(f"unexpected outputs {list(outputs)} (expected {list(OUTPUT_NAMES)})")
        return cls(config, props.get("cico.version", "?"), shape, outputs)


class RawClipNetwork(nn.Module):
    """``clips [B, T, 3, H, W]`` -> the tuple of :data:`OUTPUT_NAMES` tensors: :meth:`CiCo.forward_raw` without the
    anchors (their per-size cache would freeze the input size into the graph; the host rebuilds them)."""

    def __init__(self, model: CiCo) -> None:
        super().__init__()
        self.model = model

    def forward(self, clips: Tensor) -> tuple[Tensor, ...]:
        model = self.model
        frames = clips.flatten(0, 1).contiguous(memory_format=model.memory_format)
        pyramid = model.fpn(model.backbone(frames))
        loc, conf, centerness, mask_coeff, track = model.head(pyramid)
        return loc, conf, centerness, mask_coeff, track, model.protonet(pyramid[:3])


@contextlib.contextmanager
def exportable(model: CiCo) -> Iterator[RawClipNetwork]:
    """``model`` in float32 eval mode on the CPU, wrapped as :class:`RawClipNetwork`, with its convolutions in
    their plain forms (3D ``"taps"``, 2D ``"direct"``; no Winograd) while the context lasts."""
    model = model.to("cpu", torch.float32).eval()
    saved = set_implementations(model, conv3d="taps", conv2d="direct")
    try:
        yield RawClipNetwork(model).eval()
    finally:
        for module, implementation in saved:
            module.implementation = implementation


def dynamic_dims() -> dict[int, Any]:
    """``torch.export`` dynamic shapes of the input: symbolic batch, and height/width as multiples of 32 (the
    factor keeps every stride-2 level an exact integer for the tracer)."""
    dim = torch.export.Dim
    side = 4096 // SIZE_MULTIPLE
    return {0: dim("batch", min=1, max=64), 3: SIZE_MULTIPLE * dim("h32", min=1, max=side),
            4: SIZE_MULTIPLE * dim("w32", min=1, max=side)}


def export_onnx(model: CiCo, path: str | Path, *, size: tuple[int, int], batch_clips: int = 1,
                opset: int = 18, dynamic_size: bool = False, cico_version: str = "") -> OnnxMetadata:
    """Export ``model``'s clip network to ``path`` (written atomically) and return its metadata.

    Args:
        model: the network (any device; exported on the CPU in float32, its batch norms folded into the
            convolutions of a copy unless they already are).
        size: ``(H, W)`` padded input size, multiples of :data:`SIZE_MULTIPLE` (the traced size, and the only
            one a fixed-size export accepts).
        batch_clips: clips per run (fixed unless ``dynamic_size``).
        opset: the ONNX opset.
        dynamic_size: make ``B``, ``H`` and ``W`` symbolic.
        cico_version: stored in the metadata.

    Raises:
        ValueError: a size that is not a multiple of 32, ``batch_clips < 1``, or a graph that did not stay dynamic.
    """
    import onnx
    import onnxscript.optimizer

    height, width = size
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or min(size) < SIZE_MULTIPLE:
        raise ValueError(f"export size {height}x{width} must be multiples of {SIZE_MULTIPLE}")
    if batch_clips < 1:
        raise ValueError(f"batch_clips must be >= 1, got {batch_clips}")
    config = model.config
    # torch.export specialises dimensions of size 1: a dynamic batch is traced with 2 clips
    example = torch.zeros(max(batch_clips, 2) if dynamic_size else batch_clips, config.clip_frames, 3, height, width)
    shape: tuple[int | str, ...] = tuple(example.shape)
    if dynamic_size:
        shape = ("batch", config.clip_frames, 3, "height", "width")
    if not model.batch_norm_folded:  # a graph without BatchNormalization nodes, for any runtime
        model = model.folded_copy()
    # torch.onnx's own optimize=True runs onnxscript's pattern rewriter, which takes minutes on an R50 graph and
    # makes no faster session than constant folding alone (ONNX Runtime fuses the rest when it loads the file)
    with exportable(model) as network, torch.no_grad():
        program = torch.onnx.export(network, (example,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes={"clips": dynamic_dims()} if dynamic_size else None,
                                    optimize=False, verbose=False)
    if program is None:  # only a file-path export returns nothing
        raise RuntimeError("torch.onnx.export returned no program")
    onnxscript.optimizer.fold_constants(program.model)
    onnxscript.optimizer.remove_unused_nodes(program.model)
    proto = program.model_proto
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if dynamic_size and not all(dims[i].dim_param for i in (0, 3, 4)):  # the exporter fell back to a fixed graph
        raise ValueError("torch.export could not keep the batch, height and width dynamic; export a fixed --size")
    metadata = OnnxMetadata(config, cico_version, shape)
    onnx.helper.set_model_props(proto, metadata.to_props())
    onnx.checker.check_model(proto, full_check=True)
    with atomic_write(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return metadata

