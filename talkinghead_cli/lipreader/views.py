"""Mesh sequences as lip-reading video: the bridge between animator and expert.

The expert reads 88 x 88 grayscale lip windows at 25 fps. Animations run at their own fps
(30 for VOCASET and the synthetic corpus, 25 for BIWI), so the rendered windows are resampled
in time by linear interpolation, which keeps the whole path differentiable w.r.t. vertices.

The window of a sequence is fixed (one camera per sequence) and, during training, taken from
the ground-truth sequence (``window_from``), so a prediction and its ground truth are seen
through the same window and the loss cannot be lowered by moving the window.
"""

from __future__ import annotations

import torch

from talkinghead_cli.lipreader.model import resample_frames
from talkinghead_cli.render import Camera, lip_window_camera, render_lip_windows

VIDEO_FPS = 25.0


def sequence_cameras(window_from: torch.Tensor, lip_idx: torch.Tensor, size: int = 88,
                     margin: float = 0.3) -> Camera:
    """One lip-window camera per sequence.

    Args:
        window_from: (B, T, V, 3) sequences that define the windows (not differentiated).
        lip_idx: (R,) long lip vertex indices.
    Returns:
        Camera with batch B.
    """
    return Camera.cat([lip_window_camera(seq.detach(), lip_idx, size=size, margin=margin)
                       for seq in window_from])


def lip_video(verts: torch.Tensor, faces: torch.Tensor, lip_idx: torch.Tensor, fps: float, *,
              window_from: torch.Tensor | None = None, cameras: Camera | None = None, size: int = 88,
              margin: float = 0.3, video_fps: float = VIDEO_FPS, **render_kw) -> torch.Tensor:
    """Render mesh sequences as normalised lip-window video at ``video_fps``.

    Args:
        verts: (B, T, V, 3) sequences at ``fps`` (differentiable).
        faces: (F, 3) long.
        lip_idx: (R,) long lip vertex indices.
        fps: frame rate of ``verts``.
        window_from: (B, T', V, 3) sequences defining each window (default: ``verts`` itself).
        cameras: precomputed cameras (batch B), overriding ``window_from``.
        render_kw: passed to :func:`~talkinghead_cli.render.render_lip_windows` (sigma, ...).
    Returns:
        (B, T25, size, size) with T25 = round(T * video_fps / fps), normalised as Auto-AVSR's crops.
    """
    b, t = verts.shape[:2]
    if cameras is None:
        cameras = sequence_cameras(verts if window_from is None else window_from, lip_idx, size, margin)
    per_frame = cameras.repeat_interleave(t) if cameras.batch_size == b else cameras
    frames = render_lip_windows(verts.reshape(b * t, *verts.shape[2:]), faces, lip_idx, size=size,
                                camera=per_frame, **render_kw)
    return resample_frames(frames.reshape(b, t, size, size), fps, video_fps)
