"""`avtalk animate` and the windowed long-audio prediction."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import trimesh
from clirun import avtalk

from talkinghead_cli.animate import (
    crossfade_weights,
    load_animator,
    predict_windowed,
    window_plan,
)
from talkinghead_cli.checkpoint import load_checkpoint, save_checkpoint
from talkinghead_cli.config import TrainConfig
from talkinghead_cli.data import vocaset as V
from talkinghead_cli.data.dataset import write_toy_corpus
from talkinghead_cli.errors import UserError
from talkinghead_cli.training.trainer import train

SUBJECTS = V.TRAIN_SUBJECTS[:2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("anim")
    corpus = write_toy_corpus(root / "corpus", {SUBJECTS[0]: [1, 2], SUBJECTS[1]: [1], V.VAL_SUBJECTS[0]: [21]},
                              seconds=0.6)
    train(TrainConfig(dataset="vocaset", data_root=corpus, run_dir=root / "run", epochs=2, lr=1e-3))
    return root / "run" / "best.pt"


@pytest.fixture
def speech(tmp_path):
    t = np.arange(int(1.2 * 16000)) / 16000
    path = tmp_path / "speech.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    return path


def _template_obj(ckpt_path, path, scale=1.3, subdivisions=2):
    ck = load_checkpoint(ckpt_path)
    if subdivisions == 2:
        verts, faces = ck["template"].numpy() * scale, ck["faces"].numpy()
    else:
        m = trimesh.creation.icosphere(subdivisions=subdivisions)
        verts, faces = m.vertices, m.faces
    trimesh.Trimesh(verts, faces, process=False).export(path)
    return path


def test_animate_end_to_end_with_a_new_identity(checkpoint, speech, tmp_path, capsys):
    template = _template_obj(checkpoint, tmp_path / "face.obj")
    out = tmp_path / "out"
    code = avtalk("-q", "animate", speech, "--template", template, "-o", out, "--checkpoint", checkpoint,
                  "--style", f"{SUBJECTS[0]}:0.25,{SUBJECTS[1]}:0.75")
    assert code == 0, capsys.readouterr().err
    verts = np.load(out / "vertices.npy")
    assert verts.shape == (36, 162, 3)  # 1.2 s at 30 fps
    given = trimesh.load(template, process=False).vertices
    # the given identity speaks: frames stay near the new (1.3x) template, not the training one
    assert np.abs(verts.mean(0) - given).mean() < 0.05
    assert len(list((out / "meshes").glob("frame_*.obj"))) == 36
    assert (out / "preview.mp4").stat().st_size > 1000
    meta = json.loads((out / "animation.json").read_text())
    assert meta["fps"] == 30 and meta["frames"] == 36 and meta["sample_rate"] == 16000
    assert meta["duration"] == pytest.approx(1.2) and meta["model"]["kind"] == "faceformer"
    assert meta["style"] == {SUBJECTS[0]: 0.25, SUBJECTS[1]: 0.75}


def test_folder_of_wavs_npy_no_video(checkpoint, speech, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.wav").write_bytes(speech.read_bytes())
    out = tmp_path / "out"
    assert avtalk("-q", "animate", folder, "-o", out, "--checkpoint", checkpoint, "--format", "npy",
                  "--no-video") == 0
    for name in ("a", "b"):
        assert np.load(out / name / "vertices.npy").shape == (36, 162, 3)
        assert not (out / name / "preview.mp4").exists() and not (out / name / "meshes").exists()


def test_bad_inputs_are_one_line_errors(checkpoint, speech, tmp_path, capsys):
    # Another topology is retargeted, but a mesh that is not face-like (a box) is refused.
    box = tmp_path / "box.obj"
    trimesh.creation.box().export(box)
    out = tmp_path / "out"
    assert avtalk("animate", speech, "--template", box, "-o", out, "--checkpoint", checkpoint) == 2
    assert "does not look like a face" in capsys.readouterr().err
    assert avtalk("animate", speech, "-o", out, "--checkpoint", checkpoint, "--style", "Nobody") == 2
    err = capsys.readouterr().err
    assert "unknown speaking style 'Nobody'" in err and SUBJECTS[1] in err
    assert avtalk("animate", speech, "-o", out, "--checkpoint", "no-such-model") == 2
    assert "unknown animator model 'no-such-model'" in capsys.readouterr().err
    ck = load_checkpoint(checkpoint)
    ck["kind"] = "expert"
    save_checkpoint(tmp_path / "expert.pt", ck)
    assert avtalk("animate", speech, "-o", out, "--checkpoint", tmp_path / "expert.pt") == 2
    assert "animator checkpoint is needed" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written


# ----------------------------------------------------------------------------- windowing


class LocalModel(torch.nn.Module):
    """A stand-in with bounded context: frame t depends on audio frames t-C .. t+C only."""

    fps, sample_rate, context = 25.0, 16000, 3

    def num_frames(self, s):
        return round(s / self.sample_rate * self.fps)

    def predict(self, audio, template, style, num_frames=None, progress=None):
        spf = int(self.sample_rate / self.fps)
        t = num_frames or self.num_frames(audio.shape[1])
        energy = audio[:, : t * spf].reshape(audio.shape[0], t, spf).pow(2).mean(-1)  # (B, T)
        k = 2 * self.context + 1
        smooth = torch.nn.functional.conv1d(energy[:, None], torch.ones(1, 1, k) / k, padding=self.context)[:, 0]
        return template[:, None] + smooth[:, :, None, None]


class DriftingModel(LocalModel):
    """Output drifts with the position inside the window (unbounded context)."""

    def predict(self, audio, template, style, num_frames=None, progress=None):
        t = num_frames or self.num_frames(audio.shape[1])
        return template[:, None] + 0.01 * torch.arange(t, dtype=torch.float32)[None, :, None, None]


def test_window_plan_covers_with_overlaps():
    plan = window_plan(100, 40, 8)
    assert plan == [(0, 40), (32, 72), (64, 100)]
    assert window_plan(30, 40, 8) == [(0, 30)]
    w = crossfade_weights(4)
    assert np.all(np.diff(w) > 0) and 0 < w[0] and w[-1] < 1


def test_windowed_equals_unwindowed_away_from_seams():
    model = LocalModel()
    g = torch.Generator().manual_seed(0)
    total = 250
    audio = torch.randn(total * 640, generator=g) * torch.linspace(0.1, 1, total * 640)
    template, style = torch.zeros(4, 3), torch.ones(1)
    full = model.predict(audio[None], template[None], style[None])[0].numpy()
    out = np.zeros((total, 4, 3), np.float32)
    window, overlap = 60, 10
    predict_windowed(model, audio.numpy(), template, style, out, window, overlap)
    near_seam = np.zeros(total, bool)
    for (s, _), (_, prev_end) in zip(window_plan(total, window, overlap)[1:], window_plan(total, window, overlap)):
        near_seam[max(0, s - model.context): prev_end + model.context] = True
    assert near_seam.sum() < total / 2
    np.testing.assert_allclose(out[~near_seam], full[~near_seam], rtol=1e-5, atol=1e-6)
    # near the seams the blend of two good windows stays close to the full prediction
    np.testing.assert_allclose(out[near_seam], full[near_seam], atol=0.2 * np.abs(full).max())


def test_crossfade_keeps_the_sequence_continuous():
    model, total, window, overlap = DriftingModel(), 200, 50, 10
    out = np.zeros((total, 1, 3), np.float32)
    predict_windowed(model, np.zeros(total * 640, np.float32), torch.zeros(1, 3), torch.ones(1), out, window, overlap)
    jumps = np.abs(np.diff(out[:, 0, 0]))
    hard_cut = 0.01 * (window - overlap)  # what a seam without cross-fade would jump
    assert jumps.max() < hard_cut / 4
    assert out[0, 0, 0] == 0 and out[-1, 0, 0] > 0


def test_real_faceformer_windowed_matches_full_before_first_seam(checkpoint):
    model, ck = load_animator(checkpoint, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    audio = (0.2 * torch.randn(16000 * 4, generator=g)).numpy()  # 4 s = 120 frames
    template, style = ck["template"], torch.tensor([1.0, 0.0])
    full = model.predict(torch.from_numpy(audio)[None], template[None], style[None])[0].numpy()
    out = np.zeros_like(full)
    predict_windowed(model, audio, template, style, out, window=60, overlap=12)
    # the decoder is causal and the mel encoder's context is local, so the first window
    # agrees with the full prediction until shortly before its end
    np.testing.assert_allclose(out[:30], full[:30], atol=1e-4)
    assert np.isfinite(out).all() and out.shape == (120, 162, 3)


def test_console_script_ends_promptly_with_everything_written(checkpoint, speech, tmp_path):
    """`python -m talkinghead_cli animate` ends with os._exit after the run (cli.run): the JSON
    summary on stdout, the files and the exit code must all be there, for a batch with a failed
    input too (exit 2), and a refused run still exits the normal way."""
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "talkinghead_cli", "-q", "animate", *map(str, args),
                               "--checkpoint", str(checkpoint)], capture_output=True, text=True)

    out = tmp_path / "out"
    r = cli(speech, "-o", out, "--format", "obj", "--json", "-")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["succeeded"] == 1 and summary["results"][0]["frames"] == 36
    assert len(list((out / "meshes").glob("frame_*.obj"))) == 36 and (out / "preview.mp4").stat().st_size > 1000
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    r = cli(speech, bad, "-o", tmp_path / "batch", "--format", "npy", "--no-video")
    assert r.returncode == 2 and "1 of 2 inputs animated" in r.stderr, r.stderr
    assert np.load(tmp_path / "batch" / "speech" / "vertices.npy").shape == (36, 162, 3)
    r = cli(tmp_path / "missing.wav", "-o", tmp_path / "none")
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1
