"""Retargeting: a face mesh of another topology, pose and scale animates like the model's."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from clirun import avtalk
from scipy.spatial.transform import Rotation

from talkinghead_cli.errors import UserError
from talkinghead_cli.mesh import Mesh
from talkinghead_cli.retarget import (
    axis_hypotheses,
    build_retargeting,
    closest_facing,
    closest_facing_reference,
    closest_on_surface,
    read_landmarks,
    smooth_falloff,
)

ROT = Rotation.from_euler("xyz", [20, 130, -30], degrees=True).as_matrix()
SCALE, SHIFT = 3.0, np.array([1.0, 2.0, 3.0])


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("AVTALK_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def rig():
    pytest.importorskip("openfacefx")
    pytest.importorskip("meshopt")
    from talkinghead_cli.data.synthetic.rig import load_rig

    return load_rig()


def _user_copy(rig, seed=0, other_face=False):
    """The rig's head, subdivided (original vertices first), jittered, rotated, rescaled, moved;
    with ``other_face`` also of other proportions (12 % wider, lower face 15 % shorter)."""
    keep = np.flatnonzero(rig.head[rig.faces].all(axis=1))
    head = np.flatnonzero(rig.head)
    remap = np.full(rig.num_verts, -1)
    remap[head] = np.arange(len(head))
    p = rig.template[head].astype(np.float64)
    if other_face:
        p[:, 0] = p[:, 0].mean() + 1.12 * (p[:, 0] - p[:, 0].mean())
        mouth_y = rig.template[rig.lip_indices, 1].mean()
        p[:, 1] = np.where(p[:, 1] < mouth_y, mouth_y + 0.85 * (p[:, 1] - mouth_y), p[:, 1])
    v, f = trimesh.remesh.subdivide(p, remap[rig.faces[keep]])
    v = v + np.random.default_rng(seed).normal(0, 2e-4, v.shape)
    return Mesh((SCALE * v @ ROT.T + SHIFT).astype(np.float32), f), head


def _region(rig):
    return np.union1d(rig.lip_indices, rig.upper_face_indices)


def test_remeshed_rotated_rescaled_other_face_moves_its_mouth_not_its_forehead(rig):
    user, head = _user_copy(rig, other_face=True)
    source = Mesh(rig.template, rig.faces)
    rt = build_retargeting(source, user, _region(rig))
    assert np.abs(rt.rotation - ROT).max() < 0.05 and rt.scale == pytest.approx(SCALE, rel=0.1)
    assert rt.error["p95"] < 0.015 and rt.method == "automatic" and rt.nonrigid
    weights = np.zeros((2, len(rig.names)), np.float32)
    weights[1, rig.index("jawOpen")] = 1.0
    pred = rig.pose(weights)  # (2, V, 3): neutral, then the jaw open
    anim = rt.transfer(pred, rig.template, user.verts)
    assert np.abs(anim[0] - user.verts).max() < 1e-6  # the neutral frame is the user's mesh
    # back in the model's frame and scale, the user's copies of the head vertices move as they do
    moved = (anim[1] - user.verts)[: len(head)] @ rt.rotation / rt.scale
    src = pred[1, head] - rig.template[head]
    lips = np.searchsorted(head, np.intersect1d(rig.lip_indices, head))
    upper = np.searchsorted(head, np.intersect1d(rig.upper_face_indices, head))
    lip_src = np.linalg.norm(src[lips], axis=1)
    assert lip_src.mean() > 1e-3  # the jaw does move the lips
    assert np.linalg.norm(moved[lips] - src[lips], axis=1).mean() < 0.1 * lip_src.mean()
    assert np.linalg.norm(moved[upper], axis=1).max() < 0.05 * lip_src.max()  # forehead still
    # the mapped lip region is the user's mouth
    user_lips = rt.map_indices(rig.lip_indices)
    assert len(np.intersect1d(user_lips, lips)) >= 0.8 * len(lips)


def test_landmarks_give_the_same_alignment(rig, tmp_path):
    user, head = _user_copy(rig, seed=1)
    source = Mesh(rig.template, rig.faces)
    pick = rig.lip_indices[:: max(1, len(rig.lip_indices) // 3)][:3].tolist() + rig.upper_face_indices[:3].tolist()
    pairs = [[int(np.searchsorted(head, t)), int(t)] for t in pick]
    path = tmp_path / "marks.json"
    path.write_text(json.dumps({"pairs": pairs}))
    marks = read_landmarks(path, user.num_verts, rig.num_verts)
    rt = build_retargeting(source, user, _region(rig), landmarks=marks, nonrigid=False)
    assert rt.method == "landmarks" and np.abs(rt.rotation - ROT).max() < 0.03
    assert rt.scale == pytest.approx(SCALE, rel=0.01) and rt.error["p95"] < 0.005


@pytest.mark.parametrize("shape", ["box", "torus"])
def test_non_face_meshes_are_refused(rig, shape):
    m = trimesh.creation.box() if shape == "box" else trimesh.creation.torus(1.0, 0.3)
    with pytest.raises(UserError, match="does not look like a face") as e:
        build_retargeting(Mesh(rig.template, rig.faces), Mesh(np.asarray(m.vertices, np.float32), m.faces),
                          _region(rig), user_path="thing.obj")
    assert "--landmarks" in str(e.value) and "thing.obj" in str(e.value)


def test_bad_landmark_files(tmp_path):
    cases = {"few.txt": "1 2\n3 4\n", "odd.txt": "1 2 3\n4 5 6\n7 8 9\n1 1 1\n",
             "float.txt": "1.5 2\n3 4\n5 6\n7 8\n", "range.txt": "1 2\n3 4\n5 6\n700 8\n",
             "bad.json": "{not json", "words.txt": "nose tip\n1 2\n3 4\n5 6\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError) as e:
            read_landmarks(tmp_path / name, num_user=100, num_source=50)
        assert name in str(e.value), name
    with pytest.raises(UserError, match="at least 4"):
        read_landmarks(tmp_path / "few.txt", 100, 50)
    with pytest.raises(UserError, match="not found"):
        read_landmarks(tmp_path / "missing.txt", 100, 50)
    (tmp_path / "ok.txt").write_text("# user template\n0 1\n2, 3\n4 5\n6 7\n")
    assert read_landmarks(tmp_path / "ok.txt", 100, 50).tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    (tmp_path / "ok.json").write_text('{"0": 1, "2": 3, "4": 5, "6": 7}')
    assert read_landmarks(tmp_path / "ok.json", 100, 50).tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]


# ----------------------------------------------------------------------------- parts, on small meshes


def _sphere_pair(sphere):
    verts, faces = sphere
    coarse = trimesh.creation.icosphere(subdivisions=2)
    return Mesh(verts, faces), Mesh(np.asarray(coarse.vertices * 2.0 @ ROT.T, np.float32), coarse.faces)


def test_closest_point_matches_brute_force(sphere):
    source, _ = _sphere_pair(sphere)
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(40, 3)) * 0.8
    tm = trimesh.Trimesh(source.verts, source.faces, process=False)
    p, d, _ = closest_on_surface(tm, pts)
    p_ref, d_ref, _ = closest_facing_reference(source.verts, source.faces, pts)
    assert np.abs(d - d_ref).max() < 1e-6 and np.abs(p - p_ref).max() < 1e-5
    # facing, with outward normals as a real surface has: the same points as brute force
    normals = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    p, d, _ = closest_facing(tm, pts, normals, penalty=0.05)
    p_ref, d_ref, _ = closest_facing_reference(source.verts, source.faces, pts, normals, penalty=0.05)
    assert np.abs(d - d_ref).max() < 1e-6 and np.abs(p - p_ref).max() < 1e-5


def test_touching_surfaces_map_by_facing():
    """Two coincident sheets facing apart (closed lips): each user vertex follows its own sheet."""
    grid = trimesh.creation.box(extents=(1, 1, 0.001))  # top (+z) and bottom (-z) sides 1 mm apart
    source = Mesh(np.asarray(grid.vertices, np.float32), grid.faces)
    user_pts = np.array([[0.1, 0.1, 0.0005], [0.1, 0.1, -0.0005]])
    normals = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])  # facing the far side: pick that one
    tm = trimesh.Trimesh(source.verts, source.faces, process=False)
    _, _, tri = closest_facing(tm, user_pts, normals, penalty=0.1)
    assert tm.face_normals[tri[0], 2] < 0 and tm.face_normals[tri[1], 2] > 0


def test_sparse_transfer_matches_reference_and_falloff(sphere):
    source, user = _sphere_pair(sphere)
    # a sphere is round, so only check the mapping machinery, not the alignment's rotation
    rt = build_retargeting(source, user, max_error=0.05)
    assert rt.scale == pytest.approx(2.0, rel=0.02)
    pred = source.verts[None] + 0.01 * np.random.default_rng(1).normal(size=(3, source.num_verts, 3)).astype(np.float32)
    fast = rt.transfer(pred, source.verts, user.verts)
    slow = rt.transfer_reference(pred, source.verts, user.verts)
    assert np.abs(fast - slow).max() < 1e-5
    out = np.zeros_like(fast)
    rt.transfer_into(pred, source.verts, user.verts, out, chunk=2)
    assert np.array_equal(out, fast)
    f = smooth_falloff(np.array([0.0, 0.01, 0.025, 0.04, 0.1]), 0.01, 0.04)
    assert f[0] == f[1] == 1 and f[3] == f[4] == 0 and f[2] == pytest.approx(0.5)
    assert len(axis_hypotheses()) == 24


def test_mapping_is_cached_per_template(sphere, tmp_path):
    from talkinghead_cli.retarget import cache_dir, for_checkpoint

    source, user = _sphere_pair(sphere)
    ckpt = {"config": {"animator": {"num_verts": source.num_verts}}, "template": torch.from_numpy(source.verts),
            "faces": torch.from_numpy(source.faces)}
    with pytest.raises(UserError, match="not look like a face"):  # a sphere fits a sphere, but not well enough
        for_checkpoint(ckpt, Mesh(user.verts * np.array([1, 1, 3], np.float32), user.faces))
    first = for_checkpoint(ckpt, user)
    files = list(cache_dir().glob("*.npz"))
    assert len(files) == 1 and not first.cached and first.source is not None
    second = for_checkpoint(ckpt, user)
    assert second.cached and (second.weights != first.weights).nnz == 0
    assert second.info()["alignment_error"] == first.info()["alignment_error"]
    assert np.array_equal(second.rotation, first.rotation) and second.nonrigid == first.nonrigid
    files[0].write_bytes(b"garbage")  # a broken cache entry is rebuilt
    assert not for_checkpoint(ckpt, user).cached
    assert for_checkpoint(ckpt, user).cached


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from talkinghead_cli.config import TrainConfig
    from talkinghead_cli.data import vocaset as V
    from talkinghead_cli.data.dataset import write_toy_corpus
    from talkinghead_cli.training.trainer import train

    root = tmp_path_factory.mktemp("rt")
    corpus = write_toy_corpus(root / "corpus", {V.TRAIN_SUBJECTS[0]: [1], V.VAL_SUBJECTS[0]: [21]}, seconds=0.5)
    train(TrainConfig(dataset="vocaset", data_root=corpus, run_dir=root / "run", epochs=1, lr=1e-3))
    return root / "run" / "best.pt"


@pytest.fixture
def speech(tmp_path):
    import soundfile as sf

    t = np.arange(int(0.6 * 16000)) / 16000
    path = tmp_path / "speech.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    return path


def test_cli_retargets_and_exports(checkpoint, speech, tmp_path, capsys):
    from talkinghead_cli.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    src = trimesh.Trimesh(ck["template"].numpy(), ck["faces"].numpy(), process=False)
    v, f = trimesh.remesh.subdivide(src.vertices, src.faces)
    trimesh.Trimesh(1.7 * v @ ROT.T + SHIFT, f, process=False).export(tmp_path / "face.obj")
    out = tmp_path / "out"
    code = avtalk("-q", "animate", speech, "-t", tmp_path / "face.obj", "-o", out, "-c", checkpoint,
                  "--format", "obj,gltf,npz", "--no-video")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "retargeted (automatic alignment + non-rigid)" in captured.out and "morph targets" in captured.out
    verts = np.load(out / "vertices.npy")
    assert verts.shape == (18, len(v), 3)
    assert len(list((out / "meshes").glob("*.obj"))) == 18 and (out / "sequence.npz").exists()
    meta = json.loads((out / "animation.json").read_text())
    assert meta["retarget"]["alignment_error"]["p95"] < 0.01 and meta["exports"]["gltf"]["morph_targets"] >= 1
    scene = trimesh.load(out / "animation.glb", process=False)
    assert len(next(iter(scene.geometry.values())).vertices) == len(v)
    assert not (out / ".model_vertices.npy").exists()


def test_bundled_example_template_is_retargeted(tmp_path, capsys):
    """examples/template.obj (a synthetic identity the bundled model never saw, lips re-meshed)
    is accepted by the default model's alignment limit and its mouth moves."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    out = tmp_path / "out"
    code = avtalk("-q", "animate", examples / "speech.wav", "-t", examples / "template.obj", "-o", out,
                  "--format", "npy", "--no-video")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    meta = json.loads((out / "animation.json").read_text())
    assert meta["retarget"]["alignment_error"]["p95"] < 0.01 and meta["retarget"]["nonrigid"]
    verts = np.load(out / "vertices.npy")
    motion = np.linalg.norm(verts - verts[0], axis=2).max(axis=1)  # (T,) largest displacement
    assert verts.shape[1] == meta["retarget"]["num_verts"] and motion.max() > 2e-3


def test_cli_arkit_needs_a_rig_and_uses_it(checkpoint, speech, tmp_path, capsys):
    from talkinghead_cli.data.synthetic.rig import ARKIT_NAMES
    from talkinghead_cli.checkpoint import load_checkpoint, save_checkpoint

    out = tmp_path / "out"
    assert avtalk("animate", speech, "-o", out, "-c", checkpoint, "--format", "arkit", "--no-video") == 2
    assert "not trained on an ARKit rig" in capsys.readouterr().err and not out.exists()
    ck = load_checkpoint(checkpoint)
    v = ck["template"].shape[0]
    basis = torch.from_numpy(np.random.default_rng(0).normal(0, 0.01, (3, v, 3)).astype(np.float16))
    ck["rig"] = {"name": "toy", "names": ["jawOpen", "mouthClose", "mouthFunnel"], "basis": basis}
    save_checkpoint(tmp_path / "rigged.pt", ck)
    assert avtalk("-q", "animate", speech, "-o", out, "-c", tmp_path / "rigged.pt", "--format", "arkit",
                  "--no-video") == 0
    header = (out / "arkit.csv").read_text().splitlines()[0].split(",")
    assert header == ["time_s", *ARKIT_NAMES]
    doc = json.loads((out / "arkit.json").read_text())
    w = np.asarray(doc["weights"])
    assert w.shape == (18, 52) and w.min() >= 0 and w.max() <= 1


def test_cli_bad_templates_and_landmarks(checkpoint, speech, tmp_path, capsys):
    out = tmp_path / "out"
    trimesh.creation.box().export(tmp_path / "box.obj")
    assert avtalk("animate", speech, "-t", tmp_path / "box.obj", "-o", out, "-c", checkpoint) == 2
    err = capsys.readouterr().err
    assert "does not look like a face" in err and "--landmarks" in err
    cloud = trimesh.PointCloud(trimesh.creation.icosphere(2).vertices)
    cloud.export(tmp_path / "cloud.ply")
    assert avtalk("animate", speech, "-t", tmp_path / "cloud.ply", "-o", out, "-c", checkpoint) == 2
    assert "not a triangle mesh" in capsys.readouterr().err
    (tmp_path / "marks.txt").write_text("0 1\n2 3\n")
    assert avtalk("animate", speech, "-t", tmp_path / "box.obj", "--landmarks", tmp_path / "marks.txt",
                  "-o", out, "-c", checkpoint) == 2
    assert "at least 4 are needed" in capsys.readouterr().err
    assert avtalk("animate", speech, "--landmarks", tmp_path / "marks.txt", "-o", out, "-c", checkpoint) == 2
    assert "--landmarks needs --template" in capsys.readouterr().err
    assert avtalk("animate", speech, "--format", "obj,fbx", "-o", out, "-c", checkpoint) == 2
    assert "unknown format 'fbx'" in capsys.readouterr().err
    assert not out.exists()
