"""One-file checkpoints.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved with
``torch.save`` and loaded with ``torch.load(weights_only=True)``; no class is pickled.
Keys: ``format_version, kind, config, state_dict, template, faces, fps,
sample_rate, vocabulary, subjects, lip_indices`` plus free-form ``extra`` (optimizer
state, epoch, metrics, ...). Writes are atomic, so a kill mid-save never leaves a
half-written file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.errors import UserError

FORMAT_VERSION = 1
KINDS = ("animator", "expert")
REQUIRED = ("format_version", "kind", "config", "state_dict")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Save ``payload`` (which must hold at least ``kind``, ``config``, ``state_dict``).

    ``format_version`` is filled in. Tensors are moved to the CPU so the file loads
    anywhere.
    """
    payload = dict(payload)
    payload["format_version"] = FORMAT_VERSION
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    if payload["kind"] not in KINDS:
        raise ValueError(f"unknown checkpoint kind {payload['kind']!r}")
    payload = _to_cpu(payload)
    path = Path(path)
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_torch_file(path: str | Path, what: str = "checkpoint",
                    fix: str = "it is corrupt or not an avtalk checkpoint") -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with one-line errors.

    Raises:
        UserError: ``"<what> not found"`` or ``"cannot read the <what>"`` (``fix`` says what to do).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found", path, "check the path or the model name")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read the {what} ({type(e).__name__})", path, fix) from e


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its kind and version.

    Raises:
        UserError: missing or unreadable file, wrong kind, or a newer format.
    """
    path = Path(path)
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        raise UserError("not an avtalk checkpoint", path, "pass a file written by avtalk")
    if int(ckpt["format_version"]) > FORMAT_VERSION:
        raise UserError(f"checkpoint format {ckpt['format_version']} is newer than this avtalk "
                        f"understands ({FORMAT_VERSION})", path, "upgrade avtalk")
    if kind is not None and ckpt["kind"] != kind:
        raise UserError(f"this is an {ckpt['kind']} checkpoint, an {kind} checkpoint is needed", path,
                        f"pass an {kind} checkpoint")
    return ckpt


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


TRAINING_ONLY = ("optimizer", "scaler", "expert_optimizer")


def release_copy(src: str | Path, dst: str | Path) -> Path:
    """Copy a checkpoint without what only resuming needs (optimizer and scaler state).

    Everything an inference or fine-tuning run reads (config, weights, templates, faces, rig,
    history, metrics) is kept; the copy is about half the size of a training checkpoint.
    """
    ckpt = load_checkpoint(src)
    extra = ckpt.get("extra")
    if isinstance(extra, dict):
        ckpt["extra"] = {k: v for k, v in extra.items() if k not in TRAINING_ONLY}
    return save_checkpoint(dst, ckpt)
