"""Speech-driven mesh animators (FaceFormer- and CodeTalker-style).

>>> cfg = AnimatorConfig(num_verts=V, subjects=["A", "B"])
>>> model = build_animator(cfg)
>>> verts = model.predict(audio, template, style)   # (1, T, V, 3)
"""

from talkinghead_cli.animator.base import Animator
from talkinghead_cli.animator.build import build_animator
from talkinghead_cli.animator.config import AnimatorConfig

__all__ = ["Animator", "AnimatorConfig", "build_animator"]
