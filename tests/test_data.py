"""Dataset readers on tiny corpora written into tmp_path."""

import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf

from talkinghead_cli.data import biwi, vocaset
from talkinghead_cli.data.dataset import (SequenceDataset, load_templates_pkl, read_transcripts, require_transcripts,
                                          write_toy_corpus)
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.errors import UserError

TR, VA, TE = vocaset.TRAIN_SUBJECTS, vocaset.VAL_SUBJECTS, vocaset.TEST_SUBJECTS


@pytest.fixture
def voca_root(tmp_path):
    subjects = {TR[0]: [1, 2, 40, 41], TR[1]: [3], VA[0]: [20, 21], TE[0]: [21], "Someone_else": [1]}
    return write_toy_corpus(tmp_path / "voca", subjects, seconds=0.5)


def test_vocaset_published_split_and_frame_step(voca_root):
    c = open_corpus("vocaset", voca_root)
    got = {u.id: u.split for u in c.utterances}
    assert got == {f"{TR[0]}_sentence01": "train", f"{TR[0]}_sentence02": "train",
                   f"{TR[0]}_sentence40": "train", f"{TR[1]}_sentence03": "train",
                   f"{VA[0]}_sentence21": "val", f"{TE[0]}_sentence21": "test"}
    assert c.train_subjects == [TR[0], TR[1]]
    assert c.fps == 30 and c.faces is not None and c.faces.shape[1] == 3
    ds = SequenceDataset(c, c.split("train"))
    item = ds[0]
    raw = np.load(voca_root / "vertices_npy" / f"{TR[0]}_sentence01.npy")
    assert item["verts"].shape == (15, 162, 3)
    np.testing.assert_array_equal(item["verts"].numpy(), raw[::2].reshape(15, 162, 3))
    assert item["audio"].shape == (8000,)
    assert item["style"].tolist() == [1.0, 0.0]
    val = SequenceDataset(c, c.split("val"))[0]
    assert val["style"].tolist() == [0.5, 0.5]  # an unseen speaker gets the mean style
    c60 = open_corpus("vocaset", voca_root, keep_60fps=True)
    assert c60.fps == 60 and SequenceDataset(c60, c60.split("train"))[0]["verts"].shape[0] == 30
    assert c.lip_indices is not None and c.upper_indices is not None


def test_biwi_split_and_resampling(tmp_path):
    root = tmp_path / "biwi"
    names = {"F2": [1, 32, 33, 37], "M3": [2], "F1": [37, 1]}
    write_toy_corpus(root, {f"{s}": [] for s in names}, seconds=0.4, fps=25)
    # BIWI names are F2_e01; write the files with those names and 44.1 kHz audio
    rng = np.random.default_rng(0)
    tmpl = load_templates_pkl(root / "templates.pkl")
    for s, sentences in names.items():
        for n in sentences:
            sf.write(root / "wav" / f"{s}_e{n:02d}.wav", 0.1 * rng.standard_normal(17640), 44100)
            np.save(root / "vertices_npy" / f"{s}_e{n:02d}.npy", np.repeat(tmpl[s].reshape(1, -1), 10, 0))
    os.rename(root / "templates" / "FLAME_sample.ply", root / "templates" / "BIWI.ply")
    c = open_corpus("biwi", root)
    got = {u.id: u.split for u in c.utterances}
    assert got == {"F2_e01": "train", "F2_e32": "train", "F2_e33": "val", "F2_e37": "test",
                   "M3_e02": "train", "F1_e37": "test_b"}
    assert c.fps == 25 and c.faces is not None
    item = SequenceDataset(c, c.split("train"))[0]
    assert item["audio"].shape == (6400,)  # 0.4 s at 16 kHz
    assert item["verts"].shape == (10, 162, 3)


def test_synthetic_reads_splits_from_manifest(voca_root):
    manifest = {"format": "avtalk-synthetic/1", "fps": 30, "sample_rate": 16000,
                "subjects": {TR[0]: {"split": "train"}, VA[0]: {"split": "test_b"}},
                "utterances": [
                    {"id": f"{TR[0]}_sentence01", "subject": TR[0], "sentence": 1, "split": "train"},
                    {"id": f"{TR[0]}_sentence02", "subject": TR[0], "sentence": 2, "split": "val"},
                    {"id": f"{VA[0]}_sentence21", "subject": VA[0], "sentence": 21, "split": "test_b"}]}
    (voca_root / "manifest.json").write_text(json.dumps(manifest))
    c = open_corpus("synthetic", voca_root)
    assert {u.id: u.split for u in c.utterances} == {
        f"{TR[0]}_sentence01": "train", f"{TR[0]}_sentence02": "val", f"{VA[0]}_sentence21": "test_b"}
    assert c.fps == 30 and c.frame_step == 1 and c.train_subjects == [TR[0]]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_templates_pickle_refuses_code(tmp_path):
    path = tmp_path / "templates.pkl"
    path.write_bytes(pickle.dumps({"a": _Evil()}))
    with pytest.raises(UserError, match="not allowed"):
        load_templates_pkl(path)
    # numpy arrays in a dict load, with every protocol
    for proto in (2, 4, 5):
        path.write_bytes(pickle.dumps({"s": np.ones((4, 3), np.float32)}, protocol=proto))
        assert load_templates_pkl(path)["s"].shape == (4, 3)


def test_missing_folder_and_wav_without_mesh(voca_root, tmp_path):
    with pytest.raises(UserError, match="not found"):
        open_corpus("vocaset", tmp_path / "nowhere")
    os.remove(voca_root / "vertices_npy" / f"{TR[0]}_sentence02.npy")
    with pytest.raises(UserError, match="no matching mesh") as e:
        open_corpus("vocaset", voca_root)
    assert f"{TR[0]}_sentence02.wav" in str(e.value)
    os.rename(voca_root / "wav", voca_root / "wavs")
    with pytest.raises(UserError, match="no 'wav/' folder"):
        open_corpus("vocaset", voca_root)


def test_shape_mismatch_with_template(voca_root):
    np.save(voca_root / "vertices_npy" / f"{TR[1]}_sentence03.npy", np.zeros((10, 99), np.float32))
    with pytest.raises(UserError, match="does not match the template") as e:
        open_corpus("vocaset", voca_root)
    assert "sentence03.npy" in str(e.value)


def test_faces_from_a_mesh_file(voca_root, tmp_path):
    import trimesh

    os.remove(voca_root / "templates" / "FLAME_sample.ply")
    assert open_corpus("vocaset", voca_root).faces is None
    sphere = trimesh.creation.icosphere(subdivisions=2)
    sphere.export(tmp_path / "face.obj")
    c = open_corpus("vocaset", voca_root, faces_from=tmp_path / "face.obj")
    np.testing.assert_array_equal(c.faces, sphere.faces)
    trimesh.creation.icosphere(subdivisions=1).export(tmp_path / "small.obj")
    with pytest.raises(UserError, match="42 vertices, the dataset 162"):
        open_corpus("vocaset", voca_root, faces_from=tmp_path / "small.obj")


def test_reads_a_corpus_written_by_avtalk_synth(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("espeakng_loader")
    out = tmp_path / "syn"
    r = subprocess.run([sys.executable, "-m", "talkinghead_cli", "-q", "synth", str(out), "--subjects", "2",
                        "--sentences", "2", "--tts", "espeak"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    c = open_corpus("synthetic", out)
    assert {u.id: u.split for u in c.utterances} == {u["id"]: u["split"] for u in manifest["utterances"]}
    assert c.fps == manifest["fps"] and c.faces is not None and c.lip_indices is not None
    item = SequenceDataset(c, c.utterances)[0]
    assert item["verts"].shape[1:] == (c.num_verts, 3) and item["verts"].shape[0] == c.utterances[0].num_frames


def test_one_transcript_reader_for_every_command(voca_root, tmp_path):
    """train --av-loss, finetune-expert and score --dataset all read transcripts through
    require_transcripts: per-subject files, per-sentence files, a JSON file."""
    c = open_corpus("vocaset", voca_root)
    a = c.utterances[0]
    b = next(u for u in c.utterances if u.subject != a.subject)
    folder = voca_root / "sentencestext"
    (folder / b.subject).mkdir(parents=True)
    lines = [""] * a.sentence
    lines[a.sentence - 1] = "from the subject file"
    (folder / f"{a.subject}.txt").write_text("\n".join(lines))
    (folder / b.subject / f"sentence{b.sentence:02d}.txt").write_text("from one file")
    assert require_transcripts(c, [a.id, b.id], "x") == {a.id: "from the subject file", b.id: "from one file"}
    missing = next(u.id for u in c.utterances if u.id not in (a.id, b.id))
    with pytest.raises(UserError, match="why; no transcript for 1"):
        require_transcripts(c, [a.id, missing], "why")
    f = tmp_path / "t.json"
    f.write_text(json.dumps({missing: "given"}))
    assert require_transcripts(c, [missing], "why", file=f) == {missing: "given"}
    f.write_text("[1]")
    with pytest.raises(UserError, match="not a JSON object"):
        read_transcripts(c, f)
