"""Attention layers and the conformer encoder (ESPnet / Auto-AVSR flavour).

A conformer layer (pre-norm, macaron):

    x = x + 1/2 FFN(LN(x))           # ffn1 ("macaron" half step)
    x = x + MHSA(LN(x))              # relative-position or plain self-attention
    x = x + Conv(LN(x))              # pointwise -> GLU -> depthwise(k) -> BN -> swish -> pointwise
    x = x + 1/2 FFN(LN(x))           # ffn2
    x = LN(x)

Relative positions follow Transformer-XL as used by ESPnet's ``rel_mha`` ("latest"):
score(i, j) = (q_i + u)·k_j + (q_i + v)·W_pos p(i - j), with sinusoidal p.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from talkinghead_cli.lipreader.config import EncoderConfig

LN_EPS = 1e-12  # ESPnet's LayerNorm epsilon


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """positions: (N,) float -> (N, dim) with sin at even and cos at odd channels."""
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device)
                    * -(math.log(10000.0) / dim))
    angles = positions.float()[:, None] * div[None, :]
    out = torch.zeros(positions.shape[0], dim, device=positions.device)
    out[:, 0::2] = torch.sin(angles)
    out[:, 1::2] = torch.cos(angles)
    return out


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``q, k, v, out`` projections."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.d_k = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, heads, T, d_k)."""
        return x.view(x.shape[0], x.shape[1], self.heads, self.d_k).transpose(1, 2)

    def _attend(self, scores: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """scores: (B, h, Tq, Tk), v: (B, h, Tk, d_k), mask: (B, 1|Tq, Tk) True = keep."""
        if mask is not None:
            keep = mask.unsqueeze(1)
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1).masked_fill(~keep, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        x = torch.matmul(self.dropout(attn), v)  # (B, h, Tq, d_k)
        return self.out(x.transpose(1, 2).flatten(2))

    def forward(self, query, key, value, mask=None):
        """query: (B, Tq, D), key/value: (B, Tk, D), mask: (B, 1|Tq, Tk) -> (B, Tq, D)."""
        q, k, v = self._split(self.q(query)), self._split(self.k(key)), self._split(self.v(value))
        return self._attend(q @ k.transpose(-2, -1) / math.sqrt(self.d_k), v, mask)


class RelPositionAttention(MultiHeadAttention):
    """Self-attention with relative positional scores (Transformer-XL, ESPnet ``rel_mha``)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__(dim, heads, dropout)
        self.pos = nn.Linear(dim, dim, bias=False)
        self.bias_u = nn.Parameter(torch.empty(heads, self.d_k))
        self.bias_v = nn.Parameter(torch.empty(heads, self.d_k))
        nn.init.xavier_uniform_(self.bias_u)
        nn.init.xavier_uniform_(self.bias_v)

    def forward(self, x, pos_emb, mask=None):
        """x: (B, T, D); pos_emb: (1, 2T-1, D) for offsets T-1 .. -(T-1); mask: (B, 1, T)."""
        t = x.shape[1]
        q = self.q(x).view(x.shape[0], t, self.heads, self.d_k)  # (B, T, h, d_k)
        k, v = self._split(self.k(x)), self._split(self.v(x))
        p = self.pos(pos_emb).view(1, -1, self.heads, self.d_k).transpose(1, 2)  # (1, h, 2T-1, d_k)
        content = (q + self.bias_u).transpose(1, 2) @ k.transpose(-2, -1)  # (B, h, T, T)
        position = (q + self.bias_v).transpose(1, 2) @ p.transpose(-2, -1)  # (B, h, T, 2T-1)
        # Column c of ``position`` holds offset (T-1-c); score(i, j) needs offset i-j,
        # i.e. column T-1-i+j.
        idx = torch.arange(t, device=x.device)
        cols = (t - 1 - idx[:, None] + idx[None, :]).expand(*position.shape[:2], t, t)
        position = torch.gather(position, -1, cols)
        return self._attend((content + position) / math.sqrt(self.d_k), v, mask)


class FeedForward(nn.Module):
    """Position-wise FFN: ``w_in`` -> ReLU -> dropout -> ``w_out``."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.w_in = nn.Linear(dim, hidden)
        self.w_out = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_out(self.dropout(torch.relu(self.w_in(x))))


class ConvModule(nn.Module):
    """Conformer convolution: pointwise (2C) -> GLU -> depthwise(k) -> BN -> swish -> pointwise."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.pw1 = nn.Conv1d(dim, 2 * dim, 1)
        self.dw = nn.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2, groups=dim)
        self.bn = nn.BatchNorm1d(dim)
        self.pw2 = nn.Conv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, D), mask: (B, 1, T) True = valid.

        Padded frames are zeroed right before the depthwise convolution, so that it sees
        the same zeros at a sequence's end as an unpadded sequence does.
        """
        x = nn.functional.glu(self.pw1(x.transpose(1, 2)), dim=1)
        if mask is not None:
            x = x.masked_fill(~mask, 0.0)
        x = nn.functional.silu(self.bn(self.dw(x)))
        return self.pw2(x).transpose(1, 2)


class ConformerLayer(nn.Module):
    """One pre-norm conformer block (macaron FFN, MHSA, conv module, FFN, final LN)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.d_model
        self.rel = cfg.attention == "rel_mha"
        attn_cls = RelPositionAttention if self.rel else MultiHeadAttention
        self.attn = attn_cls(d, cfg.heads, cfg.attn_dropout)
        self.ffn2 = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.ffn1 = FeedForward(d, cfg.ffn_dim, cfg.dropout) if cfg.macaron else None
        self.ff_scale = 0.5 if cfg.macaron else 1.0
        self.conv = ConvModule(d, cfg.conv_kernel)
        self.norm_ffn1 = nn.LayerNorm(d, eps=LN_EPS) if cfg.macaron else None
        self.norm_attn = nn.LayerNorm(d, eps=LN_EPS)
        self.norm_conv = nn.LayerNorm(d, eps=LN_EPS)
        self.norm_ffn2 = nn.LayerNorm(d, eps=LN_EPS)
        self.norm_out = nn.LayerNorm(d, eps=LN_EPS)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, pos_emb, mask):
        """x: (B, T, D), pos_emb: (1, 2T-1, D) or None, mask: (B, 1, T) -> (B, T, D)."""
        if self.ffn1 is not None:
            x = x + self.ff_scale * self.dropout(self.ffn1(self.norm_ffn1(x)))
        h = self.norm_attn(x)
        h = self.attn(h, pos_emb, mask) if self.rel else self.attn(h, h, h, mask)
        x = x + self.dropout(h)
        x = x + self.dropout(self.conv(self.norm_conv(x), mask))
        x = x + self.ff_scale * self.dropout(self.ffn2(self.norm_ffn2(x)))
        return self.norm_out(x)


class ConformerEncoder(nn.Module):
    """Front-end features -> ``input_proj`` -> scaled + positions -> N conformer layers -> LN."""

    def __init__(self, in_dim: int, cfg: EncoderConfig):
        super().__init__()
        self.d_model = cfg.d_model
        self.rel = cfg.attention == "rel_mha"
        self.input_proj = nn.Linear(in_dim, cfg.d_model)
        self.pos_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=LN_EPS)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """feats: (B, T, C_in), mask: (B, 1, T) True = valid -> (B, T, D)."""
        x = self.input_proj(feats) * math.sqrt(self.d_model)
        t = x.shape[1]
        if self.rel:
            offsets = torch.arange(t - 1, -t, -1, device=x.device)
            pos_emb = self.pos_dropout(sinusoid(offsets, self.d_model).to(x.dtype)[None])
        else:
            pos = sinusoid(torch.arange(t, device=x.device), self.d_model).to(x.dtype)
            x, pos_emb = x + pos[None], None
        x = self.pos_dropout(x)
        for layer in self.layers:
            x = layer(x, pos_emb, mask)
        return self.final_norm(x)
