import numpy as np
import pytest
import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.render import front_camera, lip_window_camera, render_lip_windows, render_mesh
from talkinghead_cli.render.mouth import AVSR_MEAN, AVSR_STD, window_faces


def _face_with_mouth(n=41, opening=0.12):
    """A bulged square "face" (a subdivided plane, z = 0.3 - 0.3 r^2) with an elliptic mouth hole,
    and a dark flat "mouth interior" plane behind it.

    Returns verts (V, 3), faces (F, 3), lip indices (the hole's rim), colours (V, 3).
    """
    g = np.linspace(-1.0, 1.0, n)
    xx, yy = np.meshgrid(g, g)
    zz = 0.3 - 0.3 * (xx ** 2 + yy ** 2)
    verts = np.stack([xx, yy, zz], -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    centre = verts[tris].mean(1)
    hole = (centre[:, 0] / 0.35) ** 2 + ((centre[:, 1] + 0.3) / opening) ** 2 < 1
    face_tris = tris[~hole]
    used = np.zeros(len(verts), bool)
    used[face_tris] = True
    in_hole = np.zeros(len(verts), bool)
    in_hole[tris[hole]] = True
    lips = np.nonzero(used & in_hole)[0]  # rim vertices: on both a hole face and a kept face
    # interior: a dark quad behind the mouth
    back = np.array([[-0.5, -0.6, -0.2], [0.5, -0.6, -0.2], [0.5, 0.0, -0.2], [-0.5, 0.0, -0.2]])
    back_tris = np.array([[0, 1, 2], [0, 2, 3]]) + len(verts)
    verts = np.concatenate([verts, back]).astype(np.float32)
    faces = np.concatenate([face_tris, back_tris])
    colors = np.full((len(verts), 3), 0.8, np.float32)
    colors[-4:] = 0.1
    return torch.tensor(verts), torch.tensor(faces), torch.tensor(lips), torch.tensor(colors)


def test_window_is_steady_and_frames_the_lips():
    verts, faces, lips, _ = _face_with_mouth()
    seq = verts[None].repeat(5, 1, 1)
    seq[2, lips, 0] *= 1.2  # frame 2 stretches the lips wider
    cam = lip_window_camera(seq, lips, size=88, margin=0.3)
    assert cam.batch_size == 1 and cam.image_size == (88, 88)
    p = cam.project(seq[:, lips])
    assert p[..., :2].min() >= 0 and p[..., :2].max() <= 88
    # the widest extent over the sequence spans 88 / 1.3 pixels
    span = torch.maximum(p[..., 0].max() - p[..., 0].min(), p[..., 1].max() - p[..., 1].min())
    assert float(span) == pytest.approx(88 / 1.3, rel=0.02)
    # centre: the projected centroid over the whole sequence
    assert float(p[..., 0].mean()) == pytest.approx(44, abs=0.5)
    assert float(p[..., 1].mean()) == pytest.approx(44, abs=0.5)
    # one frame alone gives a different (tighter) window: the window depends on the sequence
    alone = lip_window_camera(seq[0], lips, size=88, margin=0.3)
    assert not torch.allclose(alone.focal, cam.focal)


def test_lip_windows_match_full_camera_render_and_cull_faces():
    verts, faces, lips, colors = _face_with_mouth()
    seq = verts[None].repeat(3, 1, 1)
    seq[1, lips, 1] *= 1.02
    cam = lip_window_camera(seq, lips, size=32)
    sub = window_faces(seq, faces, cam)
    assert len(sub) < 0.5 * len(faces)  # most of the face is culled before rasterisation
    win = render_lip_windows(seq, faces, lips, size=32, camera=cam, colors=colors, normalize=False)
    full = render_mesh(seq, faces, cam, colors=colors).images @ torch.tensor([0.299, 0.587, 0.114])
    assert win.shape == (3, 32, 32)
    torch.testing.assert_close(win, full, atol=1e-6, rtol=1e-5)
    norm = render_lip_windows(seq, faces, lips, size=32, camera=cam, colors=colors)
    torch.testing.assert_close(norm, (win - AVSR_MEAN) / AVSR_STD)


def test_mouth_pixels_give_gradient_to_lip_vertices():
    verts, faces, lips, colors = _face_with_mouth()
    cam = lip_window_camera(verts, lips, size=48, margin=0.3)
    v = verts[None].clone().requires_grad_(True)
    gray = render_lip_windows(v, faces, lips, size=48, camera=cam, colors=colors, normalize=False)
    # pixels inside the mouth opening: those that show the dark interior (hard layer)
    out = render_mesh(verts[None], faces, cam, colors=colors)
    interior = (out.face_index[0] >= faces.shape[0] - 2)
    assert interior.sum() > 20
    # a loss that wants the mouth brighter (closed) must pull the lips
    loss = -gray[0][interior].mean()
    loss.backward()
    g = v.grad[0, lips]
    assert torch.isfinite(v.grad).all()
    moving = (g.norm(dim=-1) > 1e-4).sum()
    assert moving >= len(lips) // 2
    # the gradient closes the mouth: upper lip vertices pushed down, lower lip up (y-gradient
    # of -loss has the sign that moves the rims towards the centre line y = -0.3)
    lip_y = verts[lips, 1]
    upper, lower = lip_y > -0.3, lip_y < -0.3
    assert (-g[upper, 1]).sum() < 0 and (-g[lower, 1]).sum() > 0


def test_without_soft_outlines_the_outline_gives_no_gradient():
    """Sanity check of the test above: with sigma=0 only shading carries gradient, and a flat,
    evenly lit mouth interior gives none to the lips."""
    verts, faces, lips, colors = _face_with_mouth()
    cam = lip_window_camera(verts, lips, size=48)
    v = verts[None].clone().requires_grad_(True)
    out = render_mesh(v, faces, cam, colors=colors, sigma=0.0)
    interior = (out.face_index[0] >= faces.shape[0] - 2)
    out.images[0][interior].mean().backward()
    assert v.grad[0, lips].abs().max() == 0


def test_perspective_base_camera_and_batch():
    verts, faces, lips, colors = _face_with_mouth()
    base = front_camera(verts, 224, projection="persp")
    seq = verts[None].repeat(4, 1, 1)
    cam = lip_window_camera(seq, lips, size=24, base=base)
    assert cam.projection == "persp"
    out = render_lip_windows(seq, faces, lips, size=24, camera=cam, colors=colors)
    assert out.shape == (4, 24, 24)
    torch.testing.assert_close(out[0], out[3])


def test_bad_region_is_a_user_error():
    verts, faces, lips, _ = _face_with_mouth()
    with pytest.raises(UserError):
        lip_window_camera(verts, torch.tensor([len(verts) + 3]))
    with pytest.raises(UserError):
        lip_window_camera(verts, torch.tensor([], dtype=torch.long))


def test_one_window_per_sequence_in_a_batch():
    from talkinghead_cli.render import Camera

    verts, faces, lips, colors = _face_with_mouth(n=21)
    a = verts[None].repeat(2, 1, 1)
    b = (verts * 1.3)[None].repeat(2, 1, 1)
    cams = Camera.cat([lip_window_camera(a, lips, size=16), lip_window_camera(b, lips, size=16)])
    out = render_lip_windows(torch.cat([a, b]), faces, lips, size=16, camera=cams.repeat_interleave(2),
                             colors=colors)
    alone = render_lip_windows(b, faces, lips, size=16, colors=colors)
    torch.testing.assert_close(out[2:], alone)  # a scaled face fills its own window the same way
    torch.testing.assert_close(out[0], out[2], atol=1e-4, rtol=1e-4)


def test_lip_video_renders_the_mesh_at_the_video_rate():
    """30 fps meshes -> 25 fps video: frame j is the render of the mesh at time j / 25 (linear
    between the frames around it), through the sequence's window; with a gradient back to every
    frame the video sees."""
    from talkinghead_cli.lipreader.views import lip_video, sequence_cameras

    verts, faces, lips, _ = _face_with_mouth(n=21)
    t = 7
    seq = verts[None].repeat(t, 1, 1)
    seq[:, lips, 1] += 0.02 * torch.arange(t, dtype=torch.float32)[:, None]  # the lips move down
    seq = seq.double().requires_grad_(True)
    video = lip_video(seq[None], faces, lips, 30.0, size=24)
    assert video.shape == (1, 6, 24, 24)
    cam = sequence_cameras(seq[None], lips, size=24)
    for j in range(6):
        pos = j * 30.0 / 25.0
        lo, w = int(pos), pos - int(pos)
        mesh = seq[lo] * (1 - w) + seq[min(lo + 1, t - 1)] * w
        want = render_lip_windows(mesh[None], faces, lips, size=24, camera=cam)[0]
        torch.testing.assert_close(video[0, j], want, rtol=0, atol=1e-9)
    assert not torch.equal(video[0, 0], video[0, 5])
    video.sum().backward()
    touched = seq.grad[:, lips].abs().sum((1, 2))
    assert (touched > 0).all()  # every frame is read (frame 6 is the time of video frame 5, 0.2 s)
    # at the video's own rate nothing is resampled: one rendered frame per mesh
    same = lip_video(seq[None].detach(), faces, lips, 25.0, size=24)
    assert same.shape == (1, t, 24, 24)
    torch.testing.assert_close(same[0, 3], render_lip_windows(seq[3:4].detach(), faces, lips, size=24, camera=cam)[0])
