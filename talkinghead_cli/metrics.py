"""Mesh-animation metrics with the field's formulas, so numbers compare with published tables.

- **LVE** (lip vertex error): per frame, the squared L2 distance of each lip vertex
  (no square root), max over lip vertices; mean over all frames of all sequences pooled.
- **FDD** (upper-face dynamics deviation): per sequence, motion = verts - template; per
  upper-face vertex the squared norm per frame, its standard deviation over time
  (population std), mean over vertices; GT minus prediction (signed), averaged over
  sequences.
- **MVE** (mean vertex error): the L2 distance of every vertex in every frame, averaged
  over all vertices and all frames pooled.

The prediction is truncated to the ground-truth length (the animators may emit a frame
more or less than the recording has). Shapes: T frames, V vertices, N region vertices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _align(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncate the prediction to the ground-truth length. pred, gt: (T, V, 3)."""
    pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[1:] != gt.shape[1:]:
        raise ValueError(f"expected (T, V, 3) arrays of one topology, got {tuple(pred.shape)} "
                         f"and {tuple(gt.shape)}")
    t = min(pred.shape[0], gt.shape[0])
    return pred[:t].double(), gt[:t].double()


def lip_max_sq_error(pred: torch.Tensor, gt: torch.Tensor, lip: torch.Tensor | None) -> torch.Tensor:
    """Per frame, the max over lip vertices of the squared L2 distance.

    Args:
        pred, gt: (T, V, 3); lip: (N,) indices (None: all vertices).
    Returns:
        (T,) float64.
    """
    pred, gt = _align(pred, gt)
    if lip is not None:
        idx = torch.as_tensor(lip, dtype=torch.long)
        pred, gt = pred[:, idx], gt[:, idx]
    return ((pred - gt) ** 2).sum(-1).amax(-1)


def lve(preds: list[torch.Tensor], gts: list[torch.Tensor], lip: torch.Tensor | None) -> float:
    """LVE over sequences: mean of :func:`lip_max_sq_error` over all frames pooled."""
    per_frame = torch.cat([lip_max_sq_error(p, g, lip) for p, g in zip(preds, gts)])
    return float(per_frame.mean())


def dynamics(verts: torch.Tensor, template: torch.Tensor, upper: torch.Tensor | None) -> float:
    """Mean over upper-face vertices of the std over time of ||verts - template||².

    Args:
        verts: (T, V, 3); template: (V, 3); upper: (N,) indices (None: all vertices).
    """
    verts = torch.as_tensor(verts).double()
    motion = verts - torch.as_tensor(template).double()[None]
    if upper is not None:
        motion = motion[:, torch.as_tensor(upper, dtype=torch.long)]
    sq = (motion ** 2).sum(-1)  # (T, N)
    return float(sq.std(dim=0, unbiased=False).mean())


def fdd_one(pred: torch.Tensor, gt: torch.Tensor, template: torch.Tensor,
            upper: torch.Tensor | None) -> float:
    """FDD of one sequence: dynamics(GT) - dynamics(prediction truncated to GT length)."""
    pred, gt = _align(pred, gt)
    return dynamics(gt, template, upper) - dynamics(pred, template, upper)


def fdd(preds: list[torch.Tensor], gts: list[torch.Tensor], templates: list[torch.Tensor],
        upper: torch.Tensor | None) -> float:
    """FDD averaged over sequences (signed: positive means the prediction moves less)."""
    vals = [fdd_one(p, g, t, upper) for p, g, t in zip(preds, gts, templates)]
    return float(sum(vals) / len(vals))


def vertex_errors(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """L2 distance per vertex and frame. pred, gt: (T, V, 3) -> (T, V) float64."""
    pred, gt = _align(pred, gt)
    return (pred - gt).norm(dim=-1)


def mve(preds: list[torch.Tensor], gts: list[torch.Tensor]) -> float:
    """MVE: mean L2 vertex distance over all vertices of all frames pooled."""
    errs = torch.cat([vertex_errors(p, g).reshape(-1) for p, g in zip(preds, gts)])
    return float(errs.mean())


@dataclass
class MetricAccumulator:
    """Accumulates LVE, FDD and MVE sequence by sequence without keeping the meshes.

    ``add(pred (T, V, 3), gt (T', V, 3), template (V, 3))`` then ``result()``; gives the
    same numbers as :func:`lve`, :func:`fdd` and :func:`mve` over the same sequences.
    """

    lip: torch.Tensor | None = None
    upper: torch.Tensor | None = None
    _lve_sum: float = 0.0
    _frames: int = 0
    _fdd: list = field(default_factory=list)
    _mve_sum: float = 0.0
    _mve_count: int = 0

    def add(self, pred: torch.Tensor, gt: torch.Tensor, template: torch.Tensor) -> None:
        pred, gt, template = (torch.as_tensor(x).detach().cpu() for x in (pred, gt, template))
        per_frame = lip_max_sq_error(pred, gt, self.lip)
        self._lve_sum += float(per_frame.sum())
        self._frames += per_frame.numel()
        self._fdd.append(fdd_one(pred, gt, template, self.upper))
        errs = vertex_errors(pred, gt)
        self._mve_sum += float(errs.sum())
        self._mve_count += errs.numel()

    def result(self) -> dict[str, float]:
        if not self._frames:
            return {}
        return {"lve": self._lve_sum / self._frames, "fdd": sum(self._fdd) / len(self._fdd),
                "mve": self._mve_sum / self._mve_count}


# ----------------------------------------------------------------------------- speech and motion
# Does the mouth open when the speech is loud? (benchmarks/bench_real_speech.py; the mouth
# opening itself is ``data.synthetic.regions.lip_gap``)


def loudness_envelope(wave: torch.Tensor, sample_rate: float, fps: float, num_frames: int,
                      window_frames: float = 1.0) -> torch.Tensor:
    """Linear RMS of the audio in windows centred on each animation frame.

    Frame t covers the audio from t / fps to (t + 1) / fps (the animators' convention,
    T = round(S / sample_rate * fps)), so its window is centred at (t + 0.5) / fps and is
    ``window_frames`` frame periods long, clipped to the recording (a window wholly past
    its end gives 0).

    Args:
        wave: (S,) samples.
    Returns:
        (T,) float64, T = ``num_frames``.
    """
    x = torch.as_tensor(wave).double().reshape(-1)
    spf = sample_rate / fps
    width = max(1, round(window_frames * spf))
    centre = (torch.arange(num_frames, dtype=torch.float64) + 0.5) * spf
    start = torch.round(centre - width / 2).long().clamp(0, len(x))
    end = (start + width).clamp(0, len(x))
    csum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(x * x, 0)])
    count = (end - start).clamp(min=1)
    return ((csum[end] - csum[start]) / count).clamp(min=0).sqrt()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two (T,) curves; nan when either is constant."""
    a, b = torch.as_tensor(a).double().reshape(-1), torch.as_tensor(b).double().reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"curves of different lengths: {len(a)} and {len(b)}")
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def lagged_pearson(motion: torch.Tensor, envelope: torch.Tensor, max_lag: int) -> dict[int, float]:
    """Pearson correlation of ``motion[t + lag]`` with ``envelope[t]`` for each lag in
    [-max_lag, max_lag] (positive: the motion follows the sound), over the overlap.

    Args:
        motion, envelope: (T,) curves.
    Returns:
        {lag: r}.
    """
    m, e = torch.as_tensor(motion).reshape(-1), torch.as_tensor(envelope).reshape(-1)
    t = min(len(m), len(e))
    out = {}
    for lag in range(-max_lag, max_lag + 1):
        lo, hi = max(0, -lag), min(t, t - lag)
        out[lag] = pearson(m[lo + lag: hi + lag], e[lo:hi]) if hi - lo > 2 else float("nan")
    return out
