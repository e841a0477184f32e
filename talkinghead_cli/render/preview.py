"""Preview frames: the renderer with hard edges, grey, no gradients (``avtalk render``, the MP4
of ``avtalk animate``).

The pixels are ``render_mesh(verts, faces, camera, sigma=0)``'s, through the same parts: the
hard layer of :mod:`.rasterize` (inside test without tolerance; ties in depth go to the larger
face index), Gouraud grey of :mod:`.shade` and the per-pixel interpolation of
:mod:`.renderer`. On CPU with numba, the compiled kernels of those parts run directly:
:func:`.shade_jit.grey_vertex_shading`, then :func:`.rasterize_jit.hard_image`, the compiled
hard layer's own loop interpolating the grey as a face wins a pixel (the hard-layer colour of
:mod:`.composite_jit`), so no face map and no second pass over the image. Elsewhere (CUDA, no
numba) :func:`preview_frames` is ``render(..., sigma=0)`` itself, the readable reference the
tests compare with.
Shapes: B frames, V vertices, F faces, H x W image.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from talkinghead_cli.render import rasterize_jit, shade_jit
from talkinghead_cli.render.camera import Camera
from talkinghead_cli.render.renderer import GREY, render
from talkinghead_cli.render.shade import Lights


def crop(camera: Camera, window: tuple[int, int, int, int]) -> Camera:
    """The camera whose image is the ``(top, left, height, width)`` rectangle of ``camera``'s."""
    top, left, height, width = window
    shift = camera.principal.new_tensor([float(left), float(top)])
    return replace(camera, principal=camera.principal - shift, image_size=(height, width))


def use_jit(verts: torch.Tensor, camera: Camera) -> bool:
    """Whether :func:`preview_frames` takes the compiled kernels (CPU float32/float64,
    orthographic camera, numba installed)."""
    return (verts.device.type == "cpu" and verts.dtype in (torch.float32, torch.float64)
            and not camera.perspective and rasterize_jit.available())


def preview_frames(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, cull: bool = False,
                   window: tuple[int, int, int, int] | None = None, jit: bool | None = None) -> torch.Tensor:
    """Grey front renders with hard edges (grey albedo, the default lights, black background).

    Args:
        verts: (B, V, 3) float.
        faces: (F, 3) long on the same device.
        camera: an orthographic :class:`Camera` with batch 1.
        cull: skip faces seen from behind (faster; wrong where the inside of the mesh shows).
        window: ``(top, left, height, width)``: render only this rectangle of the image.
        jit: the compiled kernels (None: :func:`use_jit`); False: ``render(..., sigma=0)``.
    Returns:
        (B, H, W) grey in [0, 1]; (B, height, width) with ``window``.
    """
    if camera.perspective or camera.batch_size != 1:
        raise ValueError("preview_frames needs one orthographic camera")
    if window is not None:
        camera = crop(camera, window)
    height, width = camera.image_size
    with torch.no_grad():
        if jit is None:
            jit = use_jit(verts, camera)
        if not jit:
            out = render(verts, faces, camera, sigma=0.0, cull_backfaces=cull, gray=True, buffers=False)
            return out.images[..., 0]
        camera = camera.to(dtype=verts.dtype)
        pv = camera.project(verts).contiguous().numpy()
        f = faces.contiguous().numpy()
        area2, valid = rasterize_jit.face_setup(pv, f, False, cull)
        grey = shade_jit.grey_vertex_shading(verts, faces, camera.R, Lights(), GREY).numpy()
        image = rasterize_jit.hard_image(pv, f, area2, valid, grey, height, width)
    return torch.from_numpy(image).reshape(-1, height, width)
