"""Mesh sequences as lip-reading video: the bridge between animator and expert.

The expert reads 88 x 88 grayscale lip windows at 25 fps. Animations run at their own fps
(30 for VOCASET and the synthetic corpus, 25 for BIWI), so the meshes are resampled in time
by linear interpolation of the vertices and rendered at 25 fps: what a 25 fps camera would
see of the moving mesh (not a cross-fade of rendered frames), and 1/6 less to render from 30
fps. Only the vertices of the faces that reach the window are interpolated. The whole path
stays differentiable w.r.t. the vertices.

The window of a sequence is fixed (one camera per sequence) and, during training, taken from
the ground-truth sequence (``window_from``), so a prediction and its ground truth are seen
through the same window and the loss cannot be lowered by moving the window.
"""

from __future__ import annotations

import torch

from talkinghead_cli.lipreader.model import resample_frames, resampled_length
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
        cameras: precomputed cameras (batch B, or 1 for all), overriding ``window_from``.
        render_kw: passed to :func:`~talkinghead_cli.render.render_lip_windows` (sigma, ...).
    Returns:
        (B, T25, size, size) with T25 = round(T * video_fps / fps), normalised as Auto-AVSR's crops;
        frame j shows the mesh at time j / video_fps (linear between the frames around it).
    """
    b, t = verts.shape[:2]
    if cameras is None:
        cameras = sequence_cameras(verts if window_from is None else window_from, lip_idx, size, margin)
    if cameras.batch_size not in (1, b):
        raise ValueError(f"{cameras.batch_size} cameras for {b} sequences: give one per sequence")
    t_out = resampled_length(t, fps, video_fps)

    # the faces are chosen on the frames at `fps`; an interpolated vertex lies between two of its
    # positions there, so inside the union of screen boxes the choice was made from
    def in_time(window_verts: torch.Tensor) -> torch.Tensor:  # (B*T, V', 3) -> (B*T25, V', 3)
        return resample_frames(window_verts.reshape(b, t, -1, 3), fps, video_fps).reshape(b * t_out, -1, 3)

    per_frame = cameras.repeat_interleave(t) if cameras.batch_size == b else cameras
    out_cameras = cameras.repeat_interleave(t_out) if cameras.batch_size == b else cameras
    frames = render_lip_windows(verts.reshape(b * t, *verts.shape[2:]), faces, lip_idx, size=size,
                                camera=per_frame, resample=lambda v: (in_time(v), out_cameras), **render_kw)
    return frames.reshape(b, t_out, size, size)
