"""Speaking-style vectors: weights over a model's training subjects, one home for all callers.

A style is a convex mix of one-hot subject vectors, (N,) float32 summing to 1 (N subjects,
in the order the model was trained with). ``avtalk animate --style`` parses
``SUBJECT`` or ``A:0.5,B:0.5`` with :func:`parse_style`; a dataset item and ``score --dataset``
take :func:`subject_style` (the subject's one-hot, or the mean style for a subject the model
never saw).
"""

from __future__ import annotations

from pathlib import Path

import torch

from talkinghead_cli.errors import UserError


def mix_style(mix: dict[str, float], subjects: list[str], checkpoint: Path | None = None) -> torch.Tensor:
    """{subject: weight} -> (N,) float32, normalised to sum 1.

    Raises:
        UserError: an unknown subject (listing the known ones), or weights that are negative
            or all zero.
    """
    weights = torch.zeros(len(subjects))
    for name, w in mix.items():
        if name not in subjects:
            raise UserError(f"unknown speaking style '{name}'", checkpoint,
                            f"use one of: {', '.join(subjects)}")
        weights[subjects.index(name)] += float(w)
    if (weights < 0).any() or weights.sum() <= 0:
        raise UserError("style weights must be non-negative and not all zero", None,
                        "write --style A:0.5,B:0.5")
    return weights / weights.sum()


def parse_style(spec: str | None, subjects: list[str], checkpoint: Path | None = None) -> torch.Tensor:
    """Style weights over the training subjects.

    Args:
        spec: ``SUBJECT``, ``A:0.5,B:0.5`` (weights normalised to sum 1), or None for
            the mean of all styles.
    Returns:
        (N_subj,) float32.
    """
    n = len(subjects)
    if not spec:
        return torch.full((n,), 1.0 / n)
    mix: dict[str, float] = {}
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        if name not in subjects:
            raise UserError(f"unknown speaking style '{name}'", checkpoint,
                            f"use one of: {', '.join(subjects)}")
        try:
            mix[name] = mix.get(name, 0.0) + (float(w) if w else 1.0)
        except ValueError as e:
            raise UserError(f"style weight '{w}' is not a number", None, "write --style A:0.5,B:0.5") from e
    return mix_style(mix, subjects, checkpoint)


def subject_style(subject: str, subjects: list[str]) -> torch.Tensor:
    """(N_subj,) one-hot of a known subject, else the mean style."""
    n = len(subjects)
    if subject in subjects:
        return torch.nn.functional.one_hot(torch.tensor(subjects.index(subject)), n).float()
    return torch.full((n,), 1.0 / n)
