"""Run the corpus's utterances on several processes.

Each utterance is a pure function of the corpus settings and its own id (subject, sentence
number): its speech, its articulation seed (``seed, 5, subject, sentence``) and its identity
template are computed from those alone, and it writes only its own files (atomically,
its ``parts/<id>.json`` last). So the files do not depend on how many processes ran, in
which order they finished, or whether the run was interrupted and resumed.

Workers are forked (where the OS can fork): a fork server or spawn would re-run the
caller's ``__main__``, which breaks for a script without a ``__main__`` guard or code piped
to Python. Each worker loads the rig once and the TTS backends on first use; espeak-ng
already forks a pristine child per utterance, so inherited library state cannot leak into
the audio.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable

_STATE: dict = {}


def default_jobs() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker(setup: Callable, args: tuple) -> None:
    _STATE["run"] = setup(*args)


def _run_one(item):
    return _STATE["run"](item)


def run_items(items: Iterable, jobs: int, setup: Callable, args: tuple, on_done: Callable[[Any], None]) -> None:
    """Run ``setup(*args)(item)`` for each item on ``jobs`` processes (1: in this process),
    calling ``on_done(result)`` here as each finishes (in completion order).

    ``setup`` (a module-level function) runs once per process and returns the per-item
    function, so expensive state (the rig, TTS voices) loads once a worker. An exception
    from an item or from ``on_done`` cancels the items not yet started, waits for the
    running ones (their files stay complete), and is re-raised.
    """
    items = list(items)
    if jobs <= 1 or len(items) <= 1:
        run = setup(*args)
        for item in items:
            on_done(run(item))
        return
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=ctx, initializer=_init_worker,
                               initargs=(setup, args))
    try:
        pending = set()
        queue = iter(items)
        with warnings.catch_warnings():  # Python >= 3.12 warns about forking a threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            for item in queue:  # one item a worker: a stop leaves only the running ones to finish
                pending.add(pool.submit(_run_one, item))
                if len(pending) >= jobs:
                    break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_done(fut.result())
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(_run_one, nxt))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
