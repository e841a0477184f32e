"""Audio input: read, downmix, resample, validate.

Every model in avtalk consumes mono float32 waveforms in [-1, 1] at the sample rate
the model carries (16 kHz for all bundled models).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from talkinghead_cli.errors import UserError

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.1
MAX_SECONDS = 3600.0


class SilentAudioWarning(UserWarning):
    """The input contains only digital silence."""


class TruncatedAudioWarning(UserWarning):
    """The file holds less audio than its header announces (a cut-off download or copy)."""


def header_shortfall(info) -> float | None:
    """Seconds a WAV/AIFF header announces, when the file holds less than that (else None).

    libsndfile reads what is there and notes ``data : 96000 (should be 32000)`` (bytes the
    header promises, bytes present) in ``info.extra_info``.
    """
    import re

    m = re.search(r"^\s*data\s*:\s*(\d+)\s*\(should be (\d+)\)", str(getattr(info, "extra_info", "")), re.M)
    if m is None or not info.samplerate:
        return None
    promised, present = int(m.group(1)), int(m.group(2))
    if promised <= present or present <= 0:
        return None
    return info.frames / info.samplerate * promised / present


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a mono waveform with soxr (high quality).

    Args:
        wave: (S,) float32.
    Returns:
        (S',) float32 with S' = round(S * sr_out / sr_in).
    """
    if sr_in == sr_out:
        return wave.astype(np.float32, copy=False)
    return soxr.resample(wave, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


# The one list of what avtalk reads as speech (folders, globs, --help and errors use it).
# libsndfile reads the first group directly (the fast path); everything else, and any file
# libsndfile refuses, is decoded by the ffmpeg binary of imageio-ffmpeg (a dependency).
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
FFMPEG_SUFFIXES = (".mp3", ".m4a", ".aac", ".mp4", ".m4v", ".mov", ".webm", ".mkv", ".mka", ".opus",
                   ".wma", ".amr", ".ac3", ".caf", ".3gp")
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES + FFMPEG_SUFFIXES
ACCEPTED = "WAV, FLAC, OGG, MP3, M4A/AAC, Opus, WebM, or the audio of MP4/MOV/MKV (anything ffmpeg decodes)"
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4,
                    "quad(side)": 4, "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6, "5.1(side)": 6,
                    "6.0": 6, "6.1": 7, "7.0": 7, "7.1": 8, "7.1(wide)": 8}


def is_audio_file(path: str | Path) -> bool:
    """Whether ``path`` has one of the suffixes a folder or glob input picks up."""
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def _check_length(seconds: float, path: Path, allow_long: bool, max_seconds: float) -> None:
    if seconds < MIN_SECONDS:
        raise UserError(f"audio is {seconds:.3f} s long, shorter than {MIN_SECONDS} s", path,
                        "give at least 0.1 s of speech")
    if seconds > max_seconds and not allow_long:
        raise UserError(f"audio is {seconds / 3600:.2f} h long", path,
                        "split it, or pass --allow-long to process it anyway")


def _read_soundfile(path: Path, allow_long: bool, max_seconds: float) -> tuple[np.ndarray, int] | None:
    """The fast path: (S, C) float32 and the rate, or None when libsndfile cannot read it."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return None
    if info.frames == 0:
        raise UserError("the audio file is empty", path, "record or export it again")
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    announced = header_shortfall(info)
    if announced is not None:
        warnings.warn(f"{path}: the file is shorter than its header says ({seconds:.2f} s of the "
                      f"{announced:.2f} s announced; a cut-off copy?); using the {seconds:.2f} s that are there",
                      TruncatedAudioWarning, stacklevel=3)
    _check_length(seconds, path, allow_long, max_seconds)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise UserError("cannot decode audio (corrupt file)", path, "export it again") from e
    return data, int(sr)


def _ffmpeg_message(stderr: bytes, path: Path) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("At least one output file")]
    msg = lines[-1] if lines else "no output"
    return msg.replace(str(path) + ": ", "")[:160]


def _read_ffmpeg(path: Path, allow_long: bool, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with imageio-ffmpeg's ffmpeg: (S, C) float32 and the rate.

    A first call reads the stream's rate, channels and duration (so a too long file is
    refused before decoding), the second decodes it to float32 at that rate and channel
    count; downmix and resampling then happen as for the fast path.
    """
    import subprocess

    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    probe = subprocess.run([exe, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True)
    text = probe.stderr.decode("utf-8", "replace")
    stream = re.search(r"Stream #\S+.*?: Audio: .*?, (\d+) Hz, ([^,]+)", text)
    if stream is None:
        what = "no audio stream" if "Input #0" in text else f"not an audio file ({_ffmpeg_message(probe.stderr, path)})"
        raise UserError(f"cannot read audio: {what}", path, f"give speech as {ACCEPTED}")
    rate, layout = int(stream.group(1)), stream.group(2).strip()
    count = re.match(r"(\d+) channels", layout)
    channels = int(count.group(1)) if count else _LAYOUT_CHANNELS.get(layout, 1)
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    if duration is not None:
        h, m, s = duration.groups()
        _check_length(int(h) * 3600 + int(m) * 60 + float(s), path, allow_long, max_seconds)
    run = subprocess.run([exe, "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
                          "-vn", "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-ar", str(rate),
                          "pipe:1"], capture_output=True)
    if run.returncode != 0 or len(run.stdout) < 4 * channels:
        raise UserError(f"cannot decode audio (corrupt file; ffmpeg: {_ffmpeg_message(run.stderr, path)})", path,
                        "export it again")
    data = np.frombuffer(run.stdout, dtype="<f4")
    return data[: len(data) // channels * channels].reshape(-1, channels), rate


def read_audio(path: str | Path, *, allow_long: bool = False, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """Decode any accepted audio file (see ``AUDIO_SUFFIXES``) at its own rate.

    libsndfile first for its own formats; ffmpeg for everything else and for any file
    libsndfile refuses. Returns (data (S, C) float32, sample rate).
    """
    path = Path(path)
    if not path.exists():
        raise UserError("audio file not found", path, "check the path")
    if path.is_dir():
        raise UserError("expected an audio file, got a folder", path, f"pass a speech file ({ACCEPTED})")
    if path.stat().st_size == 0:
        raise UserError("the audio file is empty", path, "record or export it again")
    got = _read_soundfile(path, allow_long, max_seconds) if path.suffix.lower() in SOUNDFILE_SUFFIXES else None
    if got is None:
        got = _read_ffmpeg(path, allow_long, max_seconds)
    data, sr = got
    if data.shape[0] == 0:
        raise UserError("the audio file is empty", path, "record or export it again")
    _check_length(data.shape[0] / sr, path, allow_long, max_seconds)
    return data, sr


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    *,
    allow_long: bool = False,
    max_seconds: float = MAX_SECONDS,
) -> np.ndarray:
    """Read any accepted audio file (WAV, FLAC, OGG, MP3, M4A/AAC, Opus, WebM, the audio of
    MP4/MOV...; see :func:`read_audio`) as mono float32.

    Args:
        path: audio file.
        sample_rate: output rate in Hz (the model's own).
        allow_long: accept files longer than ``max_seconds``.
    Returns:
        wave: (S,) float32 in [-1, 1] at ``sample_rate``.
    Raises:
        UserError: missing, unreadable, empty or too short/long file.
    """
    from talkinghead_cli.paths import check_input

    path = check_input(path, "the audio", folder_ok=True)  # never open a FIFO or a device
    data, sr = read_audio(path, allow_long=allow_long, max_seconds=max_seconds)
    wave = data.mean(axis=1)
    if not np.isfinite(wave).all():
        raise UserError("audio contains NaN or infinite samples", path, "export it again")
    wave = resample(wave, sr, sample_rate)
    np.clip(wave, -1.0, 1.0, out=wave)
    if np.abs(wave).max() < 1e-4:
        warnings.warn(f"{path}: the audio is digital silence; the face will stay at rest",
                      SilentAudioWarning, stacklevel=2)
    return wave


def save_wav(path: str | Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write a mono float waveform (S,) as 16-bit PCM WAV, atomically."""
    from talkinghead_cli.atomic import atomic_file

    with atomic_file(path) as tmp:
        sf.write(str(tmp), np.asarray(wave, dtype=np.float32), sample_rate, subtype="PCM_16", format="WAV")
