import numpy as np
import pytest
import soundfile as sf

from talkinghead_cli.audio import SilentAudioWarning, load_audio
from talkinghead_cli.errors import UserError


def test_load_resamples_and_downmixes(tone_wav):
    wave = load_audio(tone_wav)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16_000) <= 1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) - 220) <= 1  # 1 s of audio: bin index == Hz


@pytest.mark.parametrize("fmt,ext", [("FLAC", ".flac"), ("OGG", ".ogg")])
def test_other_formats(tmp_path, fmt, ext):
    path = tmp_path / f"a{ext}"
    sf.write(path, 0.2 * np.sin(np.linspace(0, 300, 8000)), 8000, format=fmt)
    assert abs(len(load_audio(path)) - 16_000) <= 2


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(UserError, match="cannot read audio"):
        load_audio(path)


def test_empty_and_short(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), 16000)
    with pytest.raises(UserError, match="empty"):
        load_audio(empty)
    short = tmp_path / "short.wav"
    sf.write(short, np.full(800, 0.1), 16000)  # 0.05 s
    with pytest.raises(UserError, match="shorter"):
        load_audio(short)


def test_silence_warns(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000), 16000)
    with pytest.warns(SilentAudioWarning):
        load_audio(path)


def test_long_refused_unless_allowed(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.full(16000 * 3, 0.1), 16000)
    with pytest.raises(UserError, match="allow-long"):
        load_audio(path, max_seconds=2.0)
    assert len(load_audio(path, max_seconds=2.0, allow_long=True)) == 48000
