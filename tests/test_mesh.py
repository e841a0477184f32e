from pathlib import Path

import numpy as np
import pytest
import trimesh

from talkinghead_cli.errors import UserError
from talkinghead_cli.mesh import load_sequence, load_template, write_obj_reference, write_sequence


def _write_obj_with_uvs(path, verts, faces):
    # vt indices differ from v indices: a naive loader would split vertices.
    lines = ["v %.6f %.6f %.6f" % tuple(v) for v in verts] + ["vt 0 0", "vt 1 0"]
    lines += ["f %d/%d %d/%d %d/%d" % (a + 1, i % 2 + 1, b + 1, (i + 1) % 2 + 1, c + 1, 1)
              for i, (a, b, c) in enumerate(faces)]
    path.write_text("\n".join(lines) + "\n")


def test_obj_keeps_vertex_order(tmp_path, sphere):
    verts, faces = sphere
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(verts))
    inv = np.argsort(perm)
    verts_p, faces_p = verts[perm], inv[faces]
    path = tmp_path / "face.obj"
    _write_obj_with_uvs(path, verts_p, faces_p)
    mesh = load_template(path)
    np.testing.assert_allclose(mesh.verts, verts_p, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, faces_p)


@pytest.mark.parametrize("ext", [".ply", ".glb"])
def test_other_template_formats(tmp_path, sphere, ext):
    verts, faces = sphere
    path = tmp_path / f"face{ext}"
    trimesh.Trimesh(verts, faces, process=False).export(path)
    mesh = load_template(path)
    assert mesh.verts.shape == verts.shape
    np.testing.assert_allclose(mesh.verts, verts, atol=1e-6)


def test_npy_and_npz_templates(tmp_path, sphere):
    verts, faces = sphere
    np.save(tmp_path / "t.npy", verts)
    with pytest.raises(UserError, match="no faces"):
        load_template(tmp_path / "t.npy")
    assert load_template(tmp_path / "t.npy", faces=faces).faces.shape == faces.shape
    np.savez(tmp_path / "t.npz", verts=verts, faces=faces)
    assert load_template(tmp_path / "t.npz").num_verts == len(verts)


def test_bad_templates(tmp_path, sphere):
    verts, faces = sphere
    with pytest.raises(UserError, match="not found"):
        load_template(tmp_path / "missing.obj")
    pc = tmp_path / "points.ply"
    trimesh.PointCloud(verts).export(pc)
    with pytest.raises(UserError):
        load_template(pc)
    bad = tmp_path / "nan.npz"
    v = verts.copy()
    v[0, 0] = np.nan
    np.savez(bad, verts=v, faces=faces)
    with pytest.raises(UserError, match="NaN"):
        load_template(bad)
    oob = tmp_path / "oob.npz"
    np.savez(oob, verts=verts, faces=faces + len(verts))
    with pytest.raises(UserError, match="out of range"):
        load_template(oob)
    with pytest.raises(UserError, match="unsupported"):
        load_template(tmp_path.joinpath("x.txt").resolve() if (tmp_path / "x.txt").write_text("x") else None)


@pytest.mark.parametrize("fmt", ["obj", "ply", "npy", "npz"])
def test_sequence_roundtrip(tmp_path, sphere, fmt):
    verts, faces = sphere
    seq = verts[None] + np.linspace(0, 1, 4, dtype=np.float32)[:, None, None]
    target = tmp_path / ("seq" if fmt in ("obj", "ply") else f"seq.{fmt}")
    calls = []
    write_sequence(target, seq, faces, fmt=fmt, fps=30, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (4, 4)
    back, fps = load_sequence(target)
    np.testing.assert_allclose(back, seq, atol=1e-5)
    if fmt != "npy":
        assert fps == 30
    if fmt in ("obj", "ply"):
        frame = trimesh.load(target / f"frame_00002.{fmt}", process=False, maintain_order=True)
        np.testing.assert_array_equal(frame.faces, faces)


def test_obj_writer_matches_trimesh(tmp_path, sphere):
    verts, faces = sphere
    write_sequence(tmp_path / "ours", verts[None], faces, fmt="obj")
    write_obj_reference(tmp_path / "ref.obj", verts, faces)
    ours = trimesh.load(tmp_path / "ours" / "frame_00000.obj", process=False, maintain_order=True)
    ref = trimesh.load(tmp_path / "ref.obj", process=False, maintain_order=True)
    np.testing.assert_allclose(ours.vertices, ref.vertices, atol=1e-6)
    np.testing.assert_array_equal(ours.faces, ref.faces)


def test_failed_write_leaves_nothing(tmp_path, sphere):
    verts, faces = sphere
    target = tmp_path / "out"
    write_sequence(target, verts[None], faces, fmt="obj")

    def boom(done, total):
        if done == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_sequence(target, np.repeat(verts[None], 3, 0), faces, fmt="obj", progress=boom)
    # The earlier complete output is intact and no temporary folder is left behind.
    assert sorted(p.name for p in target.iterdir()) == ["face.mtl", "frame_00000.obj"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_sequence_errors(tmp_path, sphere):
    verts, _ = sphere
    np.save(tmp_path / "bad.npy", np.zeros((4, 5)))
    with pytest.raises(UserError, match="expected"):
        load_sequence(tmp_path / "bad.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, len(verts) * 3), np.float32))
    assert load_sequence(tmp_path / "flat.npy", num_verts=len(verts))[0].shape == (4, len(verts), 3)
    with pytest.raises(UserError, match="vertices"):
        load_sequence(tmp_path / "flat.npy", num_verts=10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no OBJ"):
        load_sequence(tmp_path / "empty")


def test_outputs_get_normal_permissions(tmp_path, sphere):
    import os
    import stat

    verts, faces = sphere
    old = os.umask(0o022)
    try:
        folder = write_sequence(tmp_path / "seq", verts[None], faces, fmt="obj")
        single = write_sequence(tmp_path / "seq.npy", verts[None], faces, fmt="npy")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE(single.stat().st_mode) == 0o644


def test_fast_obj_vertex_text_is_byte_identical_to_printf():
    from talkinghead_cli.mesh import obj_vertex_bytes

    rng = np.random.default_rng(1)
    edge = np.array([0.0, -0.0, 0.5e-6, -0.5e-6, 1.5e-6, 0.9999995, -0.9999995, 123.4567895,
                     -99999.999999, 1e-7, 2.5e-7, 7.0, -7.0, 0.1, 0.2, 0.3], dtype=np.float32)
    values = np.concatenate([rng.normal(0, 0.1, 3000), rng.normal(0, 1000, 300), edge]).astype(np.float32)
    values = values[: len(values) // 3 * 3].reshape(-1, 3)
    expected = (("v %.6f %.6f %.6f\n" * len(values)) % tuple(values.ravel().tolist())).encode()
    assert obj_vertex_bytes(values) == expected


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc (unwritable even for root)")
def test_unwritable_output_is_a_user_error(sphere):
    verts, faces = sphere
    with pytest.raises(UserError, match="cannot write into the output folder"):
        write_sequence(Path("/proc/avtalk-test-seq"), verts[None], faces, fmt="obj")
    with pytest.raises(UserError, match="cannot write into the output folder"):
        write_sequence(Path("/proc/avtalk-test-seq.npy"), verts[None], faces, fmt="npy")


def test_vertex_normals_of_many_frames_match_frame_by_frame(sphere, tmp_path, monkeypatch):
    """The batched normals, the compiled ones (numba, when installed) and the OBJ writer's
    block-wise ``vn`` lines give the frame-by-frame reference's numbers."""
    from talkinghead_cli import mesh as mesh_module
    from talkinghead_cli.mesh_visuals import vertex_normals
    from talkinghead_cli.render.shade_jit import vertex_normals_frames as vertex_normals_fast

    verts, faces = sphere
    rng = np.random.default_rng(0)
    frames = (verts[None] * (1 + 0.1 * rng.standard_normal((5, len(verts), 1)))).astype(np.float32)
    frames[:, -1] = 7.0  # with an unused vertex appended below: +z
    faces = np.asarray(faces)
    one_by_one = np.stack([vertex_normals(f, faces) for f in frames])
    np.testing.assert_array_equal(vertex_normals(frames, faces), one_by_one)
    np.testing.assert_allclose(vertex_normals_fast(frames, faces), one_by_one, atol=1e-6)
    lonely = np.concatenate([frames, np.ones((5, 1, 3), np.float32)], axis=1)
    assert (vertex_normals_fast(lonely, faces)[:, -1] == [0, 0, 1]).all()
    monkeypatch.setattr(mesh_module, "NORMALS_BLOCK", 2)  # blocks of 2, 2 and 1 frames
    write_sequence(tmp_path / "seq", frames, faces, fmt="obj", normals=vertex_normals_fast)
    for i in range(5):
        text = (tmp_path / "seq" / f"frame_{i:05d}.obj").read_text().splitlines()
        vn = np.array([[float(x) for x in line.split()[1:]] for line in text if line.startswith("vn ")])
        np.testing.assert_allclose(vn, one_by_one[i], atol=1e-6)
