"""Mouth opening, loudness envelope and their (lagged) correlation on synthetic inputs."""

import math

import numpy as np
import pytest
import torch

from talkinghead_cli import metrics
from talkinghead_cli.data.synthetic.regions import lip_gap


def _lips(openings):
    """A 6-vertex "mouth": 3 upper-lip vertices at y = +o/2, 3 lower at y = -o/2 per frame,
    with some x/z spread that must not count. Returns verts (T, 6, 3), upper, lower."""
    o = torch.as_tensor(openings, dtype=torch.float64)
    x = torch.tensor([-1.0, 0.0, 1.0])
    verts = torch.zeros(len(o), 6, 3, dtype=torch.float64)
    verts[:, :3, 0] = x
    verts[:, 3:, 0] = x
    verts[:, :3, 1] = 0.2 + o[:, None] / 2  # the rest pose need not be centred at 0
    verts[:, 3:, 1] = 0.2 - o[:, None] / 2
    verts[:, :, 2] = torch.linspace(0, 5, 6)
    return verts, torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])


def test_lip_gap_recovers_a_known_opening():
    """The mouth-opening curve the real-speech benchmark correlates with loudness."""
    openings = [0.0, 0.01, 0.03, 0.005]
    verts, up, lo = (t.numpy() for t in _lips(openings))
    got = lip_gap(verts, up, lo)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, openings, atol=1e-12)
    np.testing.assert_allclose(lip_gap(verts, lo, up), -got)  # swapping the lips flips the sign


def test_loudness_envelope_follows_an_amplitude_modulated_tone():
    sr, fps, seconds = 16000, 30.0, 2.0
    t = np.arange(int(sr * seconds)) / sr
    amp = 0.5 + 0.4 * np.sin(2 * np.pi * 2.0 * t)  # 2 Hz modulation, 15 frames a period
    wave = amp * np.sin(2 * np.pi * 440.0 * t)
    n = round(seconds * fps)
    env = metrics.loudness_envelope(torch.tensor(wave), sr, fps, n)
    assert env.shape == (n,)
    # RMS of a sine of amplitude a is a / sqrt(2), at each frame's centre
    expected = (0.5 + 0.4 * np.sin(2 * np.pi * 2.0 * (np.arange(n) + 0.5) / fps)) / math.sqrt(2)
    np.testing.assert_allclose(env.numpy(), expected, atol=0.01)
    assert metrics.pearson(env, torch.tensor(expected)) > 0.999


def test_loudness_envelope_silence_and_windows_past_the_end():
    wave = torch.cat([torch.zeros(1600), torch.ones(1600)])  # 0.1 s silence, 0.1 s of 1.0
    env = metrics.loudness_envelope(wave, 16000, 10.0, 4)  # frames of 0.1 s; 2 past the end
    assert env.tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_lagged_pearson_finds_the_delay_of_the_motion():
    rng = np.random.default_rng(0)
    env = torch.tensor(rng.random(200))
    motion = torch.roll(env, 2)  # the mouth follows the sound by 2 frames
    rs = metrics.lagged_pearson(motion, env, 3)
    assert sorted(rs) == [-3, -2, -1, 0, 1, 2, 3]
    assert rs[2] == pytest.approx(1.0)
    assert max(rs, key=rs.get) == 2
    assert abs(rs[0]) < 0.3
    assert math.isnan(metrics.pearson(torch.ones(5), torch.arange(5.0)))
