"""Compiled grey Gouraud shading (numba, CPU): the fast path of :func:`.renderer.vertex_colors`.

The default lip-window look is a grey mesh (albedo :data:`.renderer.GREY`) under ambient +
Lambert lights, lit at the vertices. The readable reference is
``lambert(camera.rotate(vertex_normals(verts, faces)), grey, lights)`` in :mod:`.shade`:
about a dozen tensor operations whose gathers and scatter-adds cost ~20 ms forward and ~30 ms
backward for one 86-frame lip-window batch. Here the same arithmetic runs as a few loops per
frame (face normals; vertex normals; each light over all vertices, branch-free so that it
vectorises), forward and backward, with the gradient written out by hand:

    fn_f = (v1 - v0) x (v2 - v0)                 face normal (twice the area)
    m_v = sum of fn_f over the faces at v         vertex normal
    n = m / max(|m|, 1e-12);  c = R n;  u = c / max(|c|, 1e-12)      (camera frame)
    s = sign(u_z) (-1 where u_z < 0, not differentiated);  w = s u
    grey = clamp(albedo * (ambient + sum_l I_l max(0, w . d_l)), 0, 1)

Backward (``g`` the gradient on ``grey``), as autograd differentiates the reference:
``g_shade = albedo g`` where ``0 <= grey_raw <= 1``; ``g_w = g_shade sum_l I_l d_l [w . d_l >= 0]``;
``g_u = s g_w``; ``g_c = (g_u - u (u . g_u)) / max(|c|, eps)``; ``g_n = R^T g_c``;
``g_m = (g_n - n (n . g_n)) / max(|m|, eps)``; per face ``g_fn = g_m[v0] + g_m[v1] + g_m[v2]``,
then ``g_a = b x g_fn`` and ``g_b = g_fn x a`` for ``a = v1 - v0``, ``b = v2 - v0``, scattered to
``v1``, ``v2`` and ``-(g_a + g_b)`` to ``v0``. Tests compare values and gradients with the
reference (float64 to 1e-10). Summation order differs from ``index_add``, so float32 results
agree to rounding, not bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead_cli.jit import available, frame_spans, numba, run_spans  # noqa: F401  (available: re-exported)

if numba is not None:  # pragma: no cover - exercised where numba is installed

    @numba.njit(cache=True, nogil=True)
    def _edges(verts, b, i0, i1, i2):  # pragma: no cover - compiled
        """a = v1 - v0 and b = v2 - v0 of a triangle in frame b, as six scalars."""
        return (verts[b, i1, 0] - verts[b, i0, 0], verts[b, i1, 1] - verts[b, i0, 1],
                verts[b, i1, 2] - verts[b, i0, 2], verts[b, i2, 0] - verts[b, i0, 0],
                verts[b, i2, 1] - verts[b, i0, 1], verts[b, i2, 2] - verts[b, i0, 2])

    @numba.njit(cache=True, nogil=True)
    def _vertex_normals(verts, faces, m):  # pragma: no cover - compiled
        """m (B, V, 3) <- sum over faces of the face normals at each corner."""
        m[:] = 0.0
        for b in range(verts.shape[0]):
            for f in range(faces.shape[0]):
                i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
                ax, ay, az, bx, by, bz = _edges(verts, b, i0, i1, i2)
                nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
                for i in (i0, i1, i2):
                    m[b, i, 0] += nx
                    m[b, i, 1] += ny
                    m[b, i, 2] += nz

    @numba.njit(cache=True, nogil=True, inline="always")
    def _camera_normals(mb, k, R, eps, n, u, w, inv_m, inv_c, sign):  # pragma: no cover - compiled
        """For the vertex rows mb (V, 3) of one frame, camera row k: the unit normal n, its
        camera-frame unit u, the two-sided w = sign * u, 1 / |m|, 1 / |c| and the sign (V each)."""
        zero, one = mb.dtype.type(0), mb.dtype.type(1)
        r00, r01, r02 = R[k, 0, 0], R[k, 0, 1], R[k, 0, 2]
        r10, r11, r12 = R[k, 1, 0], R[k, 1, 1], R[k, 1, 2]
        r20, r21, r22 = R[k, 2, 0], R[k, 2, 1], R[k, 2, 2]
        for v in range(mb.shape[0]):
            mx, my, mz = mb[v, 0], mb[v, 1], mb[v, 2]
            im = one / max(np.sqrt(mx * mx + my * my + mz * mz), eps)
            nx, ny, nz = mx * im, my * im, mz * im
            cx = r00 * nx + r01 * ny + r02 * nz
            cy = r10 * nx + r11 * ny + r12 * nz
            cz = r20 * nx + r21 * ny + r22 * nz
            ic = one / max(np.sqrt(cx * cx + cy * cy + cz * cz), eps)
            ux, uy, uz = cx * ic, cy * ic, cz * ic
            sg = -one if uz < zero else one
            n[v, 0], n[v, 1], n[v, 2] = nx, ny, nz
            u[v, 0], u[v, 1], u[v, 2] = ux, uy, uz
            w[v, 0], w[v, 1], w[v, 2] = sg * ux, sg * uy, sg * uz
            inv_m[v], inv_c[v], sign[v] = im, ic, sg

    @numba.njit(cache=True, nogil=True)
    def _shade(m, R, dirs, inten, ambient, albedo, eps, out):  # pragma: no cover - compiled
        """Grey level per vertex into ``out`` (B, V). Per frame: the normals, then each light over
        all vertices (branch-free, so the compiler vectorises it), then the clamp."""
        zero, one = m.dtype.type(0), m.dtype.type(1)  # keep float32 arithmetic in float32
        V = m.shape[1]
        n, u, w = np.empty((V, 3), m.dtype), np.empty((V, 3), m.dtype), np.empty((V, 3), m.dtype)
        inv_m, inv_c, sign, light = (np.empty(V, m.dtype), np.empty(V, m.dtype), np.empty(V, m.dtype),
                                     np.empty(V, m.dtype))
        for b in range(m.shape[0]):
            _camera_normals(m[b], min(b, R.shape[0] - 1), R, eps, n, u, w, inv_m, inv_c, sign)
            light[:] = ambient
            for j in range(dirs.shape[0]):  # the lights
                d0, d1, d2, il = dirs[j, 0], dirs[j, 1], dirs[j, 2], inten[j]
                for v in range(V):
                    light[v] += max(w[v, 0] * d0 + w[v, 1] * d1 + w[v, 2] * d2, zero) * il
            for v in range(V):
                out[b, v] = min(max(albedo * light[v], zero), one)

    @numba.njit(cache=True, nogil=True)
    def _shade_backward(m, R, dirs, inten, ambient, albedo, eps, grad_in, grad_m):  # pragma: no cover
        """The gradient w.r.t. ``m`` (B, V, 3) of the grey levels, given theirs (B, V)."""
        zero, one = m.dtype.type(0), m.dtype.type(1)
        V = m.shape[1]
        n, u, w = np.empty((V, 3), m.dtype), np.empty((V, 3), m.dtype), np.empty((V, 3), m.dtype)
        inv_m, inv_c, sign, light = (np.empty(V, m.dtype), np.empty(V, m.dtype), np.empty(V, m.dtype),
                                     np.empty(V, m.dtype))
        gw = np.empty((V, 3), m.dtype)
        for b in range(m.shape[0]):
            k = min(b, R.shape[0] - 1)
            _camera_normals(m[b], k, R, eps, n, u, w, inv_m, inv_c, sign)
            light[:] = ambient
            gw[:] = zero
            for j in range(dirs.shape[0]):  # the lights
                d0, d1, d2, il = dirs[j, 0], dirs[j, 1], dirs[j, 2], inten[j]
                for v in range(V):
                    cos = w[v, 0] * d0 + w[v, 1] * d1 + w[v, 2] * d2
                    light[v] += max(cos, zero) * il
                    lit = il if cos >= zero else zero  # clamp_min passes the gradient at 0 too
                    gw[v, 0] += lit * d0
                    gw[v, 1] += lit * d1
                    gw[v, 2] += lit * d2
            r00, r01, r02 = R[k, 0, 0], R[k, 0, 1], R[k, 0, 2]
            r10, r11, r12 = R[k, 1, 0], R[k, 1, 1], R[k, 1, 2]
            r20, r21, r22 = R[k, 2, 0], R[k, 2, 1], R[k, 2, 2]
            for v in range(V):
                raw = albedo * light[v]
                g = grad_in[b, v] * albedo if zero <= raw <= one else zero
                sg = sign[v] * g
                gux, guy, guz = sg * gw[v, 0], sg * gw[v, 1], sg * gw[v, 2]
                ux, uy, uz, ic = u[v, 0], u[v, 1], u[v, 2], inv_c[v]
                dot = ux * gux + uy * guy + uz * guz
                gcx, gcy, gcz = (gux - ux * dot) * ic, (guy - uy * dot) * ic, (guz - uz * dot) * ic
                gnx = r00 * gcx + r10 * gcy + r20 * gcz
                gny = r01 * gcx + r11 * gcy + r21 * gcz
                gnz = r02 * gcx + r12 * gcy + r22 * gcz
                nx, ny, nz, im = n[v, 0], n[v, 1], n[v, 2], inv_m[v]
                dot = nx * gnx + ny * gny + nz * gnz
                grad_m[b, v, 0] = (gnx - nx * dot) * im
                grad_m[b, v, 1] = (gny - ny * dot) * im
                grad_m[b, v, 2] = (gnz - nz * dot) * im

    @numba.njit(cache=True, nogil=True)
    def _face_backward(verts, faces, grad_m, grad_v):  # pragma: no cover - compiled
        """grad_v (B, V, 3) <- the face-normal cross products' gradient, from grad_m."""
        grad_v[:] = 0.0
        for b in range(verts.shape[0]):
            for f in range(faces.shape[0]):
                i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
                ax, ay, az, bx, by, bz = _edges(verts, b, i0, i1, i2)
                gx = grad_m[b, i0, 0] + grad_m[b, i1, 0] + grad_m[b, i2, 0]
                gy = grad_m[b, i0, 1] + grad_m[b, i1, 1] + grad_m[b, i2, 1]
                gz = grad_m[b, i0, 2] + grad_m[b, i1, 2] + grad_m[b, i2, 2]
                gax, gay, gaz = by * gz - bz * gy, bz * gx - bx * gz, bx * gy - by * gx  # b x g
                gbx, gby, gbz = gy * az - gz * ay, gz * ax - gx * az, gx * ay - gy * ax  # g x a
                grad_v[b, i1, 0] += gax
                grad_v[b, i1, 1] += gay
                grad_v[b, i1, 2] += gaz
                grad_v[b, i2, 0] += gbx
                grad_v[b, i2, 1] += gby
                grad_v[b, i2, 2] += gbz
                grad_v[b, i0, 0] -= gax + gbx
                grad_v[b, i0, 1] -= gay + gby
                grad_v[b, i0, 2] -= gaz + gbz


def vertex_normals_frames(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """:func:`talkinghead_cli.mesh_visuals.vertex_normals` of (T, V, 3) frames (numpy, float64,
    -> (T, V, 3) float32 unit normals, +z on a vertex without area) with the face-normal sum
    above: the OBJ writer's normals, about three times faster than the numpy reference and
    equal to it up to float64 rounding; the reference itself without numba."""
    from talkinghead_cli.mesh_visuals import vertex_normals

    if numba is None:
        return vertex_normals(verts, faces)
    v = np.ascontiguousarray(verts, dtype=np.float64)
    m = np.empty_like(v)
    _vertex_normals(v, np.ascontiguousarray(faces, dtype=np.int64), m)
    norm = np.linalg.norm(m, axis=-1, keepdims=True)
    return np.where(norm > 1e-20, m / np.maximum(norm, 1e-30), [0.0, 0.0, 1.0]).astype(np.float32)


def _arrays(verts, faces, R, dirs, inten):
    """The kernels' inputs as numpy arrays in the vertices' dtype."""
    dt = verts.dtype
    return (verts.detach().contiguous().numpy(), faces.contiguous().numpy(),
            R.detach().to(dt).contiguous().numpy(), dirs.to(dt).numpy(), inten.to(dt).numpy())


class _GreyShading(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts, faces, R, dirs, inten, ambient, albedo):
        v, f, r, d, i = _arrays(verts, faces, R, dirs, inten)
        B, V = v.shape[:2]
        m = np.empty((B, V, 3), dtype=v.dtype)
        out = np.empty((B, V), dtype=v.dtype)
        amb, alb, eps = _scalars(v.dtype, ambient, albedo)
        threads = torch.get_num_threads()

        def kernel(b0, b1):
            _vertex_normals(v[b0:b1], f, m[b0:b1])
            _shade(m[b0:b1], r if len(r) == 1 else r[b0:b1], d, i, amb, alb, eps, out[b0:b1])

        run_spans(kernel, frame_spans(B, threads), threads)
        ctx.save_for_backward(verts, faces, R, dirs, inten)
        ctx.m, ctx.shading = m, (ambient, albedo)  # the vertex normals (unnormalised), kept for backward
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        v, f, r, d, i = _arrays(*ctx.saved_tensors)
        g = grad.detach().to(ctx.saved_tensors[0].dtype).contiguous().numpy()
        m = ctx.m
        gm, gv = np.empty_like(m), np.empty_like(m)
        amb, alb, eps = _scalars(v.dtype, *ctx.shading)
        threads = torch.get_num_threads()

        def kernel(b0, b1):
            _shade_backward(m[b0:b1], r if len(r) == 1 else r[b0:b1], d, i, amb, alb, eps, g[b0:b1], gm[b0:b1])
            _face_backward(v[b0:b1], f, gm[b0:b1], gv[b0:b1])

        run_spans(kernel, frame_spans(v.shape[0], threads), threads)
        return torch.from_numpy(gv), None, None, None, None, None, None


def grey_vertex_shading(verts: torch.Tensor, faces: torch.Tensor, R: torch.Tensor, lights, albedo: float
                        ) -> torch.Tensor:
    """Grey level of every vertex under ``lights`` (differentiable w.r.t. ``verts``).

    Args:
        verts: (B, V, 3) float32/float64 CPU world coordinates; faces: (F, 3) long.
        R: (1 or B, 3, 3) world-to-camera rotations (not differentiated).
        lights: :class:`~.shade.Lights`; albedo: the grey albedo.
    Returns:
        (B, V) grey levels in [0, 1], equal to the reference up to rounding.
    """
    dirs, inten = lights.direction_tensor(verts), lights.intensity_tensor(verts)
    return _GreyShading.apply(verts, faces.long(), R, dirs, inten, float(lights.ambient), float(albedo))


def _scalars(dtype, ambient: float, albedo: float, eps: float = 1e-12):
    """The kernel's scalar constants in the arrays' dtype (float32 arithmetic stays float32)."""
    return dtype.type(ambient), dtype.type(albedo), dtype.type(eps)
