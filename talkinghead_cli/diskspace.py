"""Output size: estimate what a command will write, check the room for it, reserve it.

``animate``, ``synth`` and ``render`` estimate their output from frame count, vertex count
and formats before any work (:func:`animate_bytes`, :func:`check_room`): a large output is
announced (a :class:`LargeOutputWarning` the CLI prints as one line), and one that does not
fit on the output's filesystem (plus :func:`margin`) is refused with a :class:`UserError`.
Memory-mapped outputs reserve their whole size first (:func:`reserved_npy`), so a disk that
fills up during the run gives ENOSPC at the reservation instead of a SIGBUS in the middle of
a write through the map; :func:`stream_npy` writes an ``.npy`` block by block without a map.
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from talkinghead_cli.errors import UserError

LARGE = 1 << 30  # announce outputs from 1 GiB
MIN_MARGIN = 8 << 20  # keep at least 8 MiB free, and 2 % of the estimate
VIDEO_BYTES_PER_FRAME = 12_000  # H.264 preview at 512 px, measured 3-8 kB per frame
GLTF_TARGETS = 32  # at most export.MAX_TARGETS morph targets (a test keeps them equal)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
FIX = "free some space, write elsewhere with -o, or use --format npy or gltf (far smaller than per-frame OBJ/PLY)"


class LargeOutputWarning(UserWarning):
    """The command is about to write a lot of data."""


def human(n: float) -> str:
    """Bytes as ``"512 kB"``, ``"3.2 MB"``, ``"33.0 GB"`` (powers of 1000)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def free_bytes(path: str | Path) -> int:
    """Free bytes (for an unprivileged user) on the filesystem that holds ``path`` or, when it
    does not exist yet, its nearest existing parent. The one probe tests patch."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def margin(need: int) -> int:
    return max(MIN_MARGIN, need // 50)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL


# ----------------------------------------------------------------------------- estimates


def _fixed6_lengths(values: np.ndarray) -> np.ndarray:
    """Characters of ``"%.6f" % v`` for each value (N,)."""
    a = np.abs(values.astype(np.float64))
    digits = np.where(a >= 1, np.floor(np.log10(np.maximum(a, 1))) + 1, 1)
    return digits + 7 + np.signbit(values)


def obj_frame_bytes(template: np.ndarray, faces: np.ndarray) -> int:
    """Size of one OBJ frame as ``mesh.write_sequence`` writes it (``v`` lines from the
    template's coordinates, ``vn`` lines of at most 33 bytes, ``f v//vn`` lines with 1-based
    indices; UVs, when the template has them, add less than the normals)."""
    v = 5 * len(template) + int(_fixed6_lengths(np.asarray(template).ravel()).sum())
    idx = np.asarray(faces, np.int64).ravel() + 1
    f = 11 * len(faces) + 2 * int((np.floor(np.log10(np.maximum(idx, 1))) + 1).sum())
    return v + 33 * len(template) + f + 64


def sequence_bytes(fmt: str, frames: int, template: np.ndarray, faces: np.ndarray) -> int:
    """Bytes one output format of ``animate`` takes for ``frames`` frames of a mesh."""
    v, f = len(template), len(faces)
    raw = frames * v * 12
    if fmt == "obj":
        return frames * obj_frame_bytes(template, faces)
    if fmt == "ply":
        return frames * (250 + v * 12 + f * 13)
    if fmt == "npz":
        return raw + f * 8 * 3 + 1024
    if fmt == "gltf":  # up to 52 rig shapes + each component as two targets, with normal deltas
        n = 52 + 2 * GLTF_TARGETS
        return (n + 1) * v * 24 + v * 8 + f * 12 + (frames + 1) * (n + 1) * 4 + 8192
    if fmt == "usd":  # the point cache, plus (for a rig) the blend shapes and their weights
        return raw + frames * 32 + f * 16 + (52 + 2 * GLTF_TARGETS) * (v * 16 + frames * 4) + 8192
    if fmt == "arkit":
        return frames * 52 * 24 + 8192
    if fmt == "livelink":
        return frames * 63 * 12 + 8192
    return 0  # npy: vertices.npy, counted by the caller


def animate_bytes(frames: int, template: np.ndarray, faces: np.ndarray, formats: Iterable[str],
                  video: bool, model_verts: int | None = None) -> int:
    """What ``animate`` writes for one speech file: vertices.npy, face.npz, each format, the
    preview and, when retargeting, the model-topology vertices it keeps meanwhile."""
    v, f = len(template), len(faces)
    total = 128 + frames * v * 12 + v * 12 + f * 24 + 4096
    total += sum(sequence_bytes(fmt, frames, template, faces) for fmt in set(formats))
    if video:
        total += frames * VIDEO_BYTES_PER_FRAME
    if model_verts is not None:
        total += frames * model_verts * 12
    return int(total)


def synth_bytes(texts: Iterable[str], fps: float, verts: int, blendshapes: int, sample_rate: int = 16_000) -> int:
    """What ``synth`` writes for these sentences: per utterance a 16-bit WAV, (T, V*3) and
    (T, K) float32 arrays; speech length guessed at 0.2 s per word plus 0.8 s (a built
    corpus of 1,680 utterances: 0.19 s per word plus 0.78 s)."""
    texts = list(texts)
    seconds = sum(0.8 + 0.2 * len(t.split()) for t in texts)
    return int(seconds * (sample_rate * 2 + fps * (verts * 12 + blendshapes * 4)) + 4096 * len(texts))


def video_bytes(frames: int, size: int = 512) -> int:
    """An H.264 preview of ``frames`` frames of ``size`` x ``size`` pixels (an upper estimate)."""
    return int(frames * VIDEO_BYTES_PER_FRAME * (size / 512) ** 2) + (1 << 20)


# ----------------------------------------------------------------------------- checks


def check_room(out: str | Path, need: int, what: str, per_frame_files: bool = True) -> None:
    """Refuse when ``need`` bytes (plus :func:`margin`) do not fit where ``out`` goes; warn
    (:class:`LargeOutputWarning`) when ``need`` is over :data:`LARGE`.

    ``per_frame_files``: the output includes OBJ/PLY frames (the hint names smaller formats).

    Raises:
        UserError: not enough free space.
    """
    free = free_bytes(out)
    fix = FIX if per_frame_files else "free some space or write elsewhere with -o"
    if need + margin(need) > free:
        raise UserError(f"{what} needs about {human(need)} but only {human(free)} is free there", out, fix)
    if need >= LARGE:
        hint = "; --format npy or gltf is far smaller than per-frame OBJ/PLY" if per_frame_files else ""
        warnings.warn(f"{what} will write about {human(need)} into {out} ({human(free)} free){hint}",
                      LargeOutputWarning, stacklevel=2)


def _reserve(fh, size: int) -> None:
    """Allocate ``size`` bytes of an open file on disk (ENOSPC now, not at a later write)."""
    try:
        os.posix_fallocate(fh.fileno(), 0, size)
        return
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    except AttributeError:  # pragma: no cover - no posix_fallocate on this platform
        pass
    block = bytes(1 << 22)  # a filesystem without fallocate: write the zeros
    fh.seek(0, os.SEEK_END)
    left = size - fh.tell()
    while left > 0:
        fh.write(block[:left])
        left -= len(block)
    fh.flush()


def _header(fh, shape: tuple[int, ...], dtype: np.dtype) -> int:
    np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                              "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return fh.tell()


def reserved_npy(path: str | Path, shape: tuple[int, ...], dtype=np.float32) -> np.memmap:
    """``np.lib.format.open_memmap(path, "w+", ...)`` whose whole size is allocated on disk
    first, so writes through the map cannot outrun the disk (SIGBUS).

    Raises:
        OSError: ENOSPC when the file does not fit.
    """
    dtype = np.dtype(dtype)
    with open(path, "wb") as fh:
        offset = _header(fh, shape, dtype)
        _reserve(fh, offset + int(np.prod(shape)) * dtype.itemsize)
    return np.lib.format.open_memmap(path, mode="r+")


def stream_npy(path: str | Path, shape: tuple[int, ...], blocks: Iterable[np.ndarray], dtype=np.float32) -> None:
    """Write an ``.npy`` of ``shape`` from consecutive blocks along the first axis, with plain
    writes (no map, nothing held), after reserving its size.

    Raises:
        OSError: ENOSPC; ValueError: the blocks do not add up to ``shape``.
    """
    dtype = np.dtype(dtype)
    with open(path, "wb") as fh:
        offset = _header(fh, shape, dtype)
        _reserve(fh, offset + int(np.prod(shape)) * dtype.itemsize)
        fh.seek(offset)
        rows = 0
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=dtype)
            fh.write(memoryview(block).cast("B"))
            rows += len(block)
        if rows != shape[0]:
            raise ValueError(f"wrote {rows} of {shape[0]} rows")
