"""Audio input: read, downmix, resample, validate.

Every model in avtalk consumes mono float32 waveforms in [-1, 1] at the sample rate
the model carries (16 kHz for all bundled models).
"""

from __future__ import annotations

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


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    *,
    allow_long: bool = False,
    max_seconds: float = MAX_SECONDS,
) -> np.ndarray:
    """Read WAV/FLAC/OGG (MP3 where libsndfile supports it) as mono float32.

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
    if not path.exists():
        raise UserError("audio file not found", path, "check the path")
    if path.is_dir():
        raise UserError("expected an audio file, got a folder", path, "pass a WAV/FLAC/OGG file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise UserError("cannot read audio (corrupt or unsupported format)", path,
                        "convert it to 16-bit WAV, FLAC or OGG") from e
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    announced = header_shortfall(info)
    if announced is not None and info.frames > 0:
        warnings.warn(f"{path}: the file is shorter than its header says ({seconds:.2f} s of the "
                      f"{announced:.2f} s announced; a cut-off copy?); using the {seconds:.2f} s that are there",
                      TruncatedAudioWarning, stacklevel=2)
    if info.frames == 0:
        raise UserError("the audio file is empty", path, "record or export it again")
    if seconds < MIN_SECONDS:
        raise UserError(f"audio is {seconds:.3f} s long, shorter than {MIN_SECONDS} s", path,
                        "give at least 0.1 s of speech")
    if seconds > max_seconds and not allow_long:
        raise UserError(f"audio is {seconds / 3600:.2f} h long", path,
                        "split it, or pass --allow-long to process it anyway")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise UserError("cannot decode audio (corrupt file)", path, "export it again") from e
    if data.shape[0] == 0:
        raise UserError("the audio file is empty", path, "record or export it again")
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
