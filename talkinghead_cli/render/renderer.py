"""``render_mesh``: batched, differentiable rendering of triangle meshes.

Pipeline: project the vertices with the :class:`~.camera.Camera`; find, without autograd, the
hard layer (nearest covering face per pixel) and the soft outline layer (see
:mod:`.rasterize`); then recompute *with* autograd only the selected (pixel, face) pairs:
barycentrics (perspective-correct for a perspective camera), depth, interpolated vertex normals
and colours, ambient + Lambert shading, and the outline coverage ``2 * sigmoid(-dist / sigma)``.
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


def _shade_pairs(pix, face, bary, normals, albedo, faces, lights, V, HW):
    """Colour of surface points. normals/albedo: (B*V, 3) flat; returns (N, 3)."""
    b = torch.div(pix, HW, rounding_mode="floor")
    gi = b[:, None] * V + faces[face]  # (N, 3)
    n = (bary[..., None] * normals[gi]).sum(1)
    alb = (bary[..., None] * albedo[gi]).sum(1) if albedo is not None else torch.full_like(n, GREY)
    return lambert(n, alb, lights), gi


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
    faces, colors = _check_inputs(verts, faces, camera, colors)
    if sigma < 0:
        raise UserError(f"sigma must be >= 0, got {sigma}", None, "give an outline width in pixels")
    camera = camera.to(device=verts.device, dtype=verts.dtype)
    B, V = verts.shape[:2]
    H, W = camera.image_size
    HW = H * W
    pv = camera.project(verts)
    frag = _rasterize(pv, faces, camera, sigma, cutoff, cull_backfaces, backend)

    normals = torch.matmul(vertex_normals(verts, faces), camera.R.transpose(1, 2)).reshape(B * V, 3)
    albedo = None if colors is None else colors.expand(B, V, 3).reshape(B * V, 3)
    pv_flat = pv.reshape(B * V, 3)

    hp, hf = frag.hard_pix, frag.hard_face
    hx, hy = _pixel_centres(hp, H, W, verts.dtype)
    hb = torch.div(hp, HW, rounding_mode="floor")
    tri = pv_flat[hb[:, None] * V + faces[hf]]
    bary_h, depth_h = hard_barycentrics(tri, hx, hy, camera.perspective)
    col_h, _ = _shade_pairs(hp, hf, bary_h, normals, albedo, faces, lights, V, HW)

    N = B * HW
    image = _background(background, verts).expand(N, 3).contiguous().index_put((hp,), col_h)
    alpha = verts.new_zeros(N).index_put((hp,), torch.ones_like(depth_h))
    if frag.soft_pix.numel() > 0:
        sp, sf = frag.soft_pix, frag.soft_face
        sx, sy = _pixel_centres(sp, H, W, verts.dtype)
        sb = torch.div(sp, HW, rounding_mode="floor")
        cover, bary_s = soft_coverage(pv_flat[sb[:, None] * V + faces[sf]], sx, sy, camera.perspective, sigma)
        col_s, _ = _shade_pairs(sp, sf, bary_s, normals, albedo, faces, lights, V, HW)
        a = cover[:, None]
        image = image.index_put((sp,), a * col_s + (1 - a) * image[sp])
        alpha = alpha.index_put((sp,), cover + (1 - cover) * alpha[sp])

    depth = torch.full((N,), float("inf"), dtype=verts.dtype, device=verts.device).index_put((hp,), depth_h)
    face_index = torch.full((N,), -1, dtype=torch.long, device=verts.device)
    face_index[hp] = hf
    bary = verts.new_zeros(N, 3).index_put((hp,), bary_h)
    return RenderOutput(images=image.reshape(B, H, W, 3), alpha=alpha.reshape(B, H, W),
                        depth=depth.reshape(B, H, W), face_index=face_index.reshape(B, H, W),
                        bary=bary.reshape(B, H, W, 3))
