"""Output size estimates, the free-space check before any work, and a disk that fills up
anyway: one line, exit 2, no temporary folder left, never a SIGBUS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clirun import avtalk

from talkinghead_cli import diskspace
from talkinghead_cli.diskspace import animate_bytes, human, reserved_npy, stream_npy

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "examples" / "speech.wav"


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_human_sizes():
    from talkinghead_cli.export import MAX_TARGETS

    assert human(512) == "512 B" and human(3_200_000) == "3.2 MB" and human(33e9) == "33.0 GB"
    assert diskspace.GLTF_TARGETS == MAX_TARGETS


def test_estimate_matches_what_animate_writes(tmp_path):
    import json

    assert avtalk("animate", SPEECH, "-o", tmp_path / "o", "--format", "obj,ply,npz", "--no-video") == 0
    meta = json.loads((tmp_path / "o" / "animation.json").read_text())
    face = np.load(tmp_path / "o" / "face.npz")
    est = animate_bytes(meta["frames"], face["template"], face["faces"], ["obj", "ply", "npz"], video=False)
    real = sum(p.stat().st_size for p in _files(tmp_path / "o"))
    assert 0.97 < est / real < 1.1, (est, real)


def test_no_room_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    import talkinghead_cli.animate as A

    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 20 << 20)  # 20 MB free

    def no_work(*a, **k):
        raise AssertionError("predicted although the output cannot fit")

    predict = A.predict_windowed
    monkeypatch.setattr(A, "predict_windowed", no_work)
    assert avtalk("animate", SPEECH, "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs about" in err and "21.0 MB is free" in err
    assert "--format npy or gltf" in err and os.listdir(tmp_path) == []
    # the same speech as vertices only fits
    monkeypatch.setattr(A, "predict_windowed", predict)
    assert avtalk("animate", SPEECH, "-o", tmp_path / "out", "--format", "npy", "--no-video") == 0


def test_a_large_output_is_announced(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(diskspace, "LARGE", 1 << 20)
    assert avtalk("animate", SPEECH, "-o", tmp_path / "out", "--no-video") == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "will write about 6" in err and "--format npy or gltf" in err


def test_disk_full_during_the_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno

    def full(fh, size):
        raise OSError(errno.ENOSPC, "No space left on device", fh.name)

    monkeypatch.setattr(diskspace, "_reserve", full)
    assert avtalk("animate", SPEECH, "-o", tmp_path / "out", "--format", "npy", "--no-video") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: the disk filled up while writing")
    assert os.listdir(tmp_path) == []  # the temporary folder is gone too


def test_reserved_and_streamed_npy_round_trip(tmp_path):
    data = np.random.default_rng(0).normal(size=(7, 5, 3)).astype(np.float32)
    m = reserved_npy(tmp_path / "a.npy", data.shape)
    assert os.stat(tmp_path / "a.npy").st_blocks * 512 >= data.nbytes  # allocated, not sparse
    m[:] = data
    m.flush()
    del m
    assert np.array_equal(np.load(tmp_path / "a.npy"), data)
    stream_npy(tmp_path / "b.npy", data.shape, (data[a:a + 3] for a in range(0, 7, 3)))
    assert np.array_equal(np.load(tmp_path / "b.npy"), data)
    with pytest.raises(ValueError, match="wrote 3 of 7"):
        stream_npy(tmp_path / "c.npy", data.shape, [data[:3]])


# ----------------------------------------------------------------------------- a real small filesystem


@pytest.fixture
def small_fs(tmp_path):
    """A 20 MB tmpfs (root only); skipped where mounting is not permitted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _run(args: list, probe_free: int | None = None) -> subprocess.CompletedProcess:
    """avtalk in a child process (a SIGBUS there does not kill the tests), optionally with
    the free-space probe patched, so the write itself meets the full disk."""
    patch = "" if probe_free is None else f"import talkinghead_cli.diskspace as d; d.free_bytes = lambda p: {probe_free}; "
    code = patch + "from talkinghead_cli.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AVTALK_CACHE_DIR": "off"}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_small_filesystem_refused_up_front(small_fs):
    r = _run(["animate", SPEECH, "-o", small_fs / "out"])  # OBJ frames + video: ~33 MB
    assert r.returncode == 2 and "needs about" in r.stderr and "is free there" in r.stderr, r.stderr
    assert os.listdir(small_fs) == []


def test_small_filesystem_fills_during_the_write(small_fs):
    (small_fs / "ballast").write_bytes(bytes(19 << 20))  # another program fills the disk: 1 MB left
    for fmt in ("obj", "npy"):  # per-frame files, and the memory-mapped vertices (SIGBUS before)
        r = _run(["animate", SPEECH, "-o", small_fs / "out", "--format", fmt, "--no-video"], probe_free=1 << 40)
        assert r.returncode == 2, (fmt, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: the disk filled up while writing"), r.stderr
        assert sorted(os.listdir(small_fs)) == ["ballast"]


def test_synth_and_render_check_the_room(tmp_path, monkeypatch, capsys):
    from talkinghead_cli.diskspace import synth_bytes

    # a built corpus of 1,680 utterances (15,080 words) took 4,147 s of speech, 6.5 GB
    est = synth_bytes(["one two three four five six seven eight nine"] * 1680, 30.0, 4368, 52)
    assert 0.9 < est / 6.5e9 < 1.3
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 1 << 20)
    assert avtalk("synth", tmp_path / "c", "--subjects", "2", "--sentences", "2") == 2
    err = capsys.readouterr().err
    assert "the corpus needs about" in err and not (tmp_path / "c").exists()
    assert not list(tmp_path.iterdir())
    assert avtalk("render", ROOT / "examples" / "sequence.npz", "-t", ROOT / "examples" / "template.obj",
                  "-o", tmp_path / "a.mp4") == 2
    assert "the video needs about" in capsys.readouterr().err and not (tmp_path / "a.mp4").exists()
