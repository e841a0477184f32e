"""Which torch device to run on (kept apart from the trainer so that `avtalk animate` starts fast)."""

from __future__ import annotations

import torch

from talkinghead_cli.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device '{name}'", None, "use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no GPU is available", None, "use --device cpu")
    return dev
