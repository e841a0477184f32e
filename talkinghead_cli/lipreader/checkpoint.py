"""One-file expert checkpoints (``kind="expert"``) through :mod:`talkinghead_cli.checkpoint`.

Stored: ``config`` (the :class:`ExpertConfig` as a dict), ``state_dict``, ``vocabulary``,
``fps`` (25), ``sample_rate`` (16000), and ``extra["tokenizer"]`` (the tokenizer kind and,
for SentencePiece, the model bytes as a uint8 tensor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from talkinghead_cli.checkpoint import load_checkpoint, save_checkpoint
from talkinghead_cli.errors import UserError
from talkinghead_cli.lipreader.config import ExpertConfig
from talkinghead_cli.lipreader.model import LipReader
from talkinghead_cli.lipreader.tokenizer import tokenizer_from_state


def save_expert(path: str | Path, model: LipReader, tokenizer, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` atomically to one file."""
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model {model.config.vocab_size}")
    payload = {
        "kind": "expert",
        "config": model.config.model_dump(mode="json"),
        "state_dict": model.state_dict(),
        "vocabulary": list(tokenizer.vocabulary),
        "fps": float(model.config.fps),
        "sample_rate": int(model.config.sample_rate),
        "extra": {"tokenizer": tokenizer.state(), **(extra or {})},
    }
    return save_checkpoint(path, payload)


def load_expert(path: str | Path, device: str | torch.device = "cpu",
                size: str | None = None, vocabulary: list[str] | None = None):
    """Load an expert checkpoint -> ``(model in eval mode, tokenizer, checkpoint dict)``.

    ``size`` / ``vocabulary``, when given, must match the checkpoint (UserError otherwise).
    """
    ckpt = load_checkpoint(path, kind="expert")
    try:
        config = ExpertConfig(**ckpt["config"])
    except (ValidationError, TypeError) as e:
        raise UserError("the expert checkpoint holds an invalid config", path,
                        "re-create it with this avtalk version") from e
    vocab = ckpt.get("vocabulary") or []
    if len(vocab) != config.vocab_size:
        raise UserError(f"the checkpoint's vocabulary has {len(vocab)} tokens, its model "
                        f"{config.vocab_size}", path, "the file is inconsistent; re-export it")
    if size is not None and config.size != size:
        raise UserError(f"the expert is size {config.size!r}, {size!r} was asked for", path,
                        f"pass --size {config.size} or another checkpoint")
    if vocabulary is not None and list(vocabulary) != list(vocab):
        raise UserError("the expert's vocabulary differs from the one needed", path,
                        "use an expert trained with the same tokenizer")
    tokenizer = tokenizer_from_state((ckpt.get("extra") or {}).get("tokenizer", {"kind": "char"}), vocab)
    model = LipReader(config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise UserError("the expert's weights do not fit its config", path,
                        "the file is damaged or from another version") from e
    return model.to(device).eval(), tokenizer, ckpt


def expert_from_autoavsr(path: str | Path, spm_model: str | Path | None = None,
                         units_file: str | Path | None = None, device: str | torch.device = "cpu",
                         **config_overrides):
    """A published Auto-AVSR checkpoint as an expert -> ``(model, tokenizer, ImportReport)``.

    Auto-AVSR models use a SentencePiece vocabulary (``unigram5000.model`` plus its units
    file); without ``spm_model`` the character vocabulary is assumed, which only fits a
    checkpoint with 31 outputs.
    """
    from talkinghead_cli.lipreader.import_autoavsr import import_autoavsr
    from talkinghead_cli.lipreader.tokenizer import CharTokenizer, SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer(spm_model, units_file) if spm_model else CharTokenizer()
    model, report = import_autoavsr(path, **config_overrides)
    if model.config.vocab_size != len(tokenizer):
        raise UserError(f"the checkpoint predicts {model.config.vocab_size} tokens, the tokenizer has "
                        f"{len(tokenizer)}", path,
                        "pass the SentencePiece model and units file the checkpoint was trained with")
    return model.to(device).eval(), tokenizer, report
