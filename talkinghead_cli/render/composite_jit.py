"""Compiled grey compositing (numba, CPU): the fast path of the per-pixel stage of
:func:`.renderer.render` for one-channel images under an orthographic camera (lip windows).

After the rasterizer has chosen, per pixel, a hard face and possibly a soft outline face, the
reference in :mod:`.renderer` evaluates with autograd (a few dozen tensor operations, gathers
and scatter-adds over ~170 k pixels for one 86-frame lip-window batch). Here the same
arithmetic runs as one loop over the pixels of each frame, forward and backward, with the
gradient written out by hand. For a pixel centre ``p = (px, py)``:

hard layer, face corners ``x_i, y_i`` and grey levels ``c_i``::

    e1 = (x1 - x0, y1 - y0), e2 = (x2 - x0, y2 - y0), A = e1 x e2, d = p - (x0, y0)
    w1 = (e2y dx - e2x dy) / A,  w2 = (e1x dy - e1y dx) / A
    c_hard = c0 + w1 (c1 - c0) + w2 (c2 - c0)            (background where no face covers p)

soft outline, nearest edge ``k`` of its face, from corner ``a = k+1`` to ``b = k+2`` (mod 3)::

    e = b - a, q = p - a, t = clamp(q.e / max(|e|^2, 1e-20), 0, 1), r = q - t e
    dist = sqrt(max(|r|^2, 1e-20)),  cover = 2 sigmoid(-dist / sigma)
    c_soft = (1 - t) c_a + t c_b

    image = cover c_soft + (1 - cover) c_hard,  alpha = cover + (1 - cover) [p covered]

The hard-layer colour is :func:`hard_setup` (once per face) then :func:`hard_at` (per pixel);
the preview's raster pass (:func:`.rasterize_jit.hard_image`) calls the same two as a face wins
a pixel, so its pixels are this module's with no outline layer, bit for bit.

The edge ``k`` is the nearest of the three (the first on ties, as ``torch.min``); the gradient
follows it only, through ``dist`` and ``t`` (``clamp`` passes it for ``0 <= t_raw <= 1``, as
autograd does). Depth plays no part under an orthographic camera. Tests compare values and
gradients with the reference (float64 to 1e-10) and run ``gradcheck``.
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead_cli.jit import available, frame_spans, numba, run_spans  # noqa: F401  (available: re-exported)

if numba is not None:  # pragma: no cover - exercised where numba is installed

    # hard_setup and hard_at are also inlined into rasterize_jit._hard; numba's cache checks only
    # the cached function's own file, so after editing them delete render/__pycache__/*.nb[ci]
    @numba.njit(cache=True, nogil=True, inline="always")
    def hard_setup(pv, vcol, faces, b, f):  # pragma: no cover - compiled
        """What the hard layer's colour needs of face f in frame b, once per face:
        x0, y0, e1x, e1y, e2x, e2y, 1/A, c0, c1 - c0, c2 - c0 (the module docstring's names)."""
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0 = pv[b, i0, 0], pv[b, i0, 1]
        e1x, e1y = pv[b, i1, 0] - x0, pv[b, i1, 1] - y0
        e2x, e2y = pv[b, i2, 0] - x0, pv[b, i2, 1] - y0
        inv_a = 1.0 / (e1x * e2y - e2x * e1y)
        c0 = vcol[b, i0]
        return x0, y0, e1x, e1y, e2x, e2y, inv_a, c0, vcol[b, i1] - c0, vcol[b, i2] - c0

    @numba.njit(cache=True, nogil=True, inline="always")
    def hard_at(setup, px, py):  # pragma: no cover - compiled
        """The hard layer's interpolated colour at pixel centre (px, py) of the face whose
        :func:`hard_setup` is ``setup`` -> colour, w1, w2, dx, dy."""
        x0, y0, e1x, e1y, e2x, e2y, inv_a, c0, d1, d2 = setup
        dx, dy = px - x0, py - y0
        w1 = (e2y * dx - e2x * dy) * inv_a
        w2 = (e1x * dy - e1y * dx) * inv_a
        return c0 + w1 * d1 + w2 * d2, w1, w2, dx, dy

    @numba.njit(cache=True, nogil=True, inline="always")
    def _hard_colour(pv, vcol, faces, b, f, px, py):  # pragma: no cover - compiled
        setup = hard_setup(pv, vcol, faces, b, f)
        _, _, e1x, e1y, e2x, e2y, inv_a, _, d1, d2 = setup
        colour, w1, w2, dx, dy = hard_at(setup, px, py)
        return colour, w1, w2, d1, d2, e1x, e1y, e2x, e2y, dx, dy, inv_a

    @numba.njit(cache=True, nogil=True, inline="always")
    def _nearest(pv, faces, b, f, px, py):  # pragma: no cover - compiled
        """Nearest edge k of face f to (px, py): k, |r|^2, t_raw, t, qx, qy, ex, ey, |e|^2 clamped."""
        best = np.inf
        out = (0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        for k in range(3):
            ia, ib = faces[f, (k + 1) % 3], faces[f, (k + 2) % 3]
            ax, ay = pv[b, ia, 0], pv[b, ia, 1]
            ex, ey = pv[b, ib, 0] - ax, pv[b, ib, 1] - ay
            qx, qy = px - ax, py - ay
            ee = max(ex * ex + ey * ey, 1e-20)
            t_raw = (qx * ex + qy * ey) / ee
            t = min(max(t_raw, 0.0), 1.0)
            rx, ry = qx - t * ex, qy - t * ey
            d2 = rx * rx + ry * ry
            if d2 < best:  # strict: the first edge wins ties, as torch.min
                best = d2
                out = (k, d2, t_raw, t, qx, qy, ex, ey, ee)
        return out

    @numba.njit(cache=True, nogil=True)
    def _pixels(pv, vcol, faces, hmap, smap, H, W, bg, sigma, image, alpha, g_image, g_alpha, g_pv,
                g_vcol):  # pragma: no cover - compiled
        """Frames pv (nb, V, 3), vcol (nb, V); maps (nb*H*W), -1 = none. Forward (g_image empty):
        image, alpha (nb*H*W). Backward: g_pv (nb, V, 3) and g_vcol (nb, V), zeroed by the caller,
        accumulate the gradients of g_image, g_alpha (nb*H*W); the forward values are recomputed."""
        backward = g_image.shape[0] > 0
        for b in range(pv.shape[0]):
            for i in range(H):
                py = i + 0.5
                for j in range(W):
                    p = (b * H + i) * W + j
                    px = j + 0.5
                    f, s = hmap[p], smap[p]
                    ch, ah = bg, 0.0
                    w1 = w2 = d1 = d2 = e1x = e1y = e2x = e2y = dx = dy = inv_a = 0.0
                    if f >= 0:
                        ch, w1, w2, d1, d2, e1x, e1y, e2x, e2y, dx, dy, inv_a = _hard_colour(
                            pv, vcol, faces, b, f, px, py)
                        ah = 1.0
                    cover = cs = sg = 0.0
                    k = ia = ib = 0
                    rr = t_raw = t = qx = qy = ex = ey = ee = dist = ca = cb = 0.0
                    if s >= 0:
                        k, rr, t_raw, t, qx, qy, ex, ey, ee = _nearest(pv, faces, b, s, px, py)
                        ia, ib = faces[s, (k + 1) % 3], faces[s, (k + 2) % 3]
                        dist = np.sqrt(max(rr, 1e-20))
                        sg = 1.0 / (1.0 + np.exp(dist / sigma))  # sigmoid(-dist / sigma)
                        cover = 2.0 * sg
                        ca, cb = vcol[b, ia], vcol[b, ib]
                        cs = (1.0 - t) * ca + t * cb
                    if not backward:  # (no outline: cover = 0, the hard layer alone)
                        image[p] = cover * cs + (1.0 - cover) * ch
                        alpha[p] = cover + (1.0 - cover) * ah
                        continue
                    gi, ga = g_image[p], g_alpha[p]
                    g_ch = gi
                    if s >= 0:
                        g_cover = gi * (cs - ch) + ga * (1.0 - ah)
                        g_cs = gi * cover
                        g_ch = gi * (1.0 - cover)
                        g_vcol[b, ia] += g_cs * (1.0 - t)
                        g_vcol[b, ib] += g_cs * t
                        g_t = g_cs * (cb - ca)
                        g_dist = -g_cover * 2.0 * sg * (1.0 - sg) / sigma
                        rx, ry = qx - t * ex, qy - t * ey
                        g_rx = g_ry = 0.0
                        if rr >= 1e-20:
                            g_rx, g_ry = g_dist * rx / dist, g_dist * ry / dist
                        # r = q - t e
                        g_qx, g_qy = g_rx, g_ry
                        g_ex, g_ey = -t * g_rx, -t * g_ry
                        g_t -= g_rx * ex + g_ry * ey
                        if 0.0 <= t_raw <= 1.0:  # t = q.e / ee
                            g_traw = g_t / ee
                            g_qx += g_traw * ex
                            g_qy += g_traw * ey
                            g_ex += g_traw * qx
                            g_ey += g_traw * qy
                            if ex * ex + ey * ey >= 1e-20:
                                g_ee = -g_t * t_raw / ee
                                g_ex += 2.0 * g_ee * ex
                                g_ey += 2.0 * g_ee * ey
                        # q = p - a, e = b - a
                        g_pv[b, ia, 0] -= g_qx + g_ex
                        g_pv[b, ia, 1] -= g_qy + g_ey
                        g_pv[b, ib, 0] += g_ex
                        g_pv[b, ib, 1] += g_ey
                    if f < 0:
                        continue
                    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
                    g_vcol[b, i0] += g_ch * (1.0 - w1 - w2)
                    g_vcol[b, i1] += g_ch * w1
                    g_vcol[b, i2] += g_ch * w2
                    g_n1, g_n2 = g_ch * d1 * inv_a, g_ch * d2 * inv_a  # w1 = n1 / A, w2 = n2 / A
                    g_a = -(g_n1 * w1 + g_n2 * w2)  # d(1/A) = -1/A^2, times A from n / A = w
                    g_e1x = g_n2 * dy + g_a * e2y
                    g_e1y = -g_n2 * dx - g_a * e2x
                    g_e2x = -g_n1 * dy - g_a * e1y
                    g_e2y = g_n1 * dx + g_a * e1x
                    g_dx = g_n1 * e2y - g_n2 * e1y
                    g_dy = -g_n1 * e2x + g_n2 * e1x
                    g_pv[b, i1, 0] += g_e1x
                    g_pv[b, i1, 1] += g_e1y
                    g_pv[b, i2, 0] += g_e2x
                    g_pv[b, i2, 1] += g_e2y
                    g_pv[b, i0, 0] -= g_e1x + g_e2x + g_dx
                    g_pv[b, i0, 1] -= g_e1y + g_e2y + g_dy


def _maps(pix: torch.Tensor, face: torch.Tensor, n: int) -> np.ndarray:
    m = np.full(n, -1, dtype=np.int64)
    m[pix.numpy()] = face.numpy()
    return m


class _GreyComposite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pv, vcol, faces, hmap, smap, H, W, bg, sigma):
        B = pv.shape[0]
        p, c = pv.detach().contiguous().numpy(), vcol.detach().contiguous().numpy()
        f = faces.contiguous().numpy()
        image, alpha = np.empty(B * H * W, p.dtype), np.empty(B * H * W, p.dtype)
        n = H * W

        none, no_grad = np.empty(0, p.dtype), np.empty((0, 0), p.dtype)  # _pixels' forward mode

        def kernel(b0, b1):
            s = slice(b0 * n, b1 * n)
            _pixels(p[b0:b1], c[b0:b1], f, hmap[s], smap[s], H, W, bg, sigma, image[s], alpha[s], none, none,
                    np.empty((0, 0, 0), p.dtype), no_grad)

        threads = torch.get_num_threads()
        run_spans(kernel, frame_spans(B, threads), threads)
        ctx.save_for_backward(pv, vcol, faces)
        ctx.maps, ctx.args = (hmap, smap), (H, W, bg, sigma)
        return torch.from_numpy(image), torch.from_numpy(alpha)

    @staticmethod
    def backward(ctx, g_image, g_alpha):
        pv, vcol, faces = ctx.saved_tensors
        (hmap, smap), (H, W, bg, sigma) = ctx.maps, ctx.args
        B, n = pv.shape[0], H * W
        p, c, f = pv.detach().contiguous().numpy(), vcol.detach().contiguous().numpy(), faces.contiguous().numpy()

        def grad(g):
            return np.zeros(B * n, p.dtype) if g is None else g.detach().to(pv.dtype).contiguous().numpy()

        gi, ga = grad(g_image), grad(g_alpha)
        g_pv, g_vcol = np.zeros(p.shape, p.dtype), np.zeros(c.shape, p.dtype)
        none = np.empty(0, p.dtype)

        def kernel(b0, b1):
            s = slice(b0 * n, b1 * n)
            _pixels(p[b0:b1], c[b0:b1], f, hmap[s], smap[s], H, W, bg, sigma, none, none, gi[s], ga[s],
                    g_pv[b0:b1], g_vcol[b0:b1])

        threads = torch.get_num_threads()
        run_spans(kernel, frame_spans(B, threads), threads)
        return torch.from_numpy(g_pv), torch.from_numpy(g_vcol), None, None, None, None, None, None, None


def grey_composite(pv: torch.Tensor, vcol: torch.Tensor, faces: torch.Tensor, frag, bg: float, sigma: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey image and alpha of the selected layers (differentiable w.r.t. ``pv`` and ``vcol``).

    Args:
        pv: (B, V, 3) CPU float32/float64 projected vertices (orthographic camera).
        vcol: (B, V) grey level of each vertex.
        faces: (F, 3) long; frag: :class:`~.rasterize.Fragments` of ``pv``.
        bg: background grey level; sigma: outline softness (> 0 when there are soft pairs).
    Returns:
        image (B*H*W,) and alpha (B*H*W,), equal to the reference in :func:`.renderer.render`
        up to rounding.
    """
    B, H, W = frag.shape
    if frag.maps is not None:  # the compiled rasterizer's own per-pixel maps
        hmap, smap = frag.maps
    else:
        hmap = _maps(frag.hard_pix, frag.hard_face, B * H * W)
        smap = _maps(frag.soft_pix, frag.soft_face, B * H * W)
    return _GreyComposite.apply(pv, vcol.to(pv.dtype), faces.long(), hmap, smap, H, W, float(bg),
                                float(sigma) if sigma > 0 else 1.0)

