"""CodeTalker-style animator (Xing et al., CVPR 2023), read top-down.

Stage 1 learns a discrete motion prior: a VQ-VAE over offset sequences (B, T, V*3).
  encoder: vertex MLP -> conv (k=5) + InstanceNorm -> transformer -> (B, T, H) with
  H = Q * C, read as Q codes of width C per frame; codebook of ``vq_codebook_size``
  entries (VOCASET: 256 x 64, Q = 16; BIWI: 256 x 128, Q = 8); decoder mirrors it back.
  Loss: L1 reconstruction + codebook/commitment (beta 0.25), as published.
Stage 2 maps speech to codes with FaceFormer's decoder family (ALiBi-biased causal
  self-attention, alignment-masked cross-attention, periodic positional encoding):
  decoder output -> ``feat_map`` (zero-initialised) -> Q code features -> quantised with
  the frozen codebook -> frozen stage-1 decoder -> offsets + template. Loss: vertex MSE +
  MSE between predicted code features and the ground truth's (``motion_weight``,
  ``reg_weight``, both 1).

Deliberate difference from the published code: our stage-1 *decoder* is causal (causal
convolution with left replicate padding, LayerNorm per frame instead of InstanceNorm
over time, ALiBi-biased causal attention instead of full attention, periodic instead of
learned positions). The published inference loop re-decodes the whole prefix at every
step and feeds back only its last frame; with a causal decoder that last frame can be
computed from a key/value cache, so ``predict`` is O(t) per step and equals the plain
loop (``predict_reference``) exactly, with no 600-frame cap.

Shapes: B batch, S samples, T frames, V vertices, H = Q*C code width per frame, d width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead_cli.animator.base import Animator
from talkinghead_cli.animator.config import AnimatorConfig
from talkinghead_cli.animator.encoders import build_encoder
from talkinghead_cli.animator.layers import (
    BiasedDecoder,
    DecoderLayer,
    periodic_encoding,
)
from talkinghead_cli.errors import UserError
from talkinghead_cli.progress import report


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook with a straight-through gradient."""

    def __init__(self, n_codes: int, dim: int, beta: float):
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(n_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_codes, 1.0 / n_codes)

    def lookup(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z: (..., C) -> nearest codes (..., C) and their indices (...)."""
        e = self.embedding.weight
        dist = (z * z).sum(-1, keepdim=True) + (e * e).sum(-1) - 2 * z @ e.T
        idx = dist.argmin(-1)
        return F.embedding(idx, e), idx

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z: (B, N, C) -> (quantised (B, N, C) straight-through, VQ loss, indices (B, N))."""
        zq, idx = self.lookup(z)
        loss = self.beta * F.mse_loss(zq.detach(), z) + F.mse_loss(zq, z.detach())
        return z + (zq - z).detach(), loss, idx


class MotionEncoder(nn.Module):
    """Offsets (B, T, V*3) -> (B, T, H). Bidirectional, as published."""

    def __init__(self, cfg: AnimatorConfig):
        super().__init__()
        h = cfg.vq_hidden
        self.vertice_mapping = nn.Sequential(nn.Linear(cfg.num_verts * 3, h), nn.LeakyReLU(cfg.neg_slope))
        self.squasher = nn.Sequential(nn.Conv1d(h, h, 5, padding=2, padding_mode="replicate"),
                                      nn.LeakyReLU(cfg.neg_slope), nn.InstanceNorm1d(h, affine=False))
        self.encoder_linear_embedding = nn.Linear(h, h)
        self.layers = nn.ModuleList(DecoderLayer(h, cfg.vq_heads, cfg.vq_ffn, cfg.dropout, cross=False)
                                    for _ in range(cfg.vq_layers))
        self.period = cfg.period

    def forward(self, offsets: Tensor) -> Tensor:
        x = self.vertice_mapping(offsets)
        x = self.squasher(x.transpose(1, 2)).transpose(1, 2)
        x = self.encoder_linear_embedding(x)
        pos = torch.arange(x.shape[1], device=x.device)
        x = x + periodic_encoding(x.shape[-1], self.period, pos).to(x.dtype)
        for layer in self.layers:
            x = layer(x, None)
        return x


class MotionDecoder(nn.Module):
    """Quantised codes (B, T, H) -> hidden (B, T, H); causal so it can run frame by frame.

    ``vertice_map_reverse`` (H -> V*3) is applied by the caller.
    """

    def __init__(self, cfg: AnimatorConfig):
        super().__init__()
        h = cfg.vq_hidden
        self.expander = nn.Conv1d(h, h, 5)  # causal: left replicate padding of 4
        self.act = nn.LeakyReLU(cfg.neg_slope)
        self.norm = nn.LayerNorm(h)
        self.decoder_linear_embedding = nn.Linear(h, h)
        self.transformer = BiasedDecoder(h, cfg.vq_heads, cfg.vq_ffn, cfg.vq_layers, cfg.period,
                                         cfg.dropout, cross=False)
        self.vertice_map_reverse = nn.Linear(h, cfg.num_verts * 3)
        self.period = cfg.period

    def _embed(self, conv_out: Tensor, positions: Tensor) -> Tensor:
        """conv output (B, N, H) at ``positions`` (N,) -> transformer input (B, N, H)."""
        x = self.decoder_linear_embedding(self.norm(self.act(conv_out)))
        return x + periodic_encoding(x.shape[-1], self.period, positions).to(x.dtype)

    def forward(self, codes: Tensor) -> Tensor:
        """All frames: codes (B, T, H) -> (B, T, H)."""
        x = F.pad(codes.transpose(1, 2), (4, 0), mode="replicate")
        x = self.expander(x).transpose(1, 2)
        x = self._embed(x, torch.arange(codes.shape[1], device=codes.device))
        return self.transformer(x)

    def start(self, like: Tensor, t_max: int) -> dict:
        """State for ``step``: padded code history (B, H, T_max + 4) and caches."""
        b, h = like.shape[0], self.expander.in_channels
        return {"codes": like.new_zeros(b, h, t_max + 4), "attn": self.transformer.start(like, t_max)}

    def step(self, codes: Tensor, state: dict, t: int) -> Tensor:
        """Frames t..t+n-1: codes (B, n, H) -> (B, n, H), equal to ``forward`` of the whole
        prefix at those frames (the history of frames < t is in ``state``)."""
        n = codes.shape[1]
        hist = state["codes"]
        hist[:, :, t + 4:t + 4 + n] = codes.transpose(1, 2)
        if t == 0:  # replicate padding
            hist[:, :, :4] = codes[:, 0, :, None]
        x = F.conv1d(hist[:, :, t:t + n + 4], self.expander.weight, self.expander.bias).transpose(1, 2)
        x = self._embed(x, torch.arange(t, t + n, device=codes.device))
        return self.transformer.step(x, state["attn"], t)


class VQAutoEncoder(nn.Module):
    """Stage 1: offsets (B, T, V*3) <-> Q codes of width C per frame."""

    def __init__(self, cfg: AnimatorConfig):
        super().__init__()
        self.q, self.c = cfg.vq_face_quan_num, cfg.vq_code_dim
        self.encoder = MotionEncoder(cfg)
        self.decoder = MotionDecoder(cfg)
        self.quantize = VectorQuantizer(cfg.vq_codebook_size, cfg.vq_code_dim, cfg.vq_beta)

    def encode(self, offsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """offsets (B, T, V*3) -> (codes (B, T*Q, C), VQ loss, indices (B, T*Q))."""
        z = self.encoder(offsets)
        return self.quantize(z.reshape(z.shape[0], -1, self.c))

    def decode(self, codes: Tensor) -> Tensor:
        """codes (B, T*Q, C) -> offsets (B, T, V*3)."""
        b = codes.shape[0]
        return self.decoder.vertice_map_reverse(self.decoder(codes.reshape(b, -1, self.q * self.c)))


class CodeTalker(Animator):
    """Stage 1 (``cfg.stage == 1``): the VQ-VAE alone. Stage 2: speech -> codes -> frozen decoder.

    A stage-2 model starts from a stage-1 model's weights: ``load_stage1(state_dict)``.
    """

    def __init__(self, cfg: AnimatorConfig):
        super().__init__(cfg)
        self.vqvae = VQAutoEncoder(cfg)
        self.k = cfg.audio_per_frame
        if cfg.stage == 1:
            return
        for p in self.vqvae.parameters():
            p.requires_grad = False
        self.vqvae.eval()  # frozen prior: no dropout, ever (see ``train``)
        d = cfg.d_model
        self.audio_encoder = build_encoder(cfg)
        self.audio_feature_map = nn.Linear(self.audio_encoder.out_dim, d)
        self.vertice_map = nn.Linear(cfg.num_verts * 3, d)
        self.transformer_decoder = BiasedDecoder(d, cfg.n_heads, cfg.ffn_dim, cfg.n_layers,
                                                 cfg.period, cfg.dropout, cross=True)
        self.feat_map = nn.Linear(d, cfg.vq_hidden, bias=False)
        nn.init.zeros_(self.feat_map.weight)
        self.learnable_style_emb = nn.Embedding(len(cfg.subjects), d)
        self.ppe_dropout = nn.Dropout(cfg.dropout)

    def train(self, mode: bool = True) -> CodeTalker:
        super().train(mode)
        if self.cfg.stage == 2:
            self.vqvae.eval()  # frozen prior
        return self

    def load_stage1(self, state_dict: dict) -> None:
        """Load VQ-VAE weights from a stage-1 model's state_dict (keys ``vqvae.*``)."""
        sub = {k[len("vqvae."):]: v for k, v in state_dict.items() if k.startswith("vqvae.")}
        if not sub:
            raise UserError("the checkpoint holds no CodeTalker stage-1 (VQ-VAE) weights", None,
                            "train stage 1 first (--animator codetalker --stage 1)")
        self.vqvae.load_state_dict(sub)

    # -- pieces -------------------------------------------------------------------------
    def _need_stage2(self) -> None:
        if self.cfg.stage != 2:
            raise UserError("a CodeTalker stage-1 model (motion codebook) cannot animate speech",
                            None, "train stage 2 on top of it (--stage 2)")

    def encode_audio(self, audio: Tensor, t: int) -> Tensor:
        """audio (B, S) -> memory (B, T*k, d)."""
        return self.audio_feature_map(self.audio_encoder(audio, t * self.k, self.fps * self.k))

    def style_embedding(self, style: Tensor) -> Tensor:
        """style (B, N), one-hot or a convex mix -> (B, 1, d)."""
        return (style @ self.learnable_style_emb.weight)[:, None]

    def positions(self, t: int, like: Tensor) -> Tensor:
        pos = torch.arange(t, device=like.device)
        return periodic_encoding(self.cfg.d_model, self.cfg.period, pos).to(like.dtype)

    # -- training -----------------------------------------------------------------------
    def forward(self, audio: Tensor, template: Tensor, style: Tensor,
                target: Tensor | None = None) -> Tensor:
        """Stage 1: reconstruction of ``target``. Stage 2: teacher-forced prediction, or the
        (differentiable) reference loop without a target. Returns (B, T, V, 3)."""
        self.check_inputs(audio, template, style, target)
        if self.cfg.stage == 1:
            if target is None:
                self._need_stage2()
            return self._stage1(template, target)[0]
        if target is None:
            return self._reference_loop(audio, template, style, None, None)
        return self._teacher_forced(audio, template, style, target)[0]

    def _stage1(self, template: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t = target.shape[:2]
        codes, vq_loss, idx = self.vqvae.encode((target - template[:, None]).flatten(2))
        verts = self.vqvae.decode(codes).view(b, t, -1, 3) + template[:, None]
        return verts, vq_loss, idx

    def _teacher_forced(self, audio, template, style, target) -> tuple[Tensor, Tensor]:
        """-> (verts (B, T, V, 3), predicted code features (B, T*Q, C))."""
        b, t = target.shape[:2]
        mem = self.encode_audio(audio, t)
        prev = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1] - template[:, None]], 1)
        x = self.vertice_map(prev.flatten(2)) + self.style_embedding(style)
        x = self.ppe_dropout(x + self.positions(t, x))
        feat = self.feat_map(self.transformer_decoder(x, mem, self.k)).reshape(b, -1, self.cfg.vq_code_dim)
        codes, _, _ = self.vqvae.quantize(feat)
        verts = self.vqvae.decode(codes).view(b, t, -1, 3) + template[:, None]
        return verts, feat

    def training_loss(self, audio: Tensor, template: Tensor, style: Tensor,
                      target: Tensor) -> tuple[Tensor, dict[str, float], Tensor]:
        """Stage 1: L1 + VQ loss. Stage 2: motion MSE + code-feature MSE.

        Returns (loss, logs, verts (B, T, V, 3)); logs always hold ``mse`` (vertex MSE).
        """
        self.check_inputs(audio, template, style, target)
        if self.cfg.stage == 1:
            verts, vq_loss, idx = self._stage1(template, target)
            l1 = F.l1_loss(verts, target)
            loss = l1 + self.cfg.quant_loss_weight * vq_loss
            used = idx.unique().numel() / self.cfg.vq_codebook_size
            return loss, {"l1": l1.item(), "vq": vq_loss.item(), "codes_used": used,
                          "mse": F.mse_loss(verts, target).item()}, verts
        verts, feat = self._teacher_forced(audio, template, style, target)
        with torch.no_grad():
            feat_gt, _, _ = self.vqvae.encode((target - template[:, None]).flatten(2))
        motion = F.mse_loss(verts, target)
        reg = F.mse_loss(feat, feat_gt)
        loss = self.cfg.motion_weight * motion + self.cfg.reg_weight * reg
        return loss, {"mse": motion.item(), "reg": reg.item()}, verts

    # -- inference ----------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, audio: Tensor, template: Tensor, style: Tensor,
                num_frames: int | None = None, progress=None) -> Tensor:
        """Fast autoregressive inference (key/value caches in both decoders): (B, T, V, 3).

        Equal to ``predict_reference`` up to float rounding; ``progress`` counts frames.
        """
        self._need_stage2()
        self.check_inputs(audio, template, style)
        t_total = num_frames or self.num_frames(audio.shape[1])
        with self.evaluating():
            if self.cfg.block_frames > 1:
                return self._block_loop(audio, template, style, t_total, progress)
            return self._fast_loop(audio, template, style, t_total, progress)

    def _start_decoding(self, audio: Tensor, style: Tensor, t_total: int) -> dict:
        """Audio memory, caches of both decoders, positions and the folded feedback map."""
        mem = self.encode_audio(audio, t_total)
        b, dec = audio.shape[0], self.vqvae.decoder
        style_emb = self.style_embedding(style)
        # feedback vertice_map(vertice_map_reverse(g)) folded into one (H -> d) map
        fold_w = (self.vertice_map.weight @ dec.vertice_map_reverse.weight).T.expand(b, -1, -1)
        fold_b = self.vertice_map.weight @ dec.vertice_map_reverse.bias + self.vertice_map.bias + style_emb
        return {
            "mem": mem, "pe": self.positions(t_total, mem),
            "state": self.transformer_decoder.start(mem, t_total, mem, self.k),
            "dec_state": dec.start(mem.new_zeros(b, 1, self.cfg.vq_hidden), t_total),
            "fold_w": fold_w, "fold_b": fold_b,
            "x0": self.vertice_map.bias + style_emb,  # (B, 1, d): frame 0 sees zero offsets
            "gs": mem.new_empty(b, t_total, self.cfg.vq_hidden),
        }

    def _fast_loop(self, audio, template, style, t_total, progress) -> Tensor:
        """One frame per step; (B, T, V, 3)."""
        b, q, c = audio.shape[0], self.cfg.vq_face_quan_num, self.cfg.vq_code_dim
        dec = self.vqvae.decoder
        st = self._start_decoding(audio, style, t_total)
        mem, pe, state, dec_state = st["mem"], st["pe"], st["state"], st["dec_state"]
        fold_w, fold_b, x, gs = st["fold_w"], st["fold_b"], st["x0"], st["gs"]
        every = max(1, int(self.fps))
        with self.loop_threads(mem.device):
            for t in range(t_total):
                h = self.transformer_decoder.step(x + pe[t], state, t)
                code, _ = self.vqvae.quantize.lookup(self.feat_map(h).view(b, q, c))
                g = dec.step(code.view(b, 1, q * c), dec_state, t)
                gs[:, t] = g[:, 0]
                x = torch.baddbmm(fold_b, g, fold_w)
                if (t + 1) % every == 0 or t + 1 == t_total:
                    report(progress, t + 1, t_total)
        out = dec.vertice_map_reverse(gs).view(b, t_total, -1, 3)
        return out.add_(template[:, None])  # in place: long clips make big outputs

    def _block_loop(self, audio, template, style, t_total, progress) -> Tensor:
        """Fixed-point (Jacobi) decoding of ``block_frames`` frames per pass, exact.

        Each pass runs both decoders on a block of frames at once (the weights are read
        once per block instead of once per frame). The first frame of the block has its
        true input, so its code is right; frame j's input was computed from the previous
        pass's codes of the frames before it, so its code is right as long as those codes
        are the ones this pass finds. The pass keeps that leading run of frames (at least
        one) and guesses the rest again from its own output. Because the feedback to the
        next frame depends on the discrete codes only, a kept frame is exactly what the
        frame-by-frame loop computes.
        """
        b, q, c, hid = audio.shape[0], self.cfg.vq_face_quan_num, self.cfg.vq_code_dim, self.cfg.vq_hidden
        w, dec = self.cfg.block_frames, self.vqvae.decoder
        st = self._start_decoding(audio, style, t_total)
        mem, pe, state, dec_state = st["mem"], st["pe"], st["state"], st["dec_state"]
        fold_w, fold_b, gs = st["fold_w"], st["fold_b"], st["gs"]
        guess = st["x0"].expand(b, w, -1)  # frame 0's input is exact, the rest are guesses
        prev = None  # codes (B, m, Q) the last pass found for the frames now being decoded
        done = passes = 0
        every = max(1, int(self.fps))
        with self.loop_threads(mem.device):
            while done < t_total:
                n = min(w, t_total - done)
                h = self.transformer_decoder.step(guess[:, :n] + pe[done:done + n], state, done)
                code, idx = self.vqvae.quantize.lookup(self.feat_map(h).view(b, n, q, c))
                g = dec.step(code.view(b, n, hid), dec_state, done)
                keep = 1
                if prev is not None:
                    m = min(prev.shape[1], n - 1)
                    same = (prev[:, :m] == idx[:, :m]).flatten(2).all(-1).all(0)
                    keep += int(same.long().cumprod(0).sum())
                gs[:, done:done + keep] = g[:, :keep]
                nxt = torch.baddbmm(fold_b, g, fold_w)[:, keep - 1:]  # inputs of frames done+keep..
                guess = torch.cat([nxt, nxt[:, -1:].expand(b, w - nxt.shape[1], -1)], 1) if nxt.shape[1] < w else nxt
                prev = idx[:, keep:]
                if (done + keep) // every > done // every or done + keep == t_total:
                    report(progress, done + keep, t_total)
                done += keep
                passes += 1
        self.last_passes = passes
        out = dec.vertice_map_reverse(gs).view(b, t_total, -1, 3)
        return out.add_(template[:, None])  # in place: long clips make big outputs

    @torch.no_grad()
    def predict_reference(self, audio: Tensor, template: Tensor, style: Tensor,
                          num_frames: int | None = None, progress=None) -> Tensor:
        """The published loop: every step re-runs both decoders on the whole prefix."""
        self._need_stage2()
        self.check_inputs(audio, template, style)
        with self.evaluating(), self.loop_threads(audio.device):
            return self._reference_loop(audio, template, style, num_frames, progress)

    def _reference_loop(self, audio, template, style, num_frames, progress) -> Tensor:
        t_total = num_frames or self.num_frames(audio.shape[1])
        b = audio.shape[0]
        mem = self.encode_audio(audio, t_total)
        style_emb = self.style_embedding(style)
        pe = self.positions(t_total, mem)
        inputs = [self.vertice_map(torch.zeros_like(template.flatten(1)))[:, None] + style_emb]
        for t in range(t_total):
            x = torch.cat(inputs, 1) + pe[: t + 1]
            h = self.transformer_decoder(x, mem[:, : (t + 1) * self.k], self.k)
            feat = self.feat_map(h).reshape(b, -1, self.cfg.vq_code_dim)
            codes, _, _ = self.vqvae.quantize(feat)
            offsets = self.vqvae.decode(codes)  # (B, t+1, V*3)
            inputs.append(self.vertice_map(offsets[:, -1:]) + style_emb)
            report(progress, t + 1, t_total)
        return offsets.view(b, t_total, -1, 3) + template[:, None]
