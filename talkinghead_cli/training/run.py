"""What both trainers (animator: :mod:`.trainer`, expert: :mod:`.expert_trainer`) share about a run:
the event log callback and the result record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LogFn = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_epoch: int | None
    best: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
