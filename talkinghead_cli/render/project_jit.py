"""Compiled orthographic projection (numba, CPU): the fast path of :meth:`.camera.Camera.project`
for orthographic cameras whose parameters need no gradient (lip windows).

An orthographic camera maps a world point to (pixel x, pixel y, depth) by one affine map per
view, ``p = M v + o`` with ``M = diag(fx, -fy, -1) R`` and
``o = (cx + fx Tx, cy - fy Ty, -Tz)``. The reference in :mod:`.camera` takes about ten
broadcast tensor operations over (B, V, 3) (~7 ms for an 86-frame lip-window batch on 2
cores: PyTorch's elementwise kernels are slow on a trailing dimension of 3); here it is one loop
per frame, and the backward ``g_v = M^T g_p``. :func:`screen_bounds` gives, without
autograd, each vertex's screen box over a batch (what the lip-window face selection needs)
without materialising the projected batch. Tests compare both with the reference.
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead_cli.jit import available, frame_spans, numba, run_spans  # noqa: F401  (available: re-exported)

if numba is not None:  # pragma: no cover - exercised where numba is installed

    @numba.njit(cache=True, nogil=True)
    def _project(verts, M, o, out):  # pragma: no cover - compiled
        """out (B, V, 3) <- M[b] v + o[b] for each frame (camera row min(b, Bc - 1))."""
        for b in range(verts.shape[0]):
            k = min(b, M.shape[0] - 1)
            for v in range(verts.shape[1]):
                x, y, z = verts[b, v, 0], verts[b, v, 1], verts[b, v, 2]
                for r in range(3):
                    out[b, v, r] = M[k, r, 0] * x + M[k, r, 1] * y + M[k, r, 2] * z + o[k, r]

    @numba.njit(cache=True, nogil=True)
    def _project_backward(grad, M, out):  # pragma: no cover - compiled
        """out (B, V, 3) <- M[b]^T grad[b, v]."""
        for b in range(grad.shape[0]):
            k = min(b, M.shape[0] - 1)
            for v in range(grad.shape[1]):
                gx, gy, gz = grad[b, v, 0], grad[b, v, 1], grad[b, v, 2]
                for c in range(3):
                    out[b, v, c] = M[k, 0, c] * gx + M[k, 1, c] * gy + M[k, 2, c] * gz

    @numba.njit(cache=True, nogil=True)
    def _bounds(verts, M, o, lo, hi):  # pragma: no cover - compiled
        """lo, hi (V, 2) <- min / max over frames of the screen x, y of each vertex."""
        for b in range(verts.shape[0]):
            k = min(b, M.shape[0] - 1)
            for v in range(verts.shape[1]):
                x, y, z = verts[b, v, 0], verts[b, v, 1], verts[b, v, 2]
                for r in range(2):
                    p = M[k, r, 0] * x + M[k, r, 1] * y + M[k, r, 2] * z + o[k, r]
                    if p != p or lo[v, r] != lo[v, r]:  # NaN stays NaN, as torch.min / max
                        lo[v, r] = hi[v, r] = np.nan
                    else:
                        lo[v, r] = min(lo[v, r], p)
                        hi[v, r] = max(hi[v, r], p)


def affine(camera) -> tuple[torch.Tensor, torch.Tensor]:
    """``M`` (Bc, 3, 3) and ``o`` (Bc, 3) of an orthographic camera (see the module docstring)."""
    R, T, f, c = camera.R, camera.T, camera.focal, camera.principal
    scale = torch.stack([f[:, 0], -f[:, 1], -torch.ones_like(f[:, 0])], 1)
    offset = torch.stack([c[:, 0] + f[:, 0] * T[:, 0], c[:, 1] - f[:, 1] * T[:, 1], -T[:, 2]], 1)
    return R * scale[:, :, None], offset


def _affine_arrays(camera, like: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """:func:`affine` as numpy arrays in ``like``'s dtype (float32 arithmetic stays float32)."""
    M, o = affine(camera.to(device=like.device, dtype=like.dtype))
    return M.detach().contiguous().numpy(), o.detach().contiguous().numpy()


def _threads(points: int) -> int:
    """Threads for ``points`` projections: one below ~100k (the lip-window camera's few hundred
    lip vertices per frame), where handing spans to other threads costs more than it saves."""
    return 1 if points < 100_000 else torch.get_num_threads()


class _OrthoProject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts, M, o):
        v = verts.detach().contiguous().numpy()
        out = np.empty_like(v)
        threads = _threads(v.shape[0] * v.shape[1])
        run_spans(lambda b0, b1: _project(v[b0:b1], M if len(M) == 1 else M[b0:b1],
                                          o if len(o) == 1 else o[b0:b1], out[b0:b1]),
                  frame_spans(v.shape[0], threads), threads)
        ctx.M = M
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        M = ctx.M
        g = grad.detach().contiguous().numpy().astype(M.dtype, copy=False)
        out = np.empty_like(g)
        threads = _threads(g.shape[0] * g.shape[1])
        run_spans(lambda b0, b1: _project_backward(g[b0:b1], M if len(M) == 1 else M[b0:b1],
                                                   out[b0:b1]),
                  frame_spans(g.shape[0], threads), threads)
        return torch.from_numpy(out), None, None


def project(verts: torch.Tensor, camera) -> torch.Tensor:
    """Orthographic projection (differentiable w.r.t. ``verts`` only).

    Args:
        verts: (B, V, 3) CPU float32/float64 world coordinates; camera: orthographic, batch 1 or B.
    Returns:
        (B, V, 3) pixel x, pixel y, depth, as :meth:`.camera.Camera.project`.
    """
    return _OrthoProject.apply(verts, *_affine_arrays(camera, verts))


def screen_bounds(verts: torch.Tensor, camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Each vertex's screen box over the batch, without autograd.

    Args:
        verts: (B, V, 3) CPU float32/float64; camera: orthographic, batch 1 or B.
    Returns:
        lo, hi (V, 2): the smallest and largest pixel x, y of each vertex over the B frames.
    """
    v = verts.detach().contiguous().numpy()
    M, o = _affine_arrays(camera, verts)
    lo = np.full((v.shape[1], 2), np.inf, dtype=v.dtype)
    hi = np.full((v.shape[1], 2), -np.inf, dtype=v.dtype)
    _bounds(v, M, o, lo, hi)
    return torch.from_numpy(lo), torch.from_numpy(hi)
