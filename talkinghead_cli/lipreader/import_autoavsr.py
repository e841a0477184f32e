"""Import published Auto-AVSR checkpoints (audio-visual, visual-only or audio-only).

Auto-AVSR (ESPnet naming) stores, for an audio-visual model::

    encoder.frontend.frontend3D.{0,1}.*            3D stem conv, BN (video)
    encoder.frontend.trunk.layer{1-4}.{b}.*        2D ResNet-18 (conv1, bn1, conv2, bn2, downsample.{0,1})
    encoder.embed.0.*                              Linear(512, d)
    encoder.encoders.{i}.self_attn.linear_{q,k,v,out,pos}, pos_bias_{u,v}
    encoder.encoders.{i}.feed_forward{,_macaron}.w_{1,2}
    encoder.encoders.{i}.conv_module.{pointwise_cov1,depthwise_conv,norm,pointwise_cov2}
    encoder.encoders.{i}.norm_{ff,mha,ff_macaron,conv,final}
    encoder.after_norm
    aux_encoder.frontend.trunk.{conv1,bn1,layer1-4}.*  1D ResNet-18 on the waveform, then as encoder
    fusion.{fc1,bn1,fc2}                           MLP 1536 -> 8192 -> 768
    decoder.embed.0, decoder.decoders.{i}.{self_attn,src_attn,feed_forward,norm1,norm2,norm3}
    decoder.after_norm, decoder.output_layer
    ctc.ctc_lo

A visual-only model has ``encoder`` (conv3d), ``decoder``, ``ctc``; an audio-only model
has ``encoder`` with the 1D front end. :func:`autoavsr_name` maps each of our parameter
names to its Auto-AVSR name; import uses the inverse of that map over our model's keys,
so every key is accounted for as loaded, missing or unexpected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from talkinghead_cli.checkpoint import read_torch_file
from talkinghead_cli.errors import UserError
from talkinghead_cli.lipreader.config import EncoderConfig, ExpertConfig
from talkinghead_cli.lipreader.model import LipReader

_LAYER = [  # within one conformer layer: ours -> theirs
    ("attn.q.", "self_attn.linear_q."), ("attn.k.", "self_attn.linear_k."),
    ("attn.v.", "self_attn.linear_v."), ("attn.out.", "self_attn.linear_out."),
    ("attn.pos.", "self_attn.linear_pos."), ("attn.bias_u", "self_attn.pos_bias_u"),
    ("attn.bias_v", "self_attn.pos_bias_v"),
    ("ffn1.w_in.", "feed_forward_macaron.w_1."), ("ffn1.w_out.", "feed_forward_macaron.w_2."),
    ("ffn2.w_in.", "feed_forward.w_1."), ("ffn2.w_out.", "feed_forward.w_2."),
    # Auto-AVSR (mpc001's ESPnet copy) spells the pointwise convolutions "pointwise_cov";
    # upstream ESPnet's "pointwise_conv" is accepted on import as well.
    ("conv.pw1.", "conv_module.pointwise_cov1."), ("conv.dw.", "conv_module.depthwise_conv."),
    ("conv.bn.", "conv_module.norm."), ("conv.pw2.", "conv_module.pointwise_cov2."),
    ("norm_ffn1.", "norm_ff_macaron."), ("norm_attn.", "norm_mha."), ("norm_conv.", "norm_conv."),
    ("norm_ffn2.", "norm_ff."), ("norm_out.", "norm_final."),
]
_DEC_LAYER = [
    ("self_attn.q.", "self_attn.linear_q."), ("self_attn.k.", "self_attn.linear_k."),
    ("self_attn.v.", "self_attn.linear_v."), ("self_attn.out.", "self_attn.linear_out."),
    ("cross_attn.q.", "src_attn.linear_q."), ("cross_attn.k.", "src_attn.linear_k."),
    ("cross_attn.v.", "src_attn.linear_v."), ("cross_attn.out.", "src_attn.linear_out."),
    ("ffn.w_in.", "feed_forward.w_1."), ("ffn.w_out.", "feed_forward.w_2."),
    ("norm_self.", "norm1."), ("norm_cross.", "norm2."), ("norm_ffn.", "norm3."),
]
_BLOCK = [("act1.", "relu1."), ("act2.", "relu2."), ("shortcut.", "downsample.")]


def _table(rest: str, table) -> str:
    for ours, theirs in table:
        if rest.startswith(ours):
            return theirs + rest[len(ours):]
    raise KeyError(rest)


def _trunk(rest: str) -> str:
    """``stages.{s}.{b}.<x>`` -> ``layer{s+1}.{b}.<x'>``."""
    m = re.match(r"stages\.(\d+)\.(\d+)\.(.*)", rest)
    if not m:
        raise KeyError(rest)
    inner = m.group(3)
    for ours, theirs in _BLOCK:
        if inner.startswith(ours):
            inner = theirs + inner[len(ours):]
    return f"layer{int(m.group(1)) + 1}.{m.group(2)}.{inner}"


def _encoder(rest: str) -> str:
    if rest.startswith("input_proj."):
        return "embed.0." + rest[len("input_proj."):]
    if rest.startswith("final_norm."):
        return "after_norm." + rest[len("final_norm."):]
    m = re.match(r"layers\.(\d+)\.(.*)", rest)
    if not m:
        raise KeyError(rest)
    return f"encoders.{m.group(1)}." + _table(m.group(2), _LAYER)


def autoavsr_name(key: str, modalities: str = "av") -> str:
    """Our parameter name -> Auto-AVSR's. ``modalities`` decides where the audio stream lives
    (``aux_encoder`` in audio-visual models, ``encoder`` in audio-only ones)."""
    audio_root = "aux_encoder" if modalities == "av" else "encoder"
    head, _, rest = key.partition(".")
    if head == "video_frontend":
        stem = {"stem_conv.": "frontend3D.0.", "stem_bn.": "frontend3D.1.", "stem_act.": "frontend3D.2."}
        for ours, theirs in stem.items():
            if rest.startswith(ours):
                return "encoder.frontend." + theirs + rest[len(ours):]
        return "encoder.frontend.trunk." + _trunk(rest[len("trunk."):])
    if head == "audio_frontend":
        stem = {"stem_conv.": "conv1.", "stem_bn.": "bn1.", "stem_act.": "relu."}
        for ours, theirs in stem.items():
            if rest.startswith(ours):
                return f"{audio_root}.frontend.trunk." + theirs + rest[len(ours):]
        return f"{audio_root}.frontend.trunk." + _trunk(rest[len("trunk."):])
    if head == "video_encoder":
        return "encoder." + _encoder(rest)
    if head == "audio_encoder":
        return f"{audio_root}." + _encoder(rest)
    if head == "fusion":
        return "fusion." + ("bn1." + rest[3:] if rest.startswith("bn.") else rest)
    if head == "ctc_head":
        return "ctc.ctc_lo." + rest
    if head == "proj_decoder":
        return key
    if head == "decoder":
        if rest.startswith("embed."):
            return "decoder.embed.0." + rest[len("embed."):]
        if rest.startswith("final_norm."):
            return "decoder.after_norm." + rest[len("final_norm."):]
        if rest.startswith("out."):
            return "decoder.output_layer." + rest[len("out."):]
        m = re.match(r"layers\.(\d+)\.(.*)", rest)
        if m:
            return f"decoder.decoders.{m.group(1)}." + _table(m.group(2), _DEC_LAYER)
    raise KeyError(f"no Auto-AVSR name for {key}")


def export_autoavsr_state_dict(model: LipReader) -> dict[str, torch.Tensor]:
    """Our model's state dict under Auto-AVSR's parameter names (the inverse map)."""
    mods = model.config.modalities
    return {autoavsr_name(k, mods): v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class ImportReport:
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # our keys the checkpoint lacks
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys we have no place for

    def summary(self) -> str:
        return (f"loaded {self.loaded} tensors; {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected")


def _strip_prefix(sd: dict) -> dict:
    """Drop a Lightning/DataParallel prefix and normalise ESPnet's ``pointwise_conv`` spelling."""
    for prefix in ("model.", "module."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return {k.replace(".conv_module.pointwise_conv", ".conv_module.pointwise_cov"): v for k, v in sd.items()}


def load_autoavsr_state_dict(model: LipReader, state_dict: dict, source: str | None = None) -> ImportReport:
    """Copy an Auto-AVSR state dict into ``model``; shape mismatches are a UserError."""
    sd = _strip_prefix(dict(state_dict))
    mods = model.config.modalities
    ours = model.state_dict()
    theirs_to_ours = {autoavsr_name(k, mods): k for k in ours}
    new, report = {}, ImportReport()
    for their_key, value in sd.items():
        key = theirs_to_ours.get(their_key)
        if key is None:
            report.unexpected.append(their_key)
            continue
        if tuple(value.shape) != tuple(ours[key].shape):
            raise UserError(f"Auto-AVSR tensor {their_key} has shape {tuple(value.shape)}, "
                            f"the expert expects {tuple(ours[key].shape)}", source,
                            "pick the expert size/vocabulary that matches the checkpoint")
        new[key] = value
    report.missing = [k for k in ours if k not in new]
    report.loaded = len(new)
    model.load_state_dict(new, strict=False)
    return report


def infer_config(state_dict: dict, decoder_heads: int | None = None, **overrides) -> ExpertConfig:
    """Rebuild an :class:`ExpertConfig` from the tensor shapes of an Auto-AVSR state dict.

    Decoder head counts are not visible in the weights: ``d // 64`` is assumed (12 for
    Auto-AVSR's 768) unless ``decoder_heads`` is given.
    """
    sd = _strip_prefix(dict(state_dict))
    if "ctc.ctc_lo.weight" not in sd:
        raise UserError("not an Auto-AVSR state dict (no ctc.ctc_lo.weight)", None,
                        "pass an Auto-AVSR .pth/.ckpt file")
    has_video = "encoder.frontend.frontend3D.0.weight" in sd
    modalities = "av" if "aux_encoder.embed.0.weight" in sd else ("video" if has_video else "audio")
    v_root = "encoder"
    a_root = "aux_encoder" if modalities == "av" else "encoder"
    trunk = f"{v_root if has_video else a_root}.frontend.trunk"
    widths = tuple(int(sd[f"{trunk}.layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5))
    blocks = tuple(len({k.split(".")[4] for k in sd if k.startswith(f"{trunk}.layer{i}.")}) for i in range(1, 5))
    cfg = dict(vocab_size=int(sd["ctc.ctc_lo.weight"].shape[0]), modalities=modalities,
               resnet_widths=widths, resnet_blocks=blocks, size="imported",
               activation="prelu" if f"{trunk}.layer1.0.relu1.weight" in sd else "swish")
    if has_video:
        cfg["stem_channels"] = int(sd["encoder.frontend.frontend3D.0.weight"].shape[0])
        cfg["video_encoder"] = _infer_encoder(sd, v_root)
    if modalities != "video":
        cfg["audio_encoder"] = _infer_encoder(sd, a_root)
    if modalities == "av":
        cfg["fusion_hidden"] = int(sd["fusion.fc1.weight"].shape[0])
    d_dec = int(sd["decoder.embed.0.weight"].shape[1])
    n_dec = len({k.split(".")[2] for k in sd if k.startswith("decoder.decoders.")})
    cfg.update(decoder_dim=d_dec, decoder_layers=n_dec, decoder_heads=decoder_heads or max(1, d_dec // 64),
               decoder_ffn_dim=int(sd["decoder.decoders.0.feed_forward.w_1.weight"].shape[0]))
    cfg.update(overrides)
    return ExpertConfig(**cfg)


def _infer_encoder(sd: dict, root: str) -> EncoderConfig:
    d = int(sd[f"{root}.embed.0.weight"].shape[0])
    layers = len({k.split(".")[2] for k in sd if k.startswith(f"{root}.encoders.")})
    l0 = f"{root}.encoders.0."
    rel = l0 + "self_attn.pos_bias_u" in sd
    heads = int(sd[l0 + "self_attn.pos_bias_u"].shape[0]) if rel else max(1, d // 64)
    return EncoderConfig(d_model=d, heads=heads, layers=layers,
                         ffn_dim=int(sd[l0 + "feed_forward.w_1.weight"].shape[0]),
                         conv_kernel=int(sd[l0 + "conv_module.depthwise_conv.weight"].shape[-1]),
                         attention="rel_mha" if rel else "mha",
                         macaron=l0 + "feed_forward_macaron.w_1.weight" in sd)


def read_autoavsr_file(path: str | Path) -> dict:
    """Load an Auto-AVSR ``.pth`` (plain state dict) or Lightning ``.ckpt`` (``state_dict`` key)."""
    path = Path(path)
    obj = read_torch_file(path, "Auto-AVSR checkpoint", "pass the .pth file published by Auto-AVSR")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("not a state dict of tensors", path, "pass the .pth file published by Auto-AVSR")
    return obj


def import_autoavsr(path: str | Path, **config_overrides) -> tuple[LipReader, ImportReport]:
    """Build an expert shaped like the Auto-AVSR checkpoint at ``path`` and load its weights."""
    sd = read_autoavsr_file(path)
    model = LipReader(infer_config(sd, **config_overrides))
    report = load_autoavsr_state_dict(model, sd, source=str(path))
    return model, report
