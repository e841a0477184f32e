"""The one numba guard and the thread helpers of the compiled CPU kernels (``render/*_jit.py``).

numba is optional (``pip install "avtalk[fast]"``, part of ``[all]``): without it ``numba`` is
None here, :func:`available` is False, the kernel modules define no kernels, and every caller
takes its PyTorch reference instead. Kernels work on a slice of frames and release the GIL:
frames are cut into spans (:func:`frame_spans`) that the calling thread and a kept pool of
workers take in turn (:func:`run_spans`).
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

try:  # pragma: no cover - exercised where numba is installed
    import numba
except ImportError:  # pragma: no cover - exercised where numba is missing
    numba = None


def available() -> bool:
    """True when numba is installed (the compiled kernels can run)."""
    return numba is not None


def require() -> None:
    """Raise RuntimeError when numba is not installed."""
    if numba is None:
        raise RuntimeError("numba is not installed: pip install 'avtalk[fast]'")


def frame_spans(B: int, threads: int, per_thread: int = 8, min_frames: int = 2) -> list[tuple[int, int]]:
    """``[(b0, b1), ...]``: B frames cut into contiguous, near-equal spans for :func:`run_spans`:
    one span for one thread, otherwise up to ``per_thread`` spans per thread (of at least
    ``min_frames`` frames), so that threads that finish early take more (frames differ in work:
    an open mouth has more outlines)."""
    n = 1 if threads <= 1 else max(1, min(threads * per_thread, B // min_frames))
    n = min(n, B) if B else 1
    cuts = [B * k // n for k in range(n + 1)]
    return [(cuts[k], cuts[k + 1]) for k in range(n) if cuts[k] < cuts[k + 1]]


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of ``workers`` threads, made once per size and kept for the process."""
    return ThreadPoolExecutor(workers, thread_name_prefix="avtalk-jit")


def run_spans(kernel, spans, threads: int) -> None:
    """Run ``kernel(b0, b1)`` over frame spans on up to ``threads`` threads: the calling thread
    and workers of a kept pool (the kernels release the GIL) each take the next span left until
    none is. Spans must not write to each other's frames."""
    threads = max(1, min(threads, len(spans)))
    if threads == 1:
        for span in spans:
            kernel(*span)
        return
    left, lock = iter(spans), threading.Lock()

    def work():
        while True:
            with lock:
                span = next(left, None)
            if span is None:
                return
            kernel(*span)

    jobs = [_pool(threads - 1).submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        for job in jobs:
            job.result()
