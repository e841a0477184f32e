"""CodeTalker-style animator: VQ-VAE stage 1, speech->codes stage 2, cached decoding."""

import pytest
import torch

from talkinghead_cli.animator import AnimatorConfig, build_animator
from talkinghead_cli.animator.codetalker import VectorQuantizer
from talkinghead_cli.errors import UserError

V = 24


def config(stage: int, **kw) -> AnimatorConfig:
    return AnimatorConfig(kind="codetalker", stage=stage, num_verts=V, subjects=["A", "B"],
                          period=7, mel_layers=1, **kw)


def data(b: int = 2, t: int = 30):
    g = torch.Generator().manual_seed(3)
    template = torch.randn(b, V, 3, generator=g)
    target = template[:, None] + 0.05 * torch.randn(b, t, V, 3, generator=g)
    audio = torch.randn(b, int(t / 30 * 16000), generator=g) * 0.1
    style = torch.eye(2)[:b]
    return audio, template, style, target


def stage2_model(**kw):
    torch.manual_seed(0)
    s1 = build_animator(config(1, **kw))
    s2 = build_animator(config(2, **kw))
    s2.load_stage1(s1.state_dict())
    torch.nn.init.normal_(s2.feat_map.weight, std=0.3)  # zero at init: every frame the same code
    return s1, s2


def test_quantizer_picks_nearest_code_and_passes_gradient_straight_through():
    vq = VectorQuantizer(8, 4, beta=0.25)
    z = vq.embedding.weight[[3, 5]].detach()[None] + 1e-4
    z.requires_grad_(True)
    zq, _, idx = vq(z)
    assert idx.tolist() == [[3, 5]]
    zq.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))


def test_stage1_reconstructs_with_l1_plus_vq_loss_and_learns():
    torch.manual_seed(0)
    model = build_animator(config(1))
    audio, template, style, target = data()
    loss, logs, verts = model.training_loss(audio, template, style, target)
    assert verts.shape == target.shape
    assert set(logs) >= {"l1", "vq", "mse", "codes_used"}
    assert loss.item() == pytest.approx(logs["l1"] + logs["vq"], rel=1e-5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = loss.item()
    for _ in range(30):
        opt.zero_grad()
        loss, _, _ = model.training_loss(audio, template, style, target)
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_stage1_cannot_animate_speech():
    model = build_animator(config(1))
    audio, template, style, _ = data()
    with pytest.raises(UserError, match="stage-1"):
        model.predict(audio, template, style)


def test_stage2_freezes_the_prior_and_trains_the_rest():
    s1, s2 = stage2_model()
    for k, v in s1.state_dict().items():
        torch.testing.assert_close(s2.state_dict()[k], v)
    audio, template, style, target = data()
    s2.train()
    assert not s2.vqvae.training  # frozen prior stays in eval mode
    loss, logs, _ = s2.training_loss(audio, template, style, target)
    assert loss.item() == pytest.approx(logs["mse"] + logs["reg"], rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in s2.vqvae.parameters())
    assert s2.feat_map.weight.grad.abs().sum() > 0  # straight-through the codebook
    assert s2.audio_encoder.conv1.weight.grad.abs().sum() > 0


def test_load_stage1_refuses_other_weights():
    _, s2 = stage2_model()
    with pytest.raises(UserError, match="stage-1"):
        s2.load_stage1({"transformer_decoder.x": torch.zeros(1)})


def test_decoder_step_equals_full_causal_decode():
    _, s2 = stage2_model()
    dec = s2.vqvae.decoder
    codes = torch.randn(2, 12, s2.cfg.vq_hidden)
    with torch.no_grad():
        full = dec(codes)
        state = dec.start(codes, 12)
        steps = torch.cat([dec.step(codes[:, t:t + 1], state, t) for t in range(12)], 1)
        prefix = dec(codes[:, :5])
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(prefix, full[:, :5], atol=1e-5, rtol=0)  # causal


@pytest.mark.parametrize("block", [0, 5])
def test_predict_equals_plain_autoregressive_loop(block):
    _, s2 = stage2_model(block_frames=block)
    audio, template, style, _ = data()
    fast = s2.predict(audio, template, style)
    if block:
        assert 30 / block <= s2.last_passes < 30  # several frames kept per pass
    slow = s2.predict_reference(audio, template, style)
    assert fast.shape == (2, 30, V, 3)
    assert (fast[:, 1:] - fast[:, :-1]).abs().max() > 1e-4  # frames differ: codes change
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_two_audio_features_per_frame_biwi_style():
    _, s2 = stage2_model(audio_per_frame=2, fps=25.0)
    audio, template, style, _ = data(b=1)
    fast = s2.predict(audio, template, style)
    assert fast.shape[1] == 25
    torch.testing.assert_close(fast, s2.predict_reference(audio, template, style), atol=1e-5, rtol=0)
