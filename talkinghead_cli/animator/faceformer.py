"""FaceFormer-style animator (Fan et al., CVPR 2022), read top-down.

audio (B, S) -> encoder -> linear to d (``audio_feature_map``) -> memory (B, T*k, d)
previous frame's offsets (B, T, V*3) -> ``vertice_map`` -> + style (``obj_vector`` of the
one-hot subject) -> + periodic positional encoding -> transformer decoder (ALiBi-style
causal bias, alignment-masked cross-attention) -> ``vertice_map_r`` (zero-initialised)
-> offsets + template.

Parameter names follow the official code, so its VOCASET/BIWI weights map onto these
modules (the audio encoder aside). One deliberate difference: the first decoder input
is ``vertice_map(0) + style`` both in training and at inference (the official code
omits ``vertice_map``'s bias at inference only).

Inference. ``predict_reference`` is the plain autoregressive loop: each step re-runs the
decoder on every frame so far, maps the last output to vertices and feeds them back.
``predict`` computes the same numbers in O(t) per step: keys/values of past frames are
cached, the cross-attention to aligned audio is precomputed, and the feedback
``vertice_map(vertice_map_r(h))`` is one (d x d) matrix, so the (V*3)-wide head runs once
over all frames at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead_cli.animator.base import Animator
from talkinghead_cli.animator.config import AnimatorConfig
from talkinghead_cli.animator.encoders import build_encoder
from talkinghead_cli.animator.layers import BiasedDecoder, periodic_encoding
from talkinghead_cli.progress import report


class FaceFormer(Animator):
    """See the module docstring. Shapes: B, S samples, T frames, V vertices, d width."""

    def __init__(self, cfg: AnimatorConfig):
        super().__init__(cfg)
        d, vdim = cfg.d_model, cfg.num_verts * 3
        self.k = cfg.audio_per_frame
        self.audio_encoder = build_encoder(cfg)
        self.audio_feature_map = nn.Linear(self.audio_encoder.out_dim, d)
        self.vertice_map = nn.Linear(vdim, d)
        self.obj_vector = nn.Linear(len(cfg.subjects), d, bias=False)
        self.transformer_decoder = BiasedDecoder(d, cfg.n_heads, cfg.ffn_dim, cfg.n_layers,
                                                 cfg.period, cfg.dropout, cross=True)
        self.vertice_map_r = nn.Linear(d, vdim)
        nn.init.zeros_(self.vertice_map_r.weight)
        nn.init.zeros_(self.vertice_map_r.bias)
        self.ppe_dropout = nn.Dropout(cfg.dropout)

    # -- pieces -------------------------------------------------------------------------
    def encode_audio(self, audio: Tensor, t: int) -> Tensor:
        """audio (B, S) -> memory (B, T*k, d), k features per mesh frame."""
        feats = self.audio_encoder(audio, t * self.k, self.fps * self.k)
        return self.audio_feature_map(feats)

    def positions(self, t: int, like: Tensor) -> Tensor:
        """Periodic positional encoding of frames 0..T-1; (T, d)."""
        pe = periodic_encoding(self.cfg.d_model, self.cfg.period, torch.arange(t, device=like.device))
        return pe.to(like.dtype)

    def style_embedding(self, style: Tensor) -> Tensor:
        """style (B, N) -> (B, 1, d)."""
        return self.obj_vector(style)[:, None]

    # -- training -----------------------------------------------------------------------
    def forward(self, audio: Tensor, template: Tensor, style: Tensor,
                target: Tensor | None = None) -> Tensor:
        """Teacher-forced prediction (B, T, V, 3) of ``target`` (B, T, V, 3).

        Without a target, runs the (differentiable) reference loop for the audio's length.
        """
        self.check_inputs(audio, template, style, target)
        if target is None:
            return self._reference_loop(audio, template, style, None, None)
        b, t = target.shape[:2]
        mem = self.encode_audio(audio, t)
        prev = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1] - template[:, None]], 1)
        x = self.vertice_map(prev.flatten(2)) + self.style_embedding(style)
        x = self.ppe_dropout(x + self.positions(t, x))
        h = self.transformer_decoder(x, mem, self.k)
        return self.vertice_map_r(h).view(b, t, -1, 3) + template[:, None]

    def training_loss(self, audio: Tensor, template: Tensor, style: Tensor,
                      target: Tensor) -> tuple[Tensor, dict[str, float], Tensor]:
        """Vertex MSE of the teacher-forced prediction: (loss, {"mse"}, verts (B, T, V, 3))."""
        pred = self(audio, template, style, target)
        loss = F.mse_loss(pred, target)
        return loss, {"mse": loss.item()}, pred

    # -- inference ----------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, audio: Tensor, template: Tensor, style: Tensor,
                num_frames: int | None = None, progress=None) -> Tensor:
        """Fast autoregressive inference with a key/value cache: (B, T, V, 3).

        Equal (to float rounding) to ``predict_reference``; O(t) work at step t, no length
        cap. ``progress(done, total)`` is called in frames.
        """
        self.check_inputs(audio, template, style)
        t_total = num_frames or self.num_frames(audio.shape[1])
        with self.evaluating():
            mem = self.encode_audio(audio, t_total)
            b, d = audio.shape[0], self.cfg.d_model
            style_emb = self.style_embedding(style)
            pe = self.positions(t_total, mem)
            state = self.transformer_decoder.start(mem, t_total, mem, self.k)
            # feedback: vertice_map(vertice_map_r(h)) folded into one (d x d) map
            w_in, w_out = self.vertice_map.weight, self.vertice_map_r.weight
            fold_w = w_in @ w_out
            fold_b = w_in @ self.vertice_map_r.bias + self.vertice_map.bias + style_emb  # (B, 1, d)
            x = (self.vertice_map.bias + style_emb).to(mem.dtype)  # (B, 1, d): zero offsets
            hs = mem.new_empty(b, t_total, d)
            fold_w = fold_w.T.expand(b, d, d)
            every = max(1, int(self.fps))
            with self.loop_threads(mem.device):
                for t in range(t_total):
                    h = self.transformer_decoder.step(x + pe[t], state, t)
                    hs[:, t] = h[:, 0]
                    x = torch.baddbmm(fold_b, h, fold_w)
                    if (t + 1) % every == 0 or t + 1 == t_total:
                        report(progress, t + 1, t_total)
            out = self.vertice_map_r(hs).view(b, t_total, -1, 3)
            return out.add_(template[:, None])  # in place: long clips make big outputs

    @torch.no_grad()
    def predict_reference(self, audio: Tensor, template: Tensor, style: Tensor,
                          num_frames: int | None = None, progress=None) -> Tensor:
        """The plain autoregressive loop, O(t^2) at step t (for tests and benchmarks)."""
        self.check_inputs(audio, template, style)
        with self.evaluating(), self.loop_threads(audio.device):
            return self._reference_loop(audio, template, style, num_frames, progress)

    def _reference_loop(self, audio: Tensor, template: Tensor, style: Tensor,
                        num_frames: int | None, progress) -> Tensor:
        """Re-run the decoder on all frames so far at every step; (B, T, V, 3)."""
        t_total = num_frames or self.num_frames(audio.shape[1])
        mem = self.encode_audio(audio, t_total)
        style_emb = self.style_embedding(style)
        pe = self.positions(t_total, mem)
        inputs = [self.vertice_map(torch.zeros_like(template.flatten(1)))[:, None] + style_emb]
        offsets = []
        for t in range(t_total):
            x = torch.cat(inputs, 1) + pe[: t + 1]
            h = self.transformer_decoder(x, mem[:, : (t + 1) * self.k], self.k)
            off = self.vertice_map_r(h[:, -1:])  # (B, 1, V*3)
            offsets.append(off)
            inputs.append(self.vertice_map(off) + style_emb)
            report(progress, t + 1, t_total)
        b = audio.shape[0]
        return torch.cat(offsets, 1).view(b, t_total, -1, 3) + template[:, None]
