"""Odd input files: FIFOs, devices and folders where a file is expected, a truncated WAV,
transcripts and config files that are not UTF-8. Each gets one line and exit 2 (or, for
the truncated WAV, a one-line warning), and nothing blocks."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clirun import avtalk

from talkinghead_cli.errors import UserError
from talkinghead_cli.paths import check_input

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "examples" / "speech.wav"
TEMPLATE = ROOT / "examples" / "template.obj"
SEQUENCE = ROOT / "examples" / "sequence.npz"


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.wav"
    os.mkfifo(path)
    return path


@contextlib.contextmanager
def unblock(path: Path, after: float = 30.0):
    """If something opens the FIFO for reading and blocks, open it for writing after
    ``after`` seconds so the test fails instead of hanging."""
    done = threading.Event()

    def release():
        if not done.wait(after):
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_check_input_kinds(tmp_path, fifo):
    regular = tmp_path / "a.txt"
    regular.write_text("x")
    assert check_input(regular) == regular
    assert check_input(tmp_path / "missing") == tmp_path / "missing"  # the reader says "not found"
    assert check_input(tmp_path, folder_ok=True) == tmp_path
    with pytest.raises(UserError, match=r"named pipe \(FIFO\)"):
        check_input(fifo, "the speech")
    with pytest.raises(UserError, match="a device"):
        check_input("/dev/zero", "--template")
    with pytest.raises(UserError, match="got a folder"):
        check_input(tmp_path, "--landmarks")


def _cases(fifo: Path, tmp: Path) -> list[list]:
    """One command line per path option, with ``fifo`` in that option."""
    out = tmp / "out"
    corpus = ["--dataset", "synthetic", "--data-root", tmp]
    return [
        ["animate", fifo, "-o", out],
        ["animate", SPEECH, "-t", fifo, "-o", out],
        ["animate", SPEECH, "-t", TEMPLATE, "--landmarks", fifo, "-o", out],
        ["animate", SPEECH, "-c", fifo, "-o", out],
        ["render", fifo, "-t", TEMPLATE, "-o", tmp / "a.mp4"],
        ["render", SEQUENCE, "-t", fifo, "-o", tmp / "a.mp4"],
        ["render", SEQUENCE, "-t", TEMPLATE, "-a", fifo, "-o", tmp / "a.mp4"],
        ["score", fifo, "--transcript", "hello"],
        ["score", SEQUENCE, "--transcript", "hello", "--reference", fifo],
        ["score", SEQUENCE, "--transcript", "hello", "--audio", fifo],
        ["score", SEQUENCE, "--transcript", "hello", "--expert", fifo],
        ["score", SEQUENCE, "--transcript", "hello", "-t", fifo],
        ["score", SEQUENCE, "--transcript", "hello", "--lip-indices", fifo],
        ["score", "-c", fifo, *corpus],
        ["score", *corpus, "--transcripts", fifo],
        ["train", *corpus, "--config", fifo],
        ["train", *corpus, "--expert", fifo, "--av-loss"],
        ["train", *corpus, "--init-from", fifo],
        ["train", *corpus, "--faces-from", fifo],
        ["finetune-expert", *corpus, "--config", fifo],
        ["finetune-expert", *corpus, "--expert-checkpoint", fifo],
        ["synth", tmp / "c", "--rig", fifo],
        ["synth", tmp / "c", "--sentences-file", fifo],
        ["synth", tmp / "c", "--from-recordings", fifo],
    ]


def test_every_path_option_refuses_a_fifo_without_blocking(fifo, tmp_path, capsys):
    for args in _cases(fifo, tmp_path):
        with unblock(fifo):
            code = avtalk(*args)
        err = capsys.readouterr().err
        assert code == 2 and "named pipe (FIFO)" in err and str(fifo) in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["animate", "/dev/zero", "-o", "{tmp}/out"],
    ["animate", SPEECH, "-t", "/dev/zero", "-o", "{tmp}/out"],
    ["animate", SPEECH, "-t", "{tmp}", "-o", "{tmp}/out"],
    ["animate", SPEECH, "-t", TEMPLATE, "--landmarks", "{tmp}", "-o", "{tmp}/out"],
    ["animate", SPEECH, "-c", "{tmp}", "-o", "{tmp}/out"],
    ["render", SEQUENCE, "-t", TEMPLATE, "-a", "/dev/zero", "-o", "{tmp}/a.mp4"],
    ["render", SEQUENCE, "-t", TEMPLATE, "-a", "{tmp}", "-o", "{tmp}/a.mp4"],
    ["score", SEQUENCE, "--transcript", "x", "--expert", "{tmp}"],
    ["train", "--config", "/dev/zero"],
    ["train", "--config", "{tmp}"],
])
def test_devices_and_folders_where_a_file_is_expected(args, tmp_path, capsys):
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    assert avtalk(*args) == 2
    err = capsys.readouterr().err
    assert ("a device" in err or "got a folder" in err) and len(err.strip().splitlines()) == 1, err


def test_truncated_wav_is_animated_with_a_warning(tmp_path, capsys):
    from talkinghead_cli.audio import TruncatedAudioWarning, load_audio

    wave = (0.2 * np.sin(np.arange(48000) / 16000 * 2 * np.pi * 200)).astype(np.float32)
    full = tmp_path / "full.wav"
    sf.write(full, wave, 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:44 + 32000])  # the header promises 3 s, the file holds 1 s
    with pytest.warns(TruncatedAudioWarning, match=r"shorter than its header says \(1.00 s of the 3.00 s"):
        assert len(load_audio(cut)) == 16000
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        load_audio(full)  # a whole file: no warning
    assert avtalk("animate", cut, "-o", tmp_path / "out", "--format", "npy", "--no-video") == 0
    err = capsys.readouterr().err
    assert err.count("shorter than its header says") == 1
    assert np.load(tmp_path / "out" / "vertices.npy").shape[0] == 30  # 1 s at 30 fps


def test_transcripts_and_config_that_are_not_utf8(tmp_path):
    from talkinghead_cli.config import read_config_file
    from talkinghead_cli.data.dataset import read_transcripts

    bad = tmp_path / "transcripts.json"
    bad.write_bytes('{"a_1": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(UserError, match=r"not UTF-8 text \(byte 0xe9") as e:
        read_transcripts(None, bad)
    assert str(bad) in str(e.value)
    cfg = tmp_path / "train.json"
    cfg.write_bytes('{"seed": 1, "x": "\u00e9"}'.encode("latin-1"))
    with pytest.raises(UserError, match="config file is not UTF-8"):
        read_config_file(cfg)
