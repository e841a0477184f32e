"""Compiled hard and soft layers (numba, CPU): the fast path of :func:`.rasterize.rasterize`.

Same layers, same arithmetic as the PyTorch pass in :mod:`.rasterize` (its readable reference;
tests require identical pairs): every drawable face walks the pixel centres of its box. The
hard layer keeps those that pass the inside test (``w1, w2 >= 0, w1 + w2 <= 1``, no tolerance)
and the nearest face wins, ties in depth going to the larger face index (as the reference's
packed z-buffer keys and ``_winner`` do; its float32 keys also order -0.0 before +0.0). The soft
layer walks the boxes of faces with a silhouette edge (flags found for all faces in one
branch-free pass), dilated by ``cutoff * sigma``, with the reference's hidden-face shortcut (its
max-pool answered from a running window maximum of the depth map), edge-function prefilter,
point-to-triangle distance, "outer side of a silhouette edge" and "in front of the hard layer"
rules. Every float operation is the
reference's, in the same order and in the input's dtype (constants are passed in that dtype),
so float32 and float64 inputs give the reference's pairs bit for bit.

One operation cannot be repeated here: ``torch.sqrt`` on CPU (MKL) is not always correctly
rounded (one ulp off for ~20 % of float32 inputs), and the last bit decides between the two
faces of a silhouette edge, which lie at the same distance from a pixel up to rounding. So the
soft kernel stops at squared distances and returns the candidates that can still win; the
caller takes their square roots with torch and :func:`pick_soft` chooses, as the reference.

Previews need the hard layer's image, not its face map: :func:`hard_image` runs the same hard
loop and, each time a face wins a pixel, writes the face's grey interpolated at the pixel centre
with the compositing's own formula (:func:`.composite_jit.hard_at`), so one pass over the faces
gives the picture (bit for bit what :func:`hard_layer` then :func:`.composite_jit.grey_composite`
with no outline layer give; tested).

Kernels work on a slice of frames and release the GIL; the numba guard and the thread helpers
(:func:`~talkinghead_cli.jit.run_spans`) are in :mod:`talkinghead_cli.jit`.
numba is optional (``pip install "avtalk[fast]"``): without it :func:`available` is False and
:func:`.rasterize.rasterize` uses the PyTorch pass. The first call of each kernel compiles it
(a few seconds, once per dtype) and caches the machine code beside this file when it can.
"""

from __future__ import annotations

import math

import numpy as np

from talkinghead_cli.jit import available, frame_spans, numba, run_spans  # noqa: F401  (available: re-exported)
from talkinghead_cli.jit import require as _check

# slots of the per-dtype constant vector ``c`` (so float32 arithmetic stays float32)
_ZERO, _HALF, _ONE, _AREA_EPS, _Z_EPS, _R, _R_TOL, _TOL, _TINY = range(9)
_SOFT_TOL = 1e-4  # as rasterize._soft_layer's prefilter tolerance

if numba is not None:  # pragma: no cover - exercised where numba is installed
    from talkinghead_cli.render.composite_jit import hard_at, hard_setup

    @numba.njit(cache=True, nogil=True)
    def _box_lo(v, r, half, n):  # pragma: no cover - compiled
        """rasterize._box's lower end: ceil(v - r - 0.5) clamped to [0, n]."""
        t = np.ceil((v - r) - half)
        return int(min(max(t, 0.0), n))

    @numba.njit(cache=True, nogil=True)
    def _box_hi(v, r, half, n):  # pragma: no cover - compiled
        """rasterize._box's upper end: floor(v + r - 0.5) clamped to [-1, n - 1]."""
        t = np.floor((v + r) - half)
        return int(min(max(t, -1.0), n - 1))

    @numba.njit(cache=True, nogil=True)
    def _pixel_box(x0, x1, x2, y0, y1, y2, r, half, H, W):  # pragma: no cover - compiled
        """Inclusive pixel box (xl, xh, yl, yh) of a triangle dilated by r, as rasterize._box."""
        return (_box_lo(min(x0, x1, x2), r, half, W), _box_hi(max(x0, x1, x2), r, half, W),
                _box_lo(min(y0, y1, y2), r, half, H), _box_hi(max(y0, y1, y2), r, half, H))

    @numba.njit(cache=True, nogil=True)
    def _corners(pv, faces, b, f):  # pragma: no cover - compiled
        """x0, y0, z0, x1, y1, z1, x2, y2, z2 of face f in frame b."""
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        return (pv[b, i0, 0], pv[b, i0, 1], pv[b, i0, 2], pv[b, i1, 0], pv[b, i1, 1], pv[b, i1, 2],
                pv[b, i2, 0], pv[b, i2, 1], pv[b, i2, 2])

    @numba.njit(cache=True, nogil=True)
    def _setup(pv, faces, perspective, cull, c, area2, valid):  # pragma: no cover - compiled
        """Signed doubled screen area (B, F) and the drawable faces (B, F) of each frame."""
        for b in range(pv.shape[0]):
            for f in range(faces.shape[0]):
                x0, y0, z0, x1, y1, z1, x2, y2, z2 = _corners(pv, faces, b, f)
                a = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                area2[b, f] = a
                ok = abs(a) > c[_AREA_EPS]
                for v in (x0, y0, z0, x1, y1, z1, x2, y2, z2):
                    ok = ok and math.isfinite(v)
                if perspective:
                    ok = ok and min(z0, z1, z2) > c[_Z_EPS]
                if cull:
                    ok = ok and a < c[_ZERO]
                valid[b, f] = ok

    @numba.njit(cache=True, nogil=True)
    def _hard(pv, faces, area2, valid, H, W, perspective, signed_zero, c, grid, grid_half,
              zbuf, fbuf, vcol, image):  # pragma: no cover - compiled
        """Nearest covering face per pixel: fills zbuf (B*H*W) (inf = empty) and, unless empty,
        fbuf (B*H*W) (the face, -1 = none) and image (B*H*W) (the winning face's colour vcol
        (B, V) interpolated at the pixel centre, :func:`.composite_jit.hard_at`; set each time
        a face wins the pixel, so it ends as the nearest face's)."""
        zero, half, one = c[_ZERO], c[_HALF], c[_ONE]
        face_map, shade = fbuf.shape[0] > 0, image.shape[0] > 0
        for b in range(pv.shape[0]):
            base = b * H * W
            for f in range(faces.shape[0]):
                if not valid[b, f]:
                    continue
                x0, y0, z0, x1, y1, z1, x2, y2, z2 = _corners(pv, faces, b, f)
                xl, xh, yl, yh = _pixel_box(x0, x1, x2, y0, y1, y2, zero, half, H, W)
                if xl > xh or yl > yh:
                    continue
                e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
                inv_a = one / area2[b, f]
                if perspective:
                    q0, q1, q2 = one / z0, one / z1, one / z2
                else:
                    q0, q1, q2 = z0, z1, z2
                dz1, dz2 = q1 - q0, q2 - q0
                if shade:
                    shading = hard_setup(pv, vcol, faces, b, f)
                a1, b1, a2, b2 = e2y * inv_a, -e2x * inv_a, -e1y * inv_a, e1x * inv_a
                zc1, zc2 = a1 * dz1 + a2 * dz2, b1 * dz1 + b2 * dz2
                cx, cy = grid_half[xl] - x0, grid_half[yl] - y0  # first pixel centre - vertex 0
                for i in range(yl, yh + 1):
                    dy = cy + grid[i - yl]
                    for j in range(xl, xh + 1):
                        dx = cx + grid[j - xl]
                        w1 = a1 * dx + b1 * dy
                        w2 = a2 * dx + b2 * dy
                        if w1 >= zero and w2 >= zero and w1 + w2 <= one:
                            d = q0 + zc1 * dx + zc2 * dy
                            if perspective:
                                d = one / d
                            p = base + i * W + j
                            cur = zbuf[p]
                            if d < cur or (d == cur and not (signed_zero and d == zero and math.copysign(1.0, cur) < 0
                                                             and math.copysign(1.0, d) > 0)):
                                zbuf[p] = d
                                if face_map:
                                    fbuf[p] = f
                                if shade:
                                    image[p] = hard_at(shading, j + 0.5, i + 0.5)[0]

    @numba.njit(cache=True, nogil=True)
    def _running_max(x, k, g, r):  # pragma: no cover - compiled
        """van Herk / Gil-Werman: with x cut into blocks of k, g = prefix maxima and r = suffix
        maxima within each block, so that max(x[j : j + k]) = max(r[j], g[j + k - 1])."""
        n = x.shape[0]
        for q in range(n):
            g[q] = x[q] if q % k == 0 else max(g[q - 1], x[q])
        for q in range(n - 1, -1, -1):
            r[q] = x[q] if q % k == k - 1 or q == n - 1 else max(r[q + 1], x[q])

    @numba.njit(cache=True, nogil=True)
    def _window_max(zmap, B, H, W, h, out):  # pragma: no cover - compiled
        """out (B*H*W) <- the largest zmap value in the (2h+1)² window around each pixel, clipped
        to the image: rasterize._hidden's max-pool, ~6 comparisons per pixel whatever h."""
        k = 2 * h + 1
        n = (max(H, W) + 2 * h + k - 1) // k * k
        x, g, r = np.empty(n, zmap.dtype), np.empty(n, zmap.dtype), np.empty(n, zmap.dtype)
        rows = np.empty(H * W, zmap.dtype)
        low = -np.inf
        for b in range(B):
            base = b * H * W
            for i in range(H):
                for q in range(n):
                    x[q] = zmap[base + i * W + q - h] if h <= q < W + h else low
                _running_max(x, k, g, r)
                for j in range(W):
                    rows[i * W + j] = max(r[j], g[j + k - 1])
            for j in range(W):
                for q in range(n):
                    x[q] = rows[(q - h) * W + j] if h <= q < H + h else low
                _running_max(x, k, g, r)
                for i in range(H):
                    out[base + i * W + j] = max(r[i], g[i + k - 1])

    @numba.njit(cache=True, nogil=True)
    def _hidden(zwin, base, H, W, xl, xh, yl, yh, h, zface):  # pragma: no cover - compiled
        """rasterize._hidden for one face: its dilated box fits the (2h+1)² window around the box
        centre and no hard-layer depth in that window (clipped) is above the face's nearest
        vertex; zwin holds each window's largest depth (_window_max)."""
        mx, my = (xl + xh) // 2, (yl + yh) // 2
        if xh - mx > h or yh - my > h:
            return False
        return zface >= zwin[base + min(my, H - 1) * W + min(mx, W - 1)]

    @numba.njit(cache=True, nogil=True)
    def _silhouette_flags(nb, area2, valid, out):  # pragma: no cover - compiled
        """rasterize.silhouette_edges as bits: out (B, F) uint8, bit k set when edge k of a drawable
        face is a silhouette edge (a boundary edge, or its neighbour is not drawable or faces the
        other way); 0 for faces that are not drawable. Branch-free: ~10x faster than testing
        the edges face by face inside the soft layer's loop."""
        for b in range(area2.shape[0]):
            for f in range(nb.shape[0]):
                pos = area2[b, f] > 0
                bits = 0
                for k in range(3):
                    g = nb[f, k]
                    sil = True
                    if g >= 0:
                        sil = (not valid[b, g]) or ((area2[b, g] > 0) != pos)
                    bits |= np.uint8(sil) << k
                out[b, f] = bits if valid[b, f] else 0

    @numba.njit(cache=True, nogil=True)
    def _edge(px, py, ax, ay, bx, by, c):  # pragma: no cover - compiled
        """rasterize.point_triangle for one edge: squared distance, position t, cross product."""
        ex, ey = bx - ax, by - ay
        qx, qy = px - ax, py - ay
        t = (qx * ex + qy * ey) / max(ex * ex + ey * ey, c[_TINY])
        t = min(max(t, c[_ZERO]), c[_ONE])
        rx, ry = qx - t * ex, qy - t * ey
        return rx * rx + ry * ry, t, ex * qy - ey * qx

    @numba.njit(cache=True, nogil=True)
    def _nearest_edge(px, py, x0, y0, z0, x1, y1, z1, x2, y2, z2, s0, s1, s2, sgn, c):  # pragma: no cover
        """rasterize.point_triangle with the silhouette flags: squared distance to the nearest edge
        (the first one on ties, as ``torch.min``), its position t, the depths at its ends, and
        whether the point is on the outer side of a silhouette edge."""
        zero = c[_ZERO]
        d, t, cr = _edge(px, py, x1, y1, x2, y2, c)
        za, zb = z1, z2
        outer = cr * sgn < zero and s0
        d1, t1, cr = _edge(px, py, x2, y2, x0, y0, c)
        outer = outer or (cr * sgn < zero and s1)
        if d1 < d:
            d, t, za, zb = d1, t1, z2, z0
        d1, t1, cr = _edge(px, py, x0, y0, x1, y1, c)
        outer = outer or (cr * sgn < zero and s2)
        if d1 < d:
            d, t, za, zb = d1, t1, z0, z1
        return d, t, za, zb, outer

    @numba.njit(cache=True, nogil=True)
    def _soft(pv, faces, sil, area2, zmap, zwin, H, W, perspective, h, c, r2_hi, grid_half,
              dmin, opix, oface, od2):  # pragma: no cover - compiled
        """Soft outline candidates: the pairs that pass every test of the reference but the final
        ``dist <= r`` (kept when ``d2 <= r2_hi``, a bound above ``r²``) go to opix, oface and od2
        (pixel, face, squared distance) as long as there is room; returns their number. dmin
        (B*H*W) gets the smallest squared distance per pixel. sil: (B, F) from _silhouette_flags;
        zwin: (B*H*W) from _window_max."""
        zero, half, one, r, r_tol, tol = c[_ZERO], c[_HALF], c[_ONE], c[_R], c[_R_TOL], c[_TOL]
        m = 0
        for b in range(pv.shape[0]):
            base = b * H * W
            for f in range(faces.shape[0]):
                bits = sil[b, f]
                if bits == 0:  # not drawable, or no silhouette edge
                    continue
                s0, s1, s2 = (bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0
                x0, y0, z0, x1, y1, z1, x2, y2, z2 = _corners(pv, faces, b, f)
                xl, xh, yl, yh = _pixel_box(x0, x1, x2, y0, y1, y2, r, half, H, W)
                if xl > xh or yl > yh:
                    continue
                if _hidden(zwin, base, H, W, xl, xh, yl, yh, h, min(z0, z1, z2)):
                    continue
                a = area2[b, f]
                inv_a = one / a
                e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
                pa1, pb1, pa2, pb2 = e2y * inv_a, e2x * inv_a, e1x * inv_a, e1y * inv_a
                # altitudes of the conservative prefilter (which is not affected by the last bit of
                # a square root: it only drops pairs farther than r + tol)
                h0 = abs(a) / np.sqrt((x2 - x1) * (x2 - x1) + (y2 - y1) * (y2 - y1))
                h1 = abs(a) / np.sqrt((x0 - x2) * (x0 - x2) + (y0 - y2) * (y0 - y2))
                h2 = abs(a) / np.sqrt(e1x * e1x + e1y * e1y)
                sgn = one if a > zero else -one
                for i in range(yl, yh + 1):
                    py = grid_half[i]
                    dy = py - y0
                    for j in range(xl, xh + 1):
                        px = grid_half[j]
                        dx = px - x0
                        w1 = pa1 * dx - pb1 * dy
                        w2 = pa2 * dy - pb2 * dx
                        w0 = one - w1 - w2
                        if not ((w0 < tol and s0) or (w1 < tol and s1) or (w2 < tol and s2)):
                            continue
                        if not max(-w0 * h0, -w1 * h1, -w2 * h2) <= r_tol:
                            continue
                        d, t, za, zb, outer = _nearest_edge(px, py, x0, y0, z0, x1, y1, z1, x2, y2, z2,
                                                            s0, s1, s2, sgn, c)
                        if not outer or not d <= r2_hi:
                            continue
                        if perspective:
                            depth = one / ((one - t) / za + t / zb)
                        else:
                            depth = (one - t) * za + t * zb
                        p = base + i * W + j
                        if depth < zmap[p]:
                            if m < opix.shape[0]:
                                opix[m], oface[m], od2[m] = p, f, d
                            m += 1
                            dmin[p] = min(dmin[p], d)
        return m

    @numba.njit(cache=True, nogil=True)
    def _near_best(pix, d2, dmin, tiny, rel):  # pragma: no cover - compiled
        """Indices of the candidates whose squared distance is within ``rel`` of their pixel's
        best (the only ones that can win after a square root that is off by an ulp or so)."""
        keep = np.empty(pix.shape[0], dtype=np.int64)
        m = 0
        for i in range(pix.shape[0]):
            if max(d2[i], tiny) <= max(dmin[pix[i]], tiny) * rel:
                keep[m] = i
                m += 1
        return keep[:m]

    @numba.njit(cache=True, nogil=True)
    def _pick(pix, face, dist, r, best, bface):  # pragma: no cover - compiled
        """rasterize._winner on the soft candidates: per pixel the smallest ``dist <= r``, ties
        going to the larger face index. best (inf) and bface (-1): (B*H*W,)."""
        for i in range(pix.shape[0]):
            d, p = dist[i], pix[i]
            if d <= r and (d < best[p] or (d == best[p] and face[i] > bface[p])):
                best[p] = d
                bface[p] = face[i]



def constants(dtype, sigma: float = 0.0, cutoff: float = 0.0) -> np.ndarray:
    """The reference's scalar constants, rounded to ``dtype`` as PyTorch rounds a Python scalar
    against a tensor of that dtype."""
    r = cutoff * sigma
    return np.array([0.0, 0.5, 1.0, 1e-10, 1e-6, r, r + _SOFT_TOL, _SOFT_TOL, 1e-20], dtype=dtype)


def _grids(dtype, H: int, W: int):
    grid = np.arange(max(H, W) + 1, dtype=dtype)
    return grid, grid + dtype(0.5)


def face_setup(pv: np.ndarray, faces: np.ndarray, perspective: bool, cull: bool, threads: int = 1):
    """Signed doubled screen area and drawability of every face, as :func:`.rasterize.rasterize`.

    Args:
        pv: (B, V, 3) float32/float64 contiguous projected vertices; faces: (F, 3) int64.
    Returns:
        area2 (B, F) in pv's dtype, valid (B, F) bool.
    """
    _check()
    B, F = pv.shape[0], faces.shape[0]
    area2 = np.empty((B, F), dtype=pv.dtype)
    valid = np.empty((B, F), dtype=np.bool_)
    c = constants(pv.dtype.type)
    run_spans(lambda b0, b1: _setup(pv[b0:b1], faces, perspective, cull, c, area2[b0:b1], valid[b0:b1]),
              frame_spans(B, threads), threads)
    return area2, valid


def hard_layer(pv, faces, area2, valid, H: int, W: int, perspective: bool, threads: int = 1):
    """Nearest covering face per pixel (:func:`.rasterize._hard_layer`).

    Args:
        pv: (B, V, 3); faces: (F, 3) int64; area2, valid: (B, F) from :func:`face_setup`.
    Returns:
        face map (B*H*W,) int64 (-1 where empty) and depth map (B*H*W,) in pv's dtype (inf).
    """
    _check()
    B, n = pv.shape[0], H * W
    zbuf = np.full(B * n, np.inf, dtype=pv.dtype)
    fbuf = np.full(B * n, -1, dtype=np.int64)
    dt = pv.dtype.type
    c, (grid, grid_half) = constants(dt), _grids(dt, H, W)
    signed_zero = pv.dtype == np.float32  # the reference's float32 keys order -0.0 before +0.0
    no_vcol, no_image = np.empty((0, 0), pv.dtype), np.empty(0, pv.dtype)

    def kernel(b0, b1):
        _hard(pv[b0:b1], faces, area2[b0:b1], valid[b0:b1], H, W, perspective, signed_zero, c, grid,
              grid_half, zbuf[b0 * n:b1 * n], fbuf[b0 * n:b1 * n], no_vcol, no_image)

    run_spans(kernel, frame_spans(B, threads), threads)
    return fbuf, zbuf


def hard_image(pv, faces, area2, valid, vcol, H: int, W: int, bg: float = 0.0, threads: int = 1):
    """The hard layer's image alone, in the raster pass: per pixel, the nearest covering face's
    ``vcol`` interpolated at the pixel centre (:func:`.composite_jit.hard_at`, the hard-layer
    colour of :func:`.composite_jit.grey_composite`), ``bg`` where no face covers it. Same faces
    win as in :func:`hard_layer` (same loop, same tie rule); no face map is kept. For previews.

    Args:
        pv: (B, V, 3) orthographic projected vertices; faces: (F, 3) int64; area2, valid: (B, F)
            from :func:`face_setup`; vcol: (B, V) colour (grey) of each vertex.
    Returns:
        (B*H*W,) in pv's dtype.
    """
    _check()
    B, n = pv.shape[0], H * W
    vcol = np.ascontiguousarray(vcol, dtype=pv.dtype)
    zbuf = np.full(B * n, np.inf, dtype=pv.dtype)
    image = np.full(B * n, bg, dtype=pv.dtype)
    no_faces = np.empty(0, dtype=np.int64)
    dt = pv.dtype.type
    c, (grid, grid_half) = constants(dt), _grids(dt, H, W)
    signed_zero = pv.dtype == np.float32

    def kernel(b0, b1):
        _hard(pv[b0:b1], faces, area2[b0:b1], valid[b0:b1], H, W, False, signed_zero, c, grid, grid_half,
              zbuf[b0 * n:b1 * n], no_faces, vcol[b0:b1], image[b0 * n:b1 * n])

    run_spans(kernel, frame_spans(B, threads), threads)
    return image


def soft_layer(pv, faces, neighbours, area2, valid, zmap, H: int, W: int, perspective: bool,
               sigma: float, cutoff: float, threads: int = 1):
    """Soft outline candidates (:func:`.rasterize._soft_layer` up to its last step).

    Every test of the reference runs here except ``dist <= r`` and the choice of the nearest
    outline, which need the reference's own square root: ``torch.sqrt`` on CPU (MKL) is off by
    one ulp for a fraction of inputs, and those ulps decide between the two faces of a
    silhouette edge, which lie at the same distance from a pixel up to rounding. So this returns
    the candidates that can still win (squared distance within ``1e-4`` of the pixel's best, and
    not above ``(r (1 + 1e-4))²``) for the caller to finish with ``torch.sqrt`` and ``_winner``.

    Args:
        pv: (B, V, 3); faces: (F, 3) int64; neighbours: (F, 3) int64 from
        :func:`.rasterize.edge_neighbours`; area2, valid: (B, F); zmap: (B*H*W,) hard-layer depth
        (inf on background), any float dtype (compared in pv's dtype).
    Returns:
        pix (P,) int64, face (P,) int64, d2 (P,) squared distance in pv's dtype.
    """
    _check()
    B, n = pv.shape[0], H * W
    dt = pv.dtype.type
    zmap = np.ascontiguousarray(zmap, dtype=pv.dtype)
    h = int(cutoff * sigma) + 3  # as rasterize._hidden
    dmin = np.empty(B * n, dtype=pv.dtype)
    c, (_, grid_half) = constants(dt, sigma, cutoff), _grids(dt, H, W)
    r2_hi = (cutoff * sigma * (1 + _SOFT_TOL)) ** 2
    spans = frame_spans(B, threads)
    out = [None] * len(spans)

    def kernel(b0, b1):
        s = slice(b0 * n, b1 * n)
        cap = 4 * (b1 - b0) * n  # a few candidates per pixel; the exact count when that is short
        sil = np.empty((b1 - b0, faces.shape[0]), dtype=np.uint8)
        _silhouette_flags(neighbours, area2[b0:b1], valid[b0:b1], sil)
        zwin = np.empty((b1 - b0) * n, dtype=pv.dtype)
        _window_max(zmap[s], b1 - b0, H, W, h, zwin)
        while True:
            dmin[s] = np.inf
            pix, face, d2 = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, pv.dtype)
            m = _soft(pv[b0:b1], faces, sil, area2[b0:b1], zmap[s], zwin, H, W,
                      perspective, h, c, r2_hi, grid_half, dmin[s], pix, face, d2)
            if m <= cap:
                break
            cap = m
        pix, face, d2 = pix[:m], face[:m], d2[:m]
        keep = _near_best(pix, d2, dmin[s], c[_TINY], dt(1 + _SOFT_TOL))
        out[spans.index((b0, b1))] = (pix[keep] + b0 * n, face[keep], d2[keep])

    run_spans(kernel, spans, threads)
    if not out:  # no frames
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, pv.dtype)
    return tuple(np.concatenate(parts) for parts in zip(*out))


def pick_soft(pix, face, dist, n: int, sigma: float, cutoff: float) -> np.ndarray:
    """The nearest outline per pixel among :func:`soft_layer`'s candidates, given their distances
    (``dist``, computed with the reference's square root).

    Returns:
        (n,) int64 face of the soft pair per pixel, -1 where none.
    """
    _check()
    best = np.full(n, np.inf, dtype=dist.dtype)
    bface = np.full(n, -1, dtype=np.int64)
    _pick(pix, face, dist, constants(dist.dtype.type, sigma, cutoff)[_R], best, bface)
    return bface
