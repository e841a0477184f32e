"""Closest points on meshes of any size (the fast, chunked SurfaceIndex against brute force),
chunked normals and moments, the clustered stand-in, and retargeting memory that grows
linearly with the template."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from talkinghead_cli.retarget import closest_facing_reference
from talkinghead_cli.surface import (
    SurfaceIndex,
    closest_on_triangles,
    cluster_proxy,
    surface_moments,
    vertex_normals,
)


def _meshes():
    coarse = trimesh.creation.icosphere(subdivisions=1)
    box = trimesh.creation.box(extents=(2, 1, 0.5))  # large, thin triangles
    capsule = trimesh.creation.capsule(height=1.0, radius=0.4)
    return [coarse, box, capsule]


@pytest.mark.parametrize("mesh", _meshes(), ids=["icosphere", "box", "capsule"])
def test_index_matches_brute_force(mesh):
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    pts = np.random.default_rng(0).normal(size=(400, 3)) * 0.9
    index = SurfaceIndex(v, f)
    c, d, t, b = index.query(pts, chunk=64)  # several chunks
    c_ref, d_ref, _ = closest_facing_reference(v, f, pts)
    assert np.abs(d - d_ref).max() < 1e-9 and np.abs(c - c_ref).max() < 1e-9
    assert np.abs(np.einsum("nk,nkc->nc", b, v[f[t]]) - c).max() < 1e-9  # barycentrics give the point
    normals = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    c, d, _, _ = index.query(pts, normals, penalty=0.3, chunk=64)
    c_ref, d_ref, _ = closest_facing_reference(v, f, pts, normals, penalty=0.3)
    assert np.abs(d - d_ref).max() < 1e-9 and np.abs(c - c_ref).max() < 1e-9


def test_closest_on_triangles_regions():
    tri = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    pts = np.array([[-1, -1, 0], [2, -0.1, 0], [-0.1, 2, 1], [0.5, -1, 0], [-1, 0.5, 0], [1, 1, 0],
                    [0.2, 0.2, 3]], float)
    want = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0, 0], [0, 0.5, 0], [0.5, 0.5, 0], [0.2, 0.2, 0]])
    closest, bary = closest_on_triangles(np.repeat(tri[None], len(pts), axis=0), pts)
    assert np.allclose(closest, want) and np.allclose(bary.sum(axis=1), 1)
    degenerate = np.zeros((1, 3, 3))
    assert np.isfinite(closest_on_triangles(degenerate, np.ones((1, 3)))[0]).all()


def test_normals_moments_and_proxy():
    sphere = trimesh.creation.icosphere(subdivisions=4)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    n = vertex_normals(v, f, chunk=1000)
    assert np.abs(n - v / np.linalg.norm(v, axis=1, keepdims=True)).max() < 0.01
    mu, axes, sd = surface_moments(v, f, chunk=1000)
    assert np.abs(mu).max() < 1e-9 and np.allclose(sd, 1 / np.sqrt(3), rtol=0.01)
    cell = 0.2
    pv, pf = cluster_proxy(v, f, cell)
    assert len(pv) < len(v) / 4 and pf.max() < len(pv)
    _, d, _, _ = SurfaceIndex(pv, pf).query(v)
    assert d.max() < np.sqrt(3) * cell  # the stand-in stays within a cube's diagonal


def _face_subdivided(times: int):
    from talkinghead_cli.mesh import Mesh
    from talkinghead_cli.pretrained import resolve
    from talkinghead_cli.checkpoint import load_checkpoint

    ck = load_checkpoint(resolve(None, "animator"), kind="animator")
    source = Mesh(ck["template"].numpy().astype(np.float32), ck["faces"].numpy().astype(np.int64))
    v, f = source.verts.astype(np.float64), source.faces
    for _ in range(times):
        v, f = trimesh.remesh.subdivide(v, f)
    region = np.unique(np.concatenate([ck["lip_indices"].numpy(), ck["upper_indices"].numpy()]))
    return source, Mesh(v.astype(np.float32), f), region


def test_retargeting_memory_is_linear_in_the_template(monkeypatch):
    """The bundled face subdivided once (16,746 vertices; bent onto the clustered stand-in
    as a scan would be) maps its vertices onto the face they came from, with a peak of traced
    memory under 10 kB per template vertex (the former code: ~35 kB per vertex).
    ``benchmarks/bench_retarget.py --scaling`` runs the same up to 1M vertices."""
    import tracemalloc

    import talkinghead_cli.retarget as R

    monkeypatch.setattr(R, "PROXY_FACES", 10_000)
    source, user, region = _face_subdivided(1)
    seen = []
    tracemalloc.start()
    try:
        rt = R.build_retargeting(source, user, region, progress=lambda done, total: seen.append(done))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / user.num_verts < 10_000, peak
    assert seen[0] == 0 and seen[-1] == 100 and seen == sorted(seen)
    assert rt.error["p95"] < 1e-3 and rt.weights.shape == (user.num_verts, source.num_verts)
    # the first Vt vertices of a subdivision are the source's own: nearly all take their own motion
    own = np.diag(rt.weights[: source.num_verts].toarray())
    assert np.median(own) > 0.99 and (own < 0.9).mean() < 0.05
    pred = source.verts[None] + np.random.default_rng(0).normal(0, 1e-3, (5, source.num_verts, 3)).astype(np.float32)
    blocks = list(rt.transfer_chunks(pred, source.verts, user.verts, chunk=2))
    assert [a for a, _ in blocks] == [0, 2, 4]
    assert np.abs(np.concatenate([b for _, b in blocks]) - rt.transfer(pred, source.verts, user.verts)).max() < 1e-6
