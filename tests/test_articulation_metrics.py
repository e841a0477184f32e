import numpy as np
import pytest

from talkinghead_cli import articulation_metrics as am

FPS = 30.0


def _segments():
    # 0.0-0.3 AA, 0.3-0.4 M, 0.4-0.7 IY, 0.7-0.8 B, 0.8-1.0 AE  (30 frames at 30 fps)
    return [(0.0, 0.3, "AA"), (0.3, 0.4, "M"), (0.4, 0.7, "IY"), (0.7, 0.8, "B"), (0.8, 1.0, "AE")]


def _gap(m_min: float, b_min: float) -> np.ndarray:
    g = np.full(30, 6.0)
    g[12:21] = 2.0  # IY
    g[9:12] = m_min  # M covers frames 9, 10, 11
    g[21:24] = b_min  # B covers frames 21, 22, 23
    return g


def test_segment_frames_convention():
    assert am.segment_frames(0.3, 0.4, FPS, 30) == slice(9, 12)
    # shorter than a frame: the nearest frame to its middle
    assert am.segment_frames(0.31, 0.32, FPS, 30) == slice(9, 10)
    assert am.segment_frames(0.99, 1.2, FPS, 30).stop == 30


def test_closure_detected_and_missed():
    assert am.closures(_gap(0.0, 0.0), _segments(), FPS) == [True, True]
    # p95 is 6 mm: 1.4 mm is below 25 % of it, 3 mm is not
    assert am.closures(_gap(1.4, 3.0), _segments(), FPS) == [True, False]
    # a closure one frame after the segment still counts (+-1 frame), two frames after does not
    g = np.full(30, 6.0)
    g[12] = 0.0
    assert am.closures(g, _segments(), FPS) == [True, False]
    g = np.full(30, 6.0)
    g[13] = 0.0
    assert am.closures(g, _segments(), FPS) == [False, False]


def test_vowel_ratio_and_tally():
    tally = am.ArticulationTally()
    row = tally.add(_gap(0.0, 0.0), _segments(), FPS)
    assert row["vowel_ratio"] == pytest.approx(3.0)  # open vowels 6 mm / IY 2 mm
    assert tally.result()["closure"] == 1.0
    tally.add(_gap(3.0, 3.0), _segments(), FPS)
    res = tally.result()
    assert res["closure"] == 0.5 and res["bilabials"] == 4


def test_lag_correlation_finds_a_known_lag():
    rng = np.random.default_rng(0)
    ref = np.convolve(rng.normal(size=200), np.ones(5) / 5, mode="same")
    late = np.roll(ref, 2)  # the prediction follows the reference by 2 frames
    lags = am.lag_correlation(late, ref, max_lag=3)
    lag, r = am.best_lag(lags)
    assert lag == 2 and r > 0.99 and lags[0] < 0.9
    tally = am.ArticulationTally(max_lag=3)
    tally.add(late, [], FPS, ref_gap=ref)
    assert tally.result()["lag"] == 2


def _grid(n: int = 12):
    """A flat n x n vertex grid, two triangles per cell. Returns (V, 3), (F, 3)."""
    ys, xs = np.mgrid[0:n, 0:n]
    verts = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], 1).astype(np.float64) * 0.01
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return verts, faces


def test_roughness_smooth_vs_creased():
    verts, faces = _grid()
    inner = np.flatnonzero((verts[:, 0] > 0.005) & (verts[:, 0] < 0.105) & (verts[:, 1] > 0.005) & (verts[:, 1] < 0.105))
    smooth = verts.copy()
    smooth[:, 2] += 0.002 * verts[:, 0] / 0.11  # a linear ramp: zero Laplacian inside
    crease = verts.copy()
    crease[:, 2] += np.where(np.isclose(verts[:, 0], 0.06), 0.002, 0.0)  # one column pushed out
    r_smooth = am.roughness(smooth[None], verts, faces, inner)
    r_crease = am.roughness(crease[None], verts, faces, inner)
    assert r_smooth < 1e-12
    assert r_crease > 2e-5  # ~1/3 of the 2 mm step, averaged with the smooth rest
    # the same total displacement spread smoothly is far less rough than the crease
    bump = verts.copy()
    bump[:, 2] += 0.002 * np.exp(-((verts[:, 0] - 0.06) / 0.05) ** 2)
    assert am.roughness(bump[None], verts, faces, inner) < 0.3 * r_crease


def test_uniform_laplacian_matches_reference():
    verts, faces = _grid(6)
    x = np.random.default_rng(1).normal(size=(3, len(verts), 3))
    np.testing.assert_allclose(am.uniform_laplacian(x, faces), am.uniform_laplacian_reference(x, faces), atol=1e-12)


def test_loudness_jaw_maps_the_range():
    env = np.linspace(0.0, 1.0, 101)
    ref = np.linspace(0.1, 0.5, 101)
    w = am.loudness_jaw(env, ref)
    assert np.percentile(w, 5) == pytest.approx(np.percentile(ref, 5))
    assert np.percentile(w, 95) == pytest.approx(np.percentile(ref, 95))
    assert w.min() >= 0.0 and w.max() <= 1.0


def test_gap_mm_clips_crossed_lips():
    verts = np.zeros((2, 2, 3))
    verts[0, 0, 1], verts[0, 1, 1] = 0.003, 0.0  # upper 3 mm above lower
    verts[1, 0, 1], verts[1, 1, 1] = 0.0, 0.002  # lips passed through each other: closed
    np.testing.assert_allclose(am.gap_mm(verts, np.array([0]), np.array([1])), [3.0, 0.0])
