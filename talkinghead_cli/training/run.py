"""What both trainers (animator: :mod:`.trainer`, expert: :mod:`.expert_trainer`) share about a run:
the event log callback, the result record and the run folder (resume, save).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.checkpoint import load_checkpoint
from talkinghead_cli.errors import UserError

LogFn = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_epoch: int | None
    best: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunFolder:
    """A run's folder, as both trainers keep it: ``last.pt`` (what ``--resume`` continues),
    ``best.pt`` (the best epoch so far) and ``metrics.json`` (history and best), all written
    atomically."""

    path: Path

    def resume(self, resume: bool, kind: str) -> dict | None:
        """The checkpoint to continue (``last.pt``) when ``resume``, else None.

        Raises:
            UserError: a new run in a folder that holds one, or ``resume`` with nothing to resume.
        """
        last = self.path / "last.pt"
        if not resume:
            if last.exists():
                raise UserError("the run folder already holds a run (last.pt)", self.path,
                                "pass --resume to continue it, or -o a new folder")
            return None
        if not last.exists():
            raise UserError("nothing to resume: no last.pt in the run folder", self.path,
                            "drop --resume to start a new run, or pass the run's -o folder")
        return load_checkpoint(last, kind=kind)

    def save(self, write: Callable[[Path], Any], history: list[dict[str, Any]], best: dict[str, Any],
             improved: bool) -> None:
        """``write(path)`` the checkpoint to ``best.pt`` (when ``improved``) and ``last.pt``,
        then ``metrics.json``."""
        if improved:
            write(self.path / "best.pt")
        write(self.path / "last.pt")
        with atomic_file(self.path / "metrics.json") as tmp:
            tmp.write_text(json.dumps({"history": history, "best": best}, indent=1))
