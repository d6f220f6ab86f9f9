"""The network's parts and layouts on tiny inputs: the clip 3D convolution, anchors, output shapes and the
clip-major convention, train/eval outputs, Swin at odd sizes, frozen BN, bf16 autocast + channels_last."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import cico
from cico.data.synthetic.scene import render_video
from cico.inference.clips import Clip
from cico.inference.onnx_runtime import load_network
from cico.inference.predictor import clip_inputs
from cico.model import convolution
from cico.model.anchors import AnchorGenerator, anchor_regions, make_anchors
from cico.model.backbone import SwinBackbone
from cico.model.checkpoint import load_model, save_checkpoint
from cico.model.convolution import ClipConv3d, WinogradConv2d
from cico.model.detect import detect
from cico.model.network import CiCo
from cico.model.protonet import aligned_bilinear

DEMO_WEIGHTS = Path(cico.__file__).parent / "weights" / "demo_tiny_yolact.safetensors"


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return cico.build_model("tiny_yolact", num_classes=5).eval()


@pytest.mark.parametrize("implementation", ["taps", "winograd", "conv3d"])
@pytest.mark.parametrize("frames", [1, 2, 3, 4])
def test_clip_conv3d_equals_conv3d(frames: int, implementation: str) -> None:
    torch.manual_seed(frames)
    conv = ClipConv3d(6, 5, frames)
    conv.implementation = implementation
    ref = nn.Conv3d(6, 5, 3, padding=1).double()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2 * frames, 6, 7, 9, requires_grad=True)  # 7x9: partial Winograd tiles
    x_ref = x.detach().double().requires_grad_(True)
    y = conv(x.contiguous(memory_format=torch.channels_last))
    y_ref = ref(x_ref.unflatten(0, (2, frames)).transpose(1, 2)).transpose(1, 2).flatten(0, 1)
    torch.testing.assert_close(y, y_ref.float(), rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad.double())
    torch.testing.assert_close(x.grad, x_ref.grad.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv.bias.grad, ref.bias.grad.float(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # inference
        torch.testing.assert_close(conv(x), y_ref.float(), rtol=1e-5, atol=1e-5)
        conv.weight.mul_(2)  # nothing stale is kept of the weights
        torch.testing.assert_close(conv(x) - conv.bias[:, None, None], 2 * (y - conv.bias[:, None, None]),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("implementation", ["taps", "winograd", "conv3d"])
def test_clip_conv3d_levels_in_one_call(implementation: str) -> None:
    # A head tower's 3D conv takes every FPN level at once; each level's output is that of a call of its own (to
    # float rounding: Winograd's matrix products differ in size, and both are about 5e-6 off in float32).
    torch.manual_seed(0)
    conv = ClipConv3d(6, 5, 3)
    conv.implementation = implementation
    levels = [torch.randn(6, 6, h, w) for h, w in [(9, 13), (5, 7), (3, 4), (2, 2), (1, 1)]]
    with torch.no_grad():
        together = conv.forward_levels(levels)
        for x, y in zip(levels, together):
            torch.testing.assert_close(y, conv(x), rtol=1e-5, atol=1e-5)
            ref = F.conv3d(x.unflatten(0, (2, 3)).transpose(1, 2), conv.weight, conv.bias, padding=1)
            torch.testing.assert_close(y, ref.transpose(1, 2).flatten(0, 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="3-frame clips"):
        conv.forward_levels([levels[0], torch.zeros(4, 6, 3, 3)])
    with pytest.raises(ValueError, match="share B·T"):
        conv.forward_levels([levels[0], torch.zeros(3, 6, 3, 3)])


@pytest.mark.parametrize(("conv", "plain"), [(ClipConv3d(2, 2, 3), "taps"), (WinogradConv2d(2, 2), "direct")],
                         ids=["ClipConv3d", "WinogradConv2d"])
def test_auto_implementation(conv: nn.Module, plain: str) -> None:
    # Winograd for float32 CPU inference only
    x = torch.zeros(3, 2, 4, 4)
    assert conv.resolve_implementation(x) == plain  # gradients on: training path
    with torch.no_grad():
        assert conv.resolve_implementation(x) == "winograd"
        assert conv.resolve_implementation(x.double()) == plain
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv.resolve_implementation(x) == plain


def test_clip_conv3d_rejects_partial_clips() -> None:
    with pytest.raises(ValueError, match="3-frame clips"):
        ClipConv3d(2, 2, 3)(torch.zeros(4, 2, 5, 5))


@pytest.mark.parametrize("chunk_elements", [None, 1])
@pytest.mark.parametrize("implementation", ["winograd", "direct"])
def test_winograd_conv2d_equals_conv2d(implementation: str, chunk_elements: int | None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # every level of one forward_levels call equals nn.Conv2d, partial 4x4 tiles and channels_last included,
    # also when large maps go through Winograd one image at a time
    if chunk_elements is not None:
        monkeypatch.setattr(convolution, "_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    conv = WinogradConv2d(6, 5)
    conv.implementation = implementation
    ref = nn.Conv2d(6, 5, 3, padding=1).double()
    ref.load_state_dict(conv.state_dict())
    levels = [torch.randn(4, 6, h, w).contiguous(memory_format=torch.channels_last)
              for h, w in [(9, 13), (5, 7), (3, 4), (2, 2), (1, 1)]]
    with torch.no_grad():
        for x, y in zip(levels, conv.forward_levels(levels)):
            torch.testing.assert_close(y, ref(x.double()).float(), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(conv(x), y, rtol=1e-5, atol=1e-5)
            if chunk_elements is not None and implementation == "winograd":  # outputs made once, channels_last
                assert y.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="must share N"):
        conv.forward_levels([levels[0], torch.zeros(3, 6, 3, 3)])


def test_winograd_gradients_with_frozen_weights() -> None:
    # the kernels autograd saves for the input's gradient are tensors of their own, not the reused buffer
    torch.manual_seed(0)
    convs = [WinogradConv2d(4, 4).requires_grad_(False) for _ in range(2)]
    for conv in convs:
        conv.implementation = "winograd"
    x = torch.randn(2, 4, 6, 7, requires_grad=True)
    convs[1](convs[0](x)).square().sum().backward()
    x_ref = x.detach().requires_grad_(True)
    y_ref = x_ref
    for conv in convs:
        y_ref = F.conv2d(y_ref, conv.weight, conv.bias, padding=1)
    y_ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)


def test_anchor_regions() -> None:
    sizes = [(4, 5), (2, 3), (1, 1)]  # 2 anchors per location: 40 + 12 + 2 anchors
    anchors = torch.tensor([2 * (1 * 5 + 3) + 1, 2 * (2 * 5 + 1), 40 + 2 * (1 * 3 + 2)])
    assert anchor_regions(anchors, sizes, 2) == [(1, 3, 1, 4), (1, 2, 2, 3), None]
    assert anchor_regions(anchors[:0], sizes, 2) == [None, None, None]


def test_box_track_branches_in_windows_equal_the_whole_maps(tiny: nn.Module) -> None:
    # The towers run on each window grown by the receptive margin: inside the window the outputs are those of
    # the whole map (the interior window's crop edges are inside the map), outside they are NaN.
    torch.manual_seed(3)
    sizes = [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]
    features = [torch.randn(6, 64, h, w) for h, w in sizes]
    regions = [(8, 12, 10, 15), (0, 3, 13, 16), None, (0, 3, 0, 4), None]
    head = tiny.head
    assert head.receptive_margin == 3  # tiny_yolact: 2 tower layers + the final layer
    with torch.no_grad():
        dense = head.forward_box_track(features)
        windowed = head.forward_box_track(features, regions)
    anchors = torch.arange(dense[0].shape[1])
    inside = torch.zeros(len(anchors), dtype=torch.bool)
    start = 0
    for (h, w), region in zip(sizes, regions):
        cells = torch.arange(h * w).repeat_interleave(3)
        if region is not None:
            y0, y1, x0, x1 = region
            inside[start:start + 3 * h * w] = ((cells // w >= y0) & (cells // w < y1)
                                               & (cells % w >= x0) & (cells % w < x1))
        start += 3 * h * w
    for full, part in zip(dense, windowed):
        assert not part[:, ~inside].isfinite().any()
        torch.testing.assert_close(part[:, inside], full[:, inside], rtol=1e-5, atol=1e-5)


def test_eval_forward_computes_box_and_track_only_for_candidates() -> None:
    # CiCo.forward in eval mode finds the detections of the whole outputs, with the box/track branches run only
    # around the candidates (the shipped model on two synthetic clips); a clip without candidates skips them.
    model = load_model(DEMO_WEIGHTS)
    video = render_video(0, seed=5)
    clips = clip_inputs([Clip(0, [0, 1, 2], list(video.frames[:3]), []),
                         Clip(1, [2, 3, 4], list(video.frames[2:5]), [])], model.config)[0]
    with torch.no_grad():
        dense, out = model.forward_raw(clips), model(clips)
    sparse = out.head
    computed = sparse.loc[..., 0].isfinite()
    assert 0 < int(computed.sum()) < computed.numel() // 2
    for name in ("loc", "centerness", "mask_coeff", "track"):
        torch.testing.assert_close(getattr(sparse, name)[computed], getattr(dense, name)[computed],
                                   rtol=1e-4, atol=1e-4)  # Winograd tiles start elsewhere in a window
        assert not getattr(sparse, name)[~computed].isfinite().any()
    torch.testing.assert_close(sparse.conf, dense.conf)
    torch.testing.assert_close(sparse.proto, dense.proto)
    theirs = detect(dense, classifier="sigmoid", mask_head="yolact", config=model.config.detect)
    assert out.detections is not None and [len(d) for d in out.detections] == [len(d) for d in theirs]
    assert all(len(d) > 0 for d in theirs)
    for a, b in zip(out.detections, theirs):
        assert torch.equal(a.labels, b.labels)
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.masks, b.masks, rtol=1e-4, atol=1e-4)
    nothing = replace(model.config.detect, score_thresh=1.0)
    with torch.no_grad():
        none = model.forward_raw(clips, candidates_for=nothing)
    assert not none.loc.isfinite().any()
    assert all(len(d) == 0 for d in detect(none, classifier="sigmoid", mask_head="yolact", config=nothing))
    with pytest.raises(RuntimeError, match="inference"):
        cico.build_model("tiny_yolact").train().forward_raw(clips[:1], candidates_for=nothing)


def test_anchor_order_and_values() -> None:
    priors, levels = make_anchors([(2, 3), (1, 1)], (1.0, 0.5, 2.0))
    assert priors.shape == (3 * (6 + 1), 4) and priors.dtype == torch.float32
    assert levels.tolist() == [0] * 18 + [1] * 3
    # level 0, row y=1, column x=2, aspect ratio 0.5 is anchor (1*3 + 2)*3 + 1
    cx, cy, w, h = priors[(1 * 3 + 2) * 3 + 1].tolist()
    assert cx == pytest.approx(2.5 / 3) and cy == pytest.approx(1.5 / 2)
    assert w == pytest.approx(3 * 0.5 ** 0.5 / 3) and h == pytest.approx(3 / 0.5 ** 0.5 / 2)
    assert priors[-3:, :2].tolist() == [[0.5, 0.5]] * 3  # P7-like 1x1 level: 3-cell anchors, not clipped
    generator = AnchorGenerator((1.0, 0.5, 2.0))
    feats = [torch.zeros(1, 1, 2, 3, dtype=torch.float64), torch.zeros(1, 1, 1, 1, dtype=torch.float64)]
    first = generator(feats)
    assert first[0].dtype == torch.float64 and generator(feats)[0] is first[0]


def test_aligned_bilinear_keeps_grid_alignment() -> None:
    x = torch.arange(6.0).view(1, 1, 2, 3)
    y = aligned_bilinear(x, 2)
    assert y.shape == (1, 1, 4, 6)
    assert y[0, 0, 1::2, 1::2].tolist() == x[0, 0].tolist()  # input pixels land on odd output pixels


def test_output_shapes_and_layouts(tiny: nn.Module) -> None:
    torch.manual_seed(1)
    clips = torch.randn(2, 3, 3, 64, 96)
    with torch.no_grad():
        out, head = tiny(clips), tiny.forward_raw(clips)
    n = 3 * (8 * 12 + 4 * 6 + 2 * 3 + 1 * 2 + 1 * 1)
    assert head.loc.shape == (6, n, 12) and head.conf.shape == (6, n, 5)
    assert head.centerness.shape == (6, n, 1) and head.mask_coeff.shape == (6, n, 32)
    assert head.track.shape == (6, n, 64) and head.priors.shape == (n, 4) and head.prior_levels.shape == (n,)
    assert head.proto.shape == (2, 16, 24, 3, 32)
    assert ((head.centerness > 0) & (head.centerness < 1)).all() and (head.mask_coeff.abs() <= 1).all()
    torch.testing.assert_close(head.track.norm(dim=-1), torch.ones(6, n))
    assert (head.proto >= 0).all()
    # clip-major: swapping the clips swaps the row blocks (the 3D convs never mix clips)
    with torch.no_grad():
        swapped = tiny.forward_raw(clips.flip(0))
    torch.testing.assert_close(swapped.loc, torch.cat((head.loc[3:], head.loc[:3])), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(swapped.proto, head.proto.flip(0), rtol=1e-4, atol=1e-4)
    assert out.detections is not None and len(out.detections) == 2


def test_train_mode_returns_raw_outputs_and_gradients() -> None:
    torch.manual_seed(2)
    model = cico.build_model("tiny_condinst", num_classes=4).train()
    out = model(torch.randn(2, 3, 3, 64, 96))
    assert out.detections is None and out.head.mask_coeff.shape[-1] == 161
    loss = sum(t.float().square().mean() for t in (out.head.loc, out.head.conf, out.head.centerness,
                                                     out.head.mask_coeff, out.head.track, out.head.proto))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_input_checks(tiny: nn.Module) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny(torch.zeros(2, 3, 3, 64, 80))
    with pytest.raises(ValueError, match=r"\[B, 3, 3, H, W\]"):
        tiny(torch.zeros(2, 2, 3, 64, 96))


def test_swin_any_input_size() -> None:
    torch.manual_seed(3)
    swin = SwinBackbone(depths=(2, 2, 2, 2)).eval()
    with torch.no_grad():
        feats = swin(torch.randn(1, 3, 70, 101))  # not a multiple of 4, stages not multiples of 7
    assert [tuple(f.shape[1:]) for f in feats] == [(192, 9, 13), (384, 5, 7), (768, 3, 4)]
    assert all(torch.isfinite(f).all() for f in feats)
    state = swin.state_dict()
    assert "layers.0.blocks.0.attn.relative_position_index" in state and "norm0.weight" in state
    assert not swin.norm0.weight.requires_grad


def test_frozen_bn_option_loads_trainable_bn_weights(tiny: nn.Module) -> None:
    frozen = cico.build_model(tiny.config, frozen_bn=True).eval()
    assert isinstance(frozen.backbone.bn1, FrozenBatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.backbone.modules())
    frozen.load_state_dict(tiny.state_dict())
    x = torch.randn(2, 3, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(frozen.forward_raw(x).loc, tiny.forward_raw(x).loc, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("frozen_bn", [False, True])
def test_fold_batch_norm_keeps_the_function(tiny: nn.Module, frozen_bn: bool, tmp_path) -> None:
    model = cico.build_model(tiny.config, frozen_bn=frozen_bn)
    model.load_state_dict(tiny.state_dict())
    torch.manual_seed(5)
    for module in model.backbone.modules():  # statistics and affines far from the identity
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.2, 3.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.2)
    model.eval()
    clips = torch.randn(2, 3, 3, 64, 96)
    with torch.no_grad():
        want = model.forward_raw(clips)
        assert model.fold_batch_norm() is model and model.batch_norm_folded
        model.fold_batch_norm()  # twice: a no-op
        got = model.forward_raw(clips)
    norms = (nn.BatchNorm2d, FrozenBatchNorm2d)
    assert not any(isinstance(m, norms) for m in model.modules())
    # ResNet-18: the stem, 2 norms in each of 2 blocks in 4 stages, 3 downsamples
    assert sum(isinstance(m, nn.Identity) for m in model.backbone.modules()) == 1 + 2 * 2 * 4 + 3
    for name in ("loc", "conf", "centerness", "mask_coeff", "track", "proto"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="folded"):
        model.train()
    with pytest.raises(ValueError, match="folded"):
        save_checkpoint(tmp_path / "folded.pt", model)
    assert not (tmp_path / "folded.pt").exists()


def test_fold_batch_norm_needs_eval_mode_and_a_folded_copy_leaves_the_network_trainable(tiny: nn.Module) -> None:
    training = cico.build_model(tiny.config)
    with pytest.raises(RuntimeError, match="eval"):
        training.fold_batch_norm()
    copy = training.folded_copy()
    assert copy.batch_norm_folded and not copy.training
    assert training.training and not training.batch_norm_folded
    assert any(isinstance(m, nn.BatchNorm2d) for m in training.modules())
    training.train()  # still allowed


def test_the_inference_loader_folds(tiny: nn.Module, tmp_path) -> None:
    path = save_checkpoint(tmp_path / "tiny.pt", tiny)
    network = load_network(path)
    assert isinstance(network, CiCo) and network.batch_norm_folded and not network.training
    assert not load_model(path).batch_norm_folded  # the checkpoint reader keeps the trainable network


def test_bf16_autocast_and_channels_last(tiny: nn.Module) -> None:
    torch.manual_seed(4)
    clips = torch.randn(2, 3, 3, 64, 96)
    with torch.no_grad():
        model = cico.build_model(tiny.config).eval()
        model.load_state_dict(tiny.state_dict())
        ref = model.set_memory_format(torch.contiguous_format).forward_raw(clips)
        model.set_memory_format(torch.channels_last)
        assert model.fpn.pred_layers[0].weight.is_contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, head = model(clips), model.forward_raw(clips)
    assert head.loc.dtype == torch.bfloat16 and head.priors.dtype == torch.float32
    for name in ("loc", "conf", "centerness", "mask_coeff", "track", "proto"):
        ours, want = getattr(head, name).float(), getattr(ref, name)
        assert torch.isfinite(ours).all(), name
        assert (ours - want).abs().max() <= 0.1 * want.abs().max() + 1e-3, name
    assert out.detections is not None
    with torch.no_grad():
        torch.testing.assert_close(F.normalize(head.track.float(), dim=-1), head.track.float(), atol=2e-2, rtol=0)
