"""Shading: per-vertex normals from the vertices, ambient + Lambert directional lights.

Everything here is differentiable with respect to the vertex positions: the normals are
recomputed from ``verts`` (never detached), so a loss on pixel intensities reaches the
geometry through the shading as well as through the outlines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Lights:
    """Ambient light plus a few directional lights, in the camera frame.

    ``directions`` point from the surface towards each light (camera frame: +x right, +y up,
    +z towards the camera). Shaded colour = albedo * (ambient + sum_l intensity_l *
    max(0, n . d_l)), with the normal turned towards the camera (two-sided lighting).
    """

    ambient: float = 0.3
    directions: tuple[tuple[float, float, float], ...] = ((0.3, 0.4, 1.0), (-0.6, 0.1, 0.5))
    intensities: tuple[float, ...] = field(default=(0.6, 0.25))

    def direction_tensor(self, like: torch.Tensor) -> torch.Tensor:
        """(Lt, 3) unit directions on ``like``'s device and dtype."""
        d = torch.tensor(self.directions, device=like.device, dtype=like.dtype).reshape(-1, 3)
        return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def intensity_tensor(self, like: torch.Tensor) -> torch.Tensor:
        """(Lt,) intensities."""
        return torch.tensor(self.intensities, device=like.device, dtype=like.dtype).reshape(-1)


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted face normals (not normalised).

    Args:
        verts: (B, V, 3); faces: (F, 3) long.
    Returns:
        (B, F, 3) ``(v1 - v0) x (v2 - v0)``: length = twice the triangle area.
    """
    v0, v1, v2 = verts.index_select(1, faces.reshape(-1)).reshape(verts.shape[0], -1, 3, 3).unbind(2)
    return torch.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals: the area-weighted sum of the adjacent face normals.

    Args:
        verts: (B, V, 3); faces: (F, 3) long.
    Returns:
        (B, V, 3) unit normals (zero vectors stay near zero for isolated vertices).
    """
    B, V = verts.shape[:2]
    fn = face_normals(verts, faces)  # (B, F, 3)
    # one scatter-add of every face normal to its three corners, over the flattened batch
    idx = (torch.arange(B, device=verts.device)[:, None, None] * V + faces[None]).reshape(-1)
    vn = verts.new_zeros(B * V, 3).index_add(0, idx, fn[:, :, None, :].expand(-1, -1, 3, -1).reshape(-1, 3))
    vn = vn.reshape(B, V, 3)
    return vn / vn.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def lambert(normals_cam: torch.Tensor, albedo: torch.Tensor, lights: Lights | None) -> torch.Tensor:
    """Ambient + Lambert shading of surface points.

    Args:
        normals_cam: (N, 3) normals in the camera frame (any length; normalised here).
        albedo: (N, 3) surface colour in [0, 1] (or (N, 1) grey).
        lights: the lights (``None``: default :class:`Lights`).
    Returns:
        (N, 3) (or (N, 1)) shaded colour, clamped to [0, 1].
    """
    lights = lights or Lights()
    n = normals_cam / normals_cam.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # two-sided: a normal pointing away from the camera is flipped (the sign is not differentiated)
    flip = torch.where(n[:, 2:3] < 0, -1.0, 1.0).to(n)
    n = n * flip
    d = lights.direction_tensor(n)
    cos = (n @ d.T).clamp_min(0.0)  # (N, Lt)
    light = lights.ambient + (cos * lights.intensity_tensor(n)).sum(-1, keepdim=True)
    return (albedo * light).clamp(0.0, 1.0)
