"""A slow, readable reference renderer: explicit loops over pixels and faces.

Same definitions as the fast path (:mod:`.rasterize`, :mod:`.renderer`), written for clarity,
on tiny images only (12 x 12 pixels and a few triangles take seconds). Tests compare images
*and* gradients of both. Autograd runs through these loops, so the reference also defines the
gradients the fast path must reproduce.
"""

from __future__ import annotations

import torch

from talkinghead_cli.render.camera import Camera
from talkinghead_cli.render.shade import Lights, lambert

GREY = 0.7


def _f(x) -> float:
    """A Python float of a scalar (tensor or number), outside autograd: used only for decisions."""
    return float(x.detach()) if torch.is_tensor(x) else float(x)


def reference_vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """verts: (V, 3) -> (V, 3) unit normals, summing the area-weighted face normals face by face."""
    acc = [torch.zeros(3, dtype=verts.dtype) for _ in range(verts.shape[0])]
    for a, b, c in faces.tolist():
        n = torch.cross(verts[b] - verts[a], verts[c] - verts[a], dim=0)
        for i in (a, b, c):
            acc[i] = acc[i] + n
    return torch.stack([n / n.norm().clamp_min(1e-12) for n in acc])


def _neighbours(faces: list[list[int]]) -> list[list[int]]:
    """For edge k of each face (opposite vertex k): neighbour face, -1 boundary, -2 non-manifold."""
    owners: dict[tuple[int, int], list[int]] = {}
    for f, tri in enumerate(faces):
        for k in range(3):
            a, b = tri[(k + 1) % 3], tri[(k + 2) % 3]
            owners.setdefault((min(a, b), max(a, b)), []).append(f)
    out = []
    for f, tri in enumerate(faces):
        row = []
        for k in range(3):
            a, b = tri[(k + 1) % 3], tri[(k + 2) % 3]
            own = owners[(min(a, b), max(a, b))]
            row.append(-1 if len(own) == 1 else -2 if len(own) > 2 else [g for g in own if g != f][0])
        out.append(row)
    return out


def _area2(p0, p1, p2):
    return (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p2[0] - p0[0]) * (p1[1] - p0[1])


def _inside_weights(p0, p1, p2, px, py):
    """Screen barycentrics (w0, w1, w2) of the point (px, py)."""
    a = _area2(p0, p1, p2)
    w1 = ((px - p0[0]) * (p2[1] - p0[1]) - (p2[0] - p0[0]) * (py - p0[1])) / a
    w2 = ((p1[0] - p0[0]) * (py - p0[1]) - (px - p0[0]) * (p1[1] - p0[1])) / a
    return [1 - w1 - w2, w1, w2]


def _nearest_on_triangle(p, px, py, sil):
    """Distance to the triangle, nearest edge k, position t on it, and the outer-side flag."""
    best = None
    outer = False
    sign = 1.0 if _f(_area2(p[0], p[1], p[2])) > 0 else -1.0
    for k in range(3):
        a, b = p[(k + 1) % 3], p[(k + 2) % 3]
        ex, ey = b[0] - a[0], b[1] - a[1]
        qx, qy = px - a[0], py - a[1]
        t = ((qx * ex + qy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
        d2 = (qx - t * ex) ** 2 + (qy - t * ey) ** 2
        if best is None or _f(d2) < _f(best[0]):
            best = (d2, k, t)
        if _f(ex * qy - ey * qx) * sign < 0 and sil[k]:
            outer = True
    d2, k, t = best
    return torch.sqrt(d2.clamp_min(1e-20)), k, t, outer


def _interp(bary, values):
    return sum(w * v for w, v in zip(bary, values))


def render_reference(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, colors=None,
                     lights: Lights | None = None, background: float = 0.0, sigma: float = 0.5,
                     cutoff: float = 4.0):
    """Reference render of one view.

    Args:
        verts: (1, V, 3); faces: (F, 3) long; camera: batch 1; colors: None or (V, 3).
    Returns:
        images (1, H, W, 3), alpha (1, H, W), face_index (1, H, W) long.
    """
    H, W = camera.image_size
    persp = camera.perspective
    p = camera.project(verts)[0]  # (V, 3)
    normals = reference_vertex_normals(verts[0], faces) @ camera.R[0].to(verts).T
    tris = faces.tolist()
    nbrs = _neighbours(tris)
    facing, valid = [], []
    for tri in tris:
        a = _f(_area2(p[tri[0]], p[tri[1]], p[tri[2]]).detach())
        ok = abs(a) > 1e-10 and bool(torch.isfinite(p[tri].detach()).all())
        ok = ok and (not persp or _f(p[tri, 2].detach().min()) > 1e-6)
        valid.append(ok)
        facing.append((1 if a > 0 else -1) if ok else 0)
    sil = [[nbrs[f][k] < 0 or facing[nbrs[f][k]] != facing[f] for k in range(3)] for f in range(len(tris))]
    bg = torch.as_tensor(background, dtype=verts.dtype).reshape(-1).expand(3)
    albedo = [GREY * torch.ones(3, dtype=verts.dtype)] * verts.shape[1] if colors is None else list(colors)

    lit = [lambert(normals[i][None], albedo[i][None], lights)[0] for i in range(verts.shape[1])]

    def shade(f, bary):  # Gouraud: interpolate the lit vertex colours
        return _interp(bary, [lit[i] for i in tris[f]])

    def persp_correct(w, zs):
        if not persp:
            return w, _interp(w, zs)
        q = [wi / zi for wi, zi in zip(w, zs)]
        s = sum(q)
        return [qi / s for qi in q], 1 / s

    rows, alphas, findex = [], [], []
    for i in range(H):
        for j in range(W):
            px = torch.tensor(j + 0.5, dtype=verts.dtype)
            py = torch.tensor(i + 0.5, dtype=verts.dtype)
            hard = None  # (depth, face, bary)
            for f, tri in enumerate(tris):
                if not valid[f]:
                    continue
                pt = [p[v] for v in tri]
                w = _inside_weights(pt[0], pt[1], pt[2], px, py)
                if min(_f(x) for x in w[1:]) >= 0 and _f(w[1] + w[2]) <= 1:
                    bary, z = persp_correct(w, [q[2] for q in pt])
                    if hard is None or _f(z) <= _f(hard[0]):
                        hard = (z, f, bary)
            colour = bg if hard is None else shade(hard[1], hard[2])
            alpha = torch.zeros((), dtype=verts.dtype) if hard is None else torch.ones((), dtype=verts.dtype)
            soft = None  # (dist, face, nearest-point bary)
            for f, tri in enumerate(tris):
                if not valid[f] or not any(sil[f]):
                    continue
                pt = [p[v] for v in tri]
                dist, k, t, outer = _nearest_on_triangle(pt, px, py, sil[f])
                if not outer or _f(dist) > cutoff * sigma:
                    continue
                w = [0.0, 0.0, 0.0]
                w[(k + 1) % 3], w[(k + 2) % 3] = 1 - t, t
                bary, z = persp_correct(w, [q[2] for q in pt])
                if hard is not None and not _f(z) < _f(hard[0]):
                    continue
                if soft is None or _f(dist) <= _f(soft[0]):
                    soft = (dist, f, bary)
            if soft is not None and sigma > 0:
                a = 2 * torch.sigmoid(-soft[0] / sigma)
                colour = a * shade(soft[1], soft[2]) + (1 - a) * colour
                alpha = a + (1 - a) * alpha
            rows.append(colour)
            alphas.append(alpha)
            findex.append(-1 if hard is None else hard[1])
    images = torch.stack(rows).reshape(1, H, W, 3)
    return images, torch.stack(alphas).reshape(1, H, W), torch.tensor(findex).reshape(1, H, W)
