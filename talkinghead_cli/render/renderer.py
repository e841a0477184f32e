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

CPU fast paths (numba), each tested against the PyTorch code it replaces: the layer search
(:mod:`.rasterize_jit`), grey vertex shading (:mod:`.shade_jit`), and, for one-channel images
under an orthographic camera without buffers (lip windows), the whole per-pixel stage
(:mod:`.composite_jit`, see :func:`jit_composite`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.render import composite_jit, shade_jit
from talkinghead_cli.render.camera import Camera
from talkinghead_cli.render.rasterize import Fragments, point_triangle, rasterize
from talkinghead_cli.render.shade import Lights, lambert, vertex_normals

BACKENDS = ("auto", "torch", "pytorch3d")
GREY = 0.7
LUMA = (0.299, 0.587, 0.114)
DEFAULT_SIGMA = 0.5
CHUNK_PIXELS = 1 << 21  # CPU batches are rendered in chunks of about this many pixels


@dataclass
class RenderOutput:
    """Rendered images and per-pixel buffers.

    Attributes:
        images: (B, H, W, 3) float in [0, 1].
        alpha: (B, H, W) coverage in [0, 1].
        depth: (B, H, W) depth of the hard layer, ``inf`` where no face covers the pixel.
        face_index: (B, H, W) long index of the hard-layer face, -1 on background.
        bary: (B, H, W, 3) (perspective-correct) barycentrics of the hard layer, 0 on background.

    ``images`` and ``alpha`` are differentiable; ``depth``, ``face_index`` and ``bary`` are
    detached buffers. With the default grey albedo, ``images`` is one grey channel expanded to
    three (a view: call ``.contiguous()`` before editing it in place).
    """

    images: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    face_index: torch.Tensor
    bary: torch.Tensor


@functools.lru_cache(maxsize=1)
def pytorch3d_available() -> bool:
    """True when ``import pytorch3d`` works (its rasterizer is then used for the hard layer).
    Checked once per process (a failed import is not cached by Python and costs milliseconds)."""
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


def face_planes(tri: torch.Tensor, attrs: torch.Tensor | None, perspective: bool, bary: bool = False):
    """Screen-space plane equations of each face (differentiable, computed once per face).

    A quantity that is linear on screen over a triangle is ``a0 + ax * dx + ay * dy`` with
    ``(dx, dy)`` the pixel centre relative to the face's vertex 0. Orthographic: barycentrics,
    depth and attributes are linear. Perspective: ``w_i / z_i``, ``1 / z`` and
    ``attribute / z`` are linear; dividing by the ``1 / z`` plane gives the perspective-correct
    values. Per-pixel work is then a few gathers and two multiply-adds per quantity, instead
    of recomputing barycentrics from the three corners at every pixel.

    Args:
        tri: (M, 3, 3) projected corners (pixel x, pixel y, depth) of drawable faces.
        attrs: (M, 3, C) per-corner attributes (e.g. lit colours), or None.
        perspective: see above.
        bary: also include the planes of ``w1, w2`` and depth.
    Returns:
        ``x0, y0`` (M,) and a list of planes ``(a0, ax, ay)`` of (M,) tensors, for the quantities
        ``[u1, u2, d]`` if ``bary``, then ``q = 1/z`` (perspective only), then the attributes
        (times ``q`` when perspective); ``u = w`` and ``d = depth`` (orthographic) or
        ``u_i = w_i / z_i`` and ``d = 1/z`` (perspective).
    """
    x, y, z = tri.unbind(-1)  # (M, 3) each
    x0, x1, x2 = x.unbind(1)
    y0, y1, y2 = y.unbind(1)
    e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    inv_a = 1.0 / (e1x * e2y - e2x * e1y)
    a1, b1, a2, b2 = e2y * inv_a, -e2x * inv_a, -e1y * inv_a, e1x * inv_a  # w1 = a1 dx + b1 dy, ...
    vals, planes = [], []
    if perspective:
        q = 1.0 / z  # (M, 3)
        vals.append(q[..., None])
        if attrs is not None:
            vals.append(attrs * q[..., None])
        if bary:
            zero = torch.zeros_like(a1)
            planes = [(zero, a1 * q[:, 1], b1 * q[:, 1]), (zero, a2 * q[:, 2], b2 * q[:, 2])]
    else:
        if bary:
            zero = torch.zeros_like(a1)
            planes = [(zero, a1, b1), (zero, a2, b2)]
            vals.append(z[..., None])
        if attrs is not None:
            vals.append(attrs)
    v0, v1, v2 = torch.cat(vals, -1).unbind(1)  # (M, Q') each
    d1, d2 = v1 - v0, v2 - v0
    ax = a1[:, None] * d1 + a2[:, None] * d2
    ay = b1[:, None] * d1 + b2[:, None] * d2
    planes += list(zip(v0.unbind(1), ax.unbind(1), ay.unbind(1)))
    return x0, y0, planes


def eval_planes(x0, y0, planes, idx: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> list[torch.Tensor]:
    """Evaluate :func:`face_planes` at pixel centres.

    Args:
        x0, y0, planes: from :func:`face_planes` ((M,) tensors).
        idx: (N,) long face row of each pixel; px, py: (N,) pixel centres.
    Returns:
        one (N,) tensor per plane. Everything runs on 1-D gathers and contiguous (N,) vectors.
    """
    dx = px - x0.index_select(0, idx)
    dy = py - y0.index_select(0, idx)
    return [torch.addcmul(torch.addcmul(a0.index_select(0, idx), ax.index_select(0, idx), dx),
                          ay.index_select(0, idx), dy) for a0, ax, ay in planes]


def _hard_buffers(tri, idx, px, py, perspective):
    """Barycentrics (N, 3) and depth (N,) of the hard layer, without autograd."""
    with torch.no_grad():
        x0, y0, planes = face_planes(tri.detach(), None, perspective, bary=True)
        u1, u2, d = eval_planes(x0, y0, planes, idx, px, py)
        if perspective:
            d = 1.0 / d
            u1, u2 = u1 * d, u2 * d
        return torch.stack([1.0 - u1 - u2, u1, u2], 1), d


def jit_shading(verts: torch.Tensor, camera: Camera) -> bool:
    """Whether :func:`vertex_colors` takes the compiled grey shading of :mod:`.shade_jit`
    (CPU float32/float64, numba installed, a camera rotation that needs no gradient)."""
    return (verts.device.type == "cpu" and verts.dtype in (torch.float32, torch.float64)
            and not camera.R.requires_grad and shade_jit.available())


def jit_composite(verts: torch.Tensor, camera: Camera, channels: int, buffers: bool) -> bool:
    """Whether :func:`render` composites with the compiled kernels of :mod:`.composite_jit`
    (CPU float32/float64, numba installed, one grey channel, an orthographic camera, no buffers)."""
    return (verts.device.type == "cpu" and verts.dtype in (torch.float32, torch.float64) and channels == 1
            and not camera.perspective and not buffers and composite_jit.available())


def vertex_colors(verts, faces, camera, colors, lights, gray: bool):
    """Gouraud lighting at the vertices.

    Returns (B*V, C): lit RGB (C = 3), its luma if ``gray``, or, for the default grey albedo,
    the single grey channel (C = 1) that all three channels share.
    """
    B, V = verts.shape[:2]
    if colors is None and jit_shading(verts, camera):
        return shade_jit.grey_vertex_shading(verts, faces, camera.R, lights or Lights(), GREY).reshape(B * V, 1)
    normals = camera.rotate(vertex_normals(verts, faces)).reshape(B * V, 3)
    if colors is None:
        return lambert(normals, torch.full_like(normals[:, :1], GREY), lights)
    lit = lambert(normals, colors.expand(B, V, 3).reshape(B * V, 3), lights)
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
           backend="auto", cutoff=4.0, cull_backfaces=False, gray: bool = False,
           buffers: bool = True) -> RenderOutput:
    """:func:`render_mesh`, with ``gray=True`` giving (B, H, W, 1) luma images and
    ``buffers=False`` skipping depth, face index and barycentrics (left None): the cheap path
    of lip windows."""
    faces, colors = _check_inputs(verts, faces, camera, colors)
    if sigma < 0:
        raise UserError(f"sigma must be >= 0, got {sigma}", None, "give an outline width in pixels")
    camera = camera.to(device=verts.device, dtype=verts.dtype)
    B, V = verts.shape[:2]
    chunk = max(1, CHUNK_PIXELS // (camera.image_size[0] * camera.image_size[1]))
    if B > chunk and verts.device.type == "cpu":  # keep the working set cache-sized on CPU
        parts = [render(verts[i:i + chunk], faces, camera if camera.batch_size == 1 else camera[i:i + chunk],
                        None if colors is None else colors if colors.shape[0] == 1 else colors[i:i + chunk],
                        lights, background, sigma, backend, cutoff, cull_backfaces, gray, buffers)
                 for i in range(0, B, chunk)]
        cat = lambda name: None if getattr(parts[0], name) is None else torch.cat(  # noqa: E731
            [getattr(p, name) for p in parts])
        out = RenderOutput(*(cat(name) for name in ("images", "alpha", "depth", "face_index", "bary")))
        if parts[0].images.stride(-1) == 0:  # grey shown as RGB: keep one channel, expanded
            out.images = torch.cat([p.images[..., :1] for p in parts]).expand(-1, -1, -1, 3)
        return out
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
    elif C == 1 and not bool((bg == bg[0]).all()):  # grey mesh on a coloured background
        vcol, C = vcol.expand(-1, 3), 3
    elif C == 1:
        bg = bg[:1]

    if jit_composite(verts, camera, C, buffers) and not bg.requires_grad:  # (a learnt background: the reference)
        image, alpha = composite_jit.grey_composite(pv, vcol.reshape(B, V), faces, frag, float(bg[0]), sigma)
        images = image.reshape(B, H, W, C)
        if not gray:  # grey: one channel computed, shown as RGB (an expanded view)
            images = images.expand(B, H, W, 3)
        return RenderOutput(images=images, alpha=alpha.reshape(B, H, W), depth=None, face_index=None, bary=None)

    # hard layer: planes of the faces it uses, evaluated at its pixels
    hp, hf = frag.hard_pix, frag.hard_face
    hbf = torch.div(hp, HW, rounding_mode="floor") * F + hf  # (Nh,) b * F + f
    used = torch.zeros(B * F, dtype=torch.bool, device=verts.device)
    used[hbf] = True
    fid = torch.nonzero(used).squeeze(1)  # (M,)
    slot = torch.zeros(B * F, dtype=torch.long, device=verts.device)
    slot[fid] = torch.arange(fid.shape[0], device=verts.device)
    hs = slot[hbf]
    corner = (torch.div(fid, F, rounding_mode="floor")[:, None] * V + faces[fid % F]).reshape(-1)
    tri = pv.reshape(B * V, 3).index_select(0, corner).reshape(-1, 3, 3)
    attrs = vcol.index_select(0, corner).reshape(-1, 3, C)
    hx, hy = _pixel_centres(hp, H, W, verts.dtype)
    v = eval_planes(*face_planes(tri, attrs, camera.perspective), hs, hx, hy)
    if camera.perspective:
        inv = 1.0 / v[0]
        v = [c * inv for c in v[1:]]
    col_h = torch.stack(v, 1)  # (Nh, C)

    image = bg.expand(N, C).contiguous()
    image.index_put_((hp,), col_h)
    covered = torch.zeros(N, dtype=torch.bool, device=verts.device)
    covered[hp] = True
    alpha = covered.to(verts.dtype)
    if frag.soft_pix.numel() > 0:
        sp, sf = frag.soft_pix, frag.soft_face
        sx, sy = _pixel_centres(sp, H, W, verts.dtype)
        tri_s = _gather_corners(pv.reshape(B * V, 3), sp, sf, faces, V, HW)
        cover, bary_s = soft_coverage(tri_s, sx, sy, camera.perspective, sigma)
        col_s = (bary_s[..., None] * _gather_corners(vcol, sp, sf, faces, V, HW)).sum(1)  # (Ns, C)
        a = cover[:, None]
        image.index_put_((sp,), a * col_s + (1 - a) * image[sp])
        alpha.index_put_((sp,), cover + (1 - cover) * alpha[sp])

    depth = face_index = bary = None
    if buffers:
        bary_h, depth_h = _hard_buffers(tri, hs, hx, hy, camera.perspective)
        depth = torch.full((N,), float("inf"), dtype=verts.dtype, device=verts.device)
        depth[hp] = depth_h
        face_index = torch.full((N,), -1, dtype=torch.long, device=verts.device)
        face_index[hp] = hf
        bary = verts.new_zeros(N, 3)
        bary[hp] = bary_h
        depth, face_index, bary = depth.reshape(B, H, W), face_index.reshape(B, H, W), bary.reshape(B, H, W, 3)
    images = image.reshape(B, H, W, C)
    if C == 1 and not gray:  # grey: one channel computed, shown as RGB (an expanded view)
        images = images.expand(B, H, W, 3)
    return RenderOutput(images=images, alpha=alpha.reshape(B, H, W), depth=depth,
                        face_index=face_index, bary=bary)
