"""`avtalk score`: lip readability (CER/WER/VER) and mesh metrics, one animation or a split."""

import json

import numpy as np
import pytest
import torch
from clirun import avtalk

from talkinghead_cli.config import ScoreConfig, TrainConfig
from talkinghead_cli.data import vocaset as V
from talkinghead_cli.data.dataset import write_toy_corpus
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.lipreader import build_expert, tiny_config
from talkinghead_cli.lipreader.checkpoint import save_expert
from talkinghead_cli.lipreader.tokenizer import CharTokenizer
from talkinghead_cli.score import TextTally, ver
from talkinghead_cli.training.trainer import build_model, save_animator

pytest.importorskip("pocketsphinx")

TRAIN, TEST = V.TRAIN_SUBJECTS[0], V.TEST_SUBJECTS[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A toy corpus (train + test utterances), a tiny expert, a tiny untrained animator."""
    root = tmp_path_factory.mktemp("score")
    data = write_toy_corpus(root / "corpus", {TRAIN: [1], TEST: [21, 22]}, seconds=0.4, subdivisions=2)
    torch.manual_seed(0)
    expert = save_expert(root / "expert.pt", build_expert(tiny_config(modalities="av")), CharTokenizer())
    corpus = open_corpus("vocaset", data)
    cfg = TrainConfig(dataset="vocaset", data_root=data, run_dir=root / "run", epochs=1)
    model, acfg = build_model(cfg, corpus)
    animator = save_animator(root / "animator.pt", model, acfg, cfg, corpus)
    texts = {f"{TEST}_sentence21": "a cat", f"{TEST}_sentence22": "the map"}
    (root / "texts.json").write_text(json.dumps(texts))
    gt = np.load(data / "vertices_npy" / f"{TEST}_sentence21.npy").reshape(-1, 162, 3)[::2]
    return {"root": root, "data": data, "expert": expert, "animator": animator, "corpus": corpus,
            "texts": root / "texts.json", "gt": gt}


# ----------------------------------------------------------------------------- text rates


def test_ver_is_zero_for_lookalike_words_while_cer_is_not():
    tally = TextTally()
    tally.add("pat", "bat")
    assert tally.rates.cer == pytest.approx(1 / 3)
    assert tally.ver == 0.0
    assert ver("fat", "bat") == pytest.approx(1 / 3)  # labio-dental vs bilabial differ
    assert ver("", "bat") == 1.0


def test_text_rates_are_pooled_over_utterances():
    tally = TextTally()
    tally.add("pat", "bat")  # 1 char edit of 3, 0 viseme edits of 3
    tally.add("a b", "a")  # 2 char edits of 1
    assert tally.rates.cer == pytest.approx(3 / 4)
    assert tally.rates.wer == pytest.approx(2 / 2)


# ----------------------------------------------------------------------------- one animation


def test_score_a_vertex_file_with_reference_and_audio(world, tmp_path, capsys):
    pred = world["gt"].copy()
    pred[:, :, 1] += 0.01
    pred = np.concatenate([pred, pred[-2:]])  # two frames longer than the reference
    np.save(tmp_path / "pred.npy", pred)
    np.save(tmp_path / "gt.npy", world["gt"])
    wav = world["data"] / "wav" / f"{TEST}_sentence21.wav"
    out_json = tmp_path / "score.json"
    code = avtalk("score", tmp_path / "pred.npy", "--transcript", "A cat!", "--expert", world["expert"],
                  "--checkpoint", world["animator"], "--reference", tmp_path / "gt.npy", "--audio", wav,
                  "--json", out_json)
    text = capsys.readouterr().out
    assert code == 0, text
    assert "visual" in text and "audio-visual" in text and "LVE" in text
    assert "truncated to 12 frames" in text  # 0.4 s at 30 fps, prediction 14 frames
    assert "dropped from the transcript: '!'" in text
    res = json.loads(out_json.read_text())
    assert res["transcript"] == "a cat"
    assert [r["mode"] for r in res["readings"]] == ["visual", "audio-visual"]
    assert res["video_frames"] == round(14 * 25 / 30)
    for r in res["readings"]:
        assert 0 <= r["cer"] and r["ver"] is not None
    # every vertex moved by 0.01 in y: MVE 0.01, LVE 1e-4 (squared, no root)
    assert res["mesh"]["mve"] == pytest.approx(0.01, rel=1e-3)
    assert res["mesh"]["lve"] == pytest.approx(1e-4, rel=1e-2)


def test_score_an_animate_folder_is_self_contained(world, tmp_path, capsys):
    from talkinghead_cli.animate import animate
    from talkinghead_cli.config import AnimateConfig

    wav = world["data"] / "wav" / f"{TEST}_sentence21.wav"
    animate(AnimateConfig(audio=wav, out=tmp_path / "anim", checkpoint=world["animator"], format="npy",
                          video=False, device="cpu"))
    face = np.load(tmp_path / "anim" / "face.npz")
    assert face["faces"].shape[1] == 3 and face["lip_indices"].size > 0 and float(face["fps"]) == 30
    code = avtalk("score", tmp_path / "anim", "--transcript", "a cat", "--expert", world["expert"],
                  "--beam", 2, "--json", tmp_path / "s.json")
    assert code == 0, capsys.readouterr().out
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["decoding"] == "CTC/attention beam 2" and res["fps"] == 30.0


def test_single_animation_bad_inputs_exit_2(world, tmp_path, capsys):
    np.save(tmp_path / "pred.npy", world["gt"])
    expert = world["expert"]
    cases = [
        # an animation without a template
        (["score", tmp_path / "pred.npy", "--transcript", "a", "--expert", expert], "no template"),
        # template but no lip indices
        (["score", tmp_path / "pred.npy", "--transcript", "a", "--expert", expert,
          "--template", world["data"] / "templates" / "FLAME_sample.ply"], "lip vertex indices"),
        # an animator checkpoint given as the expert
        (["score", tmp_path / "pred.npy", "--transcript", "a", "--expert", world["animator"],
          "--checkpoint", world["animator"]], "expert checkpoint is needed"),
        # nothing readable in the transcript
        (["score", tmp_path / "pred.npy", "--transcript", "?!", "--expert", expert,
          "--checkpoint", world["animator"]], "no letters"),
        (["score", tmp_path / "missing.npy", "--transcript", "a", "--expert", expert], "not found"),
    ]
    for args, msg in cases:
        assert avtalk(*args) == 2, args
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err


def test_no_expert_and_no_bundled_default(world, tmp_path, capsys, monkeypatch):
    from talkinghead_cli import pretrained

    np.save(tmp_path / "pred.npy", world["gt"])
    monkeypatch.setenv("AVTALK_MODELS", str(tmp_path / "no-models"))
    pretrained._read_registry.cache_clear()
    try:
        assert avtalk("score", tmp_path / "pred.npy", "--transcript", "a", "--checkpoint", world["animator"]) == 2
    finally:
        pretrained._read_registry.cache_clear()
    err = capsys.readouterr().err
    assert "no expert checkpoint given and no default expert is bundled" in err
    assert len(err.strip().splitlines()) == 1


def test_vocabulary_mismatch_is_refused(world, tmp_path, capsys):
    vocab = CharTokenizer().vocabulary
    small = CharTokenizer(vocab[:-3] + vocab[-1:])  # no x, y, z
    bad = save_expert(tmp_path / "small.pt", build_expert(tiny_config(vocab_size=len(small))), small)
    ck = torch.load(bad, weights_only=True)
    ck["vocabulary"] = ck["vocabulary"][:-1]
    torch.save(ck, tmp_path / "broken.pt")
    np.save(tmp_path / "pred.npy", world["gt"])
    assert avtalk("score", tmp_path / "pred.npy", "--transcript", "a", "--expert", tmp_path / "broken.pt",
                  "--checkpoint", world["animator"]) == 2
    assert "vocabulary" in capsys.readouterr().err


# ----------------------------------------------------------------------------- dataset split


def test_dataset_mode_prints_one_row_per_model_plus_ground_truth(world, tmp_path, capsys):
    out_json = tmp_path / "table.json"
    code = avtalk("score", "--dataset", "vocaset", "--data-root", world["data"], "--split", "test",
                  "--checkpoint", world["animator"], "--checkpoint", world["animator"],
                  "--expert", world["expert"], "--transcripts", world["texts"], "--json", out_json)
    text = capsys.readouterr().out
    assert code == 0, text
    assert "ground truth" in text and "LVE" in text and "VER" in text
    res = json.loads(out_json.read_text())
    assert res["utterances"] == 2 and len(res["rows"]) == 3
    gt_row, a, b = res["rows"]
    assert gt_row["name"] == "ground truth" and gt_row["lve"] is None
    assert a["lve"] > 0 and a["mve"] > 0 and a["cer"] >= 0 and a["ver"] is not None
    assert a == b  # the same model scores the same (deterministic predict, render and decode)
    assert set(res["hypotheses"]["ground truth"]) == {f"{TEST}_sentence21", f"{TEST}_sentence22"}


def test_dataset_mode_bad_inputs_exit_2(world, capsys):
    base = ["score", "--dataset", "vocaset", "--data-root", world["data"], "--expert", world["expert"]]
    cases = [
        (base + ["--checkpoint", world["animator"]], "no transcript"),
        (base + ["--transcripts", world["texts"]], "no animator checkpoint"),
        (base + ["--checkpoint", world["animator"], "--transcripts", world["texts"], "--split", "val"],
         "split of this corpus is empty"),
        (base + ["--checkpoint", world["expert"], "--transcripts", world["texts"]], "animator checkpoint is needed"),
        (base + ["--checkpoint", world["animator"], "--transcripts", world["texts"], "--audio", world["texts"]],
         "applies to one animation"),
    ]
    for args, msg in cases:
        assert avtalk(*args) == 2, args
        err = capsys.readouterr().err
        assert msg in err, err


def test_score_config_defaults():
    cfg = ScoreConfig(path="x.npy", transcript="a")
    assert cfg.split == "test" and cfg.beam is None and cfg.checkpoints == []


def test_synthetic_corpus_transcripts_come_from_its_manifest(world, tmp_path, capsys):
    """The toy corpus relabelled as a synthetic corpus (manifest with texts, faces.npy)."""
    import shutil

    from talkinghead_cli.data.dataset import read_transcripts

    root = tmp_path / "synth"
    shutil.copytree(world["data"], root)
    corpus = world["corpus"]
    np.save(root / "faces.npy", corpus.faces)
    utts = [{"id": u.id, "subject": u.subject, "sentence": u.sentence, "split": u.split,
             "text": f"word {u.sentence}"} for u in corpus.utterances]
    (root / "manifest.json").write_text(json.dumps({"format": "avtalk-synthetic/1", "fps": 60,
                                                    "utterances": utts}))
    synth = open_corpus("synthetic", root)
    texts = read_transcripts(synth)
    assert texts[f"{TEST}_sentence21"] == "word 21"
    out_json = tmp_path / "s.json"
    assert avtalk("score", "--dataset", "synthetic", "--data-root", root, "-c", world["animator"],
                  "--expert", world["expert"], "--beam", 2, "--json", out_json) == 0, capsys.readouterr()
    res = json.loads(out_json.read_text())
    assert res["dataset"] == "synthetic" and res["decoding"] == "CTC/attention beam 2"
    assert len(res["rows"]) == 2 and res["utterances"] == 2


def test_sentencestext_files_give_transcripts(world):
    from talkinghead_cli.data.dataset import read_transcripts

    folder = world["data"] / "sentencestext"
    folder.mkdir(exist_ok=True)
    (folder / f"{TEST}.txt").write_text("\n".join(f"line {n}" for n in range(1, 23)))
    try:
        texts = read_transcripts(world["corpus"])
        assert texts[f"{TEST}_sentence22"] == "line 22" and f"{TRAIN}_sentence01" not in texts
    finally:
        (folder / f"{TEST}.txt").unlink()
        folder.rmdir()


@pytest.fixture(scope="module")
def reader(world):
    """A tiny visual-only expert overfit to the rendered ground truth of the two test utterances."""
    from talkinghead_cli.lipreader import LipReader
    from talkinghead_cli.lipreader.decode import recognize
    from talkinghead_cli.lipreader.losses import expert_loss
    from talkinghead_cli.score import lip_clip

    corpus, texts = world["corpus"], json.loads(world["texts"].read_text())
    faces, lip = torch.as_tensor(corpus.faces), torch.as_tensor(corpus.lip_indices)
    utts = corpus.split("test")
    render = {"size": 32, "margin": 0.2}  # stored with the expert: score must render the same way
    video = torch.cat([lip_clip(torch.from_numpy(np.load(u.verts).reshape(-1, 162, 3)[::2].copy()),
                                faces, lip, corpus.fps, **render) for u in utts])
    tok = CharTokenizer()
    targets = [tok.encode(texts[u.id])[0] for u in utts]
    torch.manual_seed(0)
    cfg = tiny_config(modalities="video", dropout=0.0)
    cfg.video_encoder.dropout = cfg.video_encoder.attn_dropout = 0.0
    model = LipReader(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    want = [texts[u.id] for u in utts]
    for step in range(300):
        model.train()
        loss = expert_loss(model, targets, video=video, ctc_weight=0.3, reduction="mean").loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 5 == 4 and recognize(model, tok, video=video, method="ctc") == want:
            break
    print(f"reader fit in {step + 1} steps")
    assert recognize(model, tok, video=video, method="ctc") == want, f"not fit in {step + 1} steps"
    return save_expert(world["root"] / "reader.pt", model.eval(), tok, {"render": render})


def test_an_expert_that_knows_the_clips_reads_them_back(world, reader, tmp_path, capsys):
    """Score's render -> read path matches the expert's: ground truth reads with CER 0."""
    gt = world["gt"]
    np.save(tmp_path / "gt.npy", gt)
    assert avtalk("score", tmp_path / "gt.npy", "--transcript", "A cat.", "--expert", reader,
                  "-c", world["animator"], "--json", tmp_path / "one.json") == 0, capsys.readouterr()
    one = json.loads((tmp_path / "one.json").read_text())["readings"][0]
    assert one["hypothesis"] == "a cat" and one["cer"] == one["wer"] == one["ver"] == 0.0
    # "gat" looks like "cat" on the lips (k, g: one viseme): only the text rates count the error
    assert avtalk("score", tmp_path / "gt.npy", "--transcript", "a gat", "--expert", reader,
                  "-c", world["animator"], "--json", tmp_path / "bat.json") == 0
    bat = json.loads((tmp_path / "bat.json").read_text())["readings"][0]
    assert bat["cer"] == pytest.approx(1 / 5) and bat["wer"] == 0.5 and bat["ver"] == 0.0
    assert avtalk("score", "--dataset", "vocaset", "--data-root", world["data"], "-c", world["animator"],
                  "--expert", reader, "--transcripts", world["texts"], "--json", tmp_path / "t.json") == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert rows[0]["name"] == "ground truth" and rows[0]["cer"] == 0.0
    assert rows[1]["cer"] > 0  # the untrained animator does not move the lips


def test_without_the_cmu_dictionary_ver_is_reported_missing(monkeypatch):
    from talkinghead_cli import phonemize
    from talkinghead_cli.errors import UserError

    def missing(text):
        raise UserError("phonemes (for VER) need the CMU dictionary from pocketsphinx")

    monkeypatch.setattr(phonemize, "text_visemes", missing)
    tally = TextTally()
    tally.add("pat", "bat")
    assert tally.figures() == {"cer": pytest.approx(1 / 3), "wer": 1.0, "ver": None}
