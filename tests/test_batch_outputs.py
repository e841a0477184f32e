"""`avtalk animate` batches and output folders: several inputs, globs, any audio the bundled
ffmpeg decodes, a bad file among good ones, user files in -o, `-o .`, a locked folder, --json."""

import json
import os
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
from clirun import avtalk

from talkinghead_cli.atomic import atomic_outputs
from talkinghead_cli.audio import AUDIO_SUFFIXES, load_audio
from talkinghead_cli.config import TrainConfig
from talkinghead_cli.data import vocaset as V
from talkinghead_cli.data.dataset import write_toy_corpus
from talkinghead_cli.errors import UserError
from talkinghead_cli.training.trainer import train

SUBJECTS = V.TRAIN_SUBJECTS[:2]
COMMON = ("--format", "npy", "--no-video")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    corpus = write_toy_corpus(root / "corpus", {SUBJECTS[0]: [1], V.VAL_SUBJECTS[0]: [21]}, seconds=0.6)
    train(TrainConfig(dataset="vocaset", data_root=corpus, run_dir=root / "run", epochs=1, lr=1e-3))
    return root / "run" / "best.pt"


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    t = np.arange(int(0.8 * 16000)) / 16000
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    return path


def ffmpeg(src, dst, *codec):
    """Encode with the real ffmpeg binary that imageio-ffmpeg bundles."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), *codec, str(dst)],
                   check=True)
    return dst


@pytest.mark.parametrize("suffix,codec", [(".m4a", ("-c:a", "aac")), (".mp3", ("-c:a", "libmp3lame")),
                                          (".opus", ("-c:a", "libopus")), (".webm", ("-c:a", "libopus")),
                                          (".mp4", ("-c:a", "aac"))])
def test_ffmpeg_formats_decode_like_the_wav(speech, tmp_path, suffix, codec):
    assert suffix in AUDIO_SUFFIXES
    ref = load_audio(speech)
    wave = load_audio(ffmpeg(speech, tmp_path / f"s{suffix}", "-ac", "2", *codec))
    assert abs(len(wave) - len(ref)) <= 400  # encoder padding/priming at most 25 ms
    n = min(len(wave), len(ref))
    lag = int(np.argmax(np.correlate(wave[:4000], ref[:4000], "full"))) - 3999
    a, b = (wave[lag:n], ref[:n - lag]) if lag >= 0 else (wave[:n + lag], ref[-lag:n])
    assert np.corrcoef(a, b)[0, 1] > 0.98


def test_undecodable_and_video_without_audio_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.m4a"
    bad.write_bytes(os.urandom(3000))
    with pytest.raises(UserError, match="cannot read audio") as e:
        load_audio(bad)
    assert "\n" not in e.value.line()
    silent = tmp_path / "silent.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=black:s=32x32:d=1", "-c:v", "mpeg4", str(silent)], check=True)
    with pytest.raises(UserError, match="no audio stream"):
        load_audio(silent)


def test_batch_with_a_corrupt_file_keeps_the_good_ones(checkpoint, speech, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.wav").write_bytes(speech.read_bytes())
    ffmpeg(speech, folder / "b.m4a", "-c:a", "aac")
    (folder / "c.flac").write_bytes(b"fLaC" + os.urandom(500))  # corrupt
    (folder / "notes.txt").write_text("not speech")
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.wav").write_bytes(speech.read_bytes())  # same stem as in/a.wav
    out = tmp_path / "out"
    code = avtalk("-q", "animate", folder, other / "*.wav", "-o", out, "--checkpoint", checkpoint, *COMMON)
    captured = capsys.readouterr()
    assert code == 2
    err = captured.err
    assert "c.flac" in err and sum("error:" in line for line in err.splitlines()) == 1
    assert "skipped 1 file" in err and "notes.txt" in err
    assert "3 of 4 inputs animated, 1 failed" in err
    for name in ("a", "b", "a-2"):  # the same stem twice gets two folders
        assert np.load(out / name / "vertices.npy").shape == (24, 162, 3)
    assert not (out / "c").exists()
    assert "vertices.npy" in captured.out and "animation.json" in captured.out  # files written are listed


def test_repeated_format_options_add_up(checkpoint, speech, tmp_path):
    out = tmp_path / "out"
    assert avtalk("-q", "animate", speech, "-o", out, "--checkpoint", checkpoint, "--format", "npz",
                  "--format", "ply", "--no-video") == 0
    assert (out / "sequence.npz").exists() and (out / "meshes").is_dir()
    assert next((out / "meshes").iterdir()).suffix == ".ply"


def test_user_files_survive_and_stale_outputs_go(checkpoint, speech, tmp_path, capsys):
    out = tmp_path / "out"
    assert avtalk("-q", "animate", speech, "-o", out, "--checkpoint", checkpoint, "--format", "obj,npz",
                  "--no-video") == 0
    assert (out / "meshes").is_dir() and (out / "sequence.npz").exists()
    (out / "mine.txt").write_text("keep me")
    (out / "notes").mkdir()
    (out / "notes" / "x.txt").write_text("keep me too")
    before = (out / "vertices.npy").stat().st_ino
    assert avtalk("-q", "animate", speech, "-o", out, "--checkpoint", checkpoint, *COMMON) == 0
    assert (out / "mine.txt").read_text() == "keep me" and (out / "notes" / "x.txt").exists()
    assert (out / "vertices.npy").stat().st_ino != before  # replaced, by a rename
    # outputs of the earlier run that this one did not write (another --format) are removed
    assert not (out / "meshes").exists() and not (out / "sequence.npz").exists()
    assert sorted(p.name for p in out.iterdir()) == ["animation.json", "face.npz", "mine.txt", "notes",
                                                     "vertices.npy"]


def test_output_dot_is_the_current_folder(checkpoint, speech, tmp_path, monkeypatch):
    work = tmp_path / "here"
    work.mkdir()
    (work / "mine.txt").write_text("keep me")
    monkeypatch.chdir(work)
    assert avtalk("-q", "animate", speech, "-o", ".", "--checkpoint", checkpoint, *COMMON) == 0
    assert np.load(work / "vertices.npy").shape == (24, 162, 3) and (work / "mine.txt").exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".avtalk")]


def _lock(folder):
    """Make ``folder`` unwritable for this process (chmod, or chattr +i when running as root)."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return lambda: folder.chmod(0o755)
    probe.unlink()
    folder.chmod(0o755)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only here (root without chattr)")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_locked_output_is_one_line_exit_2(checkpoint, speech, tmp_path, capsys):
    anim = tmp_path / "anim"
    assert avtalk("-q", "animate", speech, "-o", anim, "--checkpoint", checkpoint, *COMMON) == 0
    out = tmp_path / "locked"
    out.mkdir()
    unlock = _lock(out)
    try:
        assert avtalk("animate", speech, "-o", out, "--checkpoint", checkpoint, *COMMON) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: cannot write into the output folder") and len(err.splitlines()) == 1
        assert avtalk("-q", "score", anim, "--transcript", "hello", "--json", out / "s.json") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "output folder" in err and len(err.splitlines()) == 1
    finally:
        unlock()
    assert list(out.iterdir()) == []


def test_output_is_a_file_and_bad_format_name(checkpoint, speech, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    assert avtalk("animate", speech, "-o", blocker, "--checkpoint", checkpoint, *COMMON) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and blocker.read_text() == "mine"
    assert avtalk("animate", speech, "-o", tmp_path / "o", "--checkpoint", checkpoint, "--format", "fbx") == 2
    err = capsys.readouterr().err
    assert "fbx" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_json_summary_to_stdout(checkpoint, speech, tmp_path, capsys):
    out = tmp_path / "out"
    assert avtalk("-q", "animate", speech, tmp_path / "missing.wav", "-o", out, "--checkpoint", checkpoint,
                  *COMMON, "--json", "-") == 2
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout holds the JSON and nothing else
    assert data["succeeded"] == 1 and data["failed"] == 1 and data["formats"] == ["npy"]
    ok = [r for r in data["results"] if r["status"] == "ok"][0]
    assert ok["files"] == ["vertices.npy", "face.npz", "animation.json"] and ok["frames"] == 24
    assert ok["output"] == str(out / "speech") and ok["seconds"] > 0
    bad = [r for r in data["results"] if r["status"] == "failed"][0]
    assert "not found" in bad["error"] and bad["input"].endswith("missing.wav")
    assert "vertices.npy" in captured.err  # the human summary moved to stderr
    path = tmp_path / "summary.json"
    assert avtalk("-q", "animate", speech, "-o", out, "--checkpoint", checkpoint, *COMMON, "--json", path) == 0
    assert json.loads(path.read_text())["results"][0]["output"] == str(out)


def test_atomic_outputs_failure_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "vertices.npy").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_outputs(out) as tmp:
            (tmp / "vertices.npy").write_text("new")
            raise RuntimeError("boom")
    assert [p.name for p in out.iterdir()] == ["vertices.npy"] and (out / "vertices.npy").read_text() == "old"
    with pytest.raises(RuntimeError):
        with atomic_outputs(tmp_path / "new"):
            raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
