"""Hard-layer search with pytorch3d's rasterizer (used when ``import pytorch3d`` works).

Only the discrete choice "nearest face covering each pixel centre" is delegated to pytorch3d's
compiled (CPU/CUDA) rasterizer; the soft outline layer, barycentrics, shading and gradients are
our own code (:mod:`.rasterize`, :mod:`.renderer`), so both backends render the same images.

Coordinates: our projected vertices (pixel x right, pixel y down, depth) are mapped to
pytorch3d's NDC (+X left, +Y up, +Z into the screen; the shorter image side spans [-1, 1]):
``X = (W - 2 x) / S``, ``Y = (H - 2 y) / S``, ``Z = depth`` with ``S = min(H, W)``, so our
pixel centres ``x = j + 0.5`` land exactly on pytorch3d's pixel centres. pytorch3d skips
points at negative depth, so this backend needs depths > 0 (any perspective camera, and the
orthographic cameras of :func:`~.camera.front_camera`).
"""

from __future__ import annotations

import torch

from talkinghead_cli.render.rasterize import Fragments, rasterize


def _hard_layer_pytorch3d(pv, faces, valid, image_size, perspective):
    """(pix, face) of the nearest covering face per pixel, via ``rasterize_meshes``.

    Args:
        pv: (B, V, 3) projected vertices; faces: (F, 3); valid: (B, F) bool faces to draw.
    Returns:
        pix (N,) flat pixel indices, face (N,) face indices.
    """
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    H, W = image_size
    S = float(min(H, W))
    ndc = torch.stack([(W - 2 * pv[..., 0]) / S, (H - 2 * pv[..., 1]) / S, pv[..., 2]], -1)
    # per-item face lists hold only the drawable faces; ``ids`` maps packed indices back
    face_lists = [faces[valid[b]] for b in range(pv.shape[0])]
    ids = torch.cat([torch.nonzero(valid[b]).squeeze(1) for b in range(pv.shape[0])])
    meshes = Meshes(verts=list(ndc.float()), faces=face_lists)
    # coarse-to-fine binning drops faces when a bin overflows: allow every face in a bin
    pix_to_face, _, _, _ = rasterize_meshes(meshes, image_size=(H, W), blur_radius=0.0, faces_per_pixel=1,
                                            max_faces_per_bin=max(int(faces.shape[0]), 1),
                                            perspective_correct=False, cull_backfaces=False)
    p2f = pix_to_face[..., 0].reshape(-1)
    pix = torch.nonzero(p2f >= 0).squeeze(1)
    return pix, ids[p2f[pix]]


def rasterize_pytorch3d(pv, faces, image_size, perspective, sigma, cutoff=4.0, cull_backfaces=False) -> Fragments:
    """:func:`.rasterize.rasterize` with pytorch3d finding the hard layer (same arguments)."""
    return rasterize(pv, faces, image_size, perspective, sigma, cutoff, cull_backfaces,
                     hard_layer=_hard_layer_pytorch3d)
