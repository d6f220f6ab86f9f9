"""The CiCo network: backbone -> FPN -> clip prediction head + clip mask head, and ``build_model``.

``CiCo`` takes clips ``[B, T, 3, H, W]`` (``H``, ``W`` multiples of 32, ``T`` fixed per model) and returns
:class:`~cico.model.outputs.CiCoOutputs`: the raw :class:`~cico.model.outputs.HeadOutputs` always, and in eval
mode also the per-clip detections (:func:`cico.model.detect.detect` with the config's classifier, mask
head and :class:`~cico.model.detect.DetectConfig`).

Module names: ``backbone``, ``fpn``, ``protonet`` (the reference's ``ProtoNet``) and ``head`` (the
reference's ``prediction_layers``); below those, names and shapes are the reference's, so reference state
dicts load after a prefix rename (:mod:`cico.model.checkpoint`).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .anchors import AnchorGenerator, anchor_regions
from .backbone import ResNetBackbone, build_backbone
from .config import ModelConfig, get_preset, with_overrides
from .detect import DetectConfig, candidate_index, class_probabilities, detect
from .fpn import FPN
from .head import ClipPredictionHead, Region
from .outputs import CiCoOutputs, HeadOutputs
from .protonet import ClipProtoNet


class CiCo(nn.Module):
    """Clip-in clip-out video instance segmentation network.

    Args:
        config: the model configuration (see :mod:`cico.model.config` for the presets).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.batch_norm_folded = False  # see fold_batch_norm
        self.backbone = build_backbone(config)
        self.fpn = FPN(self.backbone.out_channels, config.fpn_channels)
        self.protonet = ClipProtoNet(config.fpn_channels, config.proto_channels, config.mask_dim,
                                     config.clip_frames)
        self.head = ClipPredictionHead(
            config.fpn_channels, config.num_anchors, config.clip_frames, config.num_logits,
            config.mask_param_dim, config.track_dim, config.box_tower_layers, config.class_tower_layers,
            config.track_tower_layers, prior_prob=0.01 if config.classifier == "sigmoid" else None)
        self.anchors = AnchorGenerator(config.aspect_ratios)
        self.memory_format = torch.channels_last

    def set_memory_format(self, memory_format: torch.memory_format) -> CiCo:
        """Run the convolutions in ``memory_format``; returns ``self``.

        The default is ``torch.channels_last`` (much faster with oneDNN on CPU, and for tensor cores on GPU);
        ``torch.contiguous_format`` gives the classic NCHW layout.

        Use this instead of ``model.to(memory_format=torch.channels_last)``, which PyTorch also applies to the
        5-D weights of the 3D convolutions and then refuses. The 2D conv weights are converted, and ``forward``
        converts the input frames; activations keep the format through the network.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=memory_format)
        self.memory_format = memory_format
        return self

    def fold_batch_norm(self) -> CiCo:
        """Fold every batch norm (the ResNet backbone's and the mask head's) into the convolution before it, for
        inference; returns ``self``.

        Each ``conv -> norm`` pair becomes one convolution with weight ``w·γ/√(σ²+ε)`` and bias
        ``β − μ·γ/√(σ²+ε)`` (:func:`torch.nn.utils.fusion.fuse_conv_bn_weights`), and the norm an
        ``nn.Identity``: the eval-mode function (to float rounding) without the norms' passes over the feature
        maps. The inference loader does this (:func:`cico.load`, ``cico predict``, ``cico eval``,
        ``cico benchmark``), and the trainer's evaluation folds a copy. Irreversible: the norms' statistics are
        gone, so the network can no longer be trained (``.train()`` raises) or saved as a checkpoint. Eval mode
        only; folding twice is a no-op.
        """
        if self.training:
            raise RuntimeError("batch norms fold only in eval mode (call .eval() first)")
        if self.batch_norm_folded:
            return self
        pairs = self.protonet.conv_norm_pairs()
        if isinstance(self.backbone, ResNetBackbone):
            pairs = self.backbone.conv_norm_pairs() + pairs
        for parent, conv_name, norm_name in pairs:
            conv, norm = getattr(parent, conv_name), getattr(parent, norm_name)
            conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean,
                                                          norm.running_var, norm.eps, norm.weight, norm.bias)
            parent.add_module(norm_name, nn.Identity())
        self.batch_norm_folded = True
        return self

    def folded_copy(self) -> CiCo:
        """An eval-mode copy of the network with its batch norms folded (:meth:`fold_batch_norm`), for
        inference beside a network that must stay trainable; ``self`` is left as it is."""
        return copy.deepcopy(self).eval().fold_batch_norm()

    def train(self, mode: bool = True) -> CiCo:
        """``nn.Module.train``, refused once the batch norms are folded (their statistics are gone)."""
        if mode and self.batch_norm_folded:
            raise RuntimeError("this network's batch norms are folded into its convolutions (inference only): "
                               "load the checkpoint again to train it")
        return super().train(mode)

    def forward(self, clips: Tensor) -> CiCoOutputs:
        """Run ``clips [B, T, 3, H, W]`` (normalised, zero-padded to multiples of 32).

        Returns:
            ``CiCoOutputs(head, detections)``: ``head`` as from :meth:`forward_raw`; in eval mode
            ``detections``, one :class:`~cico.structures.Instances` per clip, and ``head`` computed with
            ``candidates_for=config.detect`` (box, centerness, mask and track outputs only where detection reads
            them, NaN elsewhere).
        """
        if self.training:
            return CiCoOutputs(self.forward_raw(clips))
        head = self.forward_raw(clips, candidates_for=self.config.detect)
        detections = detect(head, classifier=self.config.classifier, mask_head=self.config.mask_head,
                            config=self.config.detect)
        return CiCoOutputs(head, detections)

    def forward_raw(self, clips: Tensor, candidates_for: DetectConfig | None = None) -> HeadOutputs:
        """The network alone: ``clips [B, T, 3, H, W]`` -> :class:`HeadOutputs` with ``loc [B·T, N, 4T]``,
        ``conf``, ``centerness``, ``mask_coeff``, ``track`` (all ``[B·T, N, ·]``), ``priors [N, 4]``,
        ``prior_levels [N]`` and ``proto [B, H/4, W/4, T, D']``.

        ``candidates_for`` (eval mode): compute the box, centerness, mask and track branches only for the anchors
        that :func:`~cico.model.detect.detect` with these thresholds can select: the class branch runs first,
        and the box and track towers then run on one window per FPN level around its candidates
        (:meth:`~cico.model.head.ClipPredictionHead.forward_box_track`). Detection gives the same result as
        from the full outputs; the other anchors' box, centerness, mask and track outputs are NaN. A light
        clip skips most of the head's work; on a crowded one the windows grow to the whole maps.
        """
        if clips.dim() != 5 or clips.shape[1] != self.config.clip_frames or clips.shape[2] != 3:
            raise ValueError(f"expected clips [B, {self.config.clip_frames}, 3, H, W], got {list(clips.shape)}")
        height, width = clips.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"input size {height}x{width} must be a multiple of 32 (pad the clips)")
        frames = clips.flatten(0, 1).contiguous(memory_format=self.memory_format)
        pyramid = self.fpn(self.backbone(frames))
        proto = self.protonet(pyramid[:3])
        priors, prior_levels = self.anchors(pyramid)
        conf = self.head.forward_conf(pyramid)
        regions = None
        if candidates_for is not None:
            if self.training:
                raise RuntimeError("candidates_for is for inference: the losses read every anchor")
            regions = self._candidate_regions(conf, pyramid, candidates_for)
        loc, centerness, mask_coeff, track = self.head.forward_box_track(pyramid, regions)
        return HeadOutputs(loc=loc, conf=conf, centerness=centerness, mask_coeff=mask_coeff, track=track,
                           priors=priors, prior_levels=prior_levels, proto=proto)

    def _candidate_regions(self, conf: Tensor, pyramid: list[Tensor],
                           config: DetectConfig) -> list[Region | None]:
        """Per level, the window of the anchors detection with ``config`` selects in any clip (``conf
        [B·T, N, ·]`` logits)."""
        frames, num_priors = self.config.clip_frames, conf.shape[1]
        probs = class_probabilities(conf.detach(), self.config.classifier)
        anchors = torch.cat([candidate_index(clip.reshape(frames * num_priors, -1), frames, config) % num_priors
                             for clip in probs.split(frames)])
        sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in pyramid]
        return anchor_regions(anchors, sizes, self.anchors.num_anchors)


def empty_model(config: ModelConfig) -> CiCo:
    """A network on the meta device (no memory, no initialisation), for shapes and fast loading."""
    with torch.device("meta"):
        return CiCo(config)


def build_model(preset_or_config: str | ModelConfig, **overrides: Any) -> CiCo:
    """Build a CiCo network from a preset name or a :class:`ModelConfig`, with config ``overrides``.

    Example: ``build_model("tiny_yolact", num_classes=3)``, ``build_model("cico_yolact_r50_yt19")``.
    Weights are randomly initialised; load a checkpoint with :func:`cico.model.checkpoint.load_model`.
    """
    if isinstance(preset_or_config, str):
        config = get_preset(preset_or_config, **overrides)
    else:
        config = with_overrides(preset_or_config, **overrides)
    return CiCo(config)
