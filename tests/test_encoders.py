"""Audio encoders: log-mel, mel encoder chunking, transformers encoders loaded by path."""

import numpy as np
import pytest
import torch

from talkinghead_cli.animator import AnimatorConfig, build_animator
from talkinghead_cli.animator.encoders import (
    LogMel,
    MelEncoder,
    crossfade_windows,
    mel_filterbank,
    resample_frames,
)
from talkinghead_cli.errors import UserError


def test_mel_filterbank_peaks_in_order_and_covers_band():
    fb = mel_filterbank(16000, 400, 80)
    assert fb.shape == (80, 201) and (fb >= 0).all() and fb.max() <= 1.0 + 1e-6
    peaks = fb.argmax(1)
    assert (peaks[1:] >= peaks[:-1]).all()
    assert (fb.sum(0)[2:-2] > 0).all()  # every inner frequency bin feeds some band


def test_logmel_puts_a_tone_in_the_right_band():
    sr = 16000
    t = torch.arange(sr) / sr
    mel = LogMel(sr)(torch.sin(2 * torch.pi * 1000 * t)[None])
    assert mel.shape == (1, 101, 80)
    centre_hz = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 82)[1:-1] / 2595) - 1)
    expect = int(np.argmin(np.abs(centre_hz - 1000)))
    assert abs(int(mel[0, 50].argmax()) - expect) <= 1


def test_resample_frames_is_linear_in_time():
    x = torch.arange(10.0)[None, :, None]  # value = frame index, 50 Hz, frame n at n/50 s
    y = resample_frames(x, 50.0, 0.0, 6, 30.0)[0, :, 0]
    expect = ((torch.arange(6) + 0.5) / 30 * 50).clamp(max=9)  # held at the last frame
    torch.testing.assert_close(y, expect)


def test_mel_encoder_windows_equal_one_pass():
    torch.manual_seed(0)
    enc = MelEncoder(16000, dim=16, n_layers=2, n_heads=2, window=8).eval()
    audio = torch.randn(1, 16000 * 14) * 0.1  # 700 encoder frames > one 256-frame window
    with torch.no_grad():
        chunked = enc.features(audio)
        enc.chunk = 10**6
        whole = enc.features(audio)
    assert chunked.shape == whole.shape == (1, 701, 16)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_crossfade_blends_overlaps_and_keeps_exact_windows_exact():
    signal = torch.randn(1, 100, 3)
    calls = []

    def exact(a, b):
        calls.append((a, b))
        return signal[:, a:b]

    out = crossfade_windows(exact, 100, chunk=30, overlap=10)
    torch.testing.assert_close(out, signal)
    assert calls[0] == (0, 30) and calls[1] == (20, 50) and calls[-1][1] == 100

    out = crossfade_windows(lambda a, b: torch.full((1, b - a, 1), float(a)), 50, chunk=30, overlap=10)
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 20
    middle = out[0, 20:30, 0]
    assert (middle[1:] > middle[:-1]).all()  # a ramp from the first window to the second


TINY_W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
def test_hf_encoder_loads_from_local_folder(tmp_path, family):
    import transformers

    name = {"wav2vec2": "Wav2Vec2", "hubert": "Hubert", "wavlm": "WavLM"}[family]
    config = getattr(transformers, f"{name}Config")(**TINY_W2V)
    torch.manual_seed(0)
    getattr(transformers, f"{name}Model")(config).save_pretrained(tmp_path)
    cfg = AnimatorConfig(num_verts=10, subjects=["A"], encoder=f"hf:{tmp_path}", period=7)
    model = build_animator(cfg)
    enc = model.audio_encoder
    assert cfg.encoder_config["model_type"] == config.model_type
    assert all(not p.requires_grad for p in enc.model.feature_extractor.parameters())
    assert any(p.requires_grad for p in enc.model.encoder.parameters())
    assert (enc.rate, enc.offset) == (50.0, 400 / 2 / 16000)

    audio = torch.randn(1, 16000) * 0.1
    feats = enc(audio, 30, 30.0)
    assert feats.shape == (1, 30, 32)
    torch.nn.init.normal_(model.vertice_map_r.weight, std=0.05)
    template, style = torch.randn(1, 10, 3), torch.ones(1, 1)
    torch.testing.assert_close(model.predict(audio, template, style),
                               model.predict_reference(audio, template, style), atol=1e-5, rtol=0)
    # a checkpoint rebuilds from the stored config alone: the folder is not read again
    again = build_animator(AnimatorConfig(**{**cfg.model_dump(), "encoder": "hf:/nonexistent"}))
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.predict(audio, template, style), model.predict(audio, template, style))


def test_hf_encoder_long_audio_runs_in_windows(tmp_path):
    import transformers

    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY_W2V)).save_pretrained(tmp_path)
    cfg = AnimatorConfig(num_verts=10, subjects=["A"], encoder=f"hf:{tmp_path}", chunk_seconds=3)
    enc = build_animator(cfg).audio_encoder.eval()
    seen = []
    inner = enc._encode
    enc._encode = lambda a, n, r: seen.append(a.shape[1]) or inner(a, n, r)
    with torch.no_grad():
        out = enc(torch.randn(1, 16000 * 8) * 0.1, 240, 30.0)
    assert out.shape == (1, 240, 32) and torch.isfinite(out).all()
    assert len(seen) == 4 and max(seen) <= 3 * 16000  # 3 s windows overlapping by 0.73 s


def test_missing_hf_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load the speech encoder"):
        build_animator(AnimatorConfig(num_verts=10, subjects=["A"], encoder=f"hf:{tmp_path}/none"))
