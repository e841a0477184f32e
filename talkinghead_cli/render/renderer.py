"""``render_mesh``: batched, differentiable rendering of triangle meshes.

Pipeline: project the vertices with the :class:`~.camera.Camera`; light the vertices
(Gouraud shading: ambient + Lambert with vertex normals computed from the vertices, in the
camera frame); find, without autograd, the hard layer (nearest covering face per pixel) and the
soft outline layer (see :mod:`.rasterize`); then recompute *with* autograd only the selected
(pixel, face) pairs: barycentrics (perspective-correct for a perspective camera), depth, the
interpolated vertex colours, and the outline coverage ``2 * sigmoid(-dist / sigma)``.
Per-vertex lighting (rather than per-pixel) keeps the per-pixel work to one gather and one
3-channel interpolation, which is what makes batched lip windows cheap.
Gradients reach the vertex positions through the shading (normals are computed from the
vertices) and through the outline coverage (silhouettes, including the inner outline of an
open mouth, move pixels).

Compositing per pixel: ``colour = a_s * c_soft + (1 - a_s) * c_hard`` where ``c_hard`` is the
background where no face covers the pixel; ``alpha = a_s + (1 - a_s) * a_hard`` with
``a_hard`` in {0, 1}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.render.camera import Camera
from talkinghead_cli.render.rasterize import Fragments, hard_barycentrics, point_triangle, rasterize
from talkinghead_cli.render.shade import Lights, lambert, vertex_normals

BACKENDS = ("auto", "torch", "pytorch3d")
GREY = 0.7
LUMA = (0.299, 0.587, 0.114)
DEFAULT_SIGMA = 0.5


@dataclass
class RenderOutput:
    """Rendered images and per-pixel buffers.

    Attributes:
        images: (B, H, W, 3) float in [0, 1].
        alpha: (B, H, W) coverage in [0, 1].
        depth: (B, H, W) depth of the hard layer, ``inf`` where no face covers the pixel.
        face_index: (B, H, W) long index of the hard-layer face, -1 on background.
        bary: (B, H, W, 3) (perspective-correct) barycentrics of the hard layer, 0 on background.
    """

    images: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    face_index: torch.Tensor
    bary: torch.Tensor


def pytorch3d_available() -> bool:
    """True when ``import pytorch3d`` works (its rasterizer is then used for the hard layer)."""
    try:
        import pytorch3d.renderer  # noqa: F401
    except Exception:  # ImportError, or a broken build raising OSError/RuntimeError
        return False
    return True


def _check_inputs(verts, faces, camera, colors):
    if not torch.is_tensor(verts) or verts.dim() != 3 or verts.shape[-1] != 3:
        raise UserError(f"verts must be a (B, V, 3) tensor, got {getattr(verts, 'shape', type(verts))}",
                        None, "batch the vertices as (B, V, 3)")
    faces = torch.as_tensor(faces, device=verts.device).long()
    if faces.dim() != 2 or faces.shape[1] != 3 or faces.shape[0] == 0:
        raise UserError(f"faces must be (F, 3) triangles, got {tuple(faces.shape)}", None, "triangulate the mesh")
    if int(faces.min()) < 0 or int(faces.max()) >= verts.shape[1]:
        raise UserError("face indices out of range for the vertices", None, "check that mesh and faces match")
    if camera.batch_size not in (1, verts.shape[0]):
        raise UserError(f"camera batch {camera.batch_size} does not match mesh batch {verts.shape[0]}",
                        None, "give one camera or one per mesh")
    if colors is not None:
        colors = torch.as_tensor(colors, device=verts.device, dtype=verts.dtype)
        if colors.dim() == 2:
            colors = colors[None]
        if colors.dim() != 3 or colors.shape[-1] != 3 or colors.shape[1] != verts.shape[1] \
                or colors.shape[0] not in (1, verts.shape[0]):
            raise UserError(f"colors must be (V, 3) or (B, V, 3), got {tuple(colors.shape)}", None,
                            "give one RGB colour per vertex")
    return faces, colors


def _rasterize(pv, faces, camera, sigma, cutoff, cull_backfaces, backend) -> Fragments:
    if backend not in BACKENDS:
        raise UserError(f"unknown renderer backend {backend!r}", None, f"use one of {', '.join(BACKENDS)}")
    if backend == "pytorch3d" or (backend == "auto" and pytorch3d_available()):
        from talkinghead_cli.render.pytorch3d_backend import rasterize_pytorch3d

        return rasterize_pytorch3d(pv, faces, camera.image_size, camera.perspective, sigma, cutoff,
                                   cull_backfaces)
    return rasterize(pv, faces, camera.image_size, camera.perspective, sigma, cutoff, cull_backfaces)


def soft_coverage(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor, perspective: bool, sigma: float):
    """Outline coverage and the nearest point's barycentrics (differentiable).

    Args:
        tri: (N, 3, 3) projected triangle vertices; px, py: (N,) pixel centres outside them.
    Returns:
        coverage (N,) = ``2 * sigmoid(-dist / sigma)``, bary (N, 3) of the nearest point of the
        triangle (perspective-correct when ``perspective``).
    """
    dist, t, k, _ = point_triangle(px, py, tri[..., 0], tri[..., 1])
    cover = 2.0 * torch.sigmoid(-dist / sigma)
    ia, ib = (k + 1) % 3, (k + 2) % 3
    wa, wb = 1.0 - t, t
    if perspective:
        wa = wa / tri[..., 2].gather(1, ia[:, None]).squeeze(1)
        wb = wb / tri[..., 2].gather(1, ib[:, None]).squeeze(1)
        s = wa + wb
        wa, wb = wa / s, wb / s
    zero = torch.zeros_like(px)
    bary = torch.stack([zero, zero, zero], 1)
    bary = bary.scatter(1, ia[:, None], wa[:, None]).scatter(1, ib[:, None], wb[:, None])
    return cover, bary


def _gather_corners(table, pix, face, faces, V, HW):
    """Per-vertex rows of the selected faces' corners.

    Args:
        table: (B*V, C) per-vertex values; pix, face: (N,) long.
    Returns:
        (N, 3, C), one gather (and one scatter-add in the backward pass).
    """
    b = torch.div(pix, HW, rounding_mode="floor")
    gi = b[:, None] * V + faces.index_select(0, face)  # (N, 3)
    return table.index_select(0, gi.reshape(-1)).reshape(-1, 3, table.shape[1])


def _pixel_centres(pix, H, W, dtype):
    rem = pix % (H * W)
    py = torch.div(rem, W, rounding_mode="floor").to(dtype) + 0.5
    px = (rem % W).to(dtype) + 0.5
    return px, py


def _background(background, like):
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device).reshape(-1)
    if bg.numel() not in (1, 3):
        raise UserError("background must be a grey level or an RGB triple", None, "give e.g. 0.0 or (1, 1, 1)")
    return bg.expand(3)


def face_planes(tri: torch.Tensor, attrs: torch.Tensor, drawable: torch.Tensor, perspective: bool) -> torch.Tensor:
    """Screen-space plane equations of each face (differentiable, computed once per face).

    A quantity that is linear on screen over a triangle is ``a0 + ax * dx + ay * dy`` with
    ``(dx, dy)`` the pixel centre relative to the face's vertex 0. Orthographic: the
    barycentrics ``w1, w2``, the depth and the attributes are linear. Perspective: ``w_i / z_i``,
    ``1 / z`` and ``attribute / z`` are linear; dividing by the ``1 / z`` plane gives the
    perspective-correct values. Per-pixel work is then one row gather and two multiply-adds
    per quantity, instead of recomputing barycentrics from the three corners at every pixel.

    Args:
        tri: (M, 3, 3) projected corners (pixel x, pixel y, depth).
        attrs: (M, 3, C) per-corner attributes (e.g. lit colours).
        drawable: (M,) bool; other faces get harmless finite planes (never selected).
        perspective: see above.
    Returns:
        (M, 2 + 3 * (3 + C)): ``x0, y0``, then ``a0``, ``ax`` and ``ay`` for each of
        ``[u1, u2, d, attrs...]`` where ``u = w`` and ``d = depth`` (orthographic) or
        ``u_i = w_i / z_i`` and ``d = 1/z`` (perspective).
    """
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    e1x, e1y = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    e2x, e2y = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]
    area2 = e1x * e2y - e2x * e1y
    inv_a = 1.0 / torch.where(drawable, area2, torch.ones_like(area2))
    a1, b1, a2, b2 = e2y * inv_a, -e2x * inv_a, -e1y * inv_a, e1x * inv_a  # w1 = a1 dx + b1 dy, ...
    if perspective:
        q = 1.0 / torch.where(drawable[:, None], z, torch.ones_like(z))  # (M, 3)
        vals = torch.cat([q[..., None], attrs * q[..., None]], -1)  # (M, 3, 1 + C)
        zero = torch.zeros_like(a1)
        u = [torch.stack([zero, a1 * q[:, 1], b1 * q[:, 1]], 1),
             torch.stack([zero, a2 * q[:, 2], b2 * q[:, 2]], 1)]
    else:
        vals = torch.cat([z[..., None], attrs], -1)
        zero = torch.zeros_like(a1)
        u = [torch.stack([zero, a1, b1], 1), torch.stack([zero, a2, b2], 1)]
    d1, d2 = vals[:, 1] - vals[:, 0], vals[:, 2] - vals[:, 0]  # (M, 1 + C)
    planes = torch.stack([vals[:, 0], a1[:, None] * d1 + a2[:, None] * d2,
                          b1[:, None] * d1 + b2[:, None] * d2], -1)  # (M, 1 + C, 3)
    planes = torch.cat([u[0][:, None], u[1][:, None], planes], 1)  # (M, 3 + C, 3)
    return torch.cat([x[:, :1], y[:, :1], planes.transpose(1, 2).reshape(planes.shape[0], -1)], 1)


def eval_planes(rows: torch.Tensor, px: torch.Tensor, py: torch.Tensor, perspective: bool):
    """Evaluate gathered :func:`face_planes` rows at pixel centres.

    Args:
        rows: (N, 2 + 3 * (3 + C)); px, py: (N,).
    Returns:
        bary (3, N), depth (N,), attrs (C, N), perspective-correct when ``perspective``.
    """
    m = (rows.shape[1] - 2) // 3
    # quantity-major (rows of N): the per-pixel arithmetic runs on long contiguous vectors
    x0, y0, a0, ax, ay = rows.T.contiguous().split([1, 1, m, m, m], dim=0)
    v = a0 + ax * (px - x0) + ay * (py - y0)  # (3 + C, N)
    u, d, attrs = v.split([2, 1, m - 3], dim=0)
    if perspective:
        inv = 1.0 / d
        u, d, attrs = u * inv, inv, attrs * inv
    return torch.cat([1.0 - u.sum(0, keepdim=True), u], 0), d[0], attrs


def vertex_colors(verts, faces, camera, colors, lights, gray: bool):
    """Gouraud lighting at the vertices. Returns (B*V, C): lit RGB, or its luma if ``gray``."""
    B, V = verts.shape[:2]
    normals = torch.matmul(vertex_normals(verts, faces), camera.R.transpose(1, 2)).reshape(B * V, 3)
    albedo = torch.full_like(normals, GREY) if colors is None else colors.expand(B, V, 3).reshape(B * V, 3)
    lit = lambert(normals, albedo, lights)
    return lit @ torch.tensor(LUMA, dtype=lit.dtype, device=lit.device)[:, None] if gray else lit


def render_mesh(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, colors=None,
                lights: Lights | None = None, background: float | Sequence[float] = 0.0,
                sigma: float = DEFAULT_SIGMA, backend: str = "auto", cutoff: float = 4.0,
                cull_backfaces: bool = False) -> RenderOutput:
    """Render a batch of meshes (differentiable w.r.t. ``verts`` and ``colors``).

    Args:
        verts: (B, V, 3) world coordinates (float32 or float64; any device).
        faces: (F, 3) long, shared by the batch.
        camera: a :class:`Camera` with batch 1 or B.
        colors: None (grey), (V, 3) or (B, V, 3) per-vertex albedo in [0, 1].
        lights: :class:`Lights` in the camera frame (None: key + fill light and ambient).
        background: grey level or RGB of empty pixels.
        sigma: outline softness in pixels (0: hard edges only, no outline gradient).
        backend: ``"auto"`` (pytorch3d's rasterizer when it imports, else ours), ``"torch"`` or
            ``"pytorch3d"``. Only the discrete hard-layer search differs between backends.
        cutoff: outline radius in units of sigma (coverage beyond it is treated as 0).
        cull_backfaces: skip faces seen from behind (faster for closed meshes).
    Returns:
        :class:`RenderOutput` with (B, H, W, ...) buffers.
    """
    return render(verts, faces, camera, colors, lights, background, sigma, backend, cutoff, cull_backfaces)


def render(verts, faces, camera, colors=None, lights=None, background=0.0, sigma=DEFAULT_SIGMA,
           backend="auto", cutoff=4.0, cull_backfaces=False, gray: bool = False) -> RenderOutput:
    """:func:`render_mesh`, with ``gray=True`` giving (B, H, W, 1) luma images (cheaper)."""
    faces, colors = _check_inputs(verts, faces, camera, colors)
    if sigma < 0:
        raise UserError(f"sigma must be >= 0, got {sigma}", None, "give an outline width in pixels")
    camera = camera.to(device=verts.device, dtype=verts.dtype)
    B, V = verts.shape[:2]
    F = faces.shape[0]
    H, W = camera.image_size
    HW, N = H * W, B * H * W
    pv = camera.project(verts)
    frag = _rasterize(pv, faces, camera, sigma, cutoff, cull_backfaces, backend)
    vcol = vertex_colors(verts, faces, camera, colors, lights, gray)  # (B*V, C)
    C = vcol.shape[1]
    bg = _background(background, verts)
    if gray:
        bg = (bg @ torch.tensor(LUMA, dtype=bg.dtype, device=bg.device)).reshape(1)

    # hard layer: per-face planes, evaluated at the selected pixels
    hp, hb = frag.hard_pix, torch.div(frag.hard_pix, HW, rounding_mode="floor")
    used = torch.zeros(B * F, dtype=torch.bool, device=verts.device)
    used[hb * F + frag.hard_face] = True
    fid = torch.nonzero(used).squeeze(1)  # (M,) b * F + f of the faces seen somewhere
    slot = torch.zeros(B * F, dtype=torch.long, device=verts.device)
    slot[fid] = torch.arange(fid.shape[0], device=verts.device)
    corner = torch.div(fid, F, rounding_mode="floor")[:, None] * V + faces[fid % F]  # (M, 3)
    tri = pv.reshape(B * V, 3).index_select(0, corner.reshape(-1)).reshape(-1, 3, 3)
    attrs = vcol.index_select(0, corner.reshape(-1)).reshape(-1, 3, C)
    planes = face_planes(tri, attrs, torch.ones_like(fid, dtype=torch.bool), camera.perspective)
    hx, hy = _pixel_centres(hp, H, W, verts.dtype)
    hs = slot[hb * F + frag.hard_face]
    bary_h, depth_h, col_h = eval_planes(planes.index_select(0, hs), hx, hy, camera.perspective)

    image = bg[:, None].expand(C, N).contiguous().index_copy(1, hp, col_h)  # (C, B*H*W)
    alpha = verts.new_zeros(N).index_put((hp,), torch.ones_like(depth_h))
    if frag.soft_pix.numel() > 0:
        sp, sf = frag.soft_pix, frag.soft_face
        sx, sy = _pixel_centres(sp, H, W, verts.dtype)
        tri_s = _gather_corners(pv.reshape(B * V, 3), sp, sf, faces, V, HW)
        cover, bary_s = soft_coverage(tri_s, sx, sy, camera.perspective, sigma)
        col_s = (bary_s[..., None] * _gather_corners(vcol, sp, sf, faces, V, HW)).sum(1).T  # (C, Ns)
        image = image.index_copy(1, sp, cover * col_s + (1 - cover) * image.index_select(1, sp))
        alpha = alpha.index_put((sp,), cover + (1 - cover) * alpha[sp])

    depth = torch.full((N,), float("inf"), dtype=verts.dtype, device=verts.device).index_put((hp,), depth_h)
    face_index = torch.full((N,), -1, dtype=torch.long, device=verts.device)
    face_index[hp] = frag.hard_face
    bary = verts.new_zeros(3, N).index_copy(1, hp, bary_h)
    images = image.reshape(C, B, H, W).permute(1, 2, 3, 0)
    return RenderOutput(images=images if C == 1 else images.contiguous(), alpha=alpha.reshape(B, H, W),
                        depth=depth.reshape(B, H, W), face_index=face_index.reshape(B, H, W),
                        bary=bary.reshape(3, B, H, W).permute(1, 2, 3, 0))
