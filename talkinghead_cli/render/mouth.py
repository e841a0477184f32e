"""Lip-window renders for the lip-reading loss: a zoomed camera, not a crop.

The window is a square on the image plane of a base camera (default: an orthographic front
view), centred on the projected centroid of a vertex region (the lips) and sized from the
region's projected extent over the whole sequence plus a margin. It is computed once per
sequence, so the lips move inside a steady window as they do in a lip-reading video crop. The
camera is then *zoomed* onto the window (an affine change of the image plane), faces that do not
reach the window are dropped before rasterisation, and only the N x N window is rendered.

Training batches of several sequences: one window per sequence, repeated for its frames, e.g.
``Camera.cat([lip_window_camera(seq, lips) for seq in batch]).repeat_interleave(T)`` for
``batch: (B, T, V, 3)``, then ``render_lip_windows(batch.flatten(0, 1), faces, lips, camera=cam)``.

Output normalisation: grayscale ``g = 0.299 R + 0.587 G + 0.114 B`` in [0, 1], then
``(g - 0.421) / 0.165``, the mean/std Auto-AVSR applies to its [0, 1] grayscale lip crops.
"""

from __future__ import annotations

import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.render import project_jit
from talkinghead_cli.render.camera import Camera
from talkinghead_cli.render.renderer import DEFAULT_SIGMA, render
from talkinghead_cli.render.shade import Lights

AVSR_MEAN = 0.421
AVSR_STD = 0.165


def _default_base(verts: torch.Tensor) -> Camera:
    """Orthographic front view with unit focal: pixel coordinates = world x, -y."""
    zmax = float(verts[..., 2].max())
    one = torch.ones(1, 2, dtype=verts.dtype, device=verts.device)
    return Camera(R=torch.eye(3, dtype=verts.dtype, device=verts.device)[None],
                  T=torch.tensor([[0.0, 0.0, -(zmax + 1.0)]], dtype=verts.dtype, device=verts.device),
                  focal=one, principal=torch.zeros_like(one), image_size=(1, 1), projection="ortho")


def _region(verts: torch.Tensor, region_idx) -> tuple[torch.Tensor, torch.Tensor]:
    verts = torch.as_tensor(verts).detach()
    if verts.dim() == 2:
        verts = verts[None]
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise UserError(f"verts must be (T, V, 3) or (V, 3), got {tuple(verts.shape)}", None,
                        "give a mesh sequence")
    idx = torch.as_tensor(region_idx, device=verts.device).long().reshape(-1)
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= verts.shape[1]:
        raise UserError("lip region indices are empty or out of range for the mesh", None,
                        "check the region file against the template")
    return verts, idx


def lip_window_camera(verts: torch.Tensor, region_idx, size: int = 88, margin: float = 0.3,
                      base: Camera | None = None) -> Camera:
    """A camera whose ``size x size`` image is a steady square window around a region.

    Args:
        verts: (T, V, 3) sequence or (V, 3) mesh (not differentiated: the window is fixed).
        region_idx: (R,) long vertex indices of the region (e.g. the lips).
        size: output side in pixels.
        margin: extra border as a fraction of the region's size (0.3: the window side is 1.3x
            the region's largest projected extent over the sequence).
        base: camera whose view and projection to zoom (batch 1); default an orthographic
            front view.
    Returns:
        :class:`Camera` with batch 1 and image size ``(size, size)``.
    """
    verts, idx = _region(verts, region_idx)
    base = base if base is not None else _default_base(verts)
    base = base.to(device=verts.device, dtype=verts.dtype)
    if base.batch_size != 1:
        raise UserError("the base camera for a lip window must be a single view", None, "pass camera[0]")
    p = base.project(verts[:, idx])  # (T, R, 3)
    cx, cy = p[..., 0].mean(), p[..., 1].mean()
    half = torch.maximum((p[..., 0] - cx).abs().max(), (p[..., 1] - cy).abs().max()).clamp_min(1e-6)
    side = 2.0 * half * (1.0 + margin)
    return base.zoom(cx - side / 2, cy - side / 2, side, size)


def window_faces(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, pad: float = 4.0) -> torch.Tensor:
    """Faces needed to render the camera's window: those whose screen box (taken over the whole
    batch, a conservative union) comes within ``pad`` pixels of the window, plus their neighbours
    through shared vertices so that vertex normals at the window's edge stay exact.

    Args:
        verts: (B, V, 3); faces: (F, 3) long; camera: batch 1 or B.
    Returns:
        (F', 3) long subset of ``faces``.
    """
    with torch.no_grad():
        H, W = camera.image_size
        camera = camera.to(device=verts.device, dtype=verts.dtype)
        if camera.jit_projection(verts):  # the same boxes, without the projected batch
            lo, hi = project_jit.screen_bounds(verts, camera)
        else:
            pv = camera.project(verts.detach())[..., :2]
            lo, hi = pv.min(0).values, pv.max(0).values  # (V, 2) per-vertex union
        lo, hi = lo[faces].min(1).values, hi[faces].max(1).values  # (F, 2)
        hit = (hi[:, 0] >= -pad) & (lo[:, 0] <= W + pad) & (hi[:, 1] >= -pad) & (lo[:, 1] <= H + pad)
        touched = torch.zeros(verts.shape[1], dtype=torch.bool, device=verts.device)
        touched[faces[hit].reshape(-1)] = True
        return faces[touched[faces].any(1)]


def compact(verts: torch.Tensor, faces: torch.Tensor, colors=None):
    """Keep only the vertices that ``faces`` use (differentiable gather).

    Args:
        verts: (B, V, 3); faces: (F', 3) long; colors: None, (V, 3) or (B, V, 3).
    Returns:
        verts (B, V', 3), faces (F', 3) re-indexed, colors restricted alike.
    """
    used, remap = torch.unique(faces, return_inverse=True)
    if colors is not None:
        colors = torch.as_tensor(colors, device=verts.device, dtype=verts.dtype)
        colors = colors.index_select(colors.dim() - 2, used)
    return verts.index_select(1, used), remap.reshape(faces.shape), colors


def window_mesh(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, sigma: float = DEFAULT_SIGMA,
                colors=None):
    """The part of a mesh batch that a lip window needs: :func:`window_faces` (with a margin for
    the soft outline of width ``sigma``), then :func:`compact`.

    Args:
        verts: (N, V, 3); faces: (F, 3) long; camera: batch 1 or N; colors: as :func:`compact`.
    Returns:
        verts (N, V', 3), faces (F', 3), colors, as :func:`compact`.
    """
    sub = window_faces(verts, faces, camera, pad=4.0 * sigma + 2.0)
    if sub.shape[0] == 0:
        raise UserError("no face of the mesh reaches the lip window", None, "check the lip region indices")
    return compact(verts, sub, colors)


def render_lip_windows(verts: torch.Tensor, faces: torch.Tensor, region_idx, size: int = 88,
                       camera: Camera | None = None, margin: float = 0.3, colors=None,
                       lights: Lights | None = None, sigma: float = DEFAULT_SIGMA, normalize: bool = True,
                       background: float = 0.0, backend: str = "auto",
                       cull_backfaces: bool = True, resample=None) -> torch.Tensor:
    """Render grayscale lip windows, batched and differentiable w.r.t. ``verts``.

    Args:
        verts: (N, V, 3) frames (one sequence, or several with per-frame cameras).
        faces: (F, 3) long.
        region_idx: (R,) lip vertex indices (used for the window when ``camera`` is None).
        size: window side in pixels.
        camera: batch 1 or N, e.g. from :func:`lip_window_camera` on the whole sequence; None:
            computed from ``verts`` (treated as one sequence).
        margin, colors, lights, sigma, background, backend: as in
            :func:`lip_window_camera` / :func:`~.renderer.render_mesh`.
        normalize: apply ``(g - 0.421) / 0.165``; otherwise return grayscale in [0, 1].
        cull_backfaces: skip faces seen from behind (default): on a consistently wound face mesh
            these are hidden, except through an open mouth of a mesh without a mouth cavity,
            where they would show the inside of the back of the head; culled, the opening shows
            the background (dark by default), as a mouth cavity would. Halves the work.
        resample: optional map of the window's vertices to the frames to render,
            ``(N, V', 3) -> ((N', V', 3), camera for them)``, applied after the faces are
            chosen (e.g. in time, as :func:`~talkinghead_cli.lipreader.views.lip_video` does);
            ``colors`` must then be per vertex, not per frame.
    Returns:
        (N, size, size) float (N' with ``resample``).
    """
    faces = torch.as_tensor(faces, device=verts.device).long()
    if camera is None:
        camera = lip_window_camera(verts, region_idx, size=size, margin=margin)
    elif camera.image_size != (size, size):
        raise UserError(f"the lip camera renders {camera.image_size}, not {size}x{size}", None,
                        "build it with lip_window_camera(..., size=size)")
    v_sub, f_sub, c_sub = window_mesh(verts, faces, camera, sigma, colors)
    if resample is not None:
        v_sub, camera = resample(v_sub)
    out = render(v_sub, f_sub, camera, colors=c_sub, lights=lights, background=background, sigma=sigma,
                 backend=backend, cull_backfaces=cull_backfaces, gray=True, buffers=False)
    gray = out.images[..., 0]
    return (gray - AVSR_MEAN) / AVSR_STD if normalize else gray
