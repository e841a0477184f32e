"""The animator interface shared by FaceFormer and CodeTalker (the builder is in :mod:`.build`).

Shapes: B batch, S audio samples, T frames, V vertices, N subjects (style width).
Style is a convex mix of one-hot subject vectors, (B, N); see :mod:`talkinghead_cli.style`.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from talkinghead_cli.animator.config import AnimatorConfig


class Animator(nn.Module):
    """Speech (B, S) + template (B, V, 3) + style (B, N) -> meshes (B, T, V, 3).

    The model carries its frame rate and sample rate (``cfg.fps``, ``cfg.sample_rate``);
    callers read them from here.
    """

    def __init__(self, cfg: AnimatorConfig):
        super().__init__()
        self.cfg = cfg
        self.fps = float(cfg.fps)
        self.sample_rate = int(cfg.sample_rate)

    def num_frames(self, num_samples: int) -> int:
        """Mesh frames for ``num_samples`` of audio: round(S / sample_rate * fps), >= 1."""
        return max(1, round(num_samples / self.sample_rate * self.fps))

    def check_inputs(self, audio: Tensor, template: Tensor, style: Tensor,
                     target: Tensor | None = None) -> None:
        """Raise ValueError naming the first argument whose shape is wrong."""
        b, v = audio.shape[0], self.cfg.num_verts
        if audio.dim() != 2:
            raise ValueError(f"audio must be (B, S), got {tuple(audio.shape)}")
        if template.shape != (b, v, 3):
            raise ValueError(f"template must be ({b}, {v}, 3), got {tuple(template.shape)}")
        if style.shape != (b, len(self.cfg.subjects)):
            raise ValueError(f"style must be ({b}, {len(self.cfg.subjects)}), got {tuple(style.shape)}")
        if target is not None and (target.dim() != 4 or target.shape[0] != b or target.shape[2:] != (v, 3)):
            raise ValueError(f"target must be ({b}, T, {v}, 3), got {tuple(target.shape)}")

    @contextlib.contextmanager
    def evaluating(self):
        """Switch to eval mode for the block, then restore the previous mode."""
        was = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was)

    @contextlib.contextmanager
    def loop_threads(self, device: torch.device):
        """Run the per-frame decoding loop on one CPU thread.

        Each step is a chain of small matrix-vector products; splitting them across
        threads costs more in synchronisation than it saves, and far more when other
        processes share the cores. The audio encoder outside the loop keeps all threads.
        ``cfg.loop_threads`` (0 = leave torch's setting) overrides the count.
        """
        n = self.cfg.loop_threads
        if device.type != "cpu" or n <= 0:
            yield
            return
        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def forward(self, audio: Tensor, template: Tensor, style: Tensor,
                target: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def training_loss(self, audio: Tensor, template: Tensor, style: Tensor,
                      target: Tensor) -> tuple[Tensor, dict[str, float], Tensor]:
        raise NotImplementedError

    def predict(self, audio: Tensor, template: Tensor, style: Tensor,
                num_frames: int | None = None, progress=None) -> Tensor:
        raise NotImplementedError

    def predict_reference(self, audio: Tensor, template: Tensor, style: Tensor,
                          num_frames: int | None = None, progress=None) -> Tensor:
        raise NotImplementedError
