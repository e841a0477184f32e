"""Transformer pieces shared by the animators.

FaceFormer's decoder: periodic positional encoding (PPE), ALiBi-style self-attention bias
that grows with the period-grouped distance ``floor((i - j) / p)``, causal, and a
cross-attention *alignment* mask that lets mesh frame ``i`` see only its own ``k`` audio
features ``[i*k, (i+1)*k)``. The layers use the parameter names of
``torch.nn.TransformerDecoderLayer`` (post-norm, ReLU) so published weights map 1:1, but
compute attention themselves so that decoding can run step by step with a key/value cache.

Every layer has two paths: ``forward`` (all frames at once, masks as tensors; used for
training and by the slow reference loop) and ``step`` (one new frame against a cache;
used by ``predict``). Tests check they agree.

Shapes: B batch, T frames, S audio features (= T*k), d model width, H heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi head slopes (geometric, as in Press et al.); (H,) float32."""

    def power_of_2(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = power_of_2(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_2(closest) + alibi_slopes(2 * closest).tolist()[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def distance_bias(n_heads: int, n: int, period: int, device=None) -> Tensor:
    """Bias for distances 0..n-1: ``-slope_h * floor(dist / period)``; (H, n)."""
    dist = torch.arange(n, device=device) // period
    return -alibi_slopes(n_heads).to(device)[:, None] * dist[None, :].float()


def biased_causal_mask(n_heads: int, t: int, period: int, device=None) -> Tensor:
    """FaceFormer's temporal bias: (H, T, T) float, -inf above the diagonal."""
    i = torch.arange(t, device=device)
    dist = i[:, None] - i[None, :]
    bias = distance_bias(n_heads, t, period, device)[:, dist.clamp(min=0)]
    return bias.masked_fill((dist < 0)[None], float("-inf"))


def alignment_mask(t: int, k: int, device=None) -> Tensor:
    """Cross-attention mask: frame i sees audio features [i*k, (i+1)*k); (T, T*k) float."""
    frame_of = torch.arange(t * k, device=device) // k
    allowed = torch.arange(t, device=device)[:, None] == frame_of[None, :]
    return torch.zeros(t, t * k, device=device).masked_fill(~allowed, float("-inf"))


def band_mask(t: int, half_width: int, device=None) -> Tensor:
    """Local attention: |i - j| <= half_width; (T, T) float."""
    i = torch.arange(t, device=device)
    far = (i[:, None] - i[None, :]).abs() > half_width
    return torch.zeros(t, t, device=device).masked_fill(far, float("-inf"))


def periodic_encoding(d_model: int, period: int, positions: Tensor) -> Tensor:
    """Sinusoidal encoding of ``positions mod period`` (FaceFormer's PPE); (N, d)."""
    phase = (positions % period).float()[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, device=positions.device).float()
                    * (-math.log(10000.0) / d_model))
    pe = torch.zeros(len(positions), d_model, device=positions.device)
    pe[:, 0::2] = torch.sin(phase * div)
    pe[:, 1::2] = torch.cos(phase * div)[:, : d_model // 2]
    return pe


def _split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, N, d) -> (B, H, N, d/H)."""
    b, n, d = x.shape
    return x.view(b, n, n_heads, d // n_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, H, N, dh) -> (B, N, H*dh)."""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


class Attention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` parameters with our own (cacheable) computation."""

    def project(self, x: Tensor, which: slice) -> Tensor:
        """Apply rows ``which`` of the packed in-projection; (B, N, d) -> (B, N, len)."""
        return F.linear(x, self.in_proj_weight[which], self.in_proj_bias[which])

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """q: (B, Nq, d) projected, k/v: (B, H, Nk, dh) projected; mask (H|1, Nq, Nk)."""
        qh = _split_heads(q, self.num_heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask, dropout_p=p)
        return self.out_proj(_merge_heads(out))

    def full(self, x: Tensor, mem: Tensor, mask: Tensor | None) -> Tensor:
        """Attention of all queries x (B, T, d) over mem (B, S, d); mask (H|1, T, S)."""
        d = self.embed_dim
        k = _split_heads(self.project(mem, slice(d, 2 * d)), self.num_heads)
        v = _split_heads(self.project(mem, slice(2 * d, 3 * d)), self.num_heads)
        return self.attend(self.project(x, slice(0, d)), k, v, mask)

    def keys_values(self, mem: Tensor) -> tuple[Tensor, Tensor]:
        """Projected keys and values of mem (B, S, d): two (B, H, S, dh)."""
        d = self.embed_dim
        kv = self.project(mem, slice(d, 3 * d))
        return _split_heads(kv[..., :d], self.num_heads), _split_heads(kv[..., d:], self.num_heads)


class SelfCache:
    """Preallocated keys/values of one self-attention layer: (B*H, T_max, dh) each."""

    def __init__(self, b: int, h: int, t_max: int, dh: int, like: Tensor):
        self.k = like.new_zeros(b * h, t_max, dh)
        self.v = like.new_zeros(b * h, t_max, dh)


class DecoderLayer(nn.Module):
    """Post-norm transformer layer (ReLU FFN); cross-attention optional.

    Parameter names follow ``nn.TransformerDecoderLayer`` / ``nn.TransformerEncoderLayer``.
    """

    def __init__(self, d: int, n_heads: int, ffn: int, dropout: float, cross: bool = True,
                 activation: str = "relu"):
        super().__init__()
        self.self_attn = Attention(d, n_heads, dropout=dropout, batch_first=True)
        self.multihead_attn = Attention(d, n_heads, dropout=dropout, batch_first=True) if cross else None
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d) if cross else None
        self.dropout = nn.Dropout(dropout)
        self.act = F.relu if activation == "relu" else F.gelu

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.act(self.linear1(x))))

    def forward(self, x: Tensor, self_mask: Tensor | None, mem: Tensor | None = None,
                mem_mask: Tensor | None = None) -> Tensor:
        """All frames at once. x: (B, T, d); self_mask (H|1, T, T); mem (B, S, d)."""
        x = self.norm1(x + self.dropout(self.self_attn.full(x, x, self_mask)))
        if self.multihead_attn is None:
            return self.norm2(x + self.dropout(self._ffn(x)))
        x = self.norm2(x + self.dropout(self.multihead_attn.full(x, mem, mem_mask)))
        return self.norm3(x + self.dropout(self._ffn(x)))

    def precompute_cross(self, mem: Tensor, k: int) -> dict:
        """Per-sequence cross-attention state for ``step``; mem: (B, T*k, d).

        With one aligned feature per frame (k = 1) the softmax has a single entry, so the
        cross-attention output does not depend on the query: it is computed for all frames
        here at once, exactly.
        """
        if k == 1:
            d = mem.shape[-1]
            values = self.multihead_attn.project(mem, slice(2 * d, 3 * d))
            return {"k": 1, "all": self.multihead_attn.out_proj(values)}
        return {"k": k, "kv": self.multihead_attn.keys_values(mem)}

    def step(self, x: Tensor, cache: SelfCache, t: int, bias: Tensor | None,
             cross: dict | None = None) -> Tensor:
        """New frames t..t+n-1 (eval mode). x: (B, n, d); returns (B, n, d).

        Args:
            cache: keys/values of frames < t; frames t..t+n-1 are written here.
            bias: (B*H, n, t+n) additive self-attention bias (with -inf for the future
                inside the block), or None for no mask.
            cross: from ``precompute_cross`` (decoder layers only).
        """
        b, n, d = x.shape
        h = self.self_attn.num_heads
        dh = d // h
        qkv = self.self_attn.project(x, slice(0, 3 * d)).view(b, n, 3, h, dh)
        cache.k[:, t:t + n] = qkv[:, :, 1].transpose(1, 2).reshape(b * h, n, dh)
        cache.v[:, t:t + n] = qkv[:, :, 2].transpose(1, 2).reshape(b * h, n, dh)
        q = qkv[:, :, 0].transpose(1, 2).reshape(b * h, n, dh)
        keys, values = cache.k[:, : t + n], cache.v[:, : t + n]
        if bias is None:
            scores = torch.bmm(q, keys.transpose(1, 2)) * dh ** -0.5
        else:
            scores = torch.baddbmm(bias, q, keys.transpose(1, 2), alpha=dh ** -0.5)
        a = torch.bmm(torch.softmax(scores, -1), values).view(b, h, n, dh).transpose(1, 2)
        x = self.norm1(x + self.self_attn.out_proj(a.reshape(b, n, d)))
        if self.multihead_attn is None:
            return self.norm2(x + self._ffn(x))
        k = cross["k"]
        if k == 1:
            c = cross["all"][:, t:t + n]
        else:
            keys = cross["kv"][0][:, :, t * k:(t + n) * k]
            values = cross["kv"][1][:, :, t * k:(t + n) * k]
            mask = alignment_mask(n, k, x.device).to(x.dtype)[None]
            c = self.multihead_attn.attend(self.multihead_attn.project(x, slice(0, d)), keys, values, mask)
        x = self.norm2(x + c)
        return self.norm3(x + self._ffn(x))


class BiasedDecoder(nn.Module):
    """A stack of ``DecoderLayer`` with FaceFormer's masks (ALiBi-style causal bias with
    period ``p``; alignment-masked cross-attention when ``cross``).

    ``forward`` runs all frames (training, reference loop); ``start`` + ``step`` run one
    frame at a time with a key/value cache, O(t) work at step t.
    """

    def __init__(self, d: int, n_heads: int, ffn: int, n_layers: int, period: int,
                 dropout: float, cross: bool = True):
        super().__init__()
        self.n_heads, self.period, self.cross = n_heads, period, cross
        self.layers = nn.ModuleList(DecoderLayer(d, n_heads, ffn, dropout, cross) for _ in range(n_layers))

    def forward(self, x: Tensor, mem: Tensor | None = None, k: int = 1) -> Tensor:
        """x: (B, T, d) inputs (positions already encoded); mem: (B, T*k, d) -> (B, T, d)."""
        t = x.shape[1]
        mask = biased_causal_mask(self.n_heads, t, self.period, x.device).to(x.dtype)
        mem_mask = alignment_mask(t, k, x.device).to(x.dtype)[None] if self.cross else None
        for layer in self.layers:
            x = layer(x, mask, mem, mem_mask)
        return x

    def start(self, like: Tensor, t_max: int, mem: Tensor | None = None, k: int = 1) -> dict:
        """Empty caches for up to ``t_max`` frames; like: any (B, ., d) tensor."""
        b, d = like.shape[0], like.shape[-1]
        dh = d // self.n_heads
        bias = distance_bias(self.n_heads, t_max, self.period, like.device).to(like.dtype)
        bias = bias.repeat(b, 1)  # (B*H, T_max), batch-major like the caches
        return {
            "caches": [SelfCache(b, self.n_heads, t_max, dh, like) for _ in self.layers],
            "cross": [layer.precompute_cross(mem, k) for layer in self.layers] if self.cross else None,
            "bias_rev": bias.flip(-1), "t_max": t_max,
        }

    def step(self, x: Tensor, state: dict, t: int) -> Tensor:
        """Frames t..t+n-1 given the cache of frames < t. x: (B, n, d) -> (B, n, d)."""
        n, t_max = x.shape[1], state["t_max"]
        if n == 1:
            bias = state["bias_rev"][:, None, t_max - 1 - t:]  # (B*H, 1, t+1)
        else:
            dist = (t + torch.arange(n, device=x.device))[:, None] - torch.arange(t + n, device=x.device)
            bias = state["bias_rev"][:, t_max - 1 - dist.clamp(min=0)]  # (B*H, n, t+n)
            bias = bias.masked_fill(dist[None] < 0, float("-inf"))
        for i, layer in enumerate(self.layers):
            cross = state["cross"][i] if self.cross else None
            x = layer.step(x, state["caches"][i], t, bias, cross)
        return x


def resample_frames(x: Tensor, src_rate: float, src_offset: float, n_out: int,
                    out_rate: float) -> Tensor:
    """Linear interpolation in time.

    Args:
        x: (B, N, D), frame n centred at ``src_offset + n / src_rate`` seconds.
        n_out: output frames, frame i centred at ``(i + 0.5) / out_rate`` seconds.
    Returns:
        (B, n_out, D).
    """
    t = (torch.arange(n_out, device=x.device, dtype=torch.float64) + 0.5) / out_rate
    pos = ((t - src_offset) * src_rate).clamp(0, x.shape[1] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=x.shape[1] - 1)
    w = (pos - lo).to(x.dtype)[None, :, None]
    return x[:, lo] * (1 - w) + x[:, hi] * w


def crossfade_windows(fn: Callable[[int, int], Tensor], n: int, chunk: int, overlap: int) -> Tensor:
    """Evaluate ``fn(a, b) -> (B, b - a, D)`` on overlapping windows of [0, n) and blend.

    Windows are ``chunk`` long and overlap by ``overlap``; in each overlap the two results
    are cross-faded linearly. Returns (B, n, D).
    """
    if n <= chunk:
        return fn(0, n)
    step = chunk - overlap
    starts = list(range(0, n - overlap, step))
    out = wsum = None
    for i, a in enumerate(starts):
        b = min(a + chunk, n)
        y = fn(a, b)
        w = torch.ones(b - a, device=y.device, dtype=y.dtype)
        ramp = (torch.arange(overlap, device=y.device, dtype=y.dtype) + 0.5) / overlap
        if i > 0:
            w[:overlap] = ramp[: b - a]
        if b < n:
            w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
        if out is None:
            out = y.new_zeros(y.shape[0], n, y.shape[2])
            wsum = y.new_zeros(n)
        out[:, a:b] += y * w[None, :, None]
        wsum[a:b] += w
    return out / wsum[None, :, None]
