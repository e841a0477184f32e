"""Front ends of the expert: a 3D-conv + 2D ResNet for lips, a 1D ResNet for the waveform.

Both follow Auto-AVSR (ResNet-18 layout: four stages of two basic blocks, strides
1, 2, 2, 2). The video front end applies its 2D trunk to every frame independently and
pools each frame to one vector; the audio front end turns 640 waveform samples (one
25 fps video frame at 16 kHz) into one vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_activation(kind: str, channels: int) -> nn.Module:
    """``swish`` (SiLU), ``prelu`` (one slope per channel) or ``relu``."""
    if kind == "swish":
        return nn.SiLU()
    if kind == "prelu":
        return nn.PReLU(num_parameters=channels)
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {kind!r}")


class BasicBlock(nn.Module):
    """Residual block of two 3x3 convolutions, in 2D (``dims=2``) or 1D (``dims=1``)."""

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str, dims: int):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.act1 = make_activation(activation, c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.act2 = make_activation(activation, c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, *spatial) -> (N, C_out, *spatial / stride)."""
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act2(y + self._skip(x))

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return x
        proj, s = self.shortcut[0], self.shortcut[0].stride[0]
        if s == 1 or not proj.weight.requires_grad:
            return self.shortcut(x)
        # Training a strided projection: the 1x1 convolution runs on the subsampled input, the
        # same sums as the strided 1x1 convolution (its reference; a test compares them). The
        # strided one's weight gradient corrupts the heap in PyTorch 2.13's oneDNN path for 8
        # input channels, channels-last and even sizes (found training the 8-channel tiny expert).
        conv = F.conv2d if x.dim() == 4 else F.conv1d
        return self.shortcut[1](conv(x[..., ::s, ::s] if x.dim() == 4 else x[..., ::s], proj.weight, proj.bias))


class ResNetTrunk(nn.Module):
    """Four stages (``stage1`` .. ``stage4``) of basic blocks; stage strides 1, 2, 2, 2."""

    def __init__(self, c_in: int, widths, blocks, activation: str, dims: int):
        super().__init__()
        stages = []
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(c_in, width, stride, activation, dims)]
            layers += [BasicBlock(width, width, 1, activation, dims) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


def stem_as_2d(frames: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """A one-channel ``Conv3d`` with temporal stride 1, computed as a 2D convolution over frames.

    Output frame ``t`` of the 3D convolution sees input frames ``t - p .. t - p + k - 1`` (``k``
    the temporal kernel, ``p`` its padding, zeros outside): stacking those ``k`` frames as the
    channels of a 2D image and convolving with the kernel's ``k`` temporal slices as the 2D
    kernel's input channels gives the same sums. On CPU this is the fast path: PyTorch's
    gradient of a 3D convolution with one input channel w.r.t. its input runs ~20x slower than
    its forward pass, the 2D form's ~3x (channels-last). A frozen stem (no gradient for the
    weight, square kernel, equal strides > 1) takes its frames' gradient from
    :class:`_FrozenStem`. ``conv(frames.unsqueeze(1))`` is the reference; tests compare values
    and gradients.

    Args:
        frames: (B, T, H, W).
        conv: ``Conv3d(1, C, (k, kh, kw), stride (1, sh, sw), padding (p, ph, pw))``, no dilation.
    Returns:
        (B*T, C, H', W'), frame-major (the 3D output's ``(B, C, T, H', W')`` with T moved to the batch).
    """
    weight = conv.weight[:, 0].contiguous(memory_format=torch.channels_last)  # (C, k, kh, kw)
    spatial = (conv.stride[1:], conv.padding[1:], conv.padding[0])
    if not (weight.requires_grad or (conv.bias is not None and conv.bias.requires_grad)) \
            and conv.stride[1] == conv.stride[2] > 1 and conv.kernel_size[1] == conv.kernel_size[2] \
            and conv.padding[1] == conv.padding[2]:
        return _FrozenStem.apply(frames, weight.detach(), conv.bias, *spatial)
    return F.conv2d(_stacked(frames, weight.shape[1], conv.padding[0]), weight, conv.bias,
                    stride=conv.stride[1:], padding=conv.padding[1:])


def _stacked(frames: torch.Tensor, k: int, p: int) -> torch.Tensor:
    """(B, T, H, W) -> (B*T', k, H, W) channels-last: the ``k`` frames each output frame sees
    (``p`` zero frames before and after, ``T' = T + 2p - k + 1``)."""
    t, h, w = frames.shape[1:]
    x = F.pad(frames, (0, 0, 0, 0, p, p))  # zeros before and after in time
    x = x.unfold(1, k, 1)[:, : t + 2 * p - k + 1]  # (B, T', H, W, k): the k frames of each output
    return x.reshape(-1, h, w, k).permute(0, 3, 1, 2)  # (B*T', k, H, W), channels-last in memory


def _phase_kernel(weight: torch.Tensor, s: int, pad: int) -> tuple[torch.Tensor, int, int]:
    """The gradient of a stride-``s`` convolution w.r.t. its input, as a stride-1 convolution of
    the output gradient that writes the ``s x s`` input phases as channels (space-to-depth).

    Input row ``s*a + r`` (phase ``r``) gets ``sum_d W[u] G[a + d]`` with ``u = r + pad - s*d``
    for every ``d`` that puts ``u`` inside the kernel: ``d`` runs over one window of ``K`` rows
    for all phases, so the phases are the output channels of one ``K x K`` convolution.

    Args:
        weight: (C, k, kh, kw), kh == kw.
    Returns:
        kernel (k*s*s, C, K, K) with output channel ``(j*s + r)*s + r'`` for input channel
        ``j`` and phases ``(r, r')``, the lowest ``d``, and ``K``.
    """
    c, k, kh = weight.shape[:3]
    d_lo, d_hi = -((kh - 1 - pad) // s), (s - 1 + pad) // s
    d = torch.arange(d_lo, d_hi + 1)
    u = torch.arange(s)[:, None] + pad - s * d  # (s, K): the kernel row each phase reads
    inside = (u >= 0) & (u < kh)
    padded = F.pad(weight, (0, 1, 0, 1))  # index kh: a zero row / column
    u = torch.where(inside, u, kh)
    kern = padded[:, :, u][:, :, :, :, u]  # (C, k, s, K, s, K)
    return kern.permute(1, 2, 4, 0, 3, 5).reshape(k * s * s, c, len(d), len(d)), int(d_lo), len(d)


class _FrozenStem(torch.autograd.Function):
    """:func:`stem_as_2d` for a weight that takes no gradient (a frozen expert), with the
    gradient w.r.t. the frames computed by :func:`_phase_kernel`'s stride-1 convolution instead
    of oneDNN's strided backward pass (~2x faster on CPU for the 7x7 stride-2 stem), and the
    ``k`` stacked frames summed back onto the frames directly. The autograd of
    :func:`_stacked` + ``F.conv2d`` is the reference; a test compares the gradients."""

    @staticmethod
    def forward(ctx, frames, weight, bias, stride, padding, t_pad):
        ctx.save_for_backward(weight)
        ctx.geometry = frames.shape, stride[0], padding[0], t_pad
        return F.conv2d(_stacked(frames, weight.shape[1], t_pad), weight, bias, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        (b, t, h, w), s, pad, t_pad = ctx.geometry
        k = weight.shape[1]
        kern, d_lo, K = _phase_kernel(weight, s, pad)
        rows, cols = -(-h // s), -(-w // s)  # input rows / columns per phase
        oh, ow = grad.shape[2:]
        # one symmetric padding P; output o starts its window at o - P, ours start at a + d_lo
        P = max(-d_lo, rows - 1 + d_lo + K - oh, cols - 1 + d_lo + K - ow, 0)
        y = F.conv2d(grad.contiguous(memory_format=torch.channels_last),
                     kern.to(grad.dtype).contiguous(memory_format=torch.channels_last), padding=P)
        y = y[:, :, P + d_lo: P + d_lo + rows, P + d_lo: P + d_lo + cols]  # (B*T', k*s*s, rows, cols)
        t_out = y.shape[0] // b
        y = y.permute(0, 2, 3, 1).reshape(b, t_out, rows, cols, k, s, s)
        acc = y.new_zeros(b, t_out + k - 1, rows, cols, s, s)  # frames with the time padding
        for j in range(k):  # output frame i's stacked frame j is padded frame i + j
            acc[:, j: j + t_out] += y[:, :, :, :, j]
        g = acc[:, t_pad: t_pad + t].permute(0, 1, 2, 4, 3, 5).reshape(b, t, rows * s, cols * s)
        return g[:, :, :h, :w], None, None, None, None, None


class VideoFrontend(nn.Module):
    """Conv3d(1 -> C, kernel (5,7,7), stride (1,2,2)) + BN + act + max-pool, then a 2D ResNet per frame."""

    def __init__(self, stem_channels: int, widths, blocks, activation: str):
        super().__init__()
        self.stem_conv = nn.Conv3d(1, stem_channels, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False)
        self.stem_bn = nn.BatchNorm3d(stem_channels)
        self.stem_act = make_activation(activation, stem_channels)
        self.stem_pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        self.trunk = ResNetTrunk(stem_channels, widths, blocks, activation, dims=2)
        self.out_dim = self.trunk.out_channels
        self.fast_stem = True  # CPU: the stem through stem_as_2d (False: always the 3D reference)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: (B, T, H, W) normalised grayscale -> features (B, T, C_out)."""
        b, t = frames.shape[:2]
        conv = self.stem_conv
        if self.fast_stem and frames.device.type == "cpu" and conv.stride[0] == 1 and conv.dilation == (1, 1, 1) \
                and conv.padding_mode == "zeros":
            # (B*T, C, 1, H', W'): the batch norm and pooling of the 3D layout, with T as batch
            x = stem_as_2d(frames, conv).unsqueeze(2)
            x = self.stem_pool(self.stem_act(self.stem_bn(x))).squeeze(2)
        else:  # the reference (and what cuDNN runs well)
            x = self.stem_pool(self.stem_act(self.stem_bn(conv(frames.unsqueeze(1)))))
            x = x.transpose(1, 2).flatten(0, 1)  # (B*T, C, H', W')
        x = self.trunk(x).mean(dim=(2, 3))  # global average pool per frame
        return x.view(b, t, -1)


class AudioFrontend(nn.Module):
    """1D ResNet on the raw waveform: conv(k=80, stride 4) + 3 stride-2 stages + avg-pool 20.

    Total stride 4 * 8 * 20 = 640 samples, i.e. one feature per 25 fps video frame.
    """

    samples_per_frame = 640

    def __init__(self, widths, blocks, activation: str):
        super().__init__()
        self.stem_conv = nn.Conv1d(1, widths[0], kernel_size=80, stride=4, padding=38, bias=False)
        self.stem_bn = nn.BatchNorm1d(widths[0])
        self.stem_act = make_activation(activation, widths[0])
        self.trunk = ResNetTrunk(widths[0], widths, blocks, activation, dims=1)
        self.pool = nn.AvgPool1d(kernel_size=20, stride=20)
        self.out_dim = self.trunk.out_channels

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave: (B, S) at 16 kHz -> features (B, S // 640, C_out)."""
        s = wave.shape[1] // self.samples_per_frame * self.samples_per_frame
        x = wave[:, :s].unsqueeze(1)
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        x = self.pool(self.trunk(x))
        return x.transpose(1, 2)
