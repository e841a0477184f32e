import math

import numpy as np
import pytest
import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.render import Camera, Lights, front_camera, render_mesh
from talkinghead_cli.render.rasterize import edge_neighbours
from talkinghead_cli.render.reference import render_reference
from talkinghead_cli.render.renderer import pytorch3d_available


def _scene(dtype=torch.float64):
    """A few triangles on a 12x12 view: a bent 4-triangle patch with a free boundary, and a
    triangle partly in front of it (occlusion, outlines over faces and over background)."""
    verts = torch.tensor([
        [-0.8, -0.7, 0.0], [0.0, -0.75, 0.15], [0.75, -0.6, 0.0],
        [-0.7, 0.1, 0.1], [0.05, 0.05, 0.35], [0.7, 0.15, 0.05],
        [-0.35, -0.2, 0.6], [0.45, -0.35, 0.55], [0.1, 0.75, 0.5],
    ], dtype=dtype)
    faces = torch.tensor([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4], [6, 7, 8]])
    colors = torch.rand(9, 3, generator=torch.Generator().manual_seed(0), dtype=dtype) * 0.5 + 0.3
    return verts, faces, colors


def _camera(projection, size=12, dtype=torch.float64, roll=0.0):
    """Front camera; ``roll`` turns it about its viewing axis (a non-identity rotation)."""
    verts, _, _ = _scene()
    cam = front_camera(verts, size, projection=projection, margin=0.05).to(dtype=dtype)
    c, s = math.cos(roll), math.sin(roll)
    rz = torch.tensor([[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]], dtype=dtype)
    return Camera(R=rz, T=(rz @ cam.T[..., None])[..., 0], focal=cam.focal, principal=cam.principal,
                  image_size=cam.image_size, projection=projection)


def test_camera_conventions():
    cam = Camera(R=torch.eye(3)[None], T=torch.tensor([[0.0, 0.0, -5.0]]), focal=torch.tensor([[10.0, 10.0]]),
                 principal=torch.tensor([[8.0, 6.0]]), image_size=(12, 16), projection="ortho")
    p = cam.project(torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]))[0]
    assert p[0].tolist() == [8.0, 6.0, 5.0]  # origin at the principal point, depth 5
    assert p[1, 0] > p[0, 0]  # +x is to the right
    assert p[2, 1] < p[0, 1]  # +y is up: a smaller row
    assert p[3, 2] < p[0, 2]  # +z comes towards the viewer: smaller depth
    persp = Camera(R=cam.R, T=cam.T, focal=cam.focal, principal=cam.principal, image_size=(12, 16),
                   projection="persp")
    q = persp.project(torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 2.5]]]))[0]
    assert q[0, 0] == pytest.approx(8.0 + 10.0 / 5.0)
    assert q[1, 0] == pytest.approx(8.0 + 10.0 / 2.5)  # nearer points spread out


def test_batched_camera_one_view_per_item():
    verts, faces, _ = _scene(torch.float32)
    a = front_camera(verts, 16)
    b = front_camera(verts * 0.5, 16)
    cams = Camera.cat([a, b])
    both = render_mesh(verts[None].expand(2, -1, -1), faces, cams, sigma=0.0)
    one = render_mesh(verts[None], faces, b, sigma=0.0)
    assert torch.equal(both.face_index[1], one.face_index[0])
    assert not torch.equal(both.face_index[0], both.face_index[1])


@pytest.mark.parametrize("projection", ["ortho", "persp"])
def test_front_camera_frames_template(sphere, projection):
    verts, _ = sphere
    cam = front_camera(verts * 3 + 1, (40, 60), projection=projection, margin=0.1)
    p = cam.project(torch.tensor(verts * 3 + 1)[None])[0]
    assert (p[:, 0] > 0).all() and (p[:, 0] < 60).all() and (p[:, 1] > 0).all() and (p[:, 1] < 40).all()
    assert (p[:, 2] > 0).all()
    assert p[:, 1].max() - p[:, 1].min() > 0.7 * 40  # fills the shorter side up to the margin
    assert p[:, 0].mean() == pytest.approx(30, abs=1.0)


def test_sphere_silhouette_and_depth(sphere):
    verts, faces = sphere
    v = torch.tensor(verts)[None]
    cam = front_camera(verts, 64, margin=0.1)
    out = render_mesh(v, torch.tensor(faces), cam)
    radius_px = 64 / 2.4
    covered = (out.face_index >= 0).sum().item()
    assert covered == pytest.approx(math.pi * radius_px ** 2, rel=0.03)
    assert out.depth[0, 32, 32] == pytest.approx(2.0, abs=0.02)  # camera 3 units from the centre
    assert torch.isinf(out.depth[0, 0, 0]) and out.face_index[0, 0, 0] == -1
    assert out.images.min() >= 0 and out.images.max() <= 1
    soft = (out.alpha > 0) & (out.alpha < 1)
    assert soft.sum() > 0 and (out.face_index[soft] == -1).all()  # outlines only outside the disc
    b = out.bary[out.face_index >= 0]
    assert torch.allclose(b.sum(-1), torch.ones(len(b)), atol=1e-5) and (b >= -1e-5).all()


def test_edge_neighbours():
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [3, 1, 4]])
    nb = edge_neighbours(faces)
    # edge opposite vertex 0 of face 0 is (1, 2), shared with face 1
    assert nb[0].tolist() == [1, -1, -1]
    assert nb[1].tolist() == [2, -1, 0]


@pytest.mark.parametrize("projection,roll", [("ortho", 0.0), ("persp", 0.0), ("persp", 0.4)])
def test_parity_with_reference_values_and_gradients(projection, roll):
    verts, faces, colors = _scene()
    cam = _camera(projection, roll=roll)
    weights = torch.rand(1, 12, 12, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lights = Lights(ambient=0.25, directions=((0.2, 0.5, 1.0), (-0.7, -0.2, 0.4)), intensities=(0.5, 0.3))

    v1 = verts[None].clone().requires_grad_(True)
    c1 = colors.clone().requires_grad_(True)
    fast = render_mesh(v1, faces, cam, colors=c1, lights=lights, background=0.1, sigma=0.6, backend="torch")
    (fast.images * weights).sum().backward()

    v2 = verts[None].clone().requires_grad_(True)
    c2 = colors.clone().requires_grad_(True)
    img, alpha, fidx = render_reference(v2, faces, cam, colors=c2, lights=lights, background=0.1, sigma=0.6)
    (img * weights).sum().backward()

    assert torch.equal(fast.face_index, fidx)
    assert ((alpha > 0) & (alpha < 1)).sum() > 5  # the scene does have soft outlines
    torch.testing.assert_close(fast.images, img, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(fast.alpha, alpha, atol=1e-10, rtol=1e-8)
    assert v1.grad.abs().sum() > 0
    torch.testing.assert_close(v1.grad, v2.grad, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(c1.grad, c2.grad, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("projection", ["ortho", "persp"])
def test_finite_difference_gradient(projection):
    verts, faces, colors = _scene()
    cam = _camera(projection, size=16)
    weights = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def loss(v):
        return (render_mesh(v, faces, cam, colors=colors, sigma=0.8, backend="torch").images * weights).sum()

    v = verts[None].clone().requires_grad_(True)
    loss(v).backward()
    rng = np.random.default_rng(3)
    eps = 1e-6
    checked = 0
    for vi, ci in [(4, 0), (4, 1), (4, 2), (8, 0), (8, 1), (2, 1), (7, 2)] + [
            (int(rng.integers(9)), int(rng.integers(3))) for _ in range(4)]:
        d = torch.zeros_like(verts)
        d[vi, ci] = eps
        with torch.no_grad():
            fd = (loss((verts + d)[None]) - loss((verts - d)[None])) / (2 * eps)
        assert float(v.grad[0, vi, ci]) == pytest.approx(float(fd), rel=1e-4, abs=1e-6)
        checked += abs(float(fd)) > 1e-3
    assert checked >= 5  # most probes have a real gradient


def test_outline_gradient_moves_silhouette():
    """Moving a silhouette vertex outwards must grow the covered area: d(alpha sum)/dx > 0."""
    verts = torch.tensor([[[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    cam = front_camera(torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]), 24).to(dtype=torch.float64)
    v = verts.clone().requires_grad_(True)
    render_mesh(v, faces, cam, sigma=1.0).alpha.sum().backward()
    assert v.grad[0, 1, 0] > 0 and v.grad[0, 0, 0] < 0 and v.grad[0, 2, 1] > 0


def test_hard_only_and_background_colour(sphere):
    verts, faces = sphere
    cam = front_camera(verts, 32)
    out = render_mesh(torch.tensor(verts)[None], torch.tensor(faces), cam, sigma=0.0, background=(0.0, 0.5, 1.0))
    assert set(out.alpha.unique().tolist()) <= {0.0, 1.0}
    assert out.images[0, 0, 0].tolist() == [0.0, 0.5, 1.0]


def test_backface_culling_keeps_front_view(sphere):
    verts, faces = sphere
    cam = front_camera(verts, 48, projection="persp")
    v = torch.tensor(verts)[None]
    a = render_mesh(v, torch.tensor(faces), cam, sigma=0.0)
    b = render_mesh(v, torch.tensor(faces), cam, sigma=0.0, cull_backfaces=True)
    assert torch.equal(a.face_index, b.face_index)
    torch.testing.assert_close(a.images, b.images)


def test_bad_inputs_raise_user_errors(sphere):
    verts, faces = sphere
    cam = front_camera(verts, 16)
    v = torch.tensor(verts)[None]
    with pytest.raises(UserError):
        render_mesh(v, torch.tensor(faces)[:, :2], cam)
    with pytest.raises(UserError):
        render_mesh(v, torch.tensor(faces) + len(verts), cam)
    with pytest.raises(UserError):
        render_mesh(v[0], torch.tensor(faces), cam)
    with pytest.raises(UserError):
        render_mesh(v, torch.tensor(faces), cam, backend="opengl")
    with pytest.raises(UserError):
        render_mesh(v, torch.tensor(faces), cam, colors=torch.ones(5, 3))
    with pytest.raises(UserError):
        front_camera(verts, 16, projection="fisheye")


@pytest.mark.skipif(not pytorch3d_available(), reason="pytorch3d does not import here")
@pytest.mark.parametrize("projection", ["ortho", "persp"])
def test_pytorch3d_backend_parity(sphere, projection):
    verts, faces = sphere
    device = "cuda" if torch.cuda.is_available() else "cpu"
    v = torch.tensor(verts, device=device)[None].requires_grad_(True)
    f = torch.tensor(faces, device=device)
    cam = front_camera(verts, 64, projection=projection)
    ours = render_mesh(v, f, cam, backend="torch")
    theirs = render_mesh(v, f, cam, backend="pytorch3d")
    same = (ours.face_index == theirs.face_index).float().mean()
    assert same > 0.995  # pixel centres exactly on an edge may go either way
    assert (ours.images - theirs.images).abs().mean() < 1e-3


def test_grey_default_equals_explicit_grey_colours(sphere):
    verts, faces = sphere
    cam = front_camera(verts, 40, projection="persp")
    v, f = torch.tensor(verts)[None], torch.tensor(faces)
    grey = render_mesh(v, f, cam)
    explicit = render_mesh(v, f, cam, colors=torch.full((len(verts), 3), 0.7))
    assert grey.images.shape == (1, 40, 40, 3)
    torch.testing.assert_close(grey.images, explicit.images)
    coloured_bg = render_mesh(v, f, cam, background=(0.2, 0.4, 0.6))
    torch.testing.assert_close(coloured_bg.images[0, 0, 0], torch.tensor([0.2, 0.4, 0.6]))
    torch.testing.assert_close(coloured_bg.images[0, 20, 20], grey.images[0, 20, 20])


def test_float32_packed_zbuffer_matches_float64(sphere):
    """The float32 path packs depth and face into one key; float64 uses two passes."""
    verts, faces = sphere
    g = torch.Generator().manual_seed(4)
    v = torch.tensor(verts)[None] + 0.05 * torch.randn(1, len(verts), 3, generator=g)
    # a second, overlapping copy of the sphere: many occlusions, depths on both sides of zero
    v = torch.cat([v, v + torch.tensor([0.3, 0.1, -0.4])], 1)
    f = torch.tensor(np.concatenate([faces, faces + len(verts)]))
    cam = front_camera(v[0], 48, margin=0.0)
    cam.T[0, 2] = 0.0  # put the camera inside the scene: negative orthographic depths too
    a = render_mesh(v, f, cam, sigma=0.0)
    b = render_mesh(v.double(), f, cam.to(dtype=torch.float64), sigma=0.0)
    assert (a.depth < 0).any() and (a.depth > 0).any()
    assert (a.face_index == b.face_index).float().mean() > 0.999
    finite = torch.isfinite(b.depth)
    torch.testing.assert_close(a.depth[finite].double(), b.depth[finite], atol=1e-5, rtol=1e-5)


def test_cpu_batches_are_chunked_without_changing_the_result(sphere, monkeypatch):
    from talkinghead_cli.render import renderer

    verts, faces = sphere
    g = torch.Generator().manual_seed(5)
    v = torch.tensor(verts)[None] * (1 + 0.1 * torch.rand(5, 1, 1, generator=g))
    f = torch.tensor(faces)
    cams = Camera.cat([front_camera(verts, 24)] * 5)
    colors = torch.rand(5, len(verts), 3, generator=g)
    whole = [render_mesh(v, f, cams), render_mesh(v, f, cams, colors=colors)]
    monkeypatch.setattr(renderer, "CHUNK_PIXELS", 2 * 24 * 24)  # chunks of two frames
    chunked = [render_mesh(v, f, cams), render_mesh(v, f, cams, colors=colors)]
    for a, b in zip(whole, chunked):
        for name in ("images", "alpha", "depth", "face_index", "bary"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name))
    assert chunked[0].images.shape == (5, 24, 24, 3)


def test_hidden_silhouette_shortcut_is_exact(sphere, monkeypatch):
    """Small spheres, some behind a wall and some in front of it: dropping the silhouette faces
    that the hard layer hides everywhere changes no soft pair, and does drop faces."""
    import trimesh

    from talkinghead_cli.render import rasterize as R

    v, f = sphere
    wall = trimesh.creation.box(extents=(3.0, 3.0, 0.05))
    verts, faces = [np.asarray(wall.vertices, np.float32)], [np.asarray(wall.faces)]
    base = len(verts[0])
    for i, (x, y, z) in enumerate([(-0.6, 0.3, -0.5), (0.5, -0.4, -0.5), (0.0, 0.2, 0.5), (0.7, 0.6, 0.5)]):
        verts.append(v * 0.15 + np.array([x, y, z], np.float32))
        faces.append(f + base + i * len(v))
    vt = torch.from_numpy(np.concatenate(verts))[None]
    ft = torch.from_numpy(np.concatenate(faces)).long()
    cam = front_camera(vt[0], image_size=64, projection="ortho")
    pv = cam.project(vt)
    dropped = []
    real = R._hidden
    monkeypatch.setattr(R, "_hidden", lambda *a: dropped.append(int(real(*a).sum())) or real(*a))
    fast = R.rasterize(pv, ft, (64, 64), False, sigma=1.0, jit=False)  # the PyTorch pass's shortcut
    monkeypatch.setattr(R, "_hidden", lambda x_lo, *a: torch.zeros_like(x_lo, dtype=torch.bool))
    full = R.rasterize(pv, ft, (64, 64), False, sigma=1.0, jit=False)
    assert dropped[0] > 50  # the spheres behind the wall
    assert len(full.soft_pix) > 50
    assert torch.equal(fast.soft_pix, full.soft_pix) and torch.equal(fast.soft_face, full.soft_face)
