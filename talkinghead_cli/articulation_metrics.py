"""Articulation figures of a mesh animation against phoneme timing (DESIGN.md §1, "Articulation
on real speech"); the library behind ``benchmarks/bench_articulation.py``.

The mouth is measured by its **lip gap**: the mean height of the upper-lip midline vertices
minus that of the lower-lip midline vertices (``data.synthetic.regions.lip_gap``), in mm,
clipped at 0 (the rig's lips may pass through each other when they press shut; any
negative value is a closed mouth). Segments are ``(start_s, end_s, ARPAbet)``; a segment
covers the frames whose time ``f / fps`` lies in ``[start, end)`` (the nearest frame for a
segment shorter than one frame), as ``data.synthetic.phoneme_check`` does.

- **closure** (:func:`closures`): a /P B M/ segment is closed when the smallest gap over its
  frames +-1 frame is below 25 % of the utterance's 95th-percentile gap;
- **vowel gap ratio** (:class:`ArticulationTally`): mean gap over the frames of open-vowel
  segments (AA AE AO AH) / over those of close vowels (IY IH UW), frames pooled;
- **lip-gap correlation** (:func:`lag_correlation`): Pearson r of two gap curves at lag 0 and
  at the best lag within +-``max_lag`` frames;
- **roughness** (:func:`roughness`): mean norm of the uniform mesh Laplacian of the per-frame
  offsets (verts - template) over the chosen vertices: a smooth motion field gives ~0, a
  crease (one vertex moving against its neighbours) a large value.

Shapes: T frames, V vertices, F faces.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from talkinghead_cli import metrics
from talkinghead_cli.data.synthetic.phoneme_check import segment_frames
from talkinghead_cli.data.synthetic.regions import lip_gap as _lip_gap

BILABIALS = ("P", "B", "M")
OPEN_VOWELS = ("AA", "AE", "AO", "AH")
CLOSE_VOWELS = ("IY", "IH", "UW")
CLOSED_BELOW = 0.25


def gap_mm(verts: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Lip gap per frame in mm, clipped at 0. verts: (T, V, 3) in metres -> (T,)."""
    return np.maximum(_lip_gap(np.asarray(verts, np.float64), upper, lower) * 1000.0, 0.0)


def closures(gap: np.ndarray, segments: list, fps: float, below: float = CLOSED_BELOW,
             phonemes: tuple[str, ...] = BILABIALS, widen: int = 1) -> list[bool]:
    """For each segment of ``phonemes``: is the smallest gap over its frames +-``widen``
    below ``below`` x the utterance's 95th-percentile gap? gap: (T,)."""
    t = len(gap)
    p95 = max(float(np.percentile(gap, 95)), 1e-9)
    out = []
    for a, b, ph in segments:
        if ph not in phonemes:
            continue
        fr = segment_frames(a, b, fps, t)
        wide = gap[max(fr.start - widen, 0): min(fr.stop + widen, t)]
        out.append(bool(wide.min() < below * p95))
    return out


def frames_of(gap: np.ndarray, segments: list, fps: float, phonemes: tuple[str, ...]) -> np.ndarray:
    """The gap values of every frame covered by a segment of ``phonemes`` (concatenated)."""
    parts = [gap[segment_frames(a, b, fps, len(gap))] for a, b, ph in segments if ph in phonemes]
    return np.concatenate(parts) if parts else np.zeros(0)


def lag_correlation(pred: np.ndarray, ref: np.ndarray, max_lag: int = 3) -> dict[int, float]:
    """{lag: Pearson r} of ``pred[t + lag]`` against ``ref[t]`` for lags in +-max_lag
    (positive lag: the prediction is late); the curves are cut to the shorter one."""
    t = min(len(pred), len(ref))
    return metrics.lagged_pearson(np.asarray(pred[:t], np.float64), np.asarray(ref[:t], np.float64), max_lag)


def best_lag(lags: dict[int, float]) -> tuple[int, float]:
    """(lag, r) of the largest r (ties: the smaller |lag|); (0, nan) when all are nan."""
    valid = {k: v for k, v in lags.items() if not np.isnan(v)}
    if not valid:
        return 0, float("nan")
    k = max(valid, key=lambda q: (valid[q], -abs(q)))
    return k, valid[k]


def edges_of(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2) of triangles (F, 3), each as (low, high)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


@lru_cache(maxsize=8)
def _laplacian_matrix(faces_bytes: bytes, num_verts: int):
    """Sparse (V, V) uniform Laplacian I - D^-1 A (float64 CSR) of the triangles in ``faces_bytes``
    (int64); the row of a vertex in no face is 0."""
    import torch

    e = edges_of(np.frombuffer(faces_bytes, np.int64).reshape(-1, 3))
    deg = np.bincount(e.ravel(), minlength=num_verts).astype(np.float64)
    rows = np.concatenate([e[:, 0], e[:, 1], np.flatnonzero(deg)])
    cols = np.concatenate([e[:, 1], e[:, 0], np.flatnonzero(deg)])
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    vals = np.concatenate([-inv[e[:, 0]], -inv[e[:, 1]], np.ones(int((deg > 0).sum()))])
    with warnings.catch_warnings():  # torch marks sparse CSR as beta
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(vals),
                                      (num_verts, num_verts))
        return coo.coalesce().to_sparse_csr()


def laplacian_matrix(faces: np.ndarray, num_verts: int):
    """The sparse (V, V) uniform Laplacian I - D^-1 A of ``faces`` (F, 3) as a float32 COO
    tensor (differentiable ``torch.sparse.mm`` with a dense right side), for training losses."""
    lap = _laplacian_matrix(np.ascontiguousarray(faces, np.int64).tobytes(), int(num_verts))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lap.to_sparse_coo().float().coalesce()


def uniform_laplacian(x: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """x_i - mean of x over i's mesh neighbours (0 for a vertex in no face).

    Args:
        x: (T, V, C) per-vertex values; faces: (F, 3).
    Returns:
        (T, V, C) float64.
    """
    import torch

    xt = torch.as_tensor(np.asarray(x, np.float64))
    t, v, c = xt.shape
    lap = _laplacian_matrix(np.ascontiguousarray(faces, np.int64).tobytes(), v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        y = lap @ xt.permute(1, 0, 2).reshape(v, t * c)
    return y.reshape(v, t, c).permute(1, 0, 2).numpy()


def uniform_laplacian_reference(x: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Slow readable version of :func:`uniform_laplacian` (neighbour sets in a loop), for tests."""
    nbrs: dict[int, set] = {}
    for a, b, c in np.asarray(faces).tolist():
        for i, j in ((a, b), (b, c), (c, a)):
            nbrs.setdefault(i, set()).add(j)
            nbrs.setdefault(j, set()).add(i)
    out = np.zeros(x.shape, np.float64)
    for i, ns in nbrs.items():
        out[:, i] = x[:, i] - np.mean([x[:, j] for j in sorted(ns)], axis=0)
    return out


def roughness(verts: np.ndarray, template: np.ndarray, faces: np.ndarray,
              vertices: np.ndarray | None = None) -> float:
    """Mean over frames and ``vertices`` of ||Laplacian(verts - template)||.

    Args:
        verts: (T, V, 3); template: (V, 3); faces: (F, 3) (the Laplacian's neighbourhoods);
        vertices: the vertices averaged over (default: every vertex of a face). Separate
            meshes (the rig's eyes, teeth) share no face with the head, so passing the head's
            vertices measures the head alone.
    Returns:
        in the units of ``verts``.
    """
    off = np.asarray(verts, np.float64) - np.asarray(template, np.float64)[None]
    faces = np.asarray(faces, np.int64)
    lap = uniform_laplacian(off, faces)
    used = np.unique(faces) if vertices is None else np.intersect1d(np.unique(faces), vertices)
    return float(np.linalg.norm(lap[:, used], axis=-1).mean())


def loudness_jaw(envelope: np.ndarray, ref_jaw: np.ndarray) -> np.ndarray:
    """A trivial animator's jawOpen weight: the loudness envelope mapped linearly so that its
    5th..95th percentiles land on the reference's, clipped to [0, 1]. (T,) -> (T,)."""
    e5, e95 = np.percentile(envelope, [5, 95])
    r5, r95 = np.percentile(ref_jaw, [5, 95])
    scale = (r95 - r5) / max(e95 - e5, 1e-12)
    return np.clip(r5 + (np.asarray(envelope, np.float64) - e5) * scale, 0.0, 1.0)


@dataclass
class ArticulationTally:
    """Figures of one animator pooled over utterances (module docstring).

    ``add`` one utterance's gap curves and segments; ``result()`` gives closure rate,
    vowel gap ratio, mean r over utterances at lag 0 and at the best common lag (the lag
    whose mean r is largest), and roughness (mean over all frames pooled).
    """

    max_lag: int = 3
    closed: list = field(default_factory=list)
    open_frames: list = field(default_factory=list)
    close_frames: list = field(default_factory=list)
    lag_r: list = field(default_factory=list)  # one {lag: r} per utterance
    rough_sum: float = 0.0
    rough_frames: int = 0

    def add(self, gap: np.ndarray, segments: list, fps: float, ref_gap: np.ndarray | None = None,
            rough: float | None = None) -> dict:
        """One utterance; returns its own figures."""
        c = closures(gap, segments, fps)
        o, k = frames_of(gap, segments, fps, OPEN_VOWELS), frames_of(gap, segments, fps, CLOSE_VOWELS)
        self.closed += c
        self.open_frames.append(o)
        self.close_frames.append(k)
        row = {"closure": float(np.mean(c)) if c else float("nan"), "bilabials": len(c),
               "vowel_ratio": _ratio(o, k)}
        if ref_gap is not None:
            lags = lag_correlation(gap, ref_gap, self.max_lag)
            self.lag_r.append(lags)
            lag, rb = best_lag(lags)
            row.update(r=lags[0], r_best=rb, lag=lag)
        if rough is not None:
            self.rough_sum += rough * len(gap)
            self.rough_frames += len(gap)
            row["roughness_mm"] = rough
        return row

    def result(self) -> dict:
        o = np.concatenate(self.open_frames) if self.open_frames else np.zeros(0)
        k = np.concatenate(self.close_frames) if self.close_frames else np.zeros(0)
        out = {"closure": float(np.mean(self.closed)) if self.closed else float("nan"),
               "bilabials": len(self.closed), "vowel_ratio": _ratio(o, k),
               "open_gap_mm": float(o.mean()) if len(o) else float("nan"),
               "close_gap_mm": float(k.mean()) if len(k) else float("nan")}
        if self.lag_r:
            mean = {k: float(np.nanmean([d[k] for d in self.lag_r])) for k in self.lag_r[0]}
            lag, rb = best_lag(mean)
            out.update(r=mean[0], r_best=rb, lag=lag)
        if self.rough_frames:
            out["roughness_mm"] = self.rough_sum / self.rough_frames
        return out


def _ratio(open_frames: np.ndarray, close_frames: np.ndarray) -> float:
    if not len(open_frames) or not len(close_frames) or close_frames.mean() <= 0:
        return float("nan")
    return float(open_frames.mean() / close_frames.mean())
