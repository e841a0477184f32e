"""Cameras: world -> pixel projection, orthographic or perspective.

Conventions (stated once, used everywhere in ``render/``):

- **World frame** (VOCASET/FLAME): +x to the subject's left as seen by the viewer, i.e. to the
  right in the image; +y up; +z towards the viewer. A face looks along +z.
- **Camera frame**: same handedness as the world; the camera looks along its own -z axis, +x
  right, +y up. ``X_cam = R @ X_world + T``. With ``R = I`` the camera sees the face front-on.
- **Depth** = ``-z_cam``: it grows away from the camera; visible points have depth > 0 for a
  perspective camera (an orthographic camera accepts any depth, smaller is nearer).
- **Image**: pixel x grows to the right, pixel y grows downwards, row 0 is the top row. Pixel
  ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``.
- **Projection**: orthographic ``x = cx + fx * X_cam``, ``y = cy - fy * Y_cam``; perspective
  ``x = cx + fx * X_cam / depth``, ``y = cy - fy * Y_cam / depth``. ``fx, fy`` are in pixels
  (per world unit for orthographic, per unit of ``X/depth`` for perspective); ``(cx, cy)`` is
  the principal point in pixels.

A camera holds a batch of ``Bc`` views (``Bc`` = 1 broadcasts over any mesh batch).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.render import project_jit

PROJECTIONS = ("ortho", "persp")


@dataclass
class Camera:
    """A batch of pinhole or orthographic cameras.

    Attributes:
        R: (Bc, 3, 3) world -> camera rotation.
        T: (Bc, 3) world -> camera translation.
        focal: (Bc, 2) ``(fx, fy)`` in pixels.
        principal: (Bc, 2) ``(cx, cy)`` in pixels.
        image_size: ``(H, W)``.
        projection: ``"ortho"`` or ``"persp"``.
    """

    R: torch.Tensor
    T: torch.Tensor
    focal: torch.Tensor
    principal: torch.Tensor
    image_size: tuple[int, int]
    projection: str = "ortho"

    def __post_init__(self) -> None:
        if self.projection not in PROJECTIONS:
            raise UserError(f"unknown projection {self.projection!r}", None, "use 'ortho' or 'persp'")
        h, w = (int(s) for s in self.image_size)
        if h < 1 or w < 1:
            raise UserError(f"image size must be positive, got {self.image_size}", None,
                            "give a size of at least 1x1 pixels")
        self.image_size = (h, w)

    @property
    def perspective(self) -> bool:
        return self.projection == "persp"

    @property
    def batch_size(self) -> int:
        return int(self.R.shape[0])

    def to(self, device=None, dtype=None) -> "Camera":
        """Move the tensors (rotation, translation, intrinsics) to ``device`` / ``dtype``."""
        conv = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return replace(self, R=conv(self.R), T=conv(self.T), focal=conv(self.focal),
                       principal=conv(self.principal))

    def __getitem__(self, idx) -> "Camera":
        """Select views: ``cam[i]`` (kept as a batch of 1), ``cam[a:b]`` or an index tensor."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return replace(self, R=self.R[idx], T=self.T[idx], focal=self.focal[idx],
                       principal=self.principal[idx])

    def rotate(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors: (B, V, 3) world directions -> camera frame (B, V, 3); a rotation that is
        exactly the identity (front views) and needs no gradient is skipped."""
        R = self.R.to(vectors)
        if not R.requires_grad and bool((R == torch.eye(3, dtype=R.dtype, device=R.device)).all()):
            return vectors
        return torch.matmul(vectors, R.transpose(1, 2))

    def to_camera_frame(self, verts: torch.Tensor) -> torch.Tensor:
        """verts: (B, V, 3) world -> (B, V, 3) camera frame (broadcasts a single camera)."""
        return self.rotate(verts) + self.T.to(verts)[:, None, :]

    def project(self, verts: torch.Tensor) -> torch.Tensor:
        """Project world points to pixels.

        Args:
            verts: (B, V, 3) world coordinates; B must equal the camera batch or the camera
                batch must be 1.
        Returns:
            (B, V, 3): pixel x, pixel y, depth (see the module conventions).
        """
        if verts.dim() != 3 or verts.shape[-1] != 3:
            raise ValueError(f"verts must be (B, V, 3), got {tuple(verts.shape)}")
        if self.batch_size not in (1, verts.shape[0]):
            raise ValueError(f"camera batch {self.batch_size} does not match mesh batch {verts.shape[0]}")
        if self.jit_projection(verts):
            return project_jit.project(verts, self)
        pc = self.to_camera_frame(verts)
        depth = -pc[..., 2]
        x, y = pc[..., 0], pc[..., 1]
        if self.perspective:
            x = x / depth
            y = y / depth
        f = self.focal.to(verts)[:, None, :]
        c = self.principal.to(verts)[:, None, :]
        return torch.stack([c[..., 0] + f[..., 0] * x, c[..., 1] - f[..., 1] * y, depth], dim=-1)

    def jit_projection(self, verts: torch.Tensor) -> bool:
        """Whether :meth:`project` takes the compiled orthographic projection of
        :mod:`.project_jit` (orthographic, CPU float32/float64 points, numba installed, camera
        parameters that need no gradient); the code above is its reference."""
        return (not self.perspective and verts.device.type == "cpu" and verts.dtype in (torch.float32, torch.float64)
                and not any(t.requires_grad for t in (self.R, self.T, self.focal, self.principal))
                and project_jit.available())

    def repeat_interleave(self, n: int) -> "Camera":
        """Each view repeated ``n`` times: one camera per sequence -> one per frame."""
        rep = lambda t: t.repeat_interleave(n, dim=0)  # noqa: E731
        return replace(self, R=rep(self.R), T=rep(self.T), focal=rep(self.focal), principal=rep(self.principal))

    @staticmethod
    def cat(cameras: "list[Camera]") -> "Camera":
        """Concatenate camera batches (same image size and projection)."""
        first = cameras[0]
        if any(c.image_size != first.image_size or c.projection != first.projection for c in cameras):
            raise ValueError("cameras to concatenate need the same image size and projection")
        cat = lambda name: torch.cat([getattr(c, name) for c in cameras], 0)  # noqa: E731
        return replace(first, R=cat("R"), T=cat("T"), focal=cat("focal"), principal=cat("principal"))

    def zoom(self, x0: torch.Tensor, y0: torch.Tensor, side: torch.Tensor, size: int) -> "Camera":
        """The camera whose ``size x size`` image is this camera's square window.

        The window has its top-left corner at pixel ``(x0, y0)`` and side ``side`` pixels of
        this camera (each (Bc,) or scalar). Zooming is an affine map of the image plane, so it
        works alike for both projections and the depth is unchanged.
        """
        dev, dt = self.focal.device, self.focal.dtype
        x0, y0, side = (torch.as_tensor(v, device=dev, dtype=dt).reshape(-1) for v in (x0, y0, side))
        s = size / side  # new pixels per old pixel
        focal = self.focal * s[:, None]
        principal = torch.stack([(self.principal[:, 0] - x0) * s, (self.principal[:, 1] - y0) * s], -1)
        n = max(self.batch_size, focal.shape[0])
        expand = lambda t: t.expand(n, *t.shape[1:]).contiguous()  # noqa: E731
        return replace(self, R=expand(self.R), T=expand(self.T), focal=expand(focal),
                       principal=expand(principal), image_size=(size, size))


def _as_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def front_camera(template, image_size: int | tuple[int, int], projection: str = "ortho",
                 margin: float = 0.1, focal_factor: float = 2.5) -> Camera:
    """A front view (looking along -z at the face) framing the template's bounding box.

    Args:
        template: (V, 3) tensor or array of world coordinates.
        image_size: ``S`` or ``(H, W)``.
        projection: ``"ortho"`` or ``"persp"``.
        margin: free border on each side, as a fraction of the box size.
        focal_factor: perspective only: focal length in units of ``max(H, W)`` pixels (2.5 is a
            narrow ~23 degree field of view, a portrait lens).
    Returns:
        A :class:`Camera` with batch 1 and ``R = I``; the box centre maps to the image centre.
    """
    if projection not in PROJECTIONS:
        raise UserError(f"unknown projection {projection!r}", None, "use 'ortho' or 'persp'")
    t = torch.as_tensor(np.asarray(template) if not torch.is_tensor(template) else template)
    t = t.detach().to(torch.float32).reshape(-1, 3)
    if t.shape[0] == 0 or not torch.isfinite(t).all():
        raise UserError("cannot frame an empty or non-finite template", None, "check the template mesh")
    h, w = _as_size(image_size)
    lo, hi = t.min(0).values, t.max(0).values
    centre = (lo + hi) / 2
    ext = (hi - lo).clamp_min(1e-6)
    frame = 1.0 + 2.0 * margin
    eye = torch.eye(3)[None]
    if projection == "ortho":
        scale = min(w / (ext[0] * frame), h / (ext[1] * frame))
        cam_pos = centre + torch.tensor([0.0, 0.0, float(ext[2]) + 1.0])
        focal = torch.tensor([[float(scale), float(scale)]])
    else:
        f = focal_factor * max(h, w)
        # distance from the camera to the front of the box so that the box face fits
        dist = max(f * float(ext[0]) * frame / w, f * float(ext[1]) * frame / h)
        cam_pos = centre + torch.tensor([0.0, 0.0, dist + float(ext[2]) / 2])
        focal = torch.tensor([[f, f]])
    principal = torch.tensor([[w / 2.0, h / 2.0]])
    return Camera(R=eye, T=(-cam_pos)[None], focal=focal.float(), principal=principal,
                  image_size=(h, w), projection=projection)
