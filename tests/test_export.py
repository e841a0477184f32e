"""glTF (morph targets + animation) and ARKit blendshape-curve exports."""

import csv
import json

import numpy as np
import pytest
import trimesh

from talkinghead_cli.data.synthetic.rig import ARKIT_NAMES, _accessor, _read_glb
from talkinghead_cli.errors import UserError
from talkinghead_cli.export import (
    checkpoint_rig,
    compress_motion,
    parse_formats,
    solve_arkit,
    solve_arkit_reference,
    write_arkit,
    write_glb,
)


def _sequence(sphere, frames=20, seed=0):
    """A sphere whose 'mouth' (low z cap) opens and closes: verts (T, V, 3) and neutral."""
    verts, faces = sphere
    t = np.arange(frames) / 30.0
    open_ = np.sin(2 * np.pi * 2 * t)[:, None, None]
    wobble = np.cos(2 * np.pi * 5 * t)[:, None, None]
    a = np.zeros_like(verts)
    a[:, 1] = np.where(verts[:, 2] < -0.5, -0.2 * verts[:, 1], 0)
    b = 0.05 * np.random.default_rng(seed).normal(size=verts.shape).astype(np.float32)
    return (verts[None] + open_ * a + wobble * b).astype(np.float32), verts, faces


def test_parse_formats():
    assert parse_formats("obj, GLTF,obj") == ["obj", "gltf"]
    assert parse_formats("glb") == ["gltf"]
    with pytest.raises(ValueError):
        parse_formats("fbx")


def test_compression_picks_the_rank_of_the_motion(sphere):
    seq, neutral, _ = _sequence(sphere)
    morph = compress_motion(seq - neutral[None], max_targets=32, tolerance=1e-4)
    assert morph.targets.shape[0] == 2  # two independent motions
    assert morph.error < 1e-4 and np.abs(morph.weights).max() == pytest.approx(1.0)
    capped = compress_motion(seq - neutral[None], max_targets=1)
    assert capped.targets.shape[0] == 1 and 0.01 < capped.error < 1
    # long sequences: the basis from a subset of frames, weights for every frame, same result
    sub = compress_motion(seq, max_targets=32, tolerance=1e-4, max_svd_frames=7, chunk=6, neutral=neutral)
    assert sub.weights.shape == (20, 2) and sub.error < 1e-4
    rebuilt = np.einsum("tn,nvc->tvc", sub.weights, sub.targets)
    assert np.abs(rebuilt - (seq - neutral[None])).max() < 1e-4


def test_glb_loads_back_with_morph_targets_and_animation(sphere, tmp_path):
    seq, neutral, faces = _sequence(sphere)
    path = tmp_path / "anim.glb"
    morph = write_glb(path, seq, neutral, faces, fps=30.0, tolerance=1e-4)
    scene = trimesh.load(path, process=False)
    geom = next(iter(scene.geometry.values()))
    assert len(geom.vertices) == len(neutral) and len(geom.faces) == len(faces)
    # raw glTF, read by the rig loader (an independent reader): targets, animation, spec fields
    gltf, _ = _read_glb(path)
    prim = gltf["meshes"][0]["primitives"][0]
    assert len(prim["targets"]) == morph.targets.shape[0] == 2
    for acc_i in [prim["attributes"]["POSITION"]] + [t["POSITION"] for t in prim["targets"]]:
        acc = gltf["accessors"][acc_i]
        assert "min" in acc and "max" in acc and acc["type"] == "VEC3"
    for view in gltf["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
    sampler = gltf["animations"][0]["samplers"][0]
    assert sampler["interpolation"] == "LINEAR"
    assert gltf["animations"][0]["channels"][0]["target"] == {"node": 0, "path": "weights"}
    cache = {}
    times = _accessor(gltf, sampler["input"], cache)[:, 0]
    assert len(times) == 20 and times[1] == pytest.approx(1 / 30)
    weights = _accessor(gltf, sampler["output"], cache).reshape(20, -1)
    base = _accessor(gltf, prim["attributes"]["POSITION"], cache)
    offs = np.stack([_accessor(gltf, t["POSITION"], cache) for t in prim["targets"]])
    rebuilt = base[None] + np.einsum("tn,nvc->tvc", weights, offs)
    assert np.abs(rebuilt - seq).max() < 1e-4


def test_arkit_nnls_recovers_known_weights():
    rng = np.random.default_rng(0)
    k, v = 12, 300
    basis = rng.normal(size=(k, v, 3)).astype(np.float32) * 0.01
    truth = rng.uniform(0, 1, size=(25, k)).astype(np.float32)
    truth[truth < 0.4] = 0  # sparse, with exact zeros and values near 1
    disp = np.einsum("tk,kvc->tvc", truth, basis)
    w = solve_arkit(disp, basis)
    assert w.min() >= 0 and w.max() <= 1
    assert np.abs(w - truth).max() < 1e-3
    ref = solve_arkit_reference(disp[:5], basis)
    assert np.abs(w[:5] - ref).max() < 1e-3
    # out of the box: a target of 1.5 x a shape clips to 1, negative ones to 0
    w2 = solve_arkit((1.5 * basis[:1] - 0.5 * basis[1:2]), basis)
    assert w2[0, 0] == pytest.approx(1.0, abs=1e-4) and w2[0, 1] == pytest.approx(0.0, abs=1e-4)


def test_arkit_files_have_52_named_columns(tmp_path):
    names = ["jawOpen", "mouthClose", "eyeBlinkLeft"]
    w = np.array([[0.5, 0.1, 0.0], [1.0, 0.0, 0.3]], np.float32)
    write_arkit(tmp_path, w, names, fps=30.0)
    rows = list(csv.reader((tmp_path / "arkit.csv").open()))
    assert rows[0] == ["time", *ARKIT_NAMES] and len(rows[0]) == 53 and len(rows) == 3
    assert float(rows[2][1 + ARKIT_NAMES.index("jawOpen")]) == 1.0
    assert float(rows[2][0]) == pytest.approx(1 / 30, abs=1e-6)
    doc = json.loads((tmp_path / "arkit.json").read_text())
    assert doc["fps"] == 30.0 and doc["names"] == list(ARKIT_NAMES)
    assert np.asarray(doc["weights"]).shape == (2, 52)
    assert doc["weights"][1][ARKIT_NAMES.index("eyeBlinkLeft")] == pytest.approx(0.3)


def test_model_without_rig_is_refused():
    with pytest.raises(UserError, match="ARKit rig"):
        checkpoint_rig({"rig": None})


def test_checkpoint_payload_carries_the_synthetic_corpus_rig(tmp_path):
    pytest.importorskip("openfacefx")
    pytest.importorskip("meshopt")
    from types import SimpleNamespace

    from talkinghead_cli.data.synthetic.rig import load_rig
    from talkinghead_cli.export import rig_payload

    rig = load_rig()
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"rig": rig.info()}))
    corpus = SimpleNamespace(name="synthetic", num_verts=rig.num_verts, extra={"manifest": manifest})
    payload = rig_payload(corpus)
    assert payload["name"] == "facecap" and payload["names"] == rig.names
    assert tuple(payload["basis"].shape) == rig.basis.shape
    names, basis = checkpoint_rig({"rig": payload})
    assert names == rig.names
    assert np.abs(basis - rig.basis).max() < 1e-4  # float16 storage
    assert rig_payload(SimpleNamespace(name="vocaset", num_verts=rig.num_verts, extra={})) is None
    assert rig_payload(SimpleNamespace(name="synthetic", num_verts=10, extra={"manifest": manifest})) is None
