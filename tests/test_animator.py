"""FaceFormer-style animator: masks, teacher forcing, fast inference == plain loop."""

import math

import pytest
import torch

from talkinghead_cli.animator import AnimatorConfig, build_animator
from talkinghead_cli.animator.layers import (
    alibi_slopes,
    alignment_mask,
    biased_causal_mask,
    periodic_encoding,
)
from talkinghead_cli.errors import UserError
from talkinghead_cli.style import mix_style, parse_style

V = 30


def make(k: int = 1, layers: int = 1, **kw):
    """A tiny model; period 7 so that 1 s clips (30 frames) exercise the temporal bias."""
    torch.manual_seed(0)
    kw.setdefault("period", 7)
    cfg = AnimatorConfig(num_verts=V, subjects=["A", "B", "C"], audio_per_frame=k, n_layers=layers,
                         mel_layers=1, **kw)
    model = build_animator(cfg)
    torch.nn.init.normal_(model.vertice_map_r.weight, std=0.05)  # zero at init; make it act
    torch.nn.init.normal_(model.vertice_map_r.bias, std=0.05)
    return model


def inputs(b: int = 1, seconds: float = 1.0):
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(b, int(16000 * seconds), generator=g) * 0.1
    template = torch.randn(b, V, 3, generator=g)
    style = torch.softmax(torch.randn(b, 3, generator=g), -1)
    return audio, template, style


def test_biased_mask_matches_formula():
    h, t, p = 4, 65, 30
    mask = biased_causal_mask(h, t, p)
    slopes = alibi_slopes(h)
    assert torch.allclose(slopes, torch.tensor([2**-2, 2**-4, 2**-6, 2**-8]))
    for i, j in [(0, 0), (29, 0), (30, 0), (64, 3), (64, 64)]:
        expect = -slopes * math.floor((i - j) / p)
        assert torch.allclose(mask[:, i, j], expect)
    assert torch.isinf(mask[:, 3, 4]).all() and (mask[:, 3, 4] < 0).all()
    assert len(alibi_slopes(6)) == 6  # non-power-of-two head counts work


def test_alignment_mask_lets_frame_see_only_its_audio():
    m = alignment_mask(4, 2)
    allowed = torch.isfinite(m)
    assert allowed.sum(1).tolist() == [2, 2, 2, 2]
    assert allowed[2].nonzero().flatten().tolist() == [4, 5]


def test_periodic_encoding_repeats_with_period():
    pe = periodic_encoding(16, 25, torch.arange(80))
    assert torch.allclose(pe[3], pe[28]) and torch.allclose(pe[3], pe[53])
    assert not torch.allclose(pe[3], pe[4])


def test_output_head_starts_at_zero_so_prediction_is_template():
    torch.manual_seed(0)
    cfg = AnimatorConfig(num_verts=V, subjects=["A"], mel_layers=1)
    model = build_animator(cfg)
    assert model.vertice_map_r.weight.abs().sum() == 0 and model.vertice_map_r.bias.abs().sum() == 0
    audio, template, _ = inputs()
    out = model.predict(audio, template, torch.ones(1, 1))
    assert out.shape == (1, 30, V, 3)
    assert torch.allclose(out, template[:, None].expand_as(out))


@pytest.mark.parametrize("k,layers", [(1, 1), (2, 2)])
def test_predict_equals_plain_autoregressive_loop(k, layers):
    model = make(k, layers)
    audio, template, style = inputs(b=2)
    fast = model.predict(audio, template, style)
    slow = model.predict_reference(audio, template, style)
    assert fast.shape == (2, 30, V, 3)
    assert (fast - template[:, None]).abs().max() > 1e-3  # it is not just the template
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_teacher_forcing_on_own_output_reproduces_it():
    model = make().eval()
    audio, template, style = inputs()
    pred = model.predict_reference(audio, template, style)
    with torch.no_grad():
        tf = model(audio, template, style, pred)
    torch.testing.assert_close(tf, pred, atol=1e-5, rtol=0)


def test_style_changes_output_and_mixes():
    model = make()
    audio, template, _ = inputs()
    a = model.predict(audio, template, parse_style("A", model.cfg.subjects)[None])
    b = model.predict(audio, template, parse_style("B", model.cfg.subjects)[None])
    mix = mix_style({"A": 1, "B": 1}, model.cfg.subjects)
    assert torch.allclose(mix, torch.tensor([0.5, 0.5, 0.0]))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(UserError, match="A, B, C"):
        mix_style({"Z": 1}, model.cfg.subjects)


def test_training_loss_backpropagates_and_frame_count_follows_fps():
    model = make(fps=25.0)
    audio, template, style = inputs(seconds=0.8)
    assert model.num_frames(audio.shape[1]) == 20
    target = template[:, None] + 0.01 * torch.randn(1, 20, V, 3)
    loss, logs, pred = model.training_loss(audio, template, style, target)
    assert pred.shape == (1, 20, V, 3) and logs["mse"] == pytest.approx(loss.item())
    loss.backward()
    assert model.vertice_map_r.weight.grad.abs().sum() > 0
    assert model.audio_encoder.conv1.weight.grad.abs().sum() > 0


def test_no_length_cap_beyond_600_frames():
    model = make()
    audio, template, style = inputs(seconds=21.0)  # 630 frames
    out = model.predict(audio, template, style)
    assert out.shape[1] == 630 and torch.isfinite(out).all()


def test_progress_and_num_frames_override():
    model = make()
    audio, template, style = inputs()
    calls = []
    out = model.predict(audio, template, style, num_frames=45, progress=lambda d, t: calls.append((d, t)))
    assert out.shape[1] == 45 and calls[-1] == (45, 45)


def test_bad_shapes_are_named():
    model = make()
    audio, template, style = inputs()
    with pytest.raises(ValueError, match="template"):
        model.predict(audio, template[:, :5], style)
    with pytest.raises(ValueError, match="style"):
        model.predict(audio, template, style[:, :2])


def test_published_sizes_resolve():
    ff = AnimatorConfig(size="vocaset", num_verts=5023, subjects=["A"])
    assert (ff.d_model, ff.n_heads, ff.n_layers, ff.ffn_dim, ff.period, ff.audio_per_frame) == (64, 4, 1, 128, 30, 1)
    bw = AnimatorConfig(size="biwi", num_verts=23370, subjects=["A"], fps=25)
    assert (bw.d_model, bw.period, bw.audio_per_frame) == (128, 25, 2)
    ct = AnimatorConfig(kind="codetalker", size="vocaset", num_verts=5023, subjects=["A"])
    assert (ct.vq_hidden, ct.vq_face_quan_num, ct.vq_code_dim, ct.vq_codebook_size) == (1024, 16, 64, 256)
    assert (ct.d_model, ct.n_layers) == (1024, 6)
    assert AnimatorConfig(size="vocaset", d_model=32, num_verts=3, subjects=["A"]).d_model == 32
    with pytest.raises(ValueError):
        AnimatorConfig(num_verts=3, subjects=["A"], encoder="whisper")


def test_rebuild_from_dumped_config_gives_same_model():
    model = make()
    again = build_animator(AnimatorConfig(**model.cfg.model_dump()))
    again.load_state_dict(model.state_dict())
    audio, template, style = inputs()
    torch.testing.assert_close(again.predict(audio, template, style), model.predict(audio, template, style))


def test_tiny_model_learns_to_follow_the_audio():
    """Mouth-like motion driven by the loudness of the audio: the model fits it."""
    torch.manual_seed(0)
    cfg = AnimatorConfig(num_verts=V, subjects=["A"], mel_layers=1, dropout=0.0)
    model = build_animator(cfg)
    g = torch.Generator().manual_seed(5)
    env = (torch.rand(30, generator=g) > 0.5).float()  # loud/silent per frame
    audio = torch.randn(1, 16000, generator=g) * env.repeat_interleave(534)[:16000]  # (1, S)
    template = torch.randn(1, V, 3, generator=g)
    direction = torch.randn(V, 3, generator=g)
    target = template[:, None] + 0.1 * env[None, :, None, None] * direction
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    style = torch.ones(1, 1)
    first = None
    for _ in range(80):
        opt.zero_grad()
        loss, _, _ = model.training_loss(audio, template, style, target)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.2 * first
    pred = model.predict(audio, template, style)
    err = ((pred - target) ** 2).mean().item()
    assert err < 0.5 * ((template[:, None] - target) ** 2).mean().item()  # better than standing still


def test_predict_restores_training_mode_and_thread_count():
    model = make()
    model.train()
    threads = torch.get_num_threads()
    seen = []
    audio, template, style = inputs(seconds=0.5)
    model.predict(audio, template, style, progress=lambda d, t: seen.append(torch.get_num_threads()))
    assert model.training and torch.get_num_threads() == threads
    assert seen and set(seen) == {1}  # the per-frame loop runs on one CPU thread
