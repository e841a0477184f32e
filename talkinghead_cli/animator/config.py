"""Animator configuration.

One pydantic model describes every animator. ``size`` picks a preset of layer sizes
(``tiny`` for CPU work, ``vocaset`` and ``biwi`` as published); any size field left at
``None`` is filled from the preset, and any can be set by hand. The resolved config is
stored in checkpoints (``cfg.model_dump()``), so a model rebuilds from it exactly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

# Published sizes. FaceFormer (Fan et al. 2022): feature_dim 64 / period 30 for VOCASET,
# 128 / 25 for BIWI, 4 heads, 1 decoder layer, FFN 2*d, BIWI aligns 2 audio features per
# frame. CodeTalker (Xing et al. 2023): VQ-VAE hidden 1024, 6 layers, 8 heads, FFN 1536,
# codebook 256 x 64 with 16 codes per frame (VOCASET) or 256 x 128 with 8 (BIWI); stage 2
# decoder feature_dim 1024, 6 layers, 4 heads.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        d_model=32, n_heads=4, n_layers=1, ffn_dim=64, period=30, audio_per_frame=1,
        mel_dim=64, mel_layers=2, mel_heads=4, mel_window=16,
        vq_hidden=64, vq_layers=1, vq_heads=4, vq_ffn=128, vq_face_quan_num=4,
        vq_code_dim=16, vq_codebook_size=64,
    ),
    "vocaset": dict(
        d_model=64, n_heads=4, n_layers=1, ffn_dim=128, period=30, audio_per_frame=1,
        mel_dim=256, mel_layers=4, mel_heads=4, mel_window=25,
        vq_hidden=1024, vq_layers=6, vq_heads=8, vq_ffn=1536, vq_face_quan_num=16,
        vq_code_dim=64, vq_codebook_size=256,
    ),
    "biwi": dict(
        d_model=128, n_heads=4, n_layers=1, ffn_dim=256, period=25, audio_per_frame=2,
        mel_dim=256, mel_layers=4, mel_heads=4, mel_window=25,
        vq_hidden=1024, vq_layers=6, vq_heads=8, vq_ffn=1536, vq_face_quan_num=8,
        vq_code_dim=128, vq_codebook_size=256,
    ),
}
# CodeTalker's stage-2 decoder is wider than FaceFormer's at the published sizes.
CODETALKER_STAGE2 = {
    "tiny": dict(d_model=32, n_heads=4, n_layers=1, ffn_dim=64),
    "vocaset": dict(d_model=1024, n_heads=4, n_layers=6, ffn_dim=2048),
    "biwi": dict(d_model=1024, n_heads=4, n_layers=6, ffn_dim=2048),
}


class AnimatorConfig(BaseModel):
    """Everything needed to rebuild an animator (sizes resolved from ``size``)."""

    kind: Literal["faceformer", "codetalker"] = "faceformer"
    size: Literal["tiny", "vocaset", "biwi"] = "tiny"
    encoder: str = "mel"  # "mel", "whisper-tiny-ct2" or "hf:<hub id or local folder>"
    num_verts: int = Field(gt=0)
    subjects: list[str] = Field(min_length=1)
    fps: float = Field(30.0, gt=0)
    sample_rate: int = Field(16000, gt=0)
    stage: Literal[1, 2] = 2  # codetalker: 1 = VQ-VAE motion codebook, 2 = speech -> codes

    # decoder (FaceFormer, CodeTalker stage 2)
    d_model: int | None = None
    n_heads: int | None = None
    n_layers: int | None = None
    ffn_dim: int | None = None
    period: int | None = None
    audio_per_frame: int | None = None  # aligned audio features per mesh frame
    dropout: float = 0.1
    # mel encoder (mel_dim is also the width of whisper-tiny-ct2's trainable adapter)
    mel_dim: int | None = None
    mel_layers: int | None = None
    mel_heads: int | None = None
    mel_window: int | None = None  # attention half-width, in 50 Hz encoder frames
    # Hugging Face encoder: its config, filled on first build so checkpoints rebuild offline;
    # whisper-tiny-ct2: the pretrained part's package, version and sha256 (checked on load)
    encoder_config: dict[str, Any] | None = None
    chunk_seconds: float = Field(30.0, gt=1)  # long audio is encoded in windows this long
    loop_threads: int = Field(1, ge=0)  # CPU threads for the per-frame decoding loop (0: torch's)
    # CodeTalker VQ-VAE
    vq_hidden: int | None = None
    vq_layers: int | None = None
    vq_heads: int | None = None
    vq_ffn: int | None = None
    vq_face_quan_num: int | None = None
    vq_code_dim: int | None = None
    vq_codebook_size: int | None = None
    vq_beta: float = 0.25
    neg_slope: float = 0.2
    quant_loss_weight: float = 1.0
    motion_weight: float = 1.0
    reg_weight: float = 1.0
    block_frames: int = Field(16, ge=0)  # codetalker predict: frames per exact fixed-point pass (<= 1: one at a time)

    @model_validator(mode="after")
    def _resolve_sizes(self) -> AnimatorConfig:
        preset = dict(PRESETS[self.size])
        if self.kind == "codetalker":
            preset.update(CODETALKER_STAGE2[self.size])
        for key, value in preset.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.kind == "codetalker" and self.vq_hidden != self.vq_face_quan_num * self.vq_code_dim:
            raise ValueError("vq_hidden must equal vq_face_quan_num * vq_code_dim")
        if not (self.encoder in ("mel", "whisper-tiny-ct2") or self.encoder.startswith("hf:")):
            raise ValueError(f"encoder must be 'mel', 'whisper-tiny-ct2' or 'hf:<id or folder>', "
                             f"got {self.encoder!r}")
        return self
