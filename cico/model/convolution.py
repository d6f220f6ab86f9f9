"""The clip 3D convolution of the CiCo heads, with a fast path for float32 inference on CPU.

:class:`ClipConv3d` computes the 3D convolutions on frame-major clips ``[B·T, C, H, W]``. The reference
runs ``nn.Conv3d(F, F, 3, padding=1)`` on the cube ``[B, C, T, H, W]``; ``ClipConv3d`` keeps that layer's
parameters (``weight [out, in, 3, 3, 3]``, ``bias [out]``: same state dict, same parameter count) but never
builds the cube, and computes it in one of three ways (``implementation``):

* ``"winograd"``: per temporal tap a Winograd F(4×4, 3×3) convolution (Lavin & Gray, "Fast Algorithms for
  Convolutional Neural Networks", CVPR 2016): 6×6 input tiles and the 3×3 kernels are transformed once, each
  (frame, tap) pair is then one batched matrix product with 36 instead of 144 multiplications per 4×4 output
  tile, the taps are summed in the transformed domain, and each output frame is transformed back once.
  Taps that would read the zero temporal padding are skipped. Float32 error about 1e-5 relative.
  The kernels are transformed at each call (one matrix product), not kept: a kept copy would be 4× the weights
  (36 instead of 9 values per kernel), about 300 MB for the R50 presets' eleven 3D convs; the transform writes
  into a buffer of the calling thread that every layer reuses (a fresh tensor of that size cost more in page
  faults than the product itself);
  :meth:`ClipConv3d.forward_levels` runs several inputs (the FPN levels a head tower shares) through the same
  matrix products: their tiles are gathered into one tensor and transformed together, and the outputs are
  transformed back together. The centre tap's products are the accumulator: the other taps add theirs in
  place (``baddbmm_`` on the frames they reach), so no tensor of the tile products is made per tap.
* ``"taps"``: per temporal tap a 2D convolution (the centre tap over all frames, each other tap only over the
  frames whose neighbour exists), added to the shifted output frames; 7 instead of 9 frame-convolutions
  for ``T = 3``.
* ``"conv3d"``: ``F.conv3d`` on the cube, the reference's computation (kept for comparison).

``"auto"`` (the default) takes ``"winograd"`` for float32 inference on CPU without autocast (oneDNN's
direct convolutions already run at the FMA peak there, so fewer multiplications is the way to go faster),
and ``"taps"`` otherwise (training, GPUs, reduced precision).

The same F(4×4, 3×3) computes the 2D 3×3 convolutions of the heads and the FPN (:class:`WinogradConv2d`,
``"auto"`` picking it under the same conditions): the class tower and final layers of the prediction head,
the FPN's output layers and the mask head's 2D layers, whose inputs are the FPN width (256 channels in the R50
presets), wide enough for the matrix products to outweigh the tile transforms (the README reports the
measured speeds). A map too large for one pass (the mask head's stride-4 layer) goes through a few images at a
time, which bounds the tiles' memory. The backbone keeps torchvision's convolutions: at its 64- and 512-channel
widths Winograd measured no faster.
"""
from __future__ import annotations

import functools
import math
import threading
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# F(4x4, 3x3) on the points 0, ±1, ±2, ∞: output = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, for correlation as in CNNs
_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))
_TILE = 4  # output tile side; input tiles are _TILE + 2
_CHUNK_ELEMENTS = 1 << 24  # WinogradConv2d transforms at most about this many tile values at once (64 MiB float32)


@functools.lru_cache(maxsize=8)
def _tile_transforms(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The 2D input and output tile transforms, as matrices on flattened tiles: ``Bᵀ⊗Bᵀ [36, 36]``,
    ``Aᵀ⊗Aᵀ [16, 36]``."""
    # cached: made outside inference mode, so that a first call under torch.inference_mode() does not
    # leave inference tensors that a later autograd computation cannot use
    with torch.inference_mode(False):
        bt, at = torch.tensor(_BT, dtype=torch.float64), torch.tensor(_AT, dtype=torch.float64)
        return torch.kron(bt, bt).to(device, dtype), torch.kron(at, at).to(device, dtype)


@functools.lru_cache(maxsize=8)
def _kernel_transform(device: torch.device, dtype: torch.dtype) -> Tensor:
    """The kernel transform as a matrix on flattened 3×3 kernels: ``G⊗G [36, 9]``."""
    with torch.inference_mode(False):  # see _tile_transforms
        g = torch.tensor(_G, dtype=torch.float64)
        return torch.kron(g, g).to(device, dtype)


_workspaces = threading.local()


def _workspace(slot: int, like: Tensor, numel: int) -> Tensor:
    """This thread's reusable buffer number ``slot`` of ``numel`` elements on ``like``'s device and dtype (grown
    as needed, never shrunk)."""
    buffers: dict[tuple[int, torch.device, torch.dtype], Tensor] = _workspaces.__dict__.setdefault("buffers", {})
    key = (slot, like.device, like.dtype)
    if key not in buffers or buffers[key].numel() < numel:
        buffers.pop(key, None)
        with torch.inference_mode(False):  # usable inside and outside inference mode (see _tile_transforms)
            buffers[key] = like.new_empty(numel)
    return buffers[key][:numel]


def winograd_kernels(weight: Tensor) -> Tensor:
    """Transform 3×3 kernels ``[out, in, k, 3, 3]`` to ``[k, 36, in, out]`` (``G g Gᵀ`` as one matrix product;
    differentiable).

    With gradients off the result lives in a buffer of this thread that the next call overwrites: the transformed
    kernels of every layer are recomputed at each call rather than kept (they are 4× the weights), and a fresh
    tensor of that size costs more in page faults than the transform itself."""
    out_channels, in_channels, taps = weight.shape[:3]
    transform = _kernel_transform(weight.device, weight.dtype)
    if torch.is_grad_enabled():  # autograd may save the kernels for the backward pass: a tensor of their own
        flat = weight.permute(2, 3, 4, 1, 0).reshape(taps, 9, in_channels * out_channels)
        return torch.matmul(transform, flat).view(taps, 36, in_channels, out_channels)
    size = taps * in_channels * out_channels
    flat = _workspace(0, weight, 9 * size).view(taps, 3, 3, in_channels, out_channels)
    flat.copy_(weight.permute(2, 3, 4, 1, 0))
    kernels = _workspace(1, weight, 36 * size).view(taps, 36, in_channels * out_channels)
    torch.matmul(transform, flat.view(taps, 9, -1), out=kernels)
    return kernels.view(taps, 36, in_channels, out_channels)


def winograd_tiles(xs: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
    """Input tiles of inputs ``[N, C, h_l, w_l]`` (the same ``N`` and ``C``; zero padding 1), gathered into one
    tensor and transformed with one matrix product: ``[36, N, P, C]``, the ``P = Σ th_l·tw_l`` tiles of the
    inputs in order, and each input's tile grid ``(th_l, tw_l)``."""
    n, c = xs[0].shape[:2]
    grids = [(-(-x.shape[-2] // _TILE), -(-x.shape[-1] // _TILE)) for x in xs]
    side = _TILE + 2
    raw = xs[0].new_empty(side, side, n, sum(th * tw for th, tw in grids), c)
    start = 0
    for x, (th, tw) in zip(xs, grids):
        h, w = x.shape[-2:]
        padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, _TILE * tw + 1 - w, 1, _TILE * th + 1 - h))
        tiles = padded.unfold(1, side, _TILE).unfold(2, side, _TILE)  # [N, th, tw, C, 6, 6]
        raw[:, :, :, start:start + th * tw].view(side, side, n, th, tw, c).copy_(tiles.permute(4, 5, 0, 1, 2, 3))
        start += th * tw
    b, _ = _tile_transforms(raw.device, raw.dtype)
    return (b @ raw.view(side * side, -1)).view(side * side, n, start, c), grids


def winograd_untile(m: Tensor, grids: Sequence[tuple[int, int]], sizes: Sequence[tuple[int, int]],
                    bias: Tensor | None = None) -> list[Tensor]:
    """Products ``m [36, N, P, K]`` (the tiles of several outputs in order, as from :func:`winograd_tiles`) back
    to the outputs ``[N, K, h_l, w_l]`` (channels_last memory) of tile grids ``grids`` and sizes ``sizes``, plus
    ``bias [K]``."""
    _, n, _, k = m.shape
    _, a = _tile_transforms(m.device, m.dtype)
    y = a @ m.reshape(36, -1)  # [16, N·P·K], all outputs in one product
    if bias is not None:
        y = y.view(-1, k).add_(bias)  # before the layout copy: one pass less
    y = y.view(_TILE, _TILE, n, -1, k)
    outputs, start = [], 0
    for (th, tw), (h, w) in zip(grids, sizes):
        level = y[:, :, :, start:start + th * tw].unflatten(3, (th, tw))  # [4, 4, N, th, tw, K]
        level = level.permute(2, 3, 0, 4, 1, 5).reshape(n, _TILE * th, _TILE * tw, k)[:, :h, :w]
        outputs.append(level.permute(0, 3, 1, 2))
        start += th * tw
    return outputs


def winograd_pays(x: Tensor) -> bool:
    """Whether ``"auto"`` takes Winograd for input ``x``: float32 inference on CPU without autocast."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu"))


class WinogradConv2d(nn.Conv2d):
    """``nn.Conv2d(in, out, 3, padding=1)`` (the same parameters and state dict) that computes float32 CPU
    inference with Winograd F(4×4, 3×3): one batched matrix product over the 36 transformed tile positions
    instead of a direct convolution (see the module docstring); float32 error about 1e-5 relative.
    ``implementation``: ``"auto"`` (Winograd where :func:`winograd_pays`, else ``nn.Conv2d``), ``"winograd"``
    or ``"direct"``.

    Args:
        in_channels, out_channels: channels.
        bias: add a learnable bias.
    """

    implementation: str = "auto"

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)

    def resolve_implementation(self, x: Tensor) -> str:
        """The implementation used for input ``x``: ``implementation``, or what ``"auto"`` picks for it."""
        if self.implementation != "auto":
            return self.implementation
        return "winograd" if winograd_pays(x) else "direct"

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, in, H, W]`` -> ``[N, out, H, W]``."""
        return self.forward_levels([x])[0]

    def forward_levels(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """The convolution of several inputs ``[N, in, h_l, w_l]`` with the same ``N`` (the FPN levels a head
        tower shares): with Winograd their tiles go through one matrix product per tile position."""
        if not xs:
            return []
        if any(x.shape[0] != xs[0].shape[0] for x in xs):
            raise ValueError(f"inputs of {[x.shape[0] for x in xs]} images: the levels must share N")
        implementation = self.resolve_implementation(xs[0])
        if implementation == "direct":
            return [super(WinogradConv2d, self).forward(x) for x in xs]
        if implementation != "winograd":
            raise ValueError(f"unknown WinogradConv2d implementation {implementation!r}")
        kernels = winograd_kernels(self.weight.unsqueeze(2))[0]  # [36, in, out]
        sizes = [(x.shape[-2], x.shape[-1]) for x in xs]
        n, tiles_per_image = xs[0].shape[0], sum(-(-h // _TILE) * -(-w // _TILE) for h, w in sizes)
        step = max(1, _CHUNK_ELEMENTS // (36 * tiles_per_image * max(self.in_channels, self.out_channels)))
        if step >= n:
            return self._winograd_chunk(xs, kernels, sizes)
        # large maps a few images at a time, into outputs made once: the tiles and products of all images
        # together would be 4.5x the input and output
        outputs = [x.new_empty(n, self.out_channels, h, w).contiguous(memory_format=torch.channels_last)
                   for x, (h, w) in zip(xs, sizes)]
        for start in range(0, n, step):
            chunk = self._winograd_chunk([x[start:start + step] for x in xs], kernels, sizes)
            for output, part in zip(outputs, chunk):
                output[start:start + step] = part
        return outputs

    def _winograd_chunk(self, xs: Sequence[Tensor], kernels: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
        tiles, grids = winograd_tiles(xs)  # [36, N, P, in]
        products = torch.bmm(tiles.flatten(1, 2), kernels).view(*tiles.shape[:3], -1)
        del tiles
        return winograd_untile(products, grids, sizes, self.bias)


def set_implementations(module: nn.Module, conv3d: str,
                        conv2d: str) -> list[tuple[ClipConv3d | WinogradConv2d, str]]:
    """Set the ``implementation`` of every :class:`ClipConv3d` in ``module`` to ``conv3d`` and of every
    :class:`WinogradConv2d` to ``conv2d``; returns each one's previous setting, to restore it."""
    previous: list[tuple[ClipConv3d | WinogradConv2d, str]] = []
    for layer in module.modules():
        if isinstance(layer, (ClipConv3d, WinogradConv2d)):
            previous.append((layer, layer.implementation))
            layer.implementation = conv3d if isinstance(layer, ClipConv3d) else conv2d
    return previous


class ClipConv3d(nn.Module):
    """A ``k×k×k`` convolution (zero padding ``k//2``) over clips of ``T`` frames stored frame-major.

    Input ``[B·T, in, H, W]`` (frame ``t`` of clip ``b`` at row ``b·T + t``), output ``[B·T, out, H, W]``; equal to
    ``nn.Conv3d`` on the cube ``[B, in, T, H, W]``. See the module docstring for ``implementation``.

    Args:
        in_channels, out_channels: channels.
        clip_frames: ``T``, the frames per clip.
        kernel_size: ``k`` (odd).
        bias: add a learnable bias.
    """

    implementation: str = "auto"

    def __init__(self, in_channels: int, out_channels: int, clip_frames: int, kernel_size: int = 3,
                 bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.clip_frames, self.kernel_size = clip_frames, kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv3d``'s default initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"clip_frames={self.clip_frames}, bias={self.bias is not None}")

    def resolve_implementation(self, x: Tensor) -> str:
        """The implementation used for input ``x``: ``implementation``, or what ``"auto"`` picks for it."""
        if self.implementation != "auto":
            return self.implementation
        return "winograd" if self.kernel_size == 3 and winograd_pays(x) else "taps"

    def _temporal_taps(self) -> list[tuple[int, int, int, int]]:
        """``(tap, first output frame, first input frame, frames)`` of every tap that reads real frames."""
        frames, pad = self.clip_frames, self.kernel_size // 2
        taps = []
        for tap in range(self.kernel_size):
            shift = tap - pad  # output frame t reads input frame t + shift
            if abs(shift) < frames:
                taps.append((tap, max(-shift, 0), max(shift, 0), frames - abs(shift)))
        return taps

    def forward(self, x: Tensor) -> Tensor:
        """``x [B·T, in, H, W]`` -> ``[B·T, out, H, W]``."""
        return self.forward_levels([x])[0]

    def forward_levels(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """The convolution of several inputs ``[B·T, in, h_l, w_l]`` with the same ``B·T`` (the FPN levels a
        head tower shares): with Winograd their tiles go through the same matrix products, and the kernels are
        transformed once."""
        frames = self.clip_frames
        for x in xs:
            if x.shape[0] % frames:
                raise ValueError(f"{x.shape[0]} frames is not a whole number of {frames}-frame clips")
            if x.shape[0] != xs[0].shape[0]:
                raise ValueError(f"inputs of {xs[0].shape[0]} and {x.shape[0]} frames: the levels must share B·T")
        if not xs:
            return []
        implementation = self.resolve_implementation(xs[0])
        if implementation == "winograd":
            return self._forward_winograd(xs)
        if implementation == "conv3d":
            return [self._forward_conv3d(x) for x in xs]
        if implementation != "taps":
            raise ValueError(f"unknown ClipConv3d implementation {implementation!r}")
        return [self._forward_taps(x) for x in xs]

    def _forward_conv3d(self, x: Tensor) -> Tensor:
        cube = x.unflatten(0, (-1, self.clip_frames)).transpose(1, 2)
        y = F.conv3d(cube, self.weight, self.bias, padding=self.kernel_size // 2)
        return y.transpose(1, 2).flatten(0, 1)

    def _forward_taps(self, x: Tensor) -> Tensor:
        frames, pad = self.clip_frames, self.kernel_size // 2
        y = F.conv2d(x, self.weight[:, :, pad], self.bias, padding=pad)
        clips, out = x.unflatten(0, (-1, frames)), y.unflatten(0, (-1, frames))
        for tap, dst, src, count in self._temporal_taps():
            if tap != pad:
                part = F.conv2d(clips[:, src:src + count].flatten(0, 1), self.weight[:, :, tap], padding=pad)
                out[:, dst:dst + count] += part.unflatten(0, (-1, count))
        return y

    def _forward_winograd(self, xs: Sequence[Tensor]) -> list[Tensor]:
        frames, centre = self.clip_frames, self.kernel_size // 2
        kernels = winograd_kernels(self.weight)  # [k, 36, in, out]
        tiles, grids = winograd_tiles(xs)  # [36, B·T, P, in]
        clips = tiles.unflatten(1, (-1, frames))  # [36, B, T, P, in]
        out = torch.bmm(tiles.flatten(1, 2), kernels[centre]).view(36, *clips.shape[1:4], -1)  # [36, B, T, P, out]
        for tap, dst, src, count in self._temporal_taps():
            if tap != centre:
                for b in range(clips.shape[1]):  # the frame slice of one clip is a view: accumulate in place
                    out[:, b, dst:dst + count].flatten(1, 2).baddbmm_(
                        clips[:, b, src:src + count].flatten(1, 2), kernels[tap])
        del tiles, clips
        return winograd_untile(out.view(36, out.shape[1] * frames, *out.shape[3:]), grids,
                               [(x.shape[-2], x.shape[-1]) for x in xs], self.bias)
