"""User-facing errors.

A :class:`UserError` is raised for anything the user can fix (a missing file, a bad
format, a wrong option value). The CLI prints it as one line and exits with code 2;
any other exception is an internal error (exit code 1).
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error caused by input the user gave.

    Args:
        what: what went wrong, e.g. ``"not a WAV/FLAC/OGG file"``.
        path: the file or folder concerned, if any.
        fix: what the user can do about it.
    """

    def __init__(self, what: str, path: str | Path | None = None, fix: str | None = None):
        self.what = what
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.line())

    def __reduce__(self):  # survives a trip through a worker process intact
        return (type(self), (self.what, self.path, self.fix))

    def line(self) -> str:
        parts = [self.what]
        if self.path:
            parts.append(self.path)
        if self.fix:
            parts.append(self.fix)
        return ", ".join(parts)
