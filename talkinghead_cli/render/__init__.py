"""Differentiable mesh rendering: cameras, a batched rasterizer, shading, lip windows.

Conventions (axes, pixels, depth) are written once, in :mod:`talkinghead_cli.render.camera`.
"""

from talkinghead_cli.render.camera import Camera, front_camera
from talkinghead_cli.render.mouth import lip_window_camera, render_lip_windows
from talkinghead_cli.render.renderer import RenderOutput, render_mesh
from talkinghead_cli.render.shade import Lights

__all__ = ["Camera", "front_camera", "RenderOutput", "render_mesh", "lip_window_camera",
           "render_lip_windows", "Lights"]
