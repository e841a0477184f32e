"""A per-corpus cache of frozen speech-encoder features, for training.

Layout (one folder per encoder)::

    <corpus>/features/<encoder>/cache.json      {encoder, package, version, sha256, ...}
    <corpus>/features/<encoder>/<utterance>.npy (N, D) float16, the encoder's 50 Hz features
    <corpus>/features/<encoder>/index.jsonl     one line per utterance written:
                                                {"id", "audio", "frames"} (audio: content hash)
    <corpus>/features/<encoder>/<utterance>@aug-s<seed>-e<epoch>.npy
                                                the perturbed audio ``avtalk train --augment
                                                --seed <seed>`` feeds in that epoch
                                                (:func:`augmented_features`)

Building is resumable and safe to run in the background: each .npy is written atomically
and then its index line is appended, so a killed run loses at most the utterance in
progress and the next run computes only what is missing. An utterance whose audio changed
(another content hash) is computed again. A cache whose ``cache.json`` names another
encoder, package version, model checksum or settings is refused with one line (delete the
folder to rebuild it); it is never mixed with new features.

With ``--augment`` the trainer perturbs every training utterance afresh each epoch (seeded by
seed, epoch and index), so those waveforms miss the plain cache and the encoder would run at
every step (about 0.4 s a sequence on 2 cores, 35 min an epoch of the 5,168-utterance
corpus). ``avtalk features --augment --seed S --epochs E`` draws the same perturbations ahead
of time and caches their features beside the others; a training run with the same seed,
augmentation settings and corpus then finds them by their content hash.

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
AUGMENTED = "@aug-"  # in the id of a perturbed copy: <utterance>@aug-s<seed>-e<epoch>


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
        files[key] = _store_one(folder, u.id, key, features(load_audio(u.wav, rate)))
        report(progress, i + 1, len(todo))
    for uid, entry in index.items():  # perturbed copies (augmented_features): served by content hash too
        if AUGMENTED in uid:
            files.setdefault(entry["audio"], folder / f"{uid}.npy")
    return FeatureStore(folder, files)


def _store_one(folder: Path, uid: str, key: str, feats: np.ndarray) -> Path:
    """Write one utterance's features atomically, then its index line (fsynced)."""
    target = folder / f"{uid}.npy"
    with atomic_file(target) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, feats.astype(np.float16))
    with open(folder / "index.jsonl", "a") as fh:
        fh.write(json.dumps({"id": uid, "audio": key, "frames": int(len(feats))}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return target



def augmented_features(dataset: str, root: str | Path, encoder: str, augment, seed: int, epochs: int,
                       progress: ProgressFn | None = None,
                       on_start: Callable[[int, int], None] | None = None) -> FeatureStore:
    """``avtalk features --augment``: cache the features of the perturbed training audio that
    ``avtalk train --augment --seed seed`` draws in its first ``epochs`` epochs.

    The perturbations are drawn exactly as the trainer draws them
    (:class:`~talkinghead_cli.data.augment.AugmentedDataset` over the corpus's training split,
    in its order), so each copy's content hash is the one training looks up. A copy already
    cached for the same waveform is kept; one drawn with other settings (another
    ``augment`` config) gets a new hash and is computed again. Resumable like
    :func:`build_features`.

    Args:
        augment: an :class:`~talkinghead_cli.data.augment.AugmentConfig` (the probabilities).
        progress: (copies done, copies in all); on_start: (copies to check, already cached).
    Returns:
        the store of the whole cache (plain and perturbed).
    """
    from talkinghead_cli.data.augment import AugmentedDataset
    from talkinghead_cli.data.dataset import SequenceDataset
    from talkinghead_cli.data.registry import open_corpus

    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}", None, "pass the --epochs of the training run")
    ident, features, key_of, rate = _backend(encoder)
    corpus = open_corpus(dataset, root)
    folder = cache_dir(corpus.root, encoder)
    check_identity(folder, ident)
    index = read_index(folder)
    train = corpus.split("train")
    data = AugmentedDataset(SequenceDataset(corpus, train, rate), augment, seed)
    total = epochs * len(train)
    if on_start is not None:
        on_start(total, sum(AUGMENTED in uid for uid in index))
    done = 0
    for epoch in range(epochs):
        data.set_epoch(epoch)
        for i, u in enumerate(train):
            uid = f"{u.id}{AUGMENTED}s{seed}-e{epoch}"
            wave = data[i]["audio"].numpy()
            key = key_of(wave)
            if index.get(uid, {}).get("audio") != key:
                _store_one(folder, uid, key, features(wave))
            done += 1
            report(progress, done, total)
    return FeatureStore(folder, {e["audio"]: folder / f"{uid}.npy" for uid, e in read_index(folder).items()})


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
