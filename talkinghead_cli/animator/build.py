"""The builder: an :class:`AnimatorConfig` -> the model it describes (both families visible here)."""

from __future__ import annotations

from talkinghead_cli.animator.base import Animator
from talkinghead_cli.animator.codetalker import CodeTalker
from talkinghead_cli.animator.config import AnimatorConfig
from talkinghead_cli.animator.faceformer import FaceFormer


def build_animator(cfg: AnimatorConfig) -> Animator:
    """Build the model ``cfg`` describes (random weights; load a state_dict after)."""
    if cfg.kind == "faceformer":
        return FaceFormer(cfg)
    return CodeTalker(cfg)
