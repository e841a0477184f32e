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
from typing import Iterable, Iterator

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


OWN_TMP_PREFIX = ".avtalk-tmp-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace_entry(new: Path, dst: Path) -> None:
    """Put ``new`` at ``dst``: an existing ``dst`` (file or folder) is renamed aside first, the
    new entry renamed in, then the old one deleted; each rename is atomic."""
    old = None
    if dst.exists() or dst.is_symlink():
        old = dst.parent / f".{dst.name}.avtalk-old-{os.getpid()}"
        _remove(old)
        os.replace(dst, old)
    try:
        os.replace(new, dst)
    except OSError:
        if old is not None:
            os.replace(old, dst)  # put the previous version back
        raise
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def atomic_outputs(target: str | Path, stale: Iterable[str] = ()) -> Iterator[Path]:
    """Write a set of outputs into the folder ``target`` without touching anything else there.

    Yields a fresh hidden folder *inside* ``target`` (so ``target`` may be ``.``, and the
    final renames never cross file systems). On success every top-level entry written into
    it replaces the entry of the same name in ``target`` (one atomic rename each; a folder
    such as ``meshes/`` is replaced whole), and the entries named in ``stale`` (outputs of an
    earlier run that this run did not write again) are removed. Files and folders of other
    names in ``target`` are never touched. On an exception the hidden folder is removed,
    ``target`` keeps its previous content, and a ``target`` this call created is removed.

    Raises:
        UserError: ``target`` is not a folder, or cannot be created or written into.
    """
    target = Path(target)
    if (target.exists() or target.is_symlink()) and not target.is_dir():
        raise UserError("the output path exists and is not a folder", target,
                        "remove it or choose another output folder")
    created = not target.exists()
    if created:
        _check_parent(target)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the output folder ({e.strerror})", target,
                            "choose a writable output path") from e
    try:
        tmp = Path(tempfile.mkdtemp(prefix=OWN_TMP_PREFIX, dir=target))
    except OSError as e:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise UserError(f"cannot write into the output folder ({e.strerror})", target,
                        "choose a writable output folder, or make it writable") from e
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        written = sorted(p.name for p in tmp.iterdir())
        try:
            for name in written:
                _replace_entry(tmp / name, target / name)
            for name in set(stale) - set(written):
                if name and "/" not in name and name not in (".", ".."):
                    _remove(target / name)
        except OSError as e:
            raise UserError(f"cannot replace the outputs in the output folder ({e.strerror})",
                            e.filename or target, "make the folder and its files writable") from e
        os.rmdir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
