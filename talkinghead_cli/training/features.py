"""A per-corpus cache of frozen speech-encoder features, for training.

Layout (one folder per encoder)::

    <corpus>/features/<encoder>/cache.json      {encoder, package, version, sha256, ...}
    <corpus>/features/<encoder>/<utterance>.npy (N, D) float16, the encoder's 50 Hz features
    <corpus>/features/<encoder>/index.jsonl     one line per utterance written:
                                                {"id", "audio", "frames"} (audio: content hash)

Building is resumable and safe to run in the background: each .npy is written atomically
and then its index line is appended, so a killed run loses at most the utterance in
progress and the next run computes only what is missing. An utterance whose audio changed
(another content hash) is computed again. A cache whose ``cache.json`` names another
encoder, package version, model checksum or settings is refused with one line (delete the
folder to rebuild it); it is never mixed with new features.

The trainer looks features up by the content hash of the waveform it feeds the model
(:func:`talkinghead_cli.animator.whisper_ct2.audio_key`), through :class:`FeatureStore`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.audio import load_audio
from talkinghead_cli.errors import UserError
from talkinghead_cli.progress import ProgressFn, report

CACHE_ENCODERS = ("whisper-tiny-ct2",)


def _backend(encoder: str) -> tuple[dict, Callable[[np.ndarray], np.ndarray], Callable, int]:
    """(identity, features(audio) -> (N, D), key(audio) -> str, sample rate) of a cacheable encoder."""
    if encoder == "whisper-tiny-ct2":
        from talkinghead_cli.animator import whisper_ct2 as W

        return W.identity(), W.whisper_features, W.audio_key, W.SAMPLE_RATE
    raise UserError(f"the encoder {encoder!r} has no feature cache", None,
                    f"use one of {', '.join(CACHE_ENCODERS)}")


def cache_dir(root: str | Path, encoder: str) -> Path:
    return Path(root) / "features" / encoder


class FeatureStore:
    """Cached features by audio content hash: ``get(key) -> (N, D) float32 or None``."""

    def __init__(self, folder: Path, files: dict[str, Path]):
        self.folder, self.files = folder, files

    def __len__(self) -> int:
        return len(self.files)

    def get(self, key: str) -> np.ndarray | None:
        path = self.files.get(key)
        return None if path is None else np.load(path, allow_pickle=False).astype(np.float32)


def check_identity(folder: Path, ident: dict) -> None:
    """Write ``cache.json`` in a new cache; refuse a cache made by anything else."""
    meta_path = folder / "cache.json"
    if not meta_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(meta_path) as tmp:
            tmp.write_text(json.dumps(ident, indent=1))
        return
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"the feature cache's cache.json is unreadable ({type(e).__name__})", meta_path,
                        f"delete {folder} to compute the features again") from e
    diff = [k for k in ident if meta.get(k) != ident[k]]
    if diff:
        k = diff[0]
        raise UserError(f"the feature cache was made with {k}={meta.get(k)!r}, this encoder has {ident[k]!r}",
                        folder, "delete the folder to compute the features again with this encoder")


def read_index(folder: Path) -> dict[str, dict]:
    """{utterance id: {"audio", "frames"}} of the utterances whose features are on disk."""
    entries: dict[str, dict] = {}
    index = folder / "index.jsonl"
    if not index.exists():
        return entries
    for line in index.read_text().splitlines():
        try:
            entry = json.loads(line)
            entries[str(entry["id"])] = entry
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a kill: that utterance is computed again
    return {k: v for k, v in entries.items() if (folder / f"{k}.npy").exists()}


def build_features(root: str | Path, utterances: Iterable, encoder: str,
                   progress: ProgressFn | None = None, on_start: Callable[[int, int], None] | None = None,
                   ) -> FeatureStore:
    """Compute the missing features of ``utterances`` (objects with ``.id`` and ``.wav``).

    Args:
        root: the corpus folder; features go under ``root/features/<encoder>/``.
        progress: (utterances done, utterances to compute).
        on_start: called once with (utterances to compute, utterances already cached).
    Returns:
        the store serving every utterance's features.
    Raises:
        UserError: a cache made by another encoder, version or model file.
    """
    ident, features, key_of, rate = _backend(encoder)
    folder = cache_dir(root, encoder)
    check_identity(folder, ident)
    index = read_index(folder)
    files: dict[str, Path] = {}
    todo = []
    for u in utterances:
        audio = load_audio(u.wav, rate)
        key = key_of(audio)
        if index.get(u.id, {}).get("audio") == key:
            files[key] = folder / f"{u.id}.npy"
        else:
            todo.append((u, key))
    if on_start is not None:
        on_start(len(todo), len(files))
    for i, (u, key) in enumerate(todo):
        feats = features(load_audio(u.wav, rate))
        target = folder / f"{u.id}.npy"
        with atomic_file(target) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, feats.astype(np.float16))
        with open(folder / "index.jsonl", "a") as fh:
            fh.write(json.dumps({"id": u.id, "audio": key, "frames": int(len(feats))}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        files[key] = target
        report(progress, i + 1, len(todo))
    return FeatureStore(folder, files)


def attach_features(model, root: str | Path, utterances: Iterable, progress: ProgressFn | None = None,
                    on_start: Callable[[int, int], None] | None = None) -> FeatureStore | None:
    """Give ``model``'s audio encoder a feature cache when it uses one (else do nothing, None)."""
    encoder = getattr(getattr(model, "cfg", None), "encoder", None)
    if encoder not in CACHE_ENCODERS or not hasattr(model, "audio_encoder"):
        return None
    store = build_features(root, utterances, encoder, progress, on_start)
    model.audio_encoder.feature_store = store
    return store


def corpus_features(dataset: str, root: str | Path, encoder: str = "whisper-tiny-ct2",
                    progress: ProgressFn | None = None,
                    on_start: Callable[[int, int], None] | None = None) -> FeatureStore:
    """``avtalk features``: the cache of every utterance of a corpus (all splits)."""
    from talkinghead_cli.data.registry import open_corpus

    _backend(encoder)  # an unknown encoder fails before the corpus is read
    corpus = open_corpus(dataset, root)
    return build_features(corpus.root, corpus.utterances, encoder, progress, on_start)
