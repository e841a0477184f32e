"""Atomic outputs: write into a temporary sibling, then rename into place.

An interrupted or failed run therefore never leaves a half-written file or folder at
the target path; at worst a hidden ``.<name>.tmp-*`` sibling remains, which the next
run ignores.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from talkinghead_cli.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_parent(target: Path) -> Path:
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder ({e.strerror})", parent,
                        "choose a writable output path") from e
    if not os.access(parent, os.W_OK):
        raise UserError("the output folder is not writable", parent, "choose a writable output path")
    return parent


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    On an exception the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    parent = _check_parent(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=target.suffix, dir=parent)
    except OSError as e:
        raise UserError(f"cannot write into the output folder ({e.strerror})", parent,
                        "choose a writable output path") from e
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it becomes ``target``.

    An existing ``target`` is replaced only after the new content is complete: it is
    first renamed aside, the new folder renamed in, then the old one deleted.
    """
    target = Path(target)
    parent = _check_parent(target)
    if target.exists() and not target.is_dir():
        raise UserError("the output path exists and is not a folder", target,
                        "remove it or choose another output path")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as e:
        raise UserError(f"cannot write into the output folder ({e.strerror})", parent,
                        "choose a writable output path") from e
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual folder mode
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.rmdir(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
