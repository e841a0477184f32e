"""Batched triangle rasterization in pure PyTorch (CPU and CUDA).

Two layers are found per pixel, both without autograd (they are discrete choices):

- **hard layer**: the nearest face whose triangle contains the pixel centre;
- **soft layer**: among faces with a *silhouette edge* (a mesh boundary edge, or an edge whose
  two faces face opposite ways on screen, e.g. the rim of the lips around an open mouth), the
  one with the largest coverage ``2 * sigmoid(-dist / sigma)`` at a pixel that lies outside the
  triangle, on the outer side of one of its silhouette edges, within ``cutoff * sigma`` pixels
  of it, and in front of the hard layer (or over background). ``dist`` is the distance from the
  pixel centre to the triangle; its nearest point gives the soft layer's depth and attributes.

Interior edges between neighbouring faces are therefore never blurred (the hard layer is
watertight there), while outlines get a soft, differentiable coverage.

Design (why it is fast without per-pixel x per-face tensors): each face tests only the pixels
of its own bounding box. For the hard layer, faces are grouped by box size class (1, 2, ..., 8,
10, 12, 15, ... pixels a side) and each group is tested against its tile by broadcasting, so no
per-pair gathers or integer divisions are needed; only hits are materialised. Face meshes have
small triangles, so the tested pixels number a few times the covered ones. Inside tests and
depths use per-face plane equations in coordinates relative to the first vertex (no float32
cancellation at 512 px). The z-buffer is one ``scatter_reduce(amin)`` over int64 keys that
pack the depth's order-preserving float32 bits with the face index (float64 inputs take a
two-pass equivalent). Soft pairs come from the dilated boxes of silhouette faces only, thinned
by a cheap edge-function test before the exact distance. The renderer then recomputes, with
autograd, only the selected pairs (see :mod:`.renderer`).

On CPU with numba installed, :func:`rasterize` runs the compiled layers of :mod:`.rasterize_jit`
instead (per-face loops over the same boxes, same arithmetic, identical pairs; about 6x faster
on the bundled face's lip windows); the PyTorch pass below is their reference (``jit=False``) and the GPU path.

Face indices: edge ``k`` of a face is the edge opposite its vertex ``k``, i.e. from vertex
``k+1`` to vertex ``k+2`` (mod 3); its barycentric ``w_k`` is negative on the outer side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from talkinghead_cli.render import rasterize_jit

_NEIGHBOUR_CACHE: list[tuple[torch.Tensor, torch.Tensor]] = []


@dataclass
class Fragments:
    """Selected (pixel, face) pairs. Pixels are flat indices ``b * H * W + row * W + col``.

    Attributes:
        hard_pix, hard_face: (Nh,) long: pixels covered by a face and the nearest such face.
        soft_pix, soft_face: (Ns,) long: pixels with a soft outline and the face giving it.
        shape: ``(B, H, W)``.
        maps: the same layers as per-pixel face maps (hard, soft), each (B*H*W,) int64 numpy,
            -1 where none, when the compiled path found them (it works on such maps), else None.
    """

    hard_pix: torch.Tensor
    hard_face: torch.Tensor
    soft_pix: torch.Tensor
    soft_face: torch.Tensor
    shape: tuple[int, int, int]
    maps: tuple[np.ndarray, np.ndarray] | None = None


def edge_neighbours(faces: torch.Tensor) -> torch.Tensor:
    """The face across each edge.

    Args:
        faces: (F, 3) long.
    Returns:
        (F, 3) long: for edge ``k`` (opposite vertex ``k``) the neighbouring face index, -1 for a
        boundary edge, -2 for a non-manifold edge (more than two faces). Cached per ``faces``.
    """
    for key, value in _NEIGHBOUR_CACHE:
        if key.shape == faces.shape and key.device == faces.device and torch.equal(key, faces):
            return value
    F = faces.shape[0]
    a = torch.stack([faces[:, 1], faces[:, 2], faces[:, 0]], 1).reshape(-1)
    b = torch.stack([faces[:, 2], faces[:, 0], faces[:, 1]], 1).reshape(-1)
    key = torch.minimum(a, b) * (int(faces.max()) + 1) + torch.maximum(a, b)
    _, inv, counts = torch.unique(key, return_inverse=True, return_counts=True)
    order = torch.argsort(inv, stable=True)
    start = torch.cumsum(counts, 0) - counts
    nb = torch.full((3 * F,), -1, dtype=torch.long, device=faces.device)
    two = counts[inv[order]] == 2
    # entries of a 2-face edge are consecutive in ``order``: pair the first with the second
    first = order[two & (torch.arange(3 * F, device=faces.device) == start[inv[order]])]
    second = order[two & (torch.arange(3 * F, device=faces.device) == start[inv[order]] + 1)]
    nb[first] = second // 3
    nb[second] = first // 3
    nb[counts[inv] > 2] = -2
    out = nb.reshape(F, 3)
    _NEIGHBOUR_CACHE.insert(0, (faces.clone(), out))
    del _NEIGHBOUR_CACHE[4:]
    return out


def silhouette_edges(area2: torch.Tensor, valid: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Which face edges are on screen outlines.

    Args:
        area2: (B, F) signed doubled screen area (sign = facing).
        valid: (B, F) bool, faces that are drawn (in front of the camera, not degenerate).
        neighbours: (F, 3) from :func:`edge_neighbours`.
    Returns:
        (B, F, 3) bool: boundary or non-manifold edge, or the neighbour faces the other way
        (a culled neighbour counts as facing neither way).
    """
    facing = torch.sign(area2) * valid
    nb = neighbours.clamp_min(0)
    other = facing[:, nb]  # (B, F, 3)
    return (neighbours[None] < 0) | (other != facing[..., None])


def _pixel_pairs(x_lo, x_hi, y_lo, y_hi):
    """Enumerate the pixels of integer boxes.

    Args:
        x_lo, x_hi, y_lo, y_hi: (K,) long inclusive pixel ranges (empty when lo > hi).
    Returns:
        owner (P,) long box index, col (P,) long, row (P,) long.
    """
    nx = (x_hi - x_lo + 1).clamp_min(0)
    ny = (y_hi - y_lo + 1).clamp_min(0)
    counts = nx * ny
    owner = torch.repeat_interleave(counts)
    start = torch.cumsum(counts, 0) - counts
    off = torch.arange(owner.shape[0], device=owner.device) - start[owner]
    w = nx[owner]
    row = y_lo[owner] + torch.div(off, w, rounding_mode="floor")
    col = x_lo[owner] + off - (row - y_lo[owner]) * w
    return owner, col, row


def _box(lo: torch.Tensor, hi: torch.Tensor, r: float, n: int):
    """Inclusive pixel range whose centres lie in ``[lo - r, hi + r]``, clipped to ``[0, n-1]``."""
    a = torch.ceil(lo - r - 0.5).clamp(0, n).long()
    b = torch.floor(hi + r - 0.5).clamp(-1, n - 1).long()
    return a, b


def _winner(pix: torch.Tensor, score: torch.Tensor, n: int, largest: bool, tiebreak: torch.Tensor) -> torch.Tensor:
    """Per pixel, the pair with the best score; ties go to the largest ``tiebreak`` (face index).

    Args:
        pix: (P,) long pixel of each pair; score: (P,) float; n: number of pixels;
        tiebreak: (P,) long, unique among the pairs of one pixel.
    Returns:
        (P',) long indices into the pairs, one per pixel that has a pair.
    """
    fill = float("-inf") if largest else float("inf")
    best = torch.full((n,), fill, dtype=score.dtype, device=score.device)
    best.scatter_reduce_(0, pix, score, "amax" if largest else "amin", include_self=True)
    hit = torch.nonzero(score == best[pix]).squeeze(1)
    key = tiebreak[hit]
    top = torch.full((n,), -1, dtype=key.dtype, device=key.device)
    top.scatter_reduce_(0, pix[hit], key, "amax", include_self=True)
    return hit[key == top[pix[hit]]]


def rasterize(pv: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int], perspective: bool,
              sigma: float, cutoff: float = 4.0, cull_backfaces: bool = False,
              hard_layer=None, jit: bool | None = None) -> Fragments:
    """Find the hard and soft layers (no autograd).

    Args:
        pv: (B, V, 3) projected vertices (pixel x, pixel y, depth).
        faces: (F, 3) long.
        image_size: (H, W).
        perspective: interpolate depth perspective-correctly (1/depth is linear on screen).
        sigma: soft edge width in pixels (0: no soft layer).
        cutoff: soft radius in units of sigma.
        cull_backfaces: drop faces seen from behind (clockwise in world = counter-clockwise on
            screen), which halves the work on closed meshes.
        hard_layer: optional other search for the hard layer, called as
            ``hard_layer(pv, faces, valid (B, F) bool, image_size, perspective) -> (pix, face)``.
        jit: use the compiled layers of :mod:`.rasterize_jit` (same pairs; this function's
            PyTorch pass is their reference). None: when ``pv`` is a float32/float64 CPU tensor,
            numba is installed and no ``hard_layer`` is given. With ``hard_layer`` and
            ``jit=True`` only the soft layer is compiled.
    Returns:
        :class:`Fragments`, pixels in increasing order on the compiled path (the order of the
        pairs carries no meaning).
    """
    if jit is None:
        jit = (pv.device.type == "cpu" and pv.dtype in (torch.float32, torch.float64) and hard_layer is None
               and rasterize_jit.available())
    if jit:
        return _rasterize_jit(pv, faces, image_size, perspective, sigma, cutoff, cull_backfaces, hard_layer)
    with torch.no_grad():
        pv = pv.detach()
        B = pv.shape[0]
        H, W = image_size
        tri = pv[:, faces]  # (B, F, 3, 3)
        x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]  # (B, F, 3)
        e1x, e1y = x[..., 1] - x[..., 0], y[..., 1] - y[..., 0]
        e2x, e2y = x[..., 2] - x[..., 0], y[..., 2] - y[..., 0]
        area2 = e1x * e2y - e2x * e1y
        valid = torch.isfinite(pv).all(-1)[:, faces].all(-1) & (area2.abs() > 1e-10)
        if perspective:
            valid &= z.min(-1).values > 1e-6
        if cull_backfaces:
            valid &= area2 < 0  # front faces are clockwise on screen (y down)
        if hard_layer is None:
            hard_pix, hard_face, zmap = _hard_layer(x, y, z, area2, valid, H, W, perspective)
        else:
            hard_pix, hard_face = hard_layer(pv, faces, valid, image_size, perspective)
            zmap = _depth_map(pv, faces, hard_pix, hard_face, image_size, perspective)
        if sigma > 0:
            sil = silhouette_edges(area2, valid, edge_neighbours(faces))
            soft_pix, soft_face = _soft_layer(x, y, z, sil, valid, zmap, H, W, perspective, sigma, cutoff)
        else:
            soft_pix = soft_face = torch.zeros(0, dtype=torch.long, device=pv.device)
        return Fragments(hard_pix, hard_face, soft_pix, soft_face, (B, H, W))


def _rasterize_jit(pv, faces, image_size, perspective, sigma, cutoff, cull_backfaces, hard_layer) -> Fragments:
    """:func:`rasterize` on the compiled layers (CPU; frames split over torch's thread count)."""
    B = pv.shape[0]
    H, W = image_size
    p = pv.detach().cpu().contiguous().numpy()
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float32)
    f = faces.detach().cpu().long().contiguous().numpy()
    threads = torch.get_num_threads()
    area2, valid = rasterize_jit.face_setup(p, f, perspective, cull_backfaces, threads)
    if hard_layer is None:
        face_map, zmap = rasterize_jit.hard_layer(p, f, area2, valid, H, W, perspective, threads)
        hard_pix = torch.from_numpy(np.flatnonzero(face_map >= 0))
        hard_face = torch.from_numpy(face_map[hard_pix.numpy()])
    else:
        with torch.no_grad():
            pv = pv.detach()
            hard_pix, hard_face = hard_layer(pv, faces, torch.from_numpy(valid).to(pv.device), image_size,
                                             perspective)
            zmap = _depth_map(pv, faces, hard_pix, hard_face, image_size, perspective).cpu().numpy()
    if sigma > 0:
        nb = edge_neighbours(faces.detach().cpu().long()).numpy()
        pix, face, d2 = rasterize_jit.soft_layer(p, f, nb, area2, valid, zmap, H, W, perspective, sigma, cutoff,
                                                 threads)
        # the distances of the few candidates left with torch's own square root, as the reference
        # (it is not always correctly rounded, and near-ties between faces hang on the last bit)
        dist = torch.sqrt(torch.from_numpy(d2).clamp_min(1e-20)).numpy()
        soft_map = rasterize_jit.pick_soft(pix, face, dist, B * H * W, sigma, cutoff)
        soft_pix = torch.from_numpy(np.flatnonzero(soft_map >= 0))
        soft_face = torch.from_numpy(soft_map[soft_pix.numpy()])
    else:
        soft_pix = soft_face = torch.zeros(0, dtype=torch.long)
        soft_map = np.full(B * H * W, -1, dtype=np.int64)
    dev = pv.device
    maps = (face_map, soft_map) if hard_layer is None else None
    return Fragments(hard_pix.to(dev), hard_face.to(dev), soft_pix.to(dev), soft_face.to(dev), (B, H, W), maps)


_EXACT_TILES = 8  # tile sides 1..8 are consecutive: a box of n pixels gets a tile of exactly n


def _tile_sizes(n: int, device) -> torch.Tensor:
    """Tile sides 1, 2, ..., 8, then steps of about 25 % (10, 12, 15, 18, ...), up to at least ``n``:
    small steps waste few tile pixels on the many small boxes of a face mesh."""
    sizes = list(range(1, _EXACT_TILES + 1))
    while sizes[-1] < n:
        sizes.append(sizes[-1] + max(2, sizes[-1] // 4))
    return torch.tensor(sizes, device=device)


def _hard_layer(x, y, z, area2, valid, H, W, perspective):
    """Nearest covering face per pixel.

    Faces are grouped by the size class of their pixel box; each group is tested against a
    dense (faces x tile pixels) grid by broadcasting, so no per-pair gathers or integer
    divisions are needed, and only the hits are materialised.

    Args:
        x, y, z: (B, F, 3) projected triangle coordinates; area2, valid: (B, F).
    Returns:
        pix (N,), face (N,) long, and the depth map (B*H*W,) (inf where empty).
    """
    B, F = valid.shape
    x_lo, x_hi = _box(x.min(-1).values, x.max(-1).values, 0.0, W)
    y_lo, y_hi = _box(y.min(-1).values, y.max(-1).values, 0.0, H)
    valid = valid & (x_lo <= x_hi) & (y_lo <= y_hi)
    lin = torch.nonzero(valid.reshape(-1)).squeeze(1)  # (K,) = b * F + f

    def take(t):
        return t.reshape(B * F, *t.shape[2:]).index_select(0, lin)

    xk, yk, zk = take(x), take(y), take(z)  # (K, 3)
    xl, yl = take(x_lo), take(y_lo)
    nx, ny = take(x_hi) - xl + 1, take(y_hi) - yl + 1
    e1x, e1y = xk[:, 1] - xk[:, 0], yk[:, 1] - yk[:, 0]
    e2x, e2y = xk[:, 2] - xk[:, 0], yk[:, 2] - yk[:, 0]
    inv_a = 1.0 / take(area2)
    zz = 1.0 / zk if perspective else zk  # interpolated linearly on screen
    dz1, dz2 = zz[:, 1] - zz[:, 0], zz[:, 2] - zz[:, 0]
    a1, b1, a2, b2 = e2y * inv_a, -e2x * inv_a, -e1y * inv_a, e1x * inv_a
    # per face: first pixel centre relative to vertex 0; planes w1, w2, depth (or 1/depth)
    coef = torch.stack([xl + 0.5 - xk[:, 0], yl + 0.5 - yk[:, 0], a1, b1, a2, b2, zz[:, 0],
                        a1 * dz1 + a2 * dz2, b1 * dz1 + b2 * dz2], 1)
    base = (torch.div(lin, F, rounding_mode="floor") * H + yl) * W + xl
    sizes = _tile_sizes(max(H, W), x.device)
    exact = _EXACT_TILES
    cls = torch.searchsorted(sizes, nx) * len(sizes) + torch.searchsorted(sizes, ny)
    fidx = lin % F
    n = B * H * W
    packed = x.dtype == torch.float32  # one int64 z-buffer key per pair (see _pack)
    best = torch.full((n,), _EMPTY, dtype=torch.int64, device=x.device) if packed else None
    parts = []
    # sort the faces by class once: each class is then a contiguous slice
    order = torch.argsort(cls)
    classes, counts = torch.unique_consecutive(cls[order], return_counts=True)
    coef, base, fidx, nx, ny = coef[order], base[order], fidx[order], nx[order], ny[order]
    start = 0
    for c, count in zip(classes.tolist(), counts.tolist()):
        part = slice(start, start + count)
        start += count
        tw, th = int(sizes[c // len(sizes)]), int(sizes[c % len(sizes)])
        sx = torch.arange(tw, device=x.device).repeat(th)  # (S,) tile column
        sy = torch.arange(th, device=x.device).repeat_interleave(tw)  # (S,) tile row
        cf = coef[part]
        dx = cf[:, 0:1] + sx.to(cf.dtype)  # (Kc, S)
        dy = cf[:, 1:2] + sy.to(cf.dtype)
        w1 = cf[:, 2:3] * dx + cf[:, 3:4] * dy
        w2 = cf[:, 4:5] * dx + cf[:, 5:6] * dy
        hit = (w1 >= 0) & (w2 >= 0) & (w1 + w2 <= 1)
        if tw > exact:  # tiles up to ``exact`` equal their boxes; larger ones may overhang
            hit &= sx < nx[part][:, None]
        if th > exact:
            hit &= sy < ny[part][:, None]
        k, s = torch.nonzero(hit, as_tuple=True)
        pix = base[part][k] + (sy * W + sx)[s]
        zc = cf[:, 6:9].index_select(0, k)
        flat = k * (tw * th) + s
        depth = zc[:, 0] + zc[:, 1] * dx.reshape(-1)[flat] + zc[:, 2] * dy.reshape(-1)[flat]
        if perspective:
            depth = 1.0 / depth
        if packed:
            best.scatter_reduce_(0, pix, _pack(depth, fidx[part][k]), "amin", include_self=True)
        else:
            parts.append((pix, fidx[part][k], depth))
    if packed:
        return _unpack(best)
    if not parts:  # nothing in view
        parts = [(lin[:0], lin[:0], x.new_zeros(0))]
    pix, face, depth = (torch.cat(t) for t in zip(*parts))
    win = _winner(pix, depth, n, largest=False, tiebreak=face)
    zmap = torch.full((n,), float("inf"), dtype=depth.dtype, device=depth.device)
    zmap[pix[win]] = depth[win]
    return pix[win], face[win], zmap


def _sortable(bits: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns (as int64, sign-extended) -> ints ordered like the floats (an involution)."""
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


_EMPTY = torch.iinfo(torch.int64).max
_LOW = 0x7FFFFFFF


def _pack(depth: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """z-buffer keys: the depth's order-preserving float32 bits in the high 32 bits and the
    inverted face index in the low ones, so the minimum key per pixel is the nearest face, ties
    going to the largest face index (as :func:`_winner`). depth: (P,) float32; face: (P,) long."""
    bits = depth.contiguous().view(torch.int32).long()
    if not bool((depth < 0).any()):  # non-negative floats already sort like their bits
        return (bits << 32) | (_LOW - face)
    return (_sortable(bits) << 32) | (_LOW - face)


def _unpack(best: torch.Tensor):
    """Per-pixel minimum keys (n,) -> pix (N,), face (N,), depth map (n,) float32 (inf where empty)."""
    hit = torch.nonzero(best != _EMPTY).squeeze(1)
    k = best[hit]
    zmap = torch.full(best.shape, float("inf"), dtype=torch.float32, device=best.device)
    zmap[hit] = _sortable(k >> 32).to(torch.int32).view(torch.float32)
    return hit, _LOW - (k & 0xFFFFFFFF), zmap


def hard_barycentrics(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor, perspective: bool):
    """Barycentrics and depth of pixel centres inside their triangles (differentiable).

    Args:
        tri: (N, 3, 3) projected triangle vertices (pixel x, pixel y, depth).
        px, py: (N,) pixel centre coordinates.
    Returns:
        bary (N, 3) (perspective-correct when ``perspective``), depth (N,).
    """
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    e1x, e1y = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    e2x, e2y = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]
    dx, dy = px - x[:, 0], py - y[:, 0]
    area2 = e1x * e2y - e2x * e1y
    w1 = (dx * e2y - e2x * dy) / area2
    w2 = (e1x * dy - dx * e1y) / area2
    w = torch.stack([1.0 - w1 - w2, w1, w2], 1)
    if perspective:
        q = w / z
        s = q.sum(1)
        return q / s[:, None], 1.0 / s
    return w, (w * z).sum(1)


def _depth_map(pv, faces, pix, face, image_size, perspective):
    """(B*H*W,) depth of the hard layer at the selected pairs, inf elsewhere."""
    B, V = pv.shape[:2]
    H, W = image_size
    rem = pix % (H * W)
    px = (rem % W).to(pv.dtype) + 0.5
    py = torch.div(rem, W, rounding_mode="floor").to(pv.dtype) + 0.5
    tri = pv.reshape(B * V, 3)[torch.div(pix, H * W, rounding_mode="floor")[:, None] * V + faces[face]]
    _, depth = hard_barycentrics(tri, px, py, perspective)
    zmap = torch.full((B * H * W,), float("inf"), dtype=pv.dtype, device=pv.device)
    zmap[pix] = depth
    return zmap


def _soft_layer(x, y, z, sil, valid, zmap, H, W, perspective, sigma, cutoff):
    """Best soft outline pair per pixel. Inputs (B, F[, 3]); returns pix (Ns,), face (Ns,).

    Pairs come from the boxes of faces with a silhouette edge, dilated by the soft radius. A
    cheap, conservative test on the per-face edge functions (outside a silhouette edge, and
    the distance to the edge lines not above the radius) drops most pairs before the exact
    point-to-triangle distance.
    """
    B, F = valid.shape
    r = cutoff * sigma
    x_lo, x_hi = _box(x.min(-1).values, x.max(-1).values, r, W)
    y_lo, y_hi = _box(y.min(-1).values, y.max(-1).values, r, H)
    keep = valid & sil.any(-1) & (x_lo <= x_hi) & (y_lo <= y_hi)
    keep &= ~_hidden(x_lo, x_hi, y_lo, y_hi, z.min(-1).values, zmap.reshape(B, H, W), r)
    lin = torch.nonzero(keep.reshape(-1)).squeeze(1)  # (K,) = b * F + f

    def take(t):
        return t.reshape(B * F, *t.shape[2:]).index_select(0, lin)

    xk, yk, zk, sk = take(x), take(y), take(z), take(sil)  # (K, 3)
    owner, col, row = _pixel_pairs(take(x_lo), take(x_hi), take(y_lo), take(y_hi))
    px = col.to(x.dtype) + 0.5
    py = row.to(x.dtype) + 0.5
    # conservative prefilter with edge functions (w_k < 0: outer side of the edge opposite k)
    e1x, e1y = xk[:, 1] - xk[:, 0], yk[:, 1] - yk[:, 0]
    e2x, e2y = xk[:, 2] - xk[:, 0], yk[:, 2] - yk[:, 0]
    area2 = e1x * e2y - e2x * e1y
    inv_a = 1.0 / area2
    ex = torch.stack([xk[:, 2] - xk[:, 1], xk[:, 0] - xk[:, 2], e1x], 1)
    ey = torch.stack([yk[:, 2] - yk[:, 1], yk[:, 0] - yk[:, 2], e1y], 1)
    height = area2.abs()[:, None] / torch.sqrt(ex * ex + ey * ey)  # (K, 3) altitudes
    dx, dy = px - xk[owner, 0], py - yk[owner, 0]
    w1 = (e2y * inv_a)[owner] * dx - (e2x * inv_a)[owner] * dy
    w2 = (e1x * inv_a)[owner] * dy - (e1y * inv_a)[owner] * dx
    w = torch.stack([1.0 - w1 - w2, w1, w2], 1)  # (P, 3)
    tol = 1e-4
    gap = (-w * height[owner]).max(1).values  # distance to the farthest edge line crossed
    pre = ((w < tol) & sk[owner]).any(1) & (gap <= r + tol)
    cand = torch.nonzero(pre).squeeze(1)
    owner, px, py, col, row = owner[cand], px[cand], py[cand], col[cand], row[cand]
    tz = zk[owner]
    dist, t_near, k_near, outer = point_triangle(px, py, xk[owner], yk[owner], sk[owner])
    # depth at the nearest point (on edge k_near, from vertex k+1 to vertex k+2)
    za = tz.gather(1, ((k_near + 1) % 3)[:, None]).squeeze(1)
    zb = tz.gather(1, ((k_near + 2) % 3)[:, None]).squeeze(1)
    if perspective:
        depth = 1.0 / ((1 - t_near) / za + t_near / zb)
    else:
        depth = (1 - t_near) * za + t_near * zb
    fb = torch.div(lin[owner], F, rounding_mode="floor")
    ff = lin[owner] % F
    pix = (fb * H + row) * W + col
    ok = outer & (dist <= r) & (depth < zmap[pix].to(depth.dtype))
    sel = torch.nonzero(ok).squeeze(1)
    cover = -dist[sel]  # larger coverage <=> smaller distance
    win = sel[_winner(pix[sel], cover, zmap.shape[0], largest=True, tiebreak=ff[sel])]
    return pix[win], ff[win]


def _hidden(x_lo, x_hi, y_lo, y_hi, zface, zmap, r):
    """(B, F) bool: faces whose every candidate pixel is covered by a nearer hard-layer face.

    A soft pair needs its depth (on the face, so >= the face's nearest vertex) in front of the
    hard layer. A face whose nearest vertex is behind the farthest hard-layer depth in its
    dilated box can give no pair, so it is dropped before the pairs are built (an exact
    shortcut: inside a closed mouth most silhouette faces of teeth and tongue are such).
    The box maximum is one max-pool around the box centre, so only boxes that fit the pool
    window are tested; larger ones are kept.

    Args:
        x_lo, x_hi, y_lo, y_hi: (B, F) inclusive dilated pixel boxes; zface: (B, F) nearest
        vertex depth; zmap: (B, H, W) hard-layer depth, inf on background; r: soft radius.
    """
    h = int(r) + 3
    zmax = torch.nn.functional.max_pool2d(zmap[:, None], 2 * h + 1, stride=1, padding=h)[:, 0]
    cx, cy = torch.div(x_lo + x_hi, 2, rounding_mode="floor"), torch.div(y_lo + y_hi, 2, rounding_mode="floor")
    fits = (x_hi - cx <= h) & (y_hi - cy <= h) & (x_lo <= x_hi) & (y_lo <= y_hi)
    H, W = zmap.shape[1:]
    b = torch.arange(zmap.shape[0], device=zmap.device)[:, None]
    around = zmax[b, cy.clamp(0, H - 1), cx.clamp(0, W - 1)]
    return fits & (zface >= around)


def point_triangle(px, py, tx, ty, sil=None):
    """Distance from points to triangles on screen (differentiable in the triangle).

    Args:
        px, py: (P,) point coordinates. tx, ty: (P, 3) triangle vertex coordinates.
        sil: (P, 3) bool silhouette flags per edge, or None (all edges count).
    Returns:
        dist (P,) distance to the nearest point of the triangle, t (P,) its position along the
        nearest edge, k (P,) long index of that edge (opposite vertex k, from k+1 to k+2), and
        outer (P,) bool: the point is strictly outside and on the outer side of a flagged edge.
    """
    ax = torch.stack([tx[:, 1], tx[:, 2], tx[:, 0]], 1)
    ay = torch.stack([ty[:, 1], ty[:, 2], ty[:, 0]], 1)
    bx = torch.stack([tx[:, 2], tx[:, 0], tx[:, 1]], 1)
    by = torch.stack([ty[:, 2], ty[:, 0], ty[:, 1]], 1)
    ex, ey = bx - ax, by - ay
    qx, qy = px[:, None] - ax, py[:, None] - ay
    t = ((qx * ex + qy * ey) / (ex * ex + ey * ey).clamp_min(1e-20)).clamp(0.0, 1.0)
    rx, ry = qx - t * ex, qy - t * ey
    d2 = rx * rx + ry * ry  # (P, 3)
    d2min, k = d2.min(1)
    dist = torch.sqrt(d2min.clamp_min(1e-20))
    # side test: cross(edge, q) has the sign of the triangle's orientation on the inner side
    area2 = (tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (tx[:, 2] - tx[:, 0]) * (ty[:, 1] - ty[:, 0])
    side = (ex * qy - ey * qx) * torch.sign(area2)[:, None]  # < 0: outer side of the edge
    out_edge = side < 0
    if sil is not None:
        out_edge = out_edge & sil
    return dist, t.gather(1, k[:, None]).squeeze(1), k, out_edge.any(1)
