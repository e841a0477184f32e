"""The synthetic corpus writer behind ``avtalk synth`` (FaceFormer's VOCASET layout).

OUT/ after a run::

    wav/<subject>_sentenceNN.wav            16 kHz mono PCM16
    vertices_npy/<subject>_sentenceNN.npy   (T, V*3) float32 at ``fps``
    blendshapes_npy/<subject>_sentenceNN.npy (T, K) float32 ARKit weights
    templates.pkl                           {subject: (V, 3) float32}
    sentencestext/<subject>.txt             line n = sentence n
    regions/lve.txt, regions/fdd.txt        lip / upper-face vertex indices
    faces.npy                               (F, 3) int64 rig topology
    manifest.json                           rig, subjects (voice, style, split), utterances

Splits: train subjects speak sentences from three disjoint pools (train / val / test), so
val and test sentences are never seen in training; ``test_b`` subjects are extra
speakers with voices (backend variant and dialect) that no train subject uses.

Everything derives from ``seed``; the same settings give byte-identical files. The run
builds in ``.<OUT>.synth-partial`` beside OUT and renames it at the end; ``resume``
keeps the utterances a previous interrupted run finished there.
"""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from talkinghead_cli import __version__
from talkinghead_cli.atomic import _check_parent, _replace_entry, atomic_file
from talkinghead_cli.audio import SAMPLE_RATE, save_wav
from talkinghead_cli.data.synthetic.articulation import Style, articulate
from talkinghead_cli.data.synthetic.rig import Rig, load_rig
from talkinghead_cli.data.synthetic.tts import Voice, check_voice, synthesize
from talkinghead_cli.errors import UserError
from talkinghead_cli.progress import ProgressFn, report

FORMAT = "avtalk-synthetic/1"
# Voices: (backend, name). Train and test-B pools share no variant, no dialect, no speaker.
# Backends alternate, so a corpus of 5 train speakers already has all three.
TRAIN_VOICES = [("piper", "joe"), ("espeak", "en-us+m1"), ("festival", "kal"), ("espeak", "en-us+f1"),
                ("festival", "slt")] + [("espeak", f"en-us+{v}") for v in
                                        ("m3", "f2", "m2", "f3", "m4", "f4", "klatt", "m5")]
TEST_B_VOICES = [("espeak", "en-gb-x-rp+m7"), ("festival", "ked"), ("espeak", "en-gb-scotland+f5"),
                 ("espeak", "en-029+m6"), ("espeak", "en-us-nyc+klatt3")]
BACKENDS = ("piper", "espeak", "festival")


def default_tts() -> list[str]:
    """All backends; festival only where its program is installed (else a warning says so)."""
    import shutil

    if shutil.which("festival"):
        return list(BACKENDS)
    warnings.warn("festival is not installed: the corpus uses piper and espeak voices only "
                  "(apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)", stacklevel=2)
    return ["piper", "espeak"]


class SynthConfig(BaseModel):
    """Settings of one ``avtalk synth`` run."""

    model_config = ConfigDict(extra="forbid")
    out: Path
    subjects: int = Field(12, ge=1, le=200)
    sentences: int = Field(40, ge=1, le=999)
    rig: Optional[Path] = None
    tts: Optional[list[str]] = None  # None: default_tts()
    fps: float = Field(30.0, gt=0, le=240)
    seed: int = Field(0, ge=0)
    sentences_file: Optional[Path] = None
    resume: bool = False
    blinks: bool = True
    test_b_subjects: Optional[int] = Field(None, ge=0)
    from_recordings: Optional[Path] = None
    voices: Optional[list[str]] = None  # train voices as backend:name, replacing TRAIN_VOICES
    jobs: Optional[int] = Field(None, ge=1, le=256)  # processes; None: one per core (not in the output)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


def _parse_voice(spec: str) -> tuple[str, str]:
    backend, sep, name = spec.partition(":")
    if not sep or backend not in BACKENDS or not name:
        raise UserError(f"bad voice {spec!r}", None, "write voices as piper:joe, espeak:en-us+f3 or festival:kal")
    return backend, name


def plan_subjects(cfg: SynthConfig) -> list[dict]:
    """Subject names, voices, styles and splits (deterministic in ``cfg.seed``)."""
    if cfg.tts is None:
        cfg = cfg.model_copy(update={"tts": default_tts()})
    for b in cfg.tts:
        if b not in BACKENDS:
            raise UserError(f"unknown TTS backend {b!r}", None, "use --tts with piper, espeak and/or festival, "
                            "e.g. piper,espeak")
    n_b = cfg.test_b_subjects if cfg.test_b_subjects is not None else (max(1, round(cfg.subjects / 6))
                                                                       if cfg.subjects >= 3 else 0)
    n_b = min(n_b, cfg.subjects - 1)
    train_pool = [v for v in TRAIN_VOICES if v[0] in cfg.tts]
    if cfg.voices:
        train_pool = [_parse_voice(v) for v in cfg.voices]
    b_pool = [v for v in TEST_B_VOICES if v[0] in cfg.tts and v not in train_pool]
    if n_b and not b_pool:
        b_pool = train_pool
        warnings.warn("no unseen voice is left for the test-B speakers with these --tts/--voices; "
                      "they reuse train voices (add espeak for unseen voices)", stacklevel=2)
    subjects = []
    for i in range(cfg.subjects):
        is_b = i >= cfg.subjects - n_b
        pool, j = (b_pool, i - (cfg.subjects - n_b)) if is_b else (train_pool, i)
        backend, name = pool[j % len(pool)]
        rng = _rng(cfg.seed, 1, i)
        voice = Voice(backend, name, rate=round(float(rng.uniform(0.88, 1.12)), 3),
                      pitch=int(rng.integers(35, 66)), range=int(rng.integers(35, 76)))
        style = Style(amplitude=float(rng.uniform(0.85, 1.15)), jaw=float(rng.uniform(0.8, 1.2)),
                      lips=float(rng.uniform(0.8, 1.2)), blink_rate=float(rng.uniform(0.2, 0.4)) if cfg.blinks else 0.0)
        tag = "B" if is_b else "S"
        subjects.append({"name": f"Synth{tag}{i + 1:02d}_{backend}", "index": i, "voice": voice,
                         "style": Style(**style.to_json()), "split": "test_b" if is_b else "train"})
    return subjects


def sentence_pools(sentences: list[str], seed: int) -> dict[str, list[str]]:
    """Shuffle (seeded) and cut into disjoint train (80%), val (10%), test (10%) pools."""
    order = _rng(seed, 2).permutation(len(sentences))
    n = len(sentences)
    n_val = n_test = max(1, n // 10) if n >= 3 else 0
    return {"val": [sentences[k] for k in order[:n_val]],
            "test": [sentences[k] for k in order[n_val:n_val + n_test]],
            "train": [sentences[k] for k in order[n_val + n_test:]]}


def plan_sentences(cfg: SynthConfig, sentences: list[str], subjects: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """Per subject: [(text, split)] for sentence numbers 1..M.

    The sentence list is shuffled and cut into train (80%), val (10%) and test (10%)
    pools; a train subject takes 80/10/10% of its M sentences from them, a test-B
    subject takes all from the test pool.
    """
    pools = sentence_pools(sentences, cfg.seed)
    n_val = len(pools["val"])
    m = cfg.sentences
    m_val = m_test = max(1, round(0.1 * m)) if m >= 3 and n_val else 0
    out = {}
    for s in subjects:
        rng = _rng(cfg.seed, 3, s["index"])
        if s["split"] == "test_b":
            want = [("test" if pools["test"] else "train", m)]
        else:
            want = [("train", m - m_val - m_test), ("val", m_val), ("test", m_test)]
        items: list[tuple[str, str]] = []
        for pool, count in want:
            src = pools[pool]
            picks = rng.choice(len(src), size=count, replace=count > len(src)) if count else []
            items += [(src[k], s["split"] if s["split"] == "test_b" else pool) for k in picks]
        out[s["name"]] = items
    return out


def identity_template(rig: Rig, seed: int, index: int) -> np.ndarray:
    """A subject's neutral head: anisotropic scale (+-4%) and a smooth bump field (<= 2 mm).

    Returns (V, 3) float32. Rigid parts (eyes, teeth) move with the same smooth field, so
    nothing detaches.
    """
    rng = _rng(seed, 4, index)
    p = rig.template.astype(np.float64)
    head = p[rig.head]
    centre = head.mean(axis=0)
    scale = 1.0 + rng.uniform(-0.04, 0.04, size=3)
    out = centre + (p - centre) * scale
    size = float(np.ptp(head[:, 1]))
    for _ in range(6):
        c = head[rng.integers(len(head))]
        amp = rng.normal(0.0, 0.001, size=3).clip(-0.002, 0.002)
        w = np.exp(-np.sum((p - c) ** 2, axis=1) / (2 * (0.2 * size) ** 2))
        out += w[:, None] * amp
    return out.astype(np.float32)


def _utterance(rig: Rig, template: np.ndarray, subj: dict, nn: int, text: str, split: str,
               cfg: SynthConfig, work: Path, speech=None) -> dict:
    """Synthesize, articulate and write one utterance; returns its manifest entry."""
    uid = f"{subj['name']}_sentence{nn:02d}"
    if speech is None:
        speech = synthesize(text, subj["voice"])
    frames = int(round(speech.duration * cfg.fps))
    weights = articulate(speech.segments, frames, cfg.fps, rig.names, subj["style"],
                         seed=int(_rng(cfg.seed, 5, subj["index"], nn).integers(2 ** 31)))
    verts = rig.pose(weights, template).reshape(frames, -1)
    save_wav(work / "wav" / f"{uid}.wav", speech.wave, SAMPLE_RATE)  # each file atomic
    for sub, arr in (("vertices_npy", verts), ("blendshapes_npy", weights)):
        with atomic_file(work / sub / f"{uid}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr.astype(np.float32))
    entry = {"id": uid, "subject": subj["name"], "sentence": nn, "text": text, "split": split,
             "num_frames": frames, "duration": round(speech.duration, 6),
             "phonemes": [[a, b, s] for a, b, s in speech.segments]}
    with atomic_file(work / "parts" / f"{uid}.json") as tmp:  # written last: marks it done
        tmp.write_text(json.dumps(entry))
    return entry


def _utterance_maker(cfg: SynthConfig, work: Path):
    """Per process (see :mod:`.jobs`): load the rig once; return item -> manifest entry."""
    rig = load_rig(cfg.rig)
    templates: dict[int, np.ndarray] = {}

    def run(item: tuple[dict, int, str, str]) -> dict:
        subj, nn, text, split = item
        if subj["index"] not in templates:
            templates[subj["index"]] = identity_template(rig, cfg.seed, subj["index"])
        return _utterance(rig, templates[subj["index"]], subj, nn, text, split, cfg, work)

    return run


def _prepare_work(cfg: SynthConfig, settings: dict) -> Path:
    out = Path(cfg.out).absolute()  # `.` too: the work folder is named after the real folder
    parent = _check_parent(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").exists())):
        raise UserError("the output path exists and is not an avtalk corpus", cfg.out,
                        "choose a new or empty folder (in an existing corpus only the corpus's own files "
                        "are replaced)")
    work = parent / f".{out.name}.synth-partial"
    saved = work / "settings.json"
    if work.exists() and cfg.resume:
        if not saved.exists() or json.loads(saved.read_text()) != settings:
            raise UserError("the unfinished run used other settings", work,
                            "rerun with the same options, or without --resume to start over")
    elif work.exists():
        shutil.rmtree(work)
    for sub in ("wav", "vertices_npy", "blendshapes_npy", "sentencestext", "regions", "parts"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(settings, sort_keys=True))
    return work


def _settings(cfg: SynthConfig, sentences: list[str], extra: dict | None = None) -> dict:
    return {"subjects": cfg.subjects, "sentences": cfg.sentences, "rig": str(cfg.rig) if cfg.rig else None,
            "tts": list(cfg.tts), "fps": cfg.fps, "seed": cfg.seed, "blinks": cfg.blinks,
            "test_b_subjects": cfg.test_b_subjects, "sentence_list": sentences, **(extra or {})}


def _finish(work: Path, out: Path, rig: Rig, templates: dict, texts: dict, entries: list[dict],
            manifest_extra: dict) -> None:
    """Write the corpus-level files and move the folder into place."""
    np.save(work / "faces.npy", rig.faces.astype(np.int64))
    (work / "regions" / "lve.txt").write_text(" ".join(map(str, rig.lip_indices.tolist())) + "\n")
    (work / "regions" / "fdd.txt").write_text(" ".join(map(str, rig.upper_face_indices.tolist())) + "\n")
    with open(work / "templates.pkl", "wb") as f:
        pickle.dump({k: np.asarray(v, np.float32) for k, v in templates.items()}, f, protocol=4)
    for name, lines in texts.items():
        (work / "sentencestext" / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = {"format": FORMAT, "generator": f"avtalk {__version__}", **manifest_extra,
                "rig": rig.info(), "utterances": entries}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    _check_articulation(work, rig)
    shutil.rmtree(work / "parts")
    (work / "settings.json").unlink()
    out.mkdir(parents=True, exist_ok=True)
    for entry in sorted(work.iterdir()):  # the corpus's own names only: other files in OUT stay
        _replace_entry(entry, out / entry.name)
    work.rmdir()


def _check_articulation(work: Path, rig: Rig) -> None:
    """Write the per-phoneme articulation table (``articulation.json``); warn about missed targets."""
    from talkinghead_cli.data.synthetic import phoneme_check

    targets = phoneme_check.load_targets()
    table = phoneme_check.phoneme_table(phoneme_check.corpus_measures(work, rig), targets)
    misses = phoneme_check.check(table, targets)
    (work / "articulation.json").write_text(json.dumps({"table": table, "missed_targets": misses}, indent=1) + "\n")
    for line in misses:
        warnings.warn(f"articulation target missed: {line}", stacklevel=2)


def build_corpus(cfg: SynthConfig, progress: ProgressFn | None = None) -> dict:
    """Write a synthetic corpus to ``cfg.out``; returns a summary.

    Progress is reported in utterances. Raises UserError for a bad rig, sentences file,
    voice or output folder; nothing is left at ``cfg.out`` on failure.
    """
    from talkinghead_cli.data.synthetic.sentences import load_sentences

    if cfg.from_recordings is not None:
        return label_recordings(cfg, progress)
    if cfg.tts is None:
        cfg = cfg.model_copy(update={"tts": default_tts()})
    sentences = load_sentences(cfg.sentences_file)
    rig = load_rig(cfg.rig)
    subjects = plan_subjects(cfg)
    for s in subjects:
        check_voice(s["voice"])
    plan = plan_sentences(cfg, sentences, subjects)
    from talkinghead_cli.diskspace import check_room, synth_bytes

    _check_parent(Path(cfg.out))  # a bad output path is named first
    check_room(cfg.out, synth_bytes([t for v in plan.values() for t, _ in v], cfg.fps, len(rig.template),
                                    len(rig.names)), "the corpus", per_frame_files=False)  # before any synthesis
    work = _prepare_work(cfg, _settings(cfg, sentences))
    from talkinghead_cli.data.synthetic.jobs import default_jobs, run_items

    items = [(subj, nn, text, split) for subj in subjects
             for nn, (text, split) in enumerate(plan[subj["name"]], start=1)]
    found: dict[str, dict] = {}
    for subj, nn, _, _ in items:  # a resumed run keeps what the interrupted one finished
        part = work / "parts" / f"{subj['name']}_sentence{nn:02d}.json"
        if part.exists():
            found[part.stem] = json.loads(part.read_text())
    total = len(items)
    report(progress, len(found), total)

    def done(entry: dict) -> None:
        found[entry["id"]] = entry
        report(progress, len(found), total)

    todo = [it for it in items if f"{it[0]['name']}_sentence{it[1]:02d}" not in found]
    run_items(todo, cfg.jobs or default_jobs(), _utterance_maker, (cfg, work), done)
    entries = [found[f"{subj['name']}_sentence{nn:02d}"] for subj, nn, _, _ in items]
    templates = {s["name"]: identity_template(rig, cfg.seed, s["index"]) for s in subjects}
    texts = {s["name"]: [t for t, _ in plan[s["name"]]] for s in subjects}
    subj_json = {s["name"]: {"voice": s["voice"].to_json() | {"id": s["voice"].id}, "style": s["style"].to_json(),
                             "split": s["split"]} for s in subjects}
    fps = int(cfg.fps) if float(cfg.fps).is_integer() else cfg.fps
    extra = {"fps": fps, "sample_rate": SAMPLE_RATE, "seed": cfg.seed, "tts": list(cfg.tts),
             "sentences_source": str(cfg.sentences_file) if cfg.sentences_file else "builtin",
             "splits": {"train": "train subjects, train sentences", "val": "train subjects, unseen sentences",
                        "test": "train subjects, unseen sentences",
                        "test_b": "unseen subjects with unseen voices, test sentences"},
             "subjects": subj_json}
    _finish(work, Path(cfg.out), rig, templates, texts, entries, extra)
    return {"out": str(cfg.out), "utterances": len(entries), "subjects": len(subjects),
            "seconds": round(sum(e["duration"] for e in entries), 2)}


def _recording_pairs(folder: Path) -> list[tuple[Path, str]]:
    if not folder.is_dir():
        raise UserError("the recordings folder does not exist", folder, "pass a folder of WAV + TXT pairs")
    wavs = sorted(folder.glob("*.wav"))
    if not wavs:
        raise UserError("no .wav files in the recordings folder", folder, "put NAME.wav + NAME.txt pairs there")
    pairs = []
    for wav in wavs:
        txt = wav.with_suffix(".txt")
        try:
            pairs.append((wav, txt.read_text(encoding="utf-8").strip()))
        except FileNotFoundError:
            warnings.warn(f"skipped {wav}: no transcript (add {txt.name} with the spoken words)", stacklevel=2)
        except (OSError, UnicodeDecodeError):
            warnings.warn(f"skipped {wav}: cannot read {txt.name} (save it as UTF-8 text)", stacklevel=2)
    return pairs


def label_recordings(cfg: SynthConfig, progress: ProgressFn | None = None) -> dict:
    """Label a folder of WAV + TXT pairs: forced alignment, articulation, same layout.

    One subject (``Recorded_<folder>``) on the rig's own template; every utterance is in
    the ``train`` split; the source file of each is kept in the manifest. Each file is
    aligned on its own (the result does not depend on the other files); a pair that cannot
    be read or aligned is skipped with a warning.

    Raises:
        UserError: no pair at all could be labelled (nothing is written then).
    """
    import re

    from talkinghead_cli.audio import load_audio
    from talkinghead_cli.data.synthetic.align import align
    from talkinghead_cli.data.synthetic.tts import Speech

    folder = Path(cfg.from_recordings)
    pairs = _recording_pairs(folder)
    rig = load_rig(cfg.rig)
    name = "Recorded_" + (re.sub(r"[^A-Za-z0-9]+", "", folder.resolve().name) or "speaker")
    subj = {"name": name, "index": 0, "voice": Voice("recording", folder.name), "split": "train",
            "style": Style(blink_rate=0.3 if cfg.blinks else 0.0)}
    speeches, kept = [], []
    for wav, text in pairs:  # align everything first: nothing is written unless some pair aligns
        try:
            wave = load_audio(wav, SAMPLE_RATE)
            speeches.append(Speech(wave=wave, segments=align(wave, text, wav)))
            kept.append((wav, text))
        except UserError as e:
            warnings.warn(f"skipped {wav.name}: {e.line()}", stacklevel=2)
    if not kept:
        raise UserError("no recording could be labelled (see the warnings above)", folder,
                        "give NAME.wav + NAME.txt pairs whose text is exactly what is spoken")
    pairs = kept
    work = _prepare_work(cfg, {"from_recordings": str(folder.resolve()), "fps": cfg.fps, "seed": cfg.seed,
                               "rig": str(cfg.rig) if cfg.rig else None, "blinks": cfg.blinks})
    entries = []
    for nn, ((wav, text), speech) in enumerate(zip(pairs, speeches), start=1):
        entry = _utterance(rig, rig.template, subj, nn, text, "train", cfg, work, speech=speech)
        entries.append(entry | {"source": wav.name})
        report(progress, nn, len(pairs))
    fps = int(cfg.fps) if float(cfg.fps).is_integer() else cfg.fps
    extra = {"fps": fps, "sample_rate": SAMPLE_RATE, "seed": cfg.seed, "tts": [], "aligner": "pocketsphinx",
             "sentences_source": str(folder),
             "subjects": {name: {"voice": {"id": f"recording:{folder.name}"}, "style": subj["style"].to_json(),
                                 "split": "train"}}}
    _finish(work, Path(cfg.out), rig, {name: rig.template}, {name: [t for _, t in pairs]}, entries, extra)
    return {"out": str(cfg.out), "utterances": len(entries), "subjects": 1,
            "seconds": round(sum(e["duration"] for e in entries), 2)}
