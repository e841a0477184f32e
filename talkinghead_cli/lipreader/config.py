"""Configuration of the lip-reading expert (an Auto-AVSR-style audio-visual recogniser).

Two named sizes:

* ``tiny``: trains on a 2-core CPU (a narrow ResNet-10-shaped trunk, d=64, 1 conformer layer).
* ``base``: Auto-AVSR's published audio-visual dimensions (ResNet-18 front ends with
  widths 64-128-256-512, conformer 12 layers, d 768, 12 heads, FFN 3072, kernel 31,
  decoder 6 layers, fusion 1536 -> 8192 -> 768).

Both sizes share one module layout (and therefore one parameter-name scheme), so the
Auto-AVSR importer works for any size.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["av", "video", "audio"]

#: Frame rate the expert reads lips at, and its audio sample rate (Auto-AVSR's).
FPS = 25.0
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // int(FPS)  # 640

#: Video normalisation used by Auto-AVSR: pixel/255, then (x - mean) / std.
VIDEO_MEAN = 0.421
VIDEO_STD = 0.165


class EncoderConfig(BaseModel):
    """One conformer encoder (video or audio stream)."""

    model_config = ConfigDict(extra="forbid")

    d_model: int = 768
    heads: int = 12
    ffn_dim: int = 3072
    layers: int = 12
    conv_kernel: int = 31
    attention: Literal["rel_mha", "mha"] = "rel_mha"
    macaron: bool = True
    dropout: float = 0.1
    attn_dropout: float = 0.1

    @model_validator(mode="after")
    def _check(self) -> "EncoderConfig":
        if self.d_model % self.heads:
            raise ValueError("d_model must be divisible by heads")
        if self.conv_kernel % 2 == 0:
            raise ValueError("conv_kernel must be odd")
        return self


class ExpertConfig(BaseModel):
    """Everything needed to rebuild an expert (stored in its checkpoint)."""

    model_config = ConfigDict(extra="forbid")

    size: str = "base"
    vocab_size: int = 31
    #: channels of the 3D stem (Auto-AVSR: 64) and of the four ResNet stages.
    stem_channels: int = 64
    resnet_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    resnet_blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    activation: Literal["swish", "prelu", "relu"] = "swish"
    video_encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    audio_encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    fusion_hidden: int = 8192
    decoder_dim: int = 768
    decoder_heads: int = 12
    decoder_ffn_dim: int = 3072
    decoder_layers: int = 6
    dropout: float = 0.1
    #: modalities the model has: "av" builds both front ends and the fusion MLP.
    modalities: Literal["av", "video", "audio"] = "av"
    #: probability, per training sample, of zeroing the video (resp. audio) stream.
    #: Never both for the same sample.
    p_drop_video: float = 0.0
    p_drop_audio: float = 0.0
    #: per-utterance zero-mean unit-variance normalisation of the waveform (Auto-AVSR
    #: applies it in its data pipeline; we apply it inside the model).
    audio_layer_norm: bool = True
    fps: float = FPS
    sample_rate: int = SAMPLE_RATE

    @model_validator(mode="after")
    def _check(self) -> "ExpertConfig":
        if self.p_drop_video + self.p_drop_audio > 1.0:
            raise ValueError("p_drop_video + p_drop_audio must be <= 1")
        if self.vocab_size < 3:
            raise ValueError("vocab_size must hold at least blank, unk and sos/eos")
        return self

    @property
    def d_model(self) -> int:
        """Width of the fused encoder output (the CTC head's input)."""
        if self.modalities == "audio":
            return self.audio_encoder.d_model
        return self.video_encoder.d_model


def tiny_config(vocab_size: int = 31, modalities: str = "av", **overrides) -> ExpertConfig:
    """A CPU-trainable expert: same layout as ``base``, small widths and depths (a stem of 8
    channels, one basic block per ResNet stage with widths 8-32-64-64, one conformer layer of
    d 64, one decoder layer; 0.33 M parameters visual-only).

    Sized for the AV loss on CPU as much as for training: reading 36² lip windows it costs
    about 13 ms forward + backward per 3-second sequence on 2 cores, where the previous tiny
    (stem 16, two blocks per stage with widths 16-32-64-64, two conformer and two decoder
    layers: 0.68 M) took 26-28 ms at 44², and reads the synthetic corpus about as well
    (val CER 0.296 against 0.297; models/avtalk-expert-tiny.md)."""
    enc = dict(d_model=64, heads=4, ffn_dim=256, layers=1, conv_kernel=15)
    cfg = dict(size="tiny", vocab_size=vocab_size, stem_channels=8,
               resnet_widths=(8, 32, 64, 64), resnet_blocks=(1, 1, 1, 1), video_encoder=EncoderConfig(**enc),
               audio_encoder=EncoderConfig(**enc), fusion_hidden=256, decoder_dim=64,
               decoder_heads=4, decoder_ffn_dim=256, decoder_layers=1,
               modalities=modalities)
    cfg.update(overrides)
    return ExpertConfig(**cfg)


def base_config(vocab_size: int = 5049, modalities: str = "av", **overrides) -> ExpertConfig:
    """Auto-AVSR's published audio-visual (or visual-only) dimensions."""
    cfg = dict(size="base", vocab_size=vocab_size, modalities=modalities)
    cfg.update(overrides)
    return ExpertConfig(**cfg)


SIZES = {"tiny": tiny_config, "base": base_config}


def config_for_size(size: str, vocab_size: int, modalities: str = "av", **overrides) -> ExpertConfig:
    """Build the config of a named size; unknown names raise ``ValueError``."""
    if size not in SIZES:
        raise ValueError(f"unknown expert size {size!r}; choose one of {sorted(SIZES)}")
    return SIZES[size](vocab_size=vocab_size, modalities=modalities, **overrides)
