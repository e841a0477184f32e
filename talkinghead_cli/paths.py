"""Input paths: refuse FIFOs, devices, sockets and folders where a file is expected.

Reading a named pipe blocks until another program writes into it, and a device such as
``/dev/zero`` never ends; neither is what a user means to give. :func:`check_input` is the
one check every command runs on each of its input paths before any work (through
:func:`check_config_paths`, called by ``config.build_config``), and the readers that open
user files (audio, config files) call it too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Iterable

# Config fields that name outputs (never checked as inputs).
OUTPUT_FIELDS = frozenset({"out", "output", "run_dir", "json_path", "cache_dir"})
# How the message names a field, per field or (command, field) (default: ``--field-name``).
LABELS = {"path": "the input", "sequence": "the sequence", "checkpoints": "--checkpoint",
          ("animate", "audio"): "the speech"}
# Input fields that may name a folder, per command (None: every command).
FOLDER_FIELDS = {
    None: frozenset({"data_root", "from_recordings"}),
    "animate": frozenset({"audio"}),  # a folder of speech files
    "score": frozenset({"path", "reference"}),  # an `avtalk animate` folder, a folder of frames
    "render": frozenset({"sequence"}),  # a folder of OBJ/PLY frames
}


def _kind(mode: int) -> str | None:
    """What a non-regular, non-folder file is, or None for a regular file or a folder."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def check_input(path: str | Path, what: str = "input", folder_ok: bool = False) -> Path:
    """Refuse a path that is a FIFO, a device, a socket or (unless ``folder_ok``) a folder.

    A missing path passes (the reader says what it expected). Never opens the path, so a
    FIFO does not block.
    Returns:
        ``path`` as a :class:`Path`.
    Raises:
        UserError: one line naming the path and what was expected.
    """
    from talkinghead_cli.errors import UserError

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, dangling link, unreadable parent, NUL in the name
        return path
    kind = _kind(mode)
    if kind is not None:
        raise UserError(f"{what} is {kind}, not a regular file", path, "give a file saved on disk")
    if stat.S_ISDIR(mode) and not folder_ok:
        raise UserError(f"expected a file for {what}, got a folder", path, "give a file, not a folder")
    return path


def _candidates(value: Any) -> Iterable[Path]:
    """Paths in a config value: Path, a str that names an existing path, or lists of them."""
    if isinstance(value, Path):
        yield value
    elif isinstance(value, str) and value and os.path.lexists(value):
        yield Path(value)  # a path given where a registered name is also accepted
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _candidates(v)


def check_config_paths(cfg: Any, command: str | None = None) -> None:
    """Run :func:`check_input` on every input path of a pydantic config (outputs skipped).

    Raises:
        UserError: the first path that is a FIFO, device, socket or misplaced folder.
    """
    folders = FOLDER_FIELDS[None] | FOLDER_FIELDS.get(command, frozenset())
    for name in type(cfg).model_fields:
        if name in OUTPUT_FIELDS:
            continue
        for path in _candidates(getattr(cfg, name, None)):
            label = LABELS.get((command, name)) or LABELS.get(name, f"--{name.replace('_', '-')}")
            check_input(path, label, folder_ok=name in folders)
