"""Audio augmentation for training: the TTS corpus made to sound like real recordings.

A model that only ever hears clean TTS cannot tell phonemes apart in a real room, on a
phone line or at another level. Each training sequence is therefore perturbed, freshly per
epoch and reproducibly (the random draw is seeded by ``(seed, epoch, index)``), by a chain
of the effects below, each applied with its own probability:

- ``speed``: speed perturbation (tempo and pitch together, as Kaldi's): the waveform is
  resampled by a factor r in [0.9, 1.1] and the vertex sequence is resampled in time by the
  same factor, so the mouth stays in sync;
- ``pitch``: a pitch shift of up to +-3 semitones at constant tempo (resample, then a
  WSOLA-free overlap-add time stretch back to the original length; see :func:`pitch_shift`);
- ``reverb``: a synthetic room impulse response (exponentially decaying noise, RT60 in
  [0.15, 0.9] s, after a direct path and a few early reflections), mixed wet/dry;
- ``band``: band limiting: telephone (300-3400 Hz, 8 kHz, mu-law) or a random low-pass
  (3-7 kHz, as cheap microphones and codecs);
- ``noise``: white, pink or brown noise at an SNR of 5-30 dB;
- ``level``: a gain of -20..+6 dB with hard clipping at full scale.

Shapes: S audio samples, T frames, V vertices.
"""

from __future__ import annotations

import numpy as np
import soxr
import torch
from pydantic import BaseModel, ConfigDict, Field

EFFECTS = ("speed", "pitch", "reverb", "band", "noise", "level")
__all__ = ["AugmentConfig", "AugmentedDataset", "augment"]


class AugmentConfig(BaseModel):
    """Audio augmentation of training sequences: each effect's probability (0 turns it off)."""

    model_config = ConfigDict(extra="forbid")
    speed: float = Field(0.5, ge=0, le=1)   # tempo and pitch x0.9-1.1, vertices resampled in time
    pitch: float = Field(0.3, ge=0, le=1)   # +-3 semitones, same tempo
    reverb: float = Field(0.3, ge=0, le=1)  # synthetic room, RT60 0.15-0.9 s
    band: float = Field(0.2, ge=0, le=1)    # telephone band or a 3-7 kHz low-pass
    noise: float = Field(0.4, ge=0, le=1)   # white/pink/brown noise, SNR 5-30 dB
    level: float = Field(0.5, ge=0, le=1)   # gain -20..+6 dB, clipped


def speed(wave: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """(S,) -> (~S / factor,): played ``factor`` times faster (and higher)."""
    return soxr.resample(wave, sr * factor, sr).astype(np.float32)


def stretch(wave: np.ndarray, length: int, frame: int = 640, tolerance: int = 160) -> np.ndarray:
    """WSOLA time stretch of (S,) to ``length`` samples at constant pitch.

    Waveform-similarity overlap-add (Verhelst & Roelands 1993): output frames of ``frame``
    samples overlap by half (Hann windows, which sum to one); each next input frame is taken
    near its nominal position, shifted by up to ``tolerance`` samples to where it best
    continues the previous one (largest cross-correlation), so periods line up and no
    phase cancellation (a comb or flutter) appears. (librosa has a phase vocoder, but would
    bring scikit-learn and more for this one function.)
    """
    hop = frame // 2
    n_out = max(1, -(-length // hop))
    rate = (len(wave) - frame) / max((n_out - 1) * hop, 1) if len(wave) > frame else 0.0
    padded = np.pad(wave.astype(np.float32), (tolerance, frame + 2 * tolerance))
    win = np.hanning(frame + 1)[:-1].astype(np.float32)  # periodic: 50 % overlaps sum to 1
    out = np.zeros(n_out * hop + frame, np.float32)
    prev = tolerance  # where the previous input frame started (in padded samples)
    for i in range(n_out):
        nominal = tolerance + int(round(i * hop * rate))
        if i == 0:
            start = nominal
        else:
            natural = padded[prev + hop: prev + hop + frame]  # what would continue the last frame
            lo = max(nominal - tolerance, 0)
            region = padded[lo: nominal + tolerance + frame]
            corr = np.correlate(region, natural, mode="valid")
            start = lo + int(np.argmax(corr))
        out[i * hop: i * hop + frame] += padded[start: start + frame] * win
        prev = start
    return out[:length]


def pitch_shift(wave: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """(S,) -> (S,) shifted by ``semitones`` at the same duration."""
    shifted = speed(wave, sr, 2.0 ** (semitones / 12.0))
    return stretch(shifted, len(wave))


def room_impulse(sr: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: direct path, early reflections, exponential tail."""
    n = int(sr * rt60)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: int(0.005 * sr)] = 0.0
    ir = 0.3 * tail / (np.abs(tail).max() + 1e-9)
    ir[0] = 1.0
    for _ in range(4):  # early reflections, 3-30 ms
        ir[int(rng.uniform(0.003, 0.03) * sr)] += rng.uniform(0.2, 0.6) * rng.choice([-1.0, 1.0])
    return (ir / np.sqrt(np.sum(ir ** 2))).astype(np.float32)


def reverb(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    from scipy import signal  # scipy.signal takes ~1 s to import; only training needs it

    ir = room_impulse(sr, rng.uniform(0.15, 0.9), rng)
    wet = signal.fftconvolve(wave, ir)[: len(wave)]
    mix = rng.uniform(0.3, 1.0)
    return ((1 - mix) * wave + mix * wet * (np.std(wave) / (np.std(wet) + 1e-9))).astype(np.float32)


def band_limit(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    from scipy import signal

    if rng.random() < 0.5:  # telephone: 300-3400 Hz band, 8 kHz, mu-law 8 bit
        sos = signal.butter(4, [300, 3400], btype="bandpass", fs=sr, output="sos")
        x = soxr.resample(signal.sosfilt(sos, wave), sr, 8000)
        peak = np.abs(x).max() + 1e-9
        mu = 255.0
        q = np.round(np.sign(x / peak) * np.log1p(mu * np.abs(x / peak)) / np.log1p(mu) * 127) / 127
        x = np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu * peak
        return soxr.resample(x, 8000, sr)[: len(wave)].astype(np.float32)
    sos = signal.butter(6, rng.uniform(3000, min(7000, 0.45 * sr)), btype="lowpass", fs=sr, output="sos")
    return signal.sosfilt(sos, wave).astype(np.float32)


def add_noise(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(wave)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.arange(len(spec)), 1.0)
    colour = rng.choice([0.0, 1.0, 2.0])  # white, pink, brown
    noise = np.fft.irfft(spec / f ** (colour / 2), n)
    snr = rng.uniform(5.0, 30.0)
    p_sig = np.mean(wave ** 2) + 1e-12
    noise *= np.sqrt(p_sig / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr / 10))
    return (wave + noise).astype(np.float32)


def resample_frames(verts: np.ndarray, num_frames: int) -> np.ndarray:
    """(T, V, 3) -> (num_frames, V, 3) by linear interpolation over the same time span."""
    t = len(verts)
    if num_frames == t:
        return verts
    pos = np.linspace(0.0, t - 1, num_frames)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, t - 1)
    w = (pos - lo)[:, None, None].astype(np.float32)
    return (verts[lo] * (1 - w) + verts[hi] * w).astype(np.float32)


def augment(wave: np.ndarray, verts: np.ndarray, sr: int, cfg: AugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One random perturbation of a training pair.

    Args:
        wave: (S,) float32 at ``sr``; verts: (T, V, 3) at the corpus's fps.
    Returns:
        (wave (S',), verts (T', V, 3), the effects applied). Only ``speed`` changes S and T.
    """
    applied = []
    if rng.random() < cfg.speed:
        r = rng.uniform(0.9, 1.1)
        wave = speed(wave, sr, r)
        verts = resample_frames(verts, max(1, int(round(len(verts) / r))))
        applied.append("speed")
    if rng.random() < cfg.pitch:
        wave = pitch_shift(wave, sr, rng.uniform(-3.0, 3.0))
        applied.append("pitch")
    if rng.random() < cfg.reverb:
        wave = reverb(wave, sr, rng)
        applied.append("reverb")
    if rng.random() < cfg.band:
        wave = band_limit(wave, sr, rng)
        applied.append("band")
    if rng.random() < cfg.noise:
        wave = add_noise(wave, rng)
        applied.append("noise")
    if rng.random() < cfg.level:
        wave = np.clip(wave * 10 ** (rng.uniform(-20.0, 6.0) / 20), -1.0, 1.0)
        applied.append("level")
    return wave.astype(np.float32), verts, applied


class AugmentedDataset(torch.utils.data.Dataset):
    """Wraps a :class:`~talkinghead_cli.data.dataset.SequenceDataset`: same items, perturbed audio.

    Call :meth:`set_epoch` at the start of every epoch: item ``i`` of epoch ``e`` is perturbed
    by a generator seeded with ``(seed, e, i)``, so a resumed run sees the same sounds.
    """

    def __init__(self, base, cfg: AugmentConfig, seed: int = 0):
        self.base, self.cfg, self.seed, self.epoch = base, cfg, seed, 0
        self.corpus = base.corpus

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        rng = np.random.default_rng([self.seed, self.epoch, i, 0xA0D10])
        wave, verts, _ = augment(item["audio"].numpy(), item["verts"].numpy(), self.base.sample_rate, self.cfg, rng)
        item["audio"], item["verts"] = torch.from_numpy(wave), torch.from_numpy(np.ascontiguousarray(verts))
        return item
