"""CPU fast paths against their readable references: the expert's 3D stem as a 2D convolution,
the compiled grey vertex shading, grey compositing and orthographic projection."""

import dataclasses

import pytest
import torch

from talkinghead_cli.lipreader.frontends import VideoFrontend, stem_as_2d
from talkinghead_cli.render import composite_jit, project_jit, renderer, shade_jit
from talkinghead_cli.render.camera import Camera
from talkinghead_cli.render.mouth import lip_window_camera
from talkinghead_cli.render.rasterize import rasterize
from talkinghead_cli.render.shade import Lights, lambert, vertex_normals


@pytest.mark.parametrize("t", [1, 2, 9])
def test_stem_as_2d_equals_the_3d_convolution_values_and_gradients(t):
    torch.manual_seed(t)
    conv = torch.nn.Conv3d(1, 6, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False).double()
    frames = torch.randn(2, t, 20, 18, dtype=torch.float64, requires_grad=True)
    fast = stem_as_2d(frames, conv)
    ref = conv(frames.unsqueeze(1)).transpose(1, 2).flatten(0, 1)
    assert fast.shape == ref.shape == (2 * t, 6, 10, 9)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(fast, [frames, conv.weight], g),
                    torch.autograd.grad(ref, [frames, conv.weight], g)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("t, hw, kernel, stride, pad", [(1, (20, 18), 7, 2, 3), (9, (44, 44), 7, 2, 3),
                                                     (4, (13, 15), 5, 2, 1), (3, (17, 16), 3, 3, 0)])
def test_frozen_stem_gradient_equals_the_3d_convolutions(t, hw, kernel, stride, pad):
    torch.manual_seed(t)
    conv = torch.nn.Conv3d(1, 6, (5, kernel, kernel), (1, stride, stride), (2, pad, pad), bias=True).double()
    conv.requires_grad_(False)  # a frozen expert: the phase-kernel backward
    frames = torch.randn(2, t, *hw, dtype=torch.float64, requires_grad=True)
    fast = stem_as_2d(frames, conv)
    assert fast.grad_fn.name() == "_FrozenStemBackward"
    ref = conv(frames.unsqueeze(1)).transpose(1, 2).flatten(0, 1)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(fast, frames, g)[0], torch.autograd.grad(ref, frames, g)[0],
                               rtol=0, atol=1e-10)


def test_video_frontend_fast_path_matches_the_reference_in_train_and_eval():
    torch.manual_seed(0)
    fe = VideoFrontend(8, (8, 8, 16, 16), (1, 1, 1, 1), "swish").double()
    frames = torch.randn(2, 5, 24, 24, dtype=torch.float64)
    for train in (True, False):
        fe.train(train)
        start = {k: v.clone() for k, v in fe.state_dict().items()}
        fast = fe(frames)
        after_fast = {k: v.clone() for k, v in fe.state_dict().items()}
        fe.load_state_dict(start)
        fe.fast_stem = False
        ref = fe(frames)
        fe.fast_stem = True
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)
        for k, v in fe.state_dict().items():  # batch-norm running statistics move alike
            torch.testing.assert_close(after_fast[k], v, rtol=0, atol=1e-12)


def _mesh(B=3, V=50, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    verts = torch.randn(B, V, 3, generator=g, dtype=dtype)
    faces = torch.randint(0, V, (90, 3), generator=g)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    return verts, faces


def _reference_grey(verts, faces, R, lights, albedo):
    normals = torch.matmul(vertex_normals(verts, faces), R.transpose(1, 2).to(verts))
    flat = normals.reshape(-1, 3)
    return lambert(flat, torch.full_like(flat[:, :1], albedo), lights).reshape(verts.shape[:2])


needs_numba = pytest.mark.skipif(not shade_jit.available(), reason="numba is not installed")


@needs_numba
@pytest.mark.parametrize("per_frame_rotation", [False, True])
def test_compiled_grey_shading_matches_the_reference_values_and_gradients(per_frame_rotation):
    verts, faces = _mesh()
    verts.requires_grad_(True)
    R = torch.linalg.qr(torch.randn(3 if per_frame_rotation else 1, 3, 3, dtype=torch.float64))[0]
    lights = Lights(ambient=0.2, directions=((0.3, 0.4, 1.0), (-0.6, 0.1, 0.5), (0, 0, -1)),
                    intensities=(0.9, 0.5, 0.3))  # bright enough that some vertices clip at 1
    fast = shade_jit.grey_vertex_shading(verts, faces, R, lights, 0.9)
    ref = _reference_grey(verts, faces, R, lights, 0.9)
    assert (ref == 1).any() and (ref < 1).any()
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    a, = torch.autograd.grad(fast, verts, g)
    b, = torch.autograd.grad(ref, verts, g)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda v: shade_jit.grey_vertex_shading(v, faces, R, lights, 0.9),
                                    (verts[:1].detach().requires_grad_(True),))


@needs_numba
def test_renderer_uses_the_compiled_shading_only_where_it_applies():
    verts, faces = _mesh(dtype=torch.float32)
    cam = Camera(R=torch.eye(3)[None], T=torch.tensor([[0.0, 0.0, -5.0]]), focal=torch.ones(1, 2),
                 principal=torch.zeros(1, 2), image_size=(8, 8), projection="ortho")
    assert renderer.jit_shading(verts, cam)
    fast = renderer.vertex_colors(verts, faces, cam, None, None, gray=True)
    ref = _reference_grey(verts, faces, cam.R, Lights(), renderer.GREY).reshape(-1, 1)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    assert not renderer.jit_shading(verts.half(), cam)
    cam.R.requires_grad_(True)
    assert not renderer.jit_shading(verts, cam)


@needs_numba
def test_compiled_grey_shading_of_no_frames():
    verts, faces = _mesh()
    none = verts[:0].clone().requires_grad_(True)
    out = shade_jit.grey_vertex_shading(none, faces, torch.eye(3, dtype=torch.float64)[None], Lights(), 0.7)
    assert out.shape == (0, verts.shape[1])
    out.sum().backward()
    assert none.grad.shape == none.shape


def _sheet(B=2, n=7, seed=0, dtype=torch.float64):
    """A bumpy n x n grid with two cells cut out: boundary and hole outlines give soft pixels."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linspace(-1, 1, n, dtype=dtype)
    x, y = torch.meshgrid(u, u, indexing="xy")
    base = torch.stack([x, y, 0.3 * torch.sin(2 * x) * torch.cos(3 * y)], -1).reshape(-1, 3)
    verts = base + 0.03 * torch.randn(B, n * n, 3, generator=g, dtype=dtype)
    cells = [(i, j) for i in range(n - 1) for j in range(n - 1) if (i, j) not in ((3, 2), (3, 3))]
    faces = []
    for i, j in cells:
        a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
        faces += [(a, b, d), (a, d, c)]
    return verts, torch.tensor(faces)


def _composite_both(monkeypatch, verts, faces, cam, sigma):
    out = {}
    for fast in (True, False):
        monkeypatch.setattr(composite_jit, "available", lambda fast=fast: fast)
        v = verts.detach().clone().requires_grad_(True)
        r = renderer.render(v, faces, cam, gray=True, buffers=False, sigma=sigma)
        g = torch.linspace(-1, 1, r.images.numel(), dtype=v.dtype).reshape(r.images.shape)
        ga = torch.linspace(1, -1, r.alpha.numel(), dtype=v.dtype).reshape(r.alpha.shape)
        grad, = torch.autograd.grad((r.images * g).sum() + (r.alpha * ga).sum(), v)
        out[fast] = (r.images.detach(), r.alpha.detach(), grad)
    return out


@needs_numba
@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_compiled_compositing_matches_the_reference_values_and_gradients(monkeypatch, sigma):
    verts, faces = _sheet()
    cam = lip_window_camera(verts[0], torch.arange(verts.shape[1]), size=20, margin=0.1)
    frag = rasterize(cam.project(verts), faces, (20, 20), False, sigma)
    assert frag.hard_pix.numel() > 100 and (frag.soft_pix.numel() > 20) == (sigma > 0)
    out = _composite_both(monkeypatch, verts, faces, cam, sigma)
    for a, b in zip(out[True], out[False]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert out[True][2].abs().sum() > 0


@needs_numba
def test_compiled_compositing_passes_gradcheck_with_fixed_fragments():
    verts, faces = _sheet(B=1, n=5, seed=3)
    cam = lip_window_camera(verts[0], torch.arange(verts.shape[1]), size=10, margin=0.1)
    pv = cam.project(verts).detach()
    frag = rasterize(pv, faces, (10, 10), False, 0.8)
    assert frag.soft_pix.numel() > 0
    vcol = torch.rand(1, pv.shape[1], dtype=torch.float64)
    assert frag.maps is not None  # the compiled rasterizer's per-pixel maps; from the pair lists alike:
    for a, b in zip(composite_jit.grey_composite(pv, vcol, faces, frag, 0.2, 0.8),
                    composite_jit.grey_composite(pv, vcol, faces, dataclasses.replace(frag, maps=None), 0.2, 0.8)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.autograd.gradcheck(
        lambda p, c: composite_jit.grey_composite(p, c, faces, frag, 0.2, 0.8),
        (pv.requires_grad_(True), vcol.requires_grad_(True)))


@needs_numba
def test_renderer_composites_compiled_only_where_it_applies():
    verts, faces = _sheet(dtype=torch.float32)
    cam = lip_window_camera(verts[0], torch.arange(verts.shape[1]), size=12)
    assert renderer.jit_composite(verts, cam, 1, buffers=False)
    assert not renderer.jit_composite(verts, cam, 3, buffers=False)  # colour
    assert not renderer.jit_composite(verts, cam, 1, buffers=True)  # depth / face buffers asked for
    assert not renderer.jit_composite(verts.half(), cam, 1, buffers=False)
    persp = Camera(R=torch.eye(3)[None], T=torch.tensor([[0.0, 0.0, 4.0]]), focal=torch.full((1, 2), 10.0),
                   principal=torch.full((1, 2), 6.0), image_size=(12, 12), projection="persp")
    assert not renderer.jit_composite(verts, persp, 1, buffers=False)


@needs_numba
def test_compiled_compositing_of_no_frames():
    verts, faces = _sheet()
    cam = lip_window_camera(verts[0], torch.arange(verts.shape[1]), size=8)
    none = verts[:0].clone().requires_grad_(True)
    r = renderer.render(none, faces, cam, gray=True, buffers=False)
    assert r.images.shape == (0, 8, 8, 1)
    r.images.sum().backward()
    assert none.grad.shape == none.shape


def _ortho(B, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    R = torch.linalg.qr(torch.randn(B, 3, 3, generator=g, dtype=torch.float64))[0].to(dtype)
    return Camera(R=R, T=torch.randn(B, 3, generator=g, dtype=dtype),
                  focal=torch.rand(B, 2, generator=g, dtype=dtype) + 1,
                  principal=torch.randn(B, 2, generator=g, dtype=dtype), image_size=(16, 16), projection="ortho")


@needs_numba
@pytest.mark.parametrize("cam_batch", [1, 4])
def test_compiled_projection_matches_the_reference_values_gradients_and_bounds(monkeypatch, cam_batch):
    verts = torch.randn(4, 30, 3, dtype=torch.float64, requires_grad=True)
    cam = _ortho(cam_batch)
    assert cam.jit_projection(verts)
    fast = cam.project(verts)
    lo, hi = project_jit.screen_bounds(verts, cam)
    monkeypatch.setattr(project_jit, "available", lambda: False)
    assert not cam.jit_projection(verts)
    ref = cam.project(verts)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    a, = torch.autograd.grad(fast, verts, g)
    b, = torch.autograd.grad(ref, verts, g)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(lo, ref[..., :2].amin(0).detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(hi, ref[..., :2].amax(0).detach(), rtol=0, atol=1e-12)


@needs_numba
def test_compiled_projection_only_where_it_applies_and_nan_bounds():
    verts = torch.randn(2, 5, 3)
    cam = _ortho(1, torch.float32)
    assert cam.jit_projection(verts) and not cam.jit_projection(verts.half())
    persp = Camera(R=cam.R, T=cam.T, focal=cam.focal, principal=cam.principal, image_size=(16, 16),
                   projection="persp")
    assert not persp.jit_projection(verts)
    cam.focal.requires_grad_(True)  # a camera being fitted keeps the reference (gradients reach it)
    assert not cam.jit_projection(verts)
    verts[1, 2, 0] = float("nan")
    lo, hi = project_jit.screen_bounds(verts, _ortho(1, torch.float32))
    assert torch.isnan(lo[2]).any() and torch.isnan(hi[2]).any() and torch.isfinite(lo[[0, 1, 3, 4]]).all()
