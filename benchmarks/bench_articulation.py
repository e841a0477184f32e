"""Articulation on real speech: do the bundled animators close the lips on p/b/m and open on vowels?

For real recordings of human speech with known transcripts, a forced-alignment **reference**
is built the way ``avtalk synth --from-recordings DIR`` builds it (pocketsphinx phone timing,
the corpus's own articulation of the synthetic ARKit rig, at the model's fps, no blinks), into
a cache folder keyed by the audio, the transcripts, the fps and the source of the articulation
code (or taken from ``--reference-dir``). Then each animator (the bundled ones of
``models/registry.json`` plus any ``-c PATH``) animates every recording in-process (the library
function behind ``avtalk animate``, vertices only) and is compared with the reference, beside
two baselines: the reference itself (closure 1.0 by construction: a check of this code) and a
**loudness** animator (the rig's jawOpen driven by the RMS envelope, its 5..95 % range mapped
onto the reference's jawOpen range; no phonemes). Figures per system, pooled over recordings
(``talkinghead_cli.articulation_metrics``; lip gap = upper minus lower lip midline height in mm,
clipped at 0):

- closure: share of /P B M/ segments whose smallest gap over the segment +-1 frame is below
  25 % of the utterance's 95th-percentile gap (the system's own gap);
- vowel ratio: mean gap over open-vowel frames (AA AE AO AH) / close-vowel frames (IY IH UW),
  and as % of the reference's;
- r: Pearson r of the gap curve against the reference's, mean over recordings, at lag 0 and at
  the best common lag within +-3 frames (positive: the model is late);
- roughness: mean norm of the uniform mesh Laplacian of (verts - template) over the head mesh
  (eyes and teeth excluded), as a ratio to the reference's, and in mm;
- LVE (max over lip vertices of the squared distance, mean over frames; m^2) and MVE (mm)
  against the reference;
- CER: the bundled expert reading the system's lips visual-only (greedy CTC), pooled.

Recordings (real human voices from Debian packages; nothing is copied into the repo)::

    cd /tmp && apt-get download alsa-utils pocketsphinx-testdata
    dpkg-deb -x alsa-utils_*.deb /tmp/real               # 1.2.8-1: usr/share/sounds/alsa
    dpkg-deb -x pocketsphinx-testdata_*.deb /tmp/real    # 0.8+5prealpha+1-15
    python benchmarks/bench_articulation.py /tmp/real [--tts] [--verbose] [--json out.json]

Used from those folders (found anywhere below the given roots): ``librivox/*.wav`` (5 LibriVox
utterances, transcripts in ``librivox/transcription``), ``cards/00[1-5].wav``
(``cards/cards.transcription``), ``goforward.raw`` ("go forward ten meters", 16-bit 16 kHz
headerless), and ``sounds/alsa/{Front,Rear,Side}_*.wav`` ("front left", ...). Left out:
``numbers.raw`` and ``something.raw`` (no transcript ships with them), ``tidigits/*.raw``
(digits only, no /p b m/), ``Noise.wav``.

``--corpus ROOT --split test`` (repeatable ``--split``) adds a split of a synthetic corpus
(``avtalk synth``): the corpus's own meshes are the reference (exact phoneme timing), its WAVs
are animated the same way (``--limit N``: N utterances spread over the split). This is the synthetic test split's closure rate.

``--tts`` adds the in-domain figure: a few sentences full of bilabials spoken by three of the
project's own TTS voices (training voices); their reference uses the TTS's own phoneme timing
(exact; pocketsphinx fails to align two of the espeak en-us+m2 sentences) with the same
articulation, and they are scored the same way.

Other real recordings with transcripts were looked for: the SpeechRecognition sdist (3.17.0)
ships no audio any more, the pocketsphinx wheel none; pocketsphinx-testdata's ``numbers.raw``
and ``something.raw`` come with no transcript. Everything is cached under ``--cache`` (staged
16 kHz copies, the reference corpus, the TTS audio), so a second run only animates and scores.
CPU time measured with ``--tts`` (2 threads): 107 s from an empty cache, 75 s with the cache
(the reference and loudness rows are cached too); the real set alone with ``--no-cer`` 23 s.
The expert's reading is most of it.

    python benchmarks/bench_articulation.py ROOT... [-c CKPT ...] [--models NAME ...]
        [--cache DIR] [--reference-dir DIR] [--expert NAME] [--no-cer] [--tts] [--verbose]
        [--corpus ROOT --split test ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from talkinghead_cli import articulation_metrics as am  # noqa: E402
from talkinghead_cli import metrics  # noqa: E402
from talkinghead_cli.audio import SAMPLE_RATE, load_audio, save_wav  # noqa: E402

TTS_SENTENCES = ["Bob picked up a map of the bay by the palm.",
                 "My mom bought a lamp and a blue map.",
                 "Pam ambled past the big pub by the pump.",
                 "Father saw a large hot pot in the yard."]
TTS_VOICES = ["piper:joe", "espeak:en-us+f3", "espeak:en-us+m2"]
# Sources whose code shapes the reference: a change in any of them rebuilds the cache.
REFERENCE_CODE = ["articulation.py", "visemes.json", "align.py", "corpus.py", "rig.py", "phonemes.py"]


# ----------------------------------------------------------------------------- recordings


def _sphinx_transcripts(path: Path) -> dict[str, str]:
    """{file id: text} of a sphinx transcription file (``<s> words </s> (fileid)``)."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\((\S+)\)\s*$", line)
        if m:
            out[m.group(2)] = " ".join(m.group(1).split())
    return out


def find_recordings(roots: list[Path]) -> list[dict]:
    """[{name, path, text, source}] of the known recordings below ``roots`` (docstring)."""
    recs: dict[str, dict] = {}
    for root in roots:
        for tr in sorted(root.rglob("librivox/transcription")):
            for fid, text in _sphinx_transcripts(tr).items():
                wav = tr.parent / f"{fid}.wav"
                if wav.exists():
                    recs[f"librivox-{fid.rsplit('-', 1)[-1]}"] = dict(path=wav, text=text, source="pocketsphinx-testdata")
        for tr in sorted(root.rglob("cards/cards.transcription")):
            for fid, text in _sphinx_transcripts(tr).items():
                wav = tr.parent / f"{fid}.wav"
                if wav.exists():
                    recs[f"cards-{fid}"] = dict(path=wav, text=text, source="pocketsphinx-testdata")
        for raw in sorted(root.rglob("pocketsphinx/test/data/goforward.raw")):
            recs["goforward"] = dict(path=raw, text="go forward ten meters", source="pocketsphinx-testdata")
        for wav in sorted(root.rglob("sounds/alsa/*.wav")):
            m = re.fullmatch(r"(Front|Rear|Side)_(Left|Right|Center)", wav.stem)
            if m:
                recs[f"alsa-{wav.stem}"] = dict(path=wav, text=f"{m.group(1)} {m.group(2)}".lower(),
                                                source="alsa-utils")
    return [{"name": k, **v} for k, v in recs.items()]


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def stage(recs: list[dict], cache: Path) -> tuple[Path, str]:
    """Write NAME.wav (16 kHz mono) + NAME.txt pairs into a cache folder; (folder, content key)."""
    waves = {}
    for r in recs:
        p = Path(r["path"])
        if p.suffix.lower() == ".raw":
            waves[r["name"]] = np.fromfile(p, dtype="<i2").astype(np.float32) / 32768.0
        else:
            waves[r["name"]] = load_audio(p, SAMPLE_RATE)
    key = _digest(*[f"{r['name']}|{r['text']}" for r in recs], *[waves[r["name"]].tobytes() for r in recs])
    folder = cache / f"recordings-{key}"
    if not folder.exists():
        tmp = cache / f".recordings-{key}.partial"
        tmp.mkdir(parents=True, exist_ok=True)
        for r in recs:
            save_wav(tmp / f"{r['name']}.wav", waves[r["name"]], SAMPLE_RATE)
            (tmp / f"{r['name']}.txt").write_text(r["text"] + "\n")
        tmp.rename(folder)
    return folder, key


def reference_corpus(recdir: Path, key: str, fps: float, cache: Path, given: Path | None) -> Path:
    """The forced-alignment reference of ``recdir`` at ``fps`` (built once, then cached)."""
    if given is not None:
        return given
    from talkinghead_cli.data.synthetic import corpus

    code = REPO / "talkinghead_cli" / "data" / "synthetic"
    ref_key = _digest(key, repr(float(fps)), *[(code / f).read_bytes() for f in REFERENCE_CODE if (code / f).exists()])
    out = cache / f"reference-{ref_key}"
    if not (out / "manifest.json").exists():
        t0 = time.perf_counter()
        corpus.build_corpus(corpus.SynthConfig(out=out, from_recordings=recdir, fps=fps, blinks=False))
        print(f"built the reference {out} in {time.perf_counter() - t0:.1f} s")
    return out


def load_reference(root: Path, entries: list[dict] | None = None) -> dict:
    """{name: {verts (T, V, 3), weights (T, K), segments, template, text}} + shared faces/lip of
    a corpus folder (``entries``: only these manifest utterances)."""
    man = json.loads((root / "manifest.json").read_text())
    with open(root / "templates.pkl", "rb") as f:
        templates = pickle.load(f)
    utts = {}
    for e in man["utterances"] if entries is None else entries:
        name = Path(e.get("source", e["id"])).stem
        t = e["num_frames"]
        utts[name] = {"verts": np.load(root / "vertices_npy" / f"{e['id']}.npy").reshape(t, -1, 3),
                      "weights": np.load(root / "blendshapes_npy" / f"{e['id']}.npy"),
                      "segments": [tuple(s) for s in e["phonemes"]], "text": e["text"],
                      "template": np.asarray(templates[e["subject"]], np.float32)}
    lip = np.array((root / "regions" / "lve.txt").read_text().split(), np.int64)
    return {"fps": float(man["fps"]), "utts": utts, "faces": np.load(root / "faces.npy"), "lip": lip}


# ----------------------------------------------------------------------------- systems


def animate_all(checkpoint: str, recdir: Path, out: Path) -> tuple[dict, float]:
    """{name: {verts, template, faces, lip}} of one animator over the folder; wall seconds."""
    from talkinghead_cli.animate import animate
    from talkinghead_cli.config import AnimateConfig

    t0 = time.perf_counter()
    animate(AnimateConfig(audio=recdir, out=out, checkpoint=checkpoint, format="npy", video=False, device="cpu"))
    wall = time.perf_counter() - t0
    seqs = {}
    for sub in sorted(p for p in out.iterdir() if p.is_dir()):
        face = np.load(sub / "face.npz")
        seqs[sub.name] = {"verts": np.load(sub / "vertices.npy"), "template": face["template"],
                          "faces": face["faces"], "lip": face["lip_indices"]}
    return seqs, wall


def loudness_system(ref: dict, recdir: Path, rig) -> dict:
    """The loudness baseline: rig jawOpen from the RMS envelope (module docstring)."""
    j = rig.index("jawOpen")
    seqs = {}
    for name, u in ref["utts"].items():
        t = len(u["verts"])
        wave = torch.from_numpy(load_audio(recdir / f"{name}.wav", SAMPLE_RATE))
        env = metrics.loudness_envelope(wave, SAMPLE_RATE, ref["fps"], t).numpy()
        w = np.zeros((t, len(rig.names)), np.float32)
        w[:, j] = am.loudness_jaw(env, u["weights"][:, j])
        seqs[name] = {"verts": rig.pose(w, u["template"]), "template": u["template"],
                      "faces": ref["faces"], "lip": ref["lip"]}
    return seqs


def reference_system(ref: dict) -> dict:
    return {n: {"verts": u["verts"], "template": u["template"], "faces": ref["faces"], "lip": ref["lip"]}
            for n, u in ref["utts"].items()}


# ----------------------------------------------------------------------------- scoring


class Reader:
    """The bundled expert reading lips visual-only (the library behind ``avtalk score``)."""

    def __init__(self, expert: str | None):
        from talkinghead_cli.config import ScoreConfig
        from talkinghead_cli.score import load_reader

        self.expert = load_reader(ScoreConfig(expert=expert, device="cpu"), torch.device("cpu"))

    def read(self, seq: dict, fps: float, text: str) -> tuple[str, str]:
        """(hypothesis, normalised transcript)."""
        from talkinghead_cli.score import lip_clip, normalise_transcript

        ref, _, _ = normalise_transcript(self.expert, text)
        video = lip_clip(torch.from_numpy(np.asarray(seq["verts"], np.float32)),
                         torch.as_tensor(seq["faces"], dtype=torch.long),
                         torch.as_tensor(seq["lip"], dtype=torch.long), fps, **self.expert.render)
        return self.expert.read(video), ref


def score_system(seqs: dict, ref: dict, rig, reader: Reader | None) -> dict:
    """Pooled figures and per-utterance rows of one system against the reference."""
    from talkinghead_cli.data.synthetic.regions import lip_midline
    from talkinghead_cli.score import TextTally

    up, lo = lip_midline(rig)
    tally, text = am.ArticulationTally(max_lag=3), TextTally()
    lve_sum = mve_sum = 0.0
    frames = verts_n = 0
    rows = []
    for name, u in ref["utts"].items():
        s = seqs[name]
        v = np.asarray(s["verts"], np.float64)
        t = min(len(v), len(u["verts"]))
        head = np.flatnonzero(rig.head) if v.shape[1] == rig.num_verts else None
        rough = am.roughness(v, s["template"], s["faces"], head) * 1000.0
        row = {"name": name, **tally.add(am.gap_mm(v[:t], up, lo), u["segments"], ref["fps"],
                                         am.gap_mm(u["verts"][:t], up, lo), rough)}
        per_frame = metrics.lip_max_sq_error(torch.from_numpy(v[:t]), torch.from_numpy(u["verts"][:t].astype(np.float64)),
                                             torch.from_numpy(ref["lip"]))
        errs = metrics.vertex_errors(torch.from_numpy(v[:t]), torch.from_numpy(u["verts"][:t].astype(np.float64)))
        lve_sum += float(per_frame.sum())
        frames += t
        mve_sum += float(errs.sum())
        verts_n += errs.numel()
        row.update(lve=float(per_frame.mean()), mve_mm=float(errs.mean()) * 1000.0)
        if reader is not None:
            hyp, norm = reader.read(s, ref["fps"], u["text"])
            one = TextTally()
            one.add(hyp, norm)
            text.add(hyp, norm)
            row.update(hyp=hyp, cer=one.rates.cer)
        rows.append(row)
    out = {**tally.result(), "lve": lve_sum / frames, "mve_mm": mve_sum / verts_n * 1000.0,
           "cer": text.rates.cer if reader is not None else None, "utterances": rows}
    return out


# ----------------------------------------------------------------------------- report


def _f(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def print_table(title: str, systems: dict, verbose: bool) -> None:
    ref = systems["reference"]
    print(f"\n{title}")
    head = (f"{'system':<22} {'closure':>7} {'vowel ratio':>11} {'% ref':>6} {'r lag0':>6} {'r best':>6} "
            f"{'lag':>4} {'rough xref':>10} {'rough mm':>8} {'LVE m^2':>9} {'MVE mm':>6} {'CER':>5}")
    print(head)
    print("-" * len(head))
    for name, s in systems.items():
        pct = 100 * s["vowel_ratio"] / ref["vowel_ratio"] if ref["vowel_ratio"] else float("nan")
        print(f"{name:<22} {_f(s['closure'], '7.2f')} {_f(s['vowel_ratio'], '11.2f')} {_f(pct, '5.0f')}% "
              f"{_f(s.get('r'), '6.2f')} {_f(s.get('r_best'), '6.2f')} {s.get('lag', 0):+4d} "
              f"{_f(s['roughness_mm'] / ref['roughness_mm'], '9.2f')}x {_f(s['roughness_mm'], '8.4f')} "
              f"{_f(s['lve'], '9.3e')} {_f(s['mve_mm'], '6.2f')} {_f(s['cer'], '5.2f')}")
        if verbose:
            for u in s["utterances"]:
                print(f"    {u['name']:<26} closure {_f(u['closure'], '4.2f')} ({u['bilabials']}) "
                      f"vowel {_f(u['vowel_ratio'], '5.2f')} r {_f(u.get('r'), '5.2f')} "
                      f"best {_f(u.get('r_best'), '5.2f')}@{u.get('lag', 0):+d} "
                      f"rough {_f(u['roughness_mm'], '.4f')} LVE {_f(u['lve'], '.2e')} "
                      f"CER {_f(u.get('cer'), '.2f')} '{u.get('hyp', '')}'")


def model_fps(models: list[str]) -> float:
    """The animators' common frame rate (the reference is built at it)."""
    from talkinghead_cli.pretrained import resolve

    rates = {float(torch.load(resolve(m, "animator"), weights_only=True)["fps"]) for m in models}
    if len(rates) > 1:
        raise SystemExit(f"the animators run at different frame rates {sorted(rates)}: benchmark them separately")
    return rates.pop() if rates else 30.0


def baselines(ref: dict, recdir: Path, rig, reader: Reader | None, cache: Path) -> dict:
    """The reference and loudness rows; cached (they change only with the reference, the
    expert and this code), so repeated runs only score the animators."""
    parts = [f"{n}|{u['text']}|{u['segments']}" for n, u in sorted(ref["utts"].items())]
    arrays = [np.ascontiguousarray(u["verts"]).tobytes() for _, u in sorted(ref["utts"].items())]
    code = [Path(__file__).read_bytes(), Path(am.__file__).read_bytes(), Path(metrics.__file__).read_bytes()]
    expert = "-" if reader is None else _digest(reader.expert.path.read_bytes())
    path = cache / f"baselines-{_digest(*parts, *arrays, *code, expert, repr(ref['fps']))}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = {"reference": score_system(reference_system(ref), ref, rig, reader),
           "loudness baseline": score_system(loudness_system(ref, recdir, rig), ref, rig, reader)}
    path.write_text(json.dumps(out, default=float))
    return out


def system_name(model: str) -> str:
    """A registry name as it is; a checkpoint path by its stem, with its run folder for best/last.pt."""
    p = Path(model)
    if not p.exists():
        return model
    return f"{p.parent.name}/{p.stem}" if p.stem in ("best", "last") else p.stem


def run_set(label: str, recdir: Path, ref: dict, models: list[str], args, rig, reader) -> dict:
    """Reference, loudness baseline and every animator on one folder of WAV + TXT pairs."""
    systems, walls = {}, {}
    t0 = time.perf_counter()
    systems.update(baselines(ref, recdir, rig, reader, args.cache))
    with tempfile.TemporaryDirectory() as tmp:
        for i, m in enumerate(models):
            seqs, walls[m] = animate_all(m, recdir, Path(tmp) / f"m{i}")
            systems[system_name(m)] = score_system(seqs, ref, rig, reader)
    secs = sum(len(u["verts"]) for u in ref["utts"].values()) / ref["fps"]
    print_table(f"{label}: {len(ref['utts'])} recordings, {secs:.1f} s of speech, {ref['fps']:g} fps "
                f"(scored in {time.perf_counter() - t0:.0f} s; animate wall "
                + ", ".join(f"{system_name(k)} {v:.1f} s" for k, v in walls.items()) + ")", systems, args.verbose)
    return {"recordings": sorted(ref["utts"]), "seconds": secs, "fps": ref["fps"], "systems": systems}


def tts_folder(cache: Path) -> Path:
    """TTS_SENTENCES spoken by each voice of TTS_VOICES: NAME.wav + NAME.txt + NAME.json (the
    TTS's own phoneme segments), cached."""
    from talkinghead_cli.data.synthetic.tts import Voice, synthesize

    code = (REPO / "talkinghead_cli" / "data" / "synthetic" / "tts.py").read_bytes()
    key = _digest(*TTS_SENTENCES, *TTS_VOICES, code)
    folder = cache / f"tts-{key}"
    if not folder.exists():
        tmp = cache / f".tts-{key}.partial"
        tmp.mkdir(parents=True, exist_ok=True)
        for v in TTS_VOICES:
            backend, _, name = v.partition(":")
            for i, text in enumerate(TTS_SENTENCES, start=1):
                stem = f"{backend}-{re.sub(r'[^A-Za-z0-9]+', '', name)}-{i}"
                speech = synthesize(text, Voice(backend, name))
                save_wav(tmp / f"{stem}.wav", speech.wave, SAMPLE_RATE)
                (tmp / f"{stem}.txt").write_text(text + "\n")
                (tmp / f"{stem}.json").write_text(json.dumps([list(s) for s in speech.segments]))
        tmp.rename(folder)
    return folder


def tts_reference(folder: Path, fps: float, rig) -> dict:
    """The reference of the TTS sentences from the TTS's exact phoneme timing (no aligner), with
    the corpus's articulation on the rig's template, no blinks (what ``avtalk synth`` writes)."""
    from talkinghead_cli.data.synthetic.articulation import Style, articulate

    utts = {}
    for wav in sorted(folder.glob("*.wav")):
        segs = [tuple(s) for s in json.loads(wav.with_suffix(".json").read_text())]
        frames = int(round(len(load_audio(wav, SAMPLE_RATE)) / SAMPLE_RATE * fps))
        w = articulate(segs, frames, fps, rig.names, Style(blink_rate=0.0), seed=0)
        utts[wav.stem] = {"verts": rig.pose(w, rig.template), "weights": w, "segments": segs,
                          "text": wav.with_suffix(".txt").read_text().strip(), "template": rig.template}
    return {"fps": fps, "utts": utts, "faces": rig.faces, "lip": rig.lip_indices}


def corpus_split(root: Path, split: str, cache: Path, limit: int | None = None) -> tuple[Path, dict]:
    """(folder of the split's WAVs by utterance id, its reference) of a synthetic corpus: the
    corpus's own meshes and phoneme segments; ``limit``: at most that many utterances, evenly
    spread over the split's order (so over its speakers)."""
    man = json.loads((root / "manifest.json").read_text())
    entries = [e for e in man["utterances"] if e["split"] == split]
    if not entries:
        raise SystemExit(f"the {split} split of {root} is empty")
    if limit and len(entries) > limit:
        entries = [entries[i] for i in np.linspace(0, len(entries) - 1, limit).round().astype(int)]
    folder = cache / f"corpus-{_digest(str(root.resolve()), split, repr(limit))}"
    folder.mkdir(parents=True, exist_ok=True)
    for e in entries:
        link = folder / f"{e['id']}.wav"
        if not link.exists():
            link.symlink_to((root / "wav" / f"{e['id']}.wav").resolve())
    return folder, load_reference(root, entries)


def main() -> None:
    from talkinghead_cli.data.synthetic.rig import load_rig
    from talkinghead_cli.pretrained import registry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", type=Path, nargs="+", help="folders the Debian packages were extracted into")
    ap.add_argument("-c", "--checkpoint", action="append", default=[], help="another animator (repeatable)")
    ap.add_argument("--models", nargs="*", default=None, help="registered animators (default: all bundled)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "avtalk-bench-articulation")
    ap.add_argument("--reference-dir", type=Path, default=None, help="a reference corpus already built")
    ap.add_argument("--expert", default=None, help="lip reader for CER (default: the bundled expert)")
    ap.add_argument("--no-cer", action="store_true", help="skip the expert's reading")
    ap.add_argument("--tts", action="store_true", help="also the in-domain TTS sentences")
    ap.add_argument("--verbose", action="store_true", help="per-recording rows")
    ap.add_argument("--corpus", type=Path, default=None, help="a synthetic corpus (avtalk synth) to score too")
    ap.add_argument("--split", action="append", default=None, help="its split(s) [default: test]")
    ap.add_argument("--limit", type=int, default=None, help="at most this many utterances per split")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    recs = find_recordings(args.roots)
    if not recs:
        raise SystemExit("no known recordings below " + ", ".join(map(str, args.roots)) + " (see the docstring)")
    names = args.models if args.models is not None else [n for n, e in registry().items() if e.get("kind") == "animator"]
    models = names + args.checkpoint
    args.cache.mkdir(parents=True, exist_ok=True)
    rig = load_rig(None)
    reader = None if args.no_cer else Reader(args.expert)
    recdir, key = stage(recs, args.cache)
    sources = sorted({r["source"] for r in recs})
    print(f"recordings: {len(recs)} from {', '.join(sources)}; models: {', '.join(models)}; "
          f"expert: {'-' if reader is None else reader.expert.path.name}")
    fps = model_fps(models)
    ref = load_reference(reference_corpus(recdir, key, fps, args.cache, args.reference_dir))
    report = {"real": run_set("real", recdir, ref, models, args, rig, reader)}
    if args.tts:
        tdir = tts_folder(args.cache)
        report["tts"] = run_set("tts (training voices " + ", ".join(TTS_VOICES) + "; reference from the TTS's "
                                "own phoneme timing)", tdir, tts_reference(tdir, fps, rig), models, args, rig, reader)
    if args.corpus is not None:
        for split in args.split or ["test"]:
            cdir, cref = corpus_split(args.corpus, split, args.cache, args.limit)
            report[f"corpus {split}"] = run_set(f"{args.corpus.name} {split} (the corpus's own meshes)", cdir, cref,
                                                models, args, rig, reader)
    print(f"\ntotal wall {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
