"""Articulation: phoneme segments -> per-frame ARKit blendshape weights.

Cohen-Massaro coarticulation: every (sub-)segment s has a target vector T_s (its viseme's
ARKit weights) and a dominance D_s(t) = alpha * exp(-theta * |t - centre_s|), per channel
group (jaw, lips). The weight of channel k at time t is sum_s D_s(t) T_sk / sum_s D_s(t).
Rounded visemes spread their lip dominance ``anticipation`` times further backwards
(anticipatory rounding). A JALI-style closure curve c(t), local to each p/b/m (1 over the consonant, a
short raised-cosine release), then shuts the lips: mouthClose = c * jawOpen and the
lip-opening targets are scaled by (1 - c); the jaw keeps its own coarticulated opening,
so a vowel between two bilabials still opens. ``phoneme_check`` measures the result
per phoneme against written targets. Silences
relax to the rest pose (all zeros). The mapping lives in ``visemes.json`` beside this file.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_MAPPING = Path(__file__).with_name("visemes.json")
JAW_CHANNELS = ("jawOpen", "jawForward")
OPENING_CHANNELS = ("mouthFunnel", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
                    "mouthUpperUpRight", "mouthStretchLeft", "mouthStretchRight", "tongueOut")


@dataclass(frozen=True)
class Style:
    """A subject's speaking style.

    amplitude scales every mouth target, jaw and lips the two groups (jaw/lip balance),
    blink_rate is blinks per second (0: no blinks).
    """

    amplitude: float = 1.0
    jaw: float = 1.0
    lips: float = 1.0
    blink_rate: float = 0.3

    def to_json(self) -> dict:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


@functools.lru_cache(maxsize=4)
def load_mapping(path: str | None = None) -> dict:
    """The phoneme/viseme/dominance tables (see the ``_doc`` in the JSON file)."""
    return json.loads(Path(path or _MAPPING).read_text())


def viseme_targets(names: tuple[str, ...], mapping: dict | None = None) -> dict[str, np.ndarray]:
    """Viseme name -> (K,) target weights over the rig's blendshape ``names``."""
    mapping = mapping or load_mapping()
    out = {}
    for vis, spec in mapping["visemes"].items():
        vec = np.zeros(len(names), np.float64)
        for key, w in spec["targets"].items():
            for n in ([key[:-1] + "Left", key[:-1] + "Right"] if key.endswith("*") else [key]):
                if n in names:
                    vec[names.index(n)] = w
        out[vis] = vec
    return out


def _sub_segments(segments, mapping):
    """Split diphthongs; returns arrays start, end, viseme names, class names."""
    starts, ends, vis, cls = [], [], [], []
    for a, b, ph in segments:
        entry = mapping["phonemes"].get(ph, mapping["phonemes"]["SIL"])
        parts = entry["visemes"]
        step = (b - a) / len(parts)
        for i, v in enumerate(parts):
            starts.append(a + i * step)
            ends.append(a + (i + 1) * step)
            vis.append(v)
            cls.append(entry["class"])
    return np.asarray(starts), np.asarray(ends), vis, cls


def _dominance(times, centres, alpha, theta_fwd, theta_back):
    """(N, T) dominance of N segments at T times; theta_back applies before the centre."""
    dt = times[None, :] - centres[:, None]
    theta = np.where(dt < 0, theta_back[:, None], theta_fwd[:, None])
    return alpha[:, None] * np.exp(-theta * np.abs(dt))


def articulate(segments: list[tuple[float, float, str]], num_frames: int, fps: float,
               names: list[str], style: Style = Style(), seed: int = 0,
               mapping: dict | None = None) -> np.ndarray:
    """Blendshape weights for a phoneme sequence.

    Args:
        segments: [(start_s, end_s, ARPAbet or SIL)].
        num_frames: T; frame f is at time f / fps.
        names: the rig's K blendshape names.
        style: the subject's speaking style.
        seed: seeds the blink times (deterministic).
    Returns:
        (T, K) float32 weights in [0, 1].
    """
    mapping = mapping or load_mapping()
    names_t = tuple(names)
    k = len(names)
    times = np.arange(num_frames) / fps
    if not segments:
        return np.zeros((num_frames, k), np.float32)
    start, end, vis, cls = _sub_segments(segments, mapping)
    centres = 0.5 * (start + end)
    targets = viseme_targets(names_t, mapping)
    tmat = np.stack([targets[v] for v in vis])  # (N, K)
    jaw_mask = np.array([n in JAW_CHANNELS for n in names])
    out = np.zeros((num_frames, k))
    rounded = np.array([bool(mapping["visemes"][v].get("rounded")) for v in vis])
    for group, mask in (("jaw", jaw_mask), ("lips", ~jaw_mask)):
        alpha = np.array([mapping["classes"][c][group][0] for c in cls])
        theta = np.array([mapping["classes"][c][group][1] for c in cls])
        back = theta / np.where(rounded & (group == "lips"), mapping["anticipation"], 1.0)
        d = _dominance(times, centres, alpha, theta, back)  # (N, T)
        blend = (d.T @ tmat) / np.maximum(d.sum(axis=0), 1e-12)[:, None]
        out[:, mask] = blend[:, mask]
    out[:, jaw_mask] *= style.amplitude * style.jaw
    out[:, ~jaw_mask] *= style.amplitude * style.lips
    _close_lips(out, times, start, end, cls, names, mapping, fps)
    if style.blink_rate > 0:
        _add_blinks(out, times, names, style.blink_rate, seed)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def closure_curve(times: np.ndarray, start: np.ndarray, end: np.ndarray, cls: list[str], mapping: dict,
                  fps: float) -> np.ndarray:
    """(T,) bilabial closure c(t) in [0, 1]: a lip gesture local to each /p b m/.

    c = 1 over each bilabial segment, widened to at least one frame period (so even a 20 ms
    /b/ shuts the lips on the frame nearest to it), then a raised-cosine release over
    ``mapping["closure"]["release_s"]`` seconds on both sides; the largest value over the
    bilabials. Outside that the closure is 0, so a vowel between two bilabials keeps its own
    lip opening and jaw (only the lips close, briefly, at the consonants).
    """
    bil = np.array([c == "bilabial" for c in cls])
    if not bil.any():
        return np.zeros(len(times))
    release = float(mapping["closure"]["release_s"])
    centres = 0.5 * (start[bil] + end[bil])
    half = np.maximum(0.5 * (end[bil] - start[bil]), 0.5 / fps)
    dist = np.maximum(np.abs(times[None, :] - centres[:, None]) - half[:, None], 0.0)  # (N_b, T)
    ramp = np.where(dist < release, 0.5 * (1.0 + np.cos(np.pi * np.minimum(dist / release, 1.0))), 0.0)
    return ramp.max(axis=0)


def _close_lips(out, times, start, end, cls, names, mapping, fps) -> None:
    c = closure_curve(times, start, end, cls, mapping, fps)
    if "jawOpen" not in names or "mouthClose" not in names:
        return
    j = names.index("jawOpen")
    mc = names.index("mouthClose")
    out[:, mc] = np.maximum(out[:, mc], c * out[:, j])
    for n in OPENING_CHANNELS:
        if n in names:
            out[:, names.index(n)] *= 1.0 - c


def _add_blinks(out, times, names, rate, seed) -> None:
    """Procedural blinks: Poisson times, 0.1 s closing, 0.15 s opening."""
    ks = [names.index(n) for n in ("eyeBlinkLeft", "eyeBlinkRight") if n in names]
    if not ks or len(times) == 0:
        return
    rng = np.random.default_rng(seed)
    t, dur = 0.3 + rng.exponential(1.0 / rate), times[-1]
    while t < dur:
        rise = np.clip((times - t) / 0.1 + 1.0, 0.0, 1.0)
        fall = np.clip(1.0 - (times - t) / 0.15, 0.0, 1.0)
        shape = np.where(times < t, rise, fall) ** 2
        for k in ks:
            out[:, k] = np.maximum(out[:, k], shape)
        t += 0.4 + rng.exponential(1.0 / rate)
