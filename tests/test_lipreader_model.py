import math

import pytest
import torch

from talkinghead_cli.lipreader.config import base_config, tiny_config
from talkinghead_cli.lipreader.conformer import RelPositionAttention, sinusoid
from talkinghead_cli.lipreader.losses import expert_loss, smoothed_ce
from talkinghead_cli.lipreader.model import LipReader, fold_batch_norms, normalize_frames, resample_frames
from talkinghead_cli.training.losses import AVLoss


def _tiny(modalities="av", **kw):
    torch.manual_seed(0)
    return LipReader(tiny_config(31, modalities=modalities, **kw))


def test_shapes_all_modes():
    m = _tiny().eval()
    video, audio = torch.randn(2, 10, 88, 88), torch.randn(2, 10 * 640)
    tokens = torch.randint(1, 30, (2, 4))
    for mode, v, a in [("av", video, audio), ("video", video, None), ("audio", None, audio)]:
        ctc, att, lens = m(v, a, tokens, mode=mode)
        assert ctc.shape == (2, 10, 31) and att.shape == (2, 4, 31) and lens.tolist() == [10, 10]
    with pytest.raises(ValueError, match="needs audio"):
        m(video, None, tokens, mode="av")


def test_audio_frontend_one_feature_per_640_samples():
    m = _tiny("audio")
    assert m.audio_frontend(torch.randn(1, 7 * 640 + 100)).shape[:2] == (1, 7)


def test_missing_modality_is_zero_encoder_output():
    m = _tiny().eval()
    video = torch.randn(1, 6, 64, 64)
    memory, _ = m.encode(video, None, mode="video")
    v = m.video_encoder(m.video_frontend(video), None)
    expected = m.fusion(torch.cat([v, torch.zeros_like(v)], -1))
    torch.testing.assert_close(memory, expected)


def test_modality_dropout_never_drops_both():
    m = _tiny(p_drop_video=0.5, p_drop_audio=0.5).train()
    v, a = torch.ones(64, 3, 4), torch.ones(64, 3, 4)
    dv, da = m._modality_dropout(v, a)
    v_gone, a_gone = dv.sum((1, 2)) == 0, da.sum((1, 2)) == 0
    assert not (v_gone & a_gone).any() and v_gone.any() and a_gone.any()
    assert (v_gone | a_gone).all()  # p sums to 1: every sample loses exactly one stream


def test_base_dimensions():
    cfg = base_config(5049, modalities="video")
    assert (cfg.video_encoder.layers, cfg.video_encoder.d_model, cfg.video_encoder.heads,
            cfg.video_encoder.ffn_dim, cfg.video_encoder.conv_kernel) == (12, 768, 12, 3072, 31)
    av = base_config(5049)
    assert av.fusion_hidden == 8192 and av.decoder_layers == 6
    m = LipReader(tiny_config(31))  # base layout, tiny dims: the fusion maps 2d -> hidden -> d
    assert m.fusion.fc1.in_features == 128 and m.fusion.fc2.out_features == 64
    assert m.video_frontend.stem_conv.kernel_size == (5, 7, 7)
    assert m.video_frontend.stem_conv.stride == (1, 2, 2)


def test_resample_frames_linear_and_differentiable():
    x = torch.arange(30.0).view(1, 30, 1, 1).expand(1, 30, 2, 2).clone().requires_grad_(True)
    y = resample_frames(x, 30.0, 25.0)
    assert y.shape == (1, 25, 2, 2)
    # output frame j sits at input time j * 30/25 (a ramp stays a ramp)
    torch.testing.assert_close(y[0, :, 0, 0], torch.arange(25.0) * 1.2)
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad.sum(), torch.tensor(25.0 * 4))  # weights sum to 1 per output
    assert resample_frames(x, 25.0, 25.0) is x


def _rel_attention_reference(attn: RelPositionAttention, x: torch.Tensor) -> torch.Tensor:
    """Slow loop: score(i, j) = ((q_i+u)·k_j + (q_i+v)·W p(i-j)) / sqrt(d_k)."""
    b, t, d = x.shape
    h, dk = attn.heads, attn.d_k
    q, k, v = (f(x).view(b, t, h, dk) for f in (attn.q, attn.k, attn.v))
    out = torch.zeros(b, t, h, dk)
    for i in range(t):
        scores = torch.zeros(b, h, t)
        for j in range(t):
            p = attn.pos(sinusoid(torch.tensor([float(i - j)]), d)).view(h, dk)
            scores[:, :, j] = (((q[:, i] + attn.bias_u) * k[:, j]).sum(-1)
                               + ((q[:, i] + attn.bias_v) * p).sum(-1)) / math.sqrt(dk)
        w = scores.softmax(-1)
        out[:, i] = torch.einsum("bhj,bjhd->bhd", w, v)
    return attn.out(out.flatten(2))


def test_relative_attention_matches_slow_reference():
    torch.manual_seed(0)
    attn = RelPositionAttention(16, 4, 0.0).eval()
    x = torch.randn(2, 7, 16)
    t = x.shape[1]
    pos_emb = sinusoid(torch.arange(t - 1, -t, -1), 16)[None]
    torch.testing.assert_close(attn(x, pos_emb), _rel_attention_reference(attn, x), atol=1e-5, rtol=1e-4)


def test_smoothed_ce_matches_definition():
    logits, target = torch.randn(1, 3, 5), torch.tensor([[1, 4, -1]])
    loss = smoothed_ce(logits, target, 0.1)
    logp = logits.log_softmax(-1)
    want = torch.stack([-(0.9 * logp[0, i, y] + 0.1 / 4 * (logp[0, i].sum() - logp[0, i, y]))
                        for i, y in enumerate([1, 4])])
    torch.testing.assert_close(loss[0, :2], want)
    assert loss[0, 2] == 0


@pytest.mark.parametrize("reduction,modalities", [("sum", "video"), ("mean", "video"), ("sum", "av")])
def test_loss_gradient_reaches_input_frames(reduction, modalities):
    m = _tiny(modalities, p_drop_audio=0.5).train()
    frames = normalize_frames(torch.rand(2, 12, 48, 48)).requires_grad_(True)
    audio = torch.randn(2, 12 * 640) if modalities == "av" else None
    out = expert_loss(m, [[5, 6, 7], [8, 9]], video=frames, audio=audio, reduction=reduction)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0
    assert torch.isfinite(frames.grad).all()


def test_loss_weights_combine():
    m = _tiny("video").eval()
    frames = torch.randn(1, 10, 40, 40)
    a = expert_loss(m, [[5, 6]], video=frames, ctc_weight=0.0)
    b = expert_loss(m, [[5, 6]], video=frames, ctc_weight=1.0)
    c = expert_loss(m, [[5, 6]], video=frames)  # defaults 0.1 / 0.9
    torch.testing.assert_close(a.loss, a.ce)
    torch.testing.assert_close(b.loss, b.ctc)
    torch.testing.assert_close(c.loss, 0.1 * c.ctc + 0.9 * c.ce)


def test_padded_batch_matches_single_item():
    """Zero-padded frames beyond ``lengths`` change nothing for the valid part (eval mode)."""
    m = _tiny("video").eval()
    short, other = torch.randn(1, 9, 40, 40), torch.randn(1, 13, 40, 40)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 0, 0, 4)), other])
    tokens = torch.randint(1, 30, (2, 4))
    with torch.no_grad():
        ctc_b, att_b, _ = m(batch, tokens=tokens, lengths=torch.tensor([9, 13]))
        ctc_1, att_1, _ = m(short, tokens=tokens[:1])
    torch.testing.assert_close(ctc_b[0, :9], ctc_1[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(att_b[0], att_1[0], atol=1e-5, rtol=1e-4)


def test_folded_batch_norms_compute_the_same_function_and_gradient():
    m = _tiny().double().train()
    video, audio = torch.randn(2, 9, 44, 44, dtype=torch.float64), torch.randn(2, 9 * 640, dtype=torch.float64)
    with torch.no_grad():  # running statistics away from their initial values
        for _ in range(3):
            m(video + torch.rand(1, dtype=torch.float64), audio, mode="av")
    m.eval().requires_grad_(False)
    ref = {mode: m(video, audio, mode=mode)[0] for mode in ("av", "video", "audio")}
    v = video.clone().requires_grad_(True)
    g_ref, = torch.autograd.grad(m(v, None, mode="video")[0].square().sum(), v)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(_tiny().train())
    assert fold_batch_norms(m) is m
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())
    assert not any(p.requires_grad for p in m.parameters())
    for mode, out in ref.items():
        torch.testing.assert_close(m(video, audio, mode=mode)[0], out, rtol=0, atol=1e-10)
    g, = torch.autograd.grad(m(v, None, mode="video")[0].square().sum(), v)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-10)


def test_the_av_loss_folds_a_frozen_expert_only():
    faces, lip = torch.tensor([[0, 1, 2]]), torch.tensor([0, 1, 2])
    frozen = AVLoss(_tiny("video"), faces, lip, 30.0, frozen=True)
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in frozen.modules())
    joint = AVLoss(_tiny("video"), faces, lip, 30.0, frozen=False)
    assert any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in joint.modules())
    assert joint.expert.training and not frozen.expert.training


def test_no_lengths_skips_the_masks_with_the_same_result():
    m = _tiny().double().eval()
    video, audio = torch.randn(2, 7, 44, 44, dtype=torch.float64), torch.randn(2, 7 * 640, dtype=torch.float64)
    tokens = torch.randint(1, 30, (2, 4))
    full = torch.tensor([7, 7])
    for mode in ("av", "video", "audio"):
        a = m(video, audio, tokens, mode=mode)
        b = m(video, audio, tokens, lengths=full, mode=mode)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dims, size", [(2, (22, 22)), (2, (9, 11)), (1, (23,))])
def test_strided_block_shortcut_is_a_strided_1x1_convolution(dims, size):
    """The projection of a strided residual block runs on the subsampled input: the same values
    and gradients as a 1x1 convolution with the stride (Auto-AVSR's downsample layer)."""
    from talkinghead_cli.lipreader.frontends import BasicBlock

    torch.manual_seed(0)
    block = BasicBlock(8, 16, 2, "swish", dims).double().train()
    x = torch.randn(3, 8, *size, dtype=torch.float64, requires_grad=True)
    fn = torch.nn.functional.conv2d if dims == 2 else torch.nn.functional.conv1d
    b = block
    ref = b.act2(b.bn2(b.conv2(b.act1(b.bn1(b.conv1(x))))) + b.shortcut[1](fn(x, b.shortcut[0].weight, stride=2)))
    got = block(x)
    assert got.shape == ref.shape == (3, 16, *[(n + 1) // 2 for n in size])
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    params = [x, b.shortcut[0].weight, b.conv1.weight]
    for a, r in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-10)


def test_eight_channel_trunk_trains_on_channels_last_maps():
    """A regression test: the tiny trunk (8 channels into a strided stage, channels-last, even
    sizes) once went through a 1x1 stride-2 convolution whose weight gradient corrupted the heap
    in PyTorch 2.13 (the process aborted a few steps later)."""
    from talkinghead_cli.lipreader.frontends import ResNetTrunk

    torch.manual_seed(0)
    trunk = ResNetTrunk(8, (8, 32, 64, 64), (1, 1, 1, 1), "swish", 2).train()
    for _ in range(20):
        x = torch.randn(45, 8, 22, 22).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        trunk(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trunk.parameters())
