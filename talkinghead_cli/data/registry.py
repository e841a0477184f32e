"""The dataset registry: a dataset name -> its reader (the one place that knows them all)."""

from __future__ import annotations

from pathlib import Path

from talkinghead_cli.data.biwi import read_biwi
from talkinghead_cli.data.dataset import Corpus, read_synthetic
from talkinghead_cli.data.vocaset import read_vocaset
from talkinghead_cli.errors import UserError

DATASETS = ("vocaset", "biwi", "synthetic")


def open_corpus(dataset: str, root: str | Path, *, keep_60fps: bool = False,
                faces_from: str | Path | None = None) -> Corpus:
    """Read one of :data:`DATASETS` from ``root`` with its published split."""
    if dataset == "vocaset":
        return read_vocaset(root, keep_60fps=keep_60fps, faces_from=faces_from)
    if dataset == "biwi":
        return read_biwi(root, faces_from=faces_from)
    if dataset == "synthetic":
        return read_synthetic(root, faces_from=faces_from)
    raise UserError(f"unknown dataset '{dataset}'", None, f"use one of {', '.join(DATASETS)}")
