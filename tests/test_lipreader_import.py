import pytest
import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.lipreader.checkpoint import load_expert, save_expert
from talkinghead_cli.lipreader.config import tiny_config
from talkinghead_cli.lipreader.import_autoavsr import (autoavsr_name, export_autoavsr_state_dict,
                                                       import_autoavsr, infer_config, load_autoavsr_state_dict)
from talkinghead_cli.lipreader.model import LipReader
from talkinghead_cli.lipreader.tokenizer import CharTokenizer


def _randomise(model):
    """Random BN statistics too, so that a wrongly mapped buffer would show in the outputs."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.2 + (0.9 if "running_var" in name else -0.1))
    return model


def _outputs(model, video, audio, tokens, mode):
    with torch.no_grad():
        return model.eval()(video, audio, tokens, mode=mode)[:2]


def test_published_names():
    names = {
        "video_frontend.stem_conv.weight": "encoder.frontend.frontend3D.0.weight",
        "video_frontend.stem_bn.running_mean": "encoder.frontend.frontend3D.1.running_mean",
        "video_frontend.trunk.stages.1.0.shortcut.0.weight": "encoder.frontend.trunk.layer2.0.downsample.0.weight",
        "audio_frontend.stem_conv.weight": "aux_encoder.frontend.trunk.conv1.weight",
        "video_encoder.input_proj.weight": "encoder.embed.0.weight",
        "video_encoder.layers.3.attn.bias_u": "encoder.encoders.3.self_attn.pos_bias_u",
        "video_encoder.layers.3.attn.pos.weight": "encoder.encoders.3.self_attn.linear_pos.weight",
        "audio_encoder.layers.0.ffn1.w_in.bias": "aux_encoder.encoders.0.feed_forward_macaron.w_1.bias",
        "video_encoder.layers.0.conv.dw.weight": "encoder.encoders.0.conv_module.depthwise_conv.weight",
        "video_encoder.layers.1.conv.pw1.bias": "encoder.encoders.1.conv_module.pointwise_cov1.bias",
        "video_encoder.layers.0.conv.bn.num_batches_tracked": "encoder.encoders.0.conv_module.norm.num_batches_tracked",
        "video_encoder.layers.0.norm_out.weight": "encoder.encoders.0.norm_final.weight",
        "video_encoder.final_norm.bias": "encoder.after_norm.bias",
        "fusion.bn.running_var": "fusion.bn1.running_var",
        "decoder.layers.5.cross_attn.k.weight": "decoder.decoders.5.src_attn.linear_k.weight",
        "decoder.layers.0.norm_ffn.weight": "decoder.decoders.0.norm3.weight",
        "decoder.embed.weight": "decoder.embed.0.weight",
        "decoder.out.bias": "decoder.output_layer.bias",
        "ctc_head.weight": "ctc.ctc_lo.weight",
    }
    for ours, theirs in names.items():
        assert autoavsr_name(ours) == theirs
    assert autoavsr_name("audio_frontend.stem_conv.weight", "audio") == "encoder.frontend.trunk.conv1.weight"


@pytest.mark.parametrize("modalities", ["av", "video", "audio"])
def test_export_import_roundtrip(modalities):
    torch.manual_seed(0)
    src = _randomise(LipReader(tiny_config(31, modalities=modalities)))
    sd = export_autoavsr_state_dict(src)
    assert "ctc.ctc_lo.weight" in sd and ("aux_encoder.embed.0.weight" in sd) == (modalities == "av")
    cfg = infer_config(sd, decoder_heads=4)
    enc = "audio_encoder" if modalities == "audio" else "video_encoder"
    assert cfg.modalities == modalities and getattr(cfg, enc) == getattr(src.config, enc)
    assert cfg.resnet_widths == src.config.resnet_widths
    dst = LipReader(cfg)
    report = load_autoavsr_state_dict(dst, {"model." + k: v for k, v in sd.items()})  # Lightning prefix
    assert report.missing == [] and report.unexpected == []
    # upstream ESPnet spelling of the conformer's pointwise convolutions is accepted too
    espnet = {k.replace("pointwise_cov", "pointwise_conv"): v for k, v in sd.items()}
    assert load_autoavsr_state_dict(LipReader(cfg), espnet).missing == []
    video, audio = torch.randn(2, 8, 48, 48), torch.randn(2, 8 * 640)
    tokens = torch.randint(1, 30, (2, 5))
    mode = modalities
    video, audio = (None if mode == "audio" else video), (None if mode == "video" else audio)
    a = _outputs(src, video, audio, tokens, mode)
    b = _outputs(dst, video, audio, tokens, mode)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_import_reports_missing_unexpected_and_shape_errors(tmp_path):
    src = LipReader(tiny_config(31, modalities="video"))
    sd = export_autoavsr_state_dict(src)
    sd.pop("decoder.output_layer.bias")
    sd["encoder.encoders.0.self_attn.some_new_thing"] = torch.zeros(3)
    path = tmp_path / "vsr.pth"
    torch.save(sd, path)
    model, report = import_autoavsr(path, decoder_heads=4)
    assert report.missing == ["decoder.out.bias"]
    assert report.unexpected == ["encoder.encoders.0.self_attn.some_new_thing"]
    wrong = LipReader(tiny_config(40, modalities="video"))
    with pytest.raises(UserError, match="shape"):
        load_autoavsr_state_dict(wrong, export_autoavsr_state_dict(src), source=str(path))
    with pytest.raises(UserError, match="not found"):
        import_autoavsr(tmp_path / "nope.pth")


def test_expert_checkpoint_roundtrip_and_mismatch(tmp_path):
    tok = CharTokenizer()
    model = _randomise(LipReader(tiny_config(len(tok))))
    path = save_expert(tmp_path / "expert.pt", model, tok, extra={"epoch": 3})
    loaded, tok2, ckpt = load_expert(path)
    assert ckpt["fps"] == 25.0 and ckpt["sample_rate"] == 16000 and ckpt["extra"]["epoch"] == 3
    assert tok2.vocabulary == tok.vocabulary and loaded.config == model.config
    video, audio, tokens = torch.randn(1, 6, 40, 40), torch.randn(1, 6 * 640), torch.randint(1, 30, (1, 3))
    for x, y in zip(_outputs(model, video, audio, tokens, "av"), _outputs(loaded, video, audio, tokens, "av")):
        torch.testing.assert_close(x, y)
    with pytest.raises(UserError, match="size"):
        load_expert(path, size="base")
    with pytest.raises(UserError, match="vocabulary"):
        load_expert(path, vocabulary=tok.vocabulary[:-2] + ["x", "<sos/eos>"])


def test_expert_checkpoint_with_sentencepiece(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(["READ MY LIPS", "THE QUICK BROWN FOX", "HELLO WORLD AGAIN"] * 5))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "u"), vocab_size=29,
                                   model_type="unigram")
    from talkinghead_cli.lipreader.tokenizer import SentencePieceTokenizer

    tok = SentencePieceTokenizer(tmp_path / "u.model")
    model = LipReader(tiny_config(len(tok), modalities="video"))
    path = save_expert(tmp_path / "e.pt", model, tok)
    (tmp_path / "u.model").unlink()  # the checkpoint must be self-contained
    _, tok2, _ = load_expert(path)
    assert tok2.vocabulary == tok.vocabulary and tok2.encode("Hello, world!") == tok.encode("Hello, world!")


def test_expert_from_autoavsr_checks_vocabulary(tmp_path):
    from talkinghead_cli.lipreader.checkpoint import expert_from_autoavsr

    src = LipReader(tiny_config(31, modalities="video"))
    path = tmp_path / "vsr.pth"
    torch.save({"state_dict": {"model." + k: v for k, v in export_autoavsr_state_dict(src).items()}}, path)
    model, tok, report = expert_from_autoavsr(path, decoder_heads=4)
    assert len(tok) == 31 and report.missing == [] and not model.training
    torch.save(export_autoavsr_state_dict(LipReader(tiny_config(40, modalities="video"))), path)
    with pytest.raises(UserError, match="40 tokens"):
        expert_from_autoavsr(path, decoder_heads=4)
