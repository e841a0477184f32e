"""Progress reporting without UI dependencies.

Library functions take ``progress: ProgressFn | None`` and call it as
``progress(done, total)`` in the units they document (frames, seconds of audio, steps).
The CLI turns these calls into a rich progress bar; the library never imports rich.
"""

from __future__ import annotations

from typing import Callable, Optional

ProgressFn = Callable[[float, Optional[float]], None]


def report(progress: ProgressFn | None, done: float, total: float | None) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(done, total)
