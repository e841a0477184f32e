"""A loaded lip-reading expert: the model, its tokenizer, the lip-window settings it was
fine-tuned with, and how to read a clip. ``avtalk score`` reads with it; the animator's
trainer builds its AV loss from it (:mod:`talkinghead_cli.training.trainer`).

Shapes: T25 frames at 25 fps, H x W lip window, S audio samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.lipreader.checkpoint import load_expert
from talkinghead_cli.lipreader.decode import recognize
from talkinghead_cli.lipreader.model import LipReader

#: the keyword arguments of :func:`~talkinghead_cli.lipreader.views.lip_video` that
#: ``finetune-expert`` records under ``extra["render"]``
LIP_WINDOW_KEYS = ("size", "margin", "sigma", "video_fps")


def lip_window_settings(ckpt: dict[str, Any], fps: float) -> dict[str, Any]:
    """The lip-window settings an expert checkpoint was fine-tuned with; ``video_fps``
    defaults to the expert's own rate ``fps``. Settings it does not record stay at the
    renderer's defaults."""
    saved = (ckpt.get("extra") or {}).get("render") or {}
    render = {k: saved[k] for k in LIP_WINDOW_KEYS if k in saved}
    render.setdefault("video_fps", float(fps))
    return render


@dataclass
class Expert:
    """A lip reader ready to read: model (eval mode), tokenizer, file, lip-window settings,
    and the decoding (``method`` "ctc" greedy or "beam" CTC/attention with ``beam``)."""

    model: LipReader
    tokenizer: Any
    path: Path
    #: lip-window settings the expert was fine-tuned with (size, margin, sigma, video_fps)
    render: dict = field(default_factory=dict)
    method: str = "ctc"
    beam: int = 1

    @property
    def modalities(self) -> str:
        """"video", "audio" or "av"."""
        return self.model.config.modalities

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sample_rate)

    def read(self, video: torch.Tensor, audio: torch.Tensor | None = None) -> str:
        """Transcribe one clip. video: (1, T25, H, W) normalised; audio: (1, S) or None."""
        mode = "av" if audio is not None else "video"
        return recognize(self.model, self.tokenizer, video=video, audio=audio, mode=mode,
                         method=self.method, beam=self.beam)[0]


def open_expert(path: str | Path, device: str | torch.device = "cpu", *, vocabulary: list[str] | None = None,
                method: str = "ctc", beam: int = 1, reads_lips: bool = True) -> Expert:
    """Load an expert checkpoint as an :class:`Expert`.

    Args:
        vocabulary: when given, the checkpoint's must equal it.
        reads_lips: refuse an audio-only expert (UserError).
    """
    model, tokenizer, ckpt = load_expert(path, device, vocabulary=vocabulary)
    if reads_lips and model.config.modalities == "audio":
        raise UserError("this expert is audio-only and cannot read lips", path,
                        "pass an audio-visual or visual-only expert")
    return Expert(model, tokenizer, Path(path), lip_window_settings(ckpt, model.config.fps), method, beam)
