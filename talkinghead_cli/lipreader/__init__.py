"""Lip-reading expert: an Auto-AVSR-style audio-visual speech recogniser.

Modules: :mod:`config` (sizes), :mod:`frontends` (3D-conv + ResNet lips, 1D ResNet speech),
:mod:`conformer` (encoders), :mod:`model` (fusion, decoder, :class:`LipReader`),
:mod:`tokenizer`, :mod:`losses` (joint CTC/attention), :mod:`decode` (greedy, beam),
:mod:`import_autoavsr` (published checkpoints), :mod:`checkpoint` (our one-file format),
:mod:`expert` (a loaded expert: model, tokenizer, lip-window settings, ``read``).
Its training loop is :mod:`talkinghead_cli.training.expert_trainer`.
"""

from talkinghead_cli.lipreader.config import ExpertConfig, base_config, config_for_size, tiny_config
from talkinghead_cli.lipreader.model import LipReader, build_expert, normalize_frames, resample_frames

__all__ = ["ExpertConfig", "LipReader", "base_config", "build_expert", "config_for_size",
           "normalize_frames", "resample_frames", "tiny_config"]
