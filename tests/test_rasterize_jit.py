"""The compiled rasterizer (numba) against its PyTorch reference: identical hard and soft pairs."""

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead_cli.render import rasterize as R
from talkinghead_cli.render import rasterize_jit, render_mesh, renderer
from talkinghead_cli.render.camera import front_camera
from talkinghead_cli.render.mouth import compact, lip_window_camera, window_faces

pytestmark = pytest.mark.skipif(not rasterize_jit.available(), reason="numba is not installed")

ROOT = Path(__file__).resolve().parents[1]


def _wobble(verts: torch.Tensor, frames: int, amount: float = 0.02) -> torch.Tensor:
    """(frames, V, 3): the mesh with small random per-frame displacements."""
    g = torch.Generator().manual_seed(frames)
    return verts[None] + amount * torch.randn(frames, *verts.shape, generator=g, dtype=verts.dtype)


def _sphere_scene(sphere):
    """Wobbled spheres; frame 1 has a NaN and an inf vertex, and one face is degenerate. Frame 3
    is a placeholder for :func:`_through_camera`."""
    v, f = sphere
    verts = _wobble(torch.tensor(v), 4)
    verts[1, 5] = float("nan")
    verts[1, 77, 2] = float("inf")
    faces = torch.cat([torch.tensor(f), torch.tensor([[3, 3, 9]])])  # the last one has zero area
    return verts, faces


def _through_camera(verts, cam):
    """Frame 3 := frame 0 moved towards the camera until its centre has depth 0: its front half
    has negative depth (behind a perspective camera: dropped; orthographic: still sorted)."""
    verts = verts.clone()
    depth0 = cam.project(torch.zeros(1, 1, 3, dtype=verts.dtype))[0, 0, 2]
    verts[3] = verts[0] + torch.tensor([0.0, 0.0, float(depth0)], dtype=verts.dtype)
    z = cam.project(verts[3:])[0, :, 2]
    assert (z < 0).any() and (z > 0).any()
    return verts


def _occlusion_scene(sphere):
    """Small spheres behind and in front of a thin wall (outlines over faces and background)."""
    import trimesh

    v, f = sphere
    wall = trimesh.creation.box(extents=(3.0, 3.0, 0.05))
    verts, faces = [np.asarray(wall.vertices, np.float32)], [np.asarray(wall.faces)]
    for i, (x, y, z) in enumerate([(-0.6, 0.3, -0.5), (0.5, -0.4, -0.5), (0.0, 0.2, 0.5), (0.7, 0.6, 0.5),
                                   (-0.9, -0.8, 0.3)]):
        faces.append(f + sum(len(p) for p in verts))
        verts.append(v * 0.15 + np.array([x, y, z], np.float32))
    return _wobble(torch.from_numpy(np.concatenate(verts)), 2, 0.005), torch.from_numpy(np.concatenate(faces)).long()


def _slit_scene(sphere):
    """A sphere with a horizontal slit cut out of its front (an open mouth: boundary edges, and
    the inside of the back visible through it unless culled)."""
    v, f = sphere
    centre = v[f].mean(1)
    slit = (np.abs(centre[:, 1]) < 0.12) & (centre[:, 2] > 0.3)
    return _wobble(torch.tensor(v), 2, 0.01), torch.tensor(f[~slit])


def _face_scene():
    """The bundled face with its mouth opened a little more in each of 4 frames, cut to a 44-px
    lip window the way ``render_lip_windows`` does (returns verts, faces, lip indices)."""
    ck = torch.load(ROOT / "models" / "avtalk-tiny-mse.pt", weights_only=True)
    v, f, lips = ck["template"].float(), ck["faces"].long(), ck["lip_indices"].long()
    cy = v[lips, 1].mean()
    below = (v[:, 1] < cy) & ((v[:, :2] - v[lips, :2].mean(0)).norm(dim=1) < 0.05)
    verts = v[None].repeat(4, 1, 1)
    for k in range(4):
        verts[k, below, 1] -= 0.004 * k
    return verts, f, lips


def _pairs(frag):
    hard = sorted(zip(frag.hard_pix.tolist(), frag.hard_face.tolist()))
    soft = sorted(zip(frag.soft_pix.tolist(), frag.soft_face.tolist()))
    return hard, soft


def _check_parity(pv, faces, size, perspective, sigma, cull):
    ref = R.rasterize(pv, faces, size, perspective, sigma, cull_backfaces=cull, jit=False)
    fast = R.rasterize(pv, faces, size, perspective, sigma, cull_backfaces=cull, jit=True)
    (h_ref, s_ref), (h_fast, s_fast) = _pairs(ref), _pairs(fast)
    # exact equality: the kernels repeat the reference's float operations in its order and dtype,
    # and leave the one op they cannot repeat (torch.sqrt, not always correctly rounded) to torch
    assert h_fast == h_ref
    assert s_fast == s_ref
    assert fast.shape == ref.shape
    assert fast.hard_pix.dtype == fast.soft_face.dtype == torch.long
    return len(h_ref), len(s_ref)


# every dtype x projection x culling with outlines, plus no outlines (sigma 0) and a wider radius
CASES = [(dtype, proj, cull, 0.5) for dtype in (torch.float32, torch.float64) for proj in ("ortho", "persp")
         for cull in (False, True)] + [(torch.float32, "ortho", False, 0.0), (torch.float64, "persp", False, 1.3)]


@pytest.mark.parametrize("scene", ["sphere", "occlusion", "slit"])
def test_parity_synthetic_scenes(sphere, scene):
    verts, faces = {"sphere": _sphere_scene, "occlusion": _occlusion_scene, "slit": _slit_scene}[scene](sphere)
    counts = []
    for dtype, proj, cull, sigma in CASES:
        cam = front_camera(torch.nan_to_num(verts[0]), (40, 48), projection=proj).to(dtype=dtype)
        v = _through_camera(verts.to(dtype), cam) if scene == "sphere" else verts.to(dtype)
        pv = cam.project(v)
        counts.append(_check_parity(pv, faces, (40, 48), proj == "persp", sigma, cull))
    assert min(h for h, _ in counts) > 500  # the scenes do cover pixels and have outlines
    assert min(s for (_, s), (_, _, _, sigma) in zip(counts, CASES) if sigma > 0) > 50


def test_parity_face_lip_window():
    verts, faces, lips = _face_scene()
    for proj in ("ortho", "persp"):
        base = None if proj == "ortho" else front_camera(verts[0], 256, projection="persp")
        cam = lip_window_camera(verts, lips, size=44, base=base)
        sub = window_faces(verts, faces, cam, pad=4.0)
        v, f, _ = compact(verts, sub)
        for dtype in (torch.float32, torch.float64):
            pv = cam.to(dtype=dtype).project(v.to(dtype))
            for cull in (False, True):
                hard, soft = _check_parity(pv, f, (44, 44), proj == "persp", 0.5, cull)
                assert hard > 4 * 1000 and soft > 4 * 50


def test_custom_hard_layer_with_compiled_soft_layer(sphere):
    """``hard_layer`` + ``jit=True``: the given hard layer, the compiled soft layer."""
    verts, faces = _slit_scene(sphere)
    cam = front_camera(verts[0], 32)
    pv = cam.project(verts)

    def torch_hard(pv, faces, valid, image_size, perspective):
        frag = R.rasterize(pv, faces, image_size, perspective, 0.0, jit=False)
        return frag.hard_pix, frag.hard_face

    ref = R.rasterize(pv, faces, (32, 32), False, 0.5, jit=False)
    fast = R.rasterize(pv, faces, (32, 32), False, 0.5, hard_layer=torch_hard, jit=True)
    assert _pairs(fast) == _pairs(ref)


def test_default_uses_compiled_path_on_cpu(sphere, monkeypatch):
    verts, faces = _slit_scene(sphere)
    pv = front_camera(verts[0], 16).project(verts)
    calls = []
    real = rasterize_jit.face_setup
    monkeypatch.setattr(rasterize_jit, "face_setup", lambda *a: calls.append(1) or real(*a))
    R.rasterize(pv, faces, (16, 16), False, 0.5)
    assert calls == [1]
    R.rasterize(pv, faces, (16, 16), False, 0.5, hard_layer=lambda *a: (pv.new_zeros(0).long(),) * 2)
    assert calls == [1]  # a custom hard layer keeps the PyTorch pass unless jit=True


@pytest.mark.parametrize("proj", ["ortho", "persp"])
def test_render_mesh_images_and_gradients_match(sphere, monkeypatch, proj):
    verts, faces = _slit_scene(sphere)
    verts = verts.double()
    cam = front_camera(verts[0], 24, projection=proj)
    out = {}
    for jit in (False, True):
        monkeypatch.setattr(renderer, "rasterize", functools.partial(R.rasterize, jit=jit))
        v = verts.clone().requires_grad_(True)
        res = render_mesh(v, faces, cam, sigma=0.7, backend="torch")
        (res.images[..., 0] * torch.linspace(0, 1, 24, dtype=v.dtype)).sum().backward()
        out[jit] = (res.images.detach(), res.alpha.detach(), res.face_index, v.grad)
    for a, b in zip(out[False], out[True]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert out[True][3].abs().sum() > 0


@pytest.mark.parametrize("H,W,h", [(7, 5, 1), (9, 12, 5), (4, 4, 6), (1, 3, 2)])
def test_window_max_is_the_clipped_max_pool(H, W, h):
    g = np.random.default_rng(H * W + h)
    zmap = g.standard_normal(2 * H * W).astype(np.float32)
    zmap[g.integers(0, zmap.size, 3)] = np.inf  # background
    out = np.empty_like(zmap)
    rasterize_jit._window_max(zmap, 2, H, W, h, out)
    z = zmap.reshape(2, H, W)
    ref = np.array([[[z[b, max(i - h, 0):i + h + 1, max(j - h, 0):j + h + 1].max() for j in range(W)]
                     for i in range(H)] for b in range(2)])
    np.testing.assert_array_equal(out.reshape(2, H, W), ref)


@pytest.mark.parametrize("scene", ["sphere", "occlusion", "slit"])
def test_hard_image_is_the_hard_layer_composited(sphere, scene):
    """The preview's one-pass image (the hard layer's loop interpolating the grey as a face wins
    a pixel) against the two passes it replaces: ``hard_layer``'s face map, then the compiled
    compositing with no outline layer. Bit for bit: the same faces win, the same colour formula."""
    from types import SimpleNamespace

    from talkinghead_cli.render import composite_jit

    verts, faces = {"sphere": _sphere_scene, "occlusion": _occlusion_scene, "slit": _slit_scene}[scene](sphere)
    H, W = 40, 48
    for dtype in (torch.float32, torch.float64):
        for cull in (False, True):
            cam = front_camera(torch.nan_to_num(verts[0]), (H, W), projection="ortho").to(dtype=dtype)
            v = _through_camera(verts.to(dtype), cam) if scene == "sphere" else verts.to(dtype)
            pv, f = cam.project(v).contiguous().numpy(), faces.numpy()
            grey = 0.2 + 0.6 * torch.rand(v.shape[:2], generator=torch.Generator().manual_seed(1), dtype=dtype)
            area2, valid = rasterize_jit.face_setup(pv, f, False, cull)
            fast = rasterize_jit.hard_image(pv, f, area2, valid, grey.numpy(), H, W, bg=0.05)
            hmap, _ = rasterize_jit.hard_layer(pv, f, area2, valid, H, W, False)
            frag = SimpleNamespace(shape=(len(v), H, W), maps=(hmap, np.full_like(hmap, -1)))
            ref, _ = composite_jit.grey_composite(torch.from_numpy(pv), grey, faces, frag, 0.05, 0.0)
            assert fast.dtype == pv.dtype and np.array_equal(fast, ref.numpy())
            assert (hmap >= 0).mean() > 0.2 and (fast[hmap < 0] == pv.dtype.type(0.05)).all()
