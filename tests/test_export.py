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
    assert parse_formats("usda,livelink") == ["usd", "livelink"]
    with pytest.raises(ValueError, match="valid: obj, ply"):
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
    assert len(prim["targets"]) == morph.targets.shape[0] == 4  # two signed components, each as + and -
    for acc_i in [prim["attributes"]["POSITION"]] + [t["POSITION"] for t in prim["targets"]]:
        acc = gltf["accessors"][acc_i]
        assert "min" in acc and "max" in acc and acc["type"] == "VEC3"
    for view in gltf["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
    sampler = gltf["animations"][0]["samplers"][0]
    assert sampler["interpolation"] == "LINEAR"
    assert "NORMAL" in prim["attributes"] and gltf["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0
    names = gltf["meshes"][0]["extras"]["targetNames"]
    assert len(names) == len(prim["targets"]) and all(n.startswith("motion") for n in names)
    assert gltf["animations"][0]["channels"][0]["target"] == {"node": 0, "path": "weights"}
    cache = {}
    times = _accessor(gltf, sampler["input"], cache)[:, 0]
    assert len(times) == 20 and times[1] == pytest.approx(1 / 30)
    weights = _accessor(gltf, sampler["output"], cache).reshape(20, -1)
    assert weights.min() >= 0 and weights.max() <= 1
    base = _accessor(gltf, prim["attributes"]["POSITION"], cache)
    offs = np.stack([_accessor(gltf, t["POSITION"], cache) for t in prim["targets"]])
    rebuilt = base[None] + np.einsum("tn,nvc->tvc", weights, offs)
    assert np.abs(rebuilt - seq).max() < 1e-4


def test_glb_clip_lasts_as_long_as_the_audio_and_rig_targets_keep_their_names(sphere, tmp_path):
    seq, neutral, faces = _sequence(sphere)
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, len(neutral), 3)).astype(np.float32) * 0.01
    w = solve_arkit(seq, basis, neutral=neutral)
    write_glb(tmp_path / "a.glb", seq, neutral, faces, fps=30.0, duration=0.7,
              rig=(["jawOpen", "mouthClose", "mouthFunnel"], basis, w))
    gltf, _ = _read_glb(tmp_path / "a.glb")
    names = gltf["meshes"][0]["extras"]["targetNames"]
    assert names[:3] == ["jawOpen", "mouthClose", "mouthFunnel"] and all(n.startswith("residual") for n in names[3:])
    cache = {}
    sampler = gltf["animations"][0]["samplers"][0]
    times = _accessor(gltf, sampler["input"], cache)[:, 0]
    assert len(times) == 21 and times[-1] == pytest.approx(0.7)
    weights = _accessor(gltf, sampler["output"], cache).reshape(21, -1)
    assert weights.min() >= 0 and weights.max() <= 1 and np.array_equal(weights[-1], weights[-2])
    prim = gltf["meshes"][0]["primitives"][0]
    offs = np.stack([_accessor(gltf, t["POSITION"], cache) for t in prim["targets"]])
    rebuilt = neutral[None] + np.einsum("tn,nvc->tvc", weights[:20], offs)
    assert np.abs(rebuilt - seq).max() < 0.02 * np.abs(seq - neutral).max()


def test_gltf_validator_reports_no_errors(sphere, tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / ".ci" / "node" / "node_modules"
    if shutil.which("node") is None or not (root / "gltf-validator").is_dir():
        pytest.skip("node or npm gltf-validator absent (.ci/run installs it into .ci/node)")
    seq, neutral, faces = _sequence(sphere)
    write_glb(tmp_path / "a.glb", seq, neutral, faces, fps=30.0, duration=0.7)
    script = ("const v=require('gltf-validator');const fs=require('fs');"
              "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[1])))"
              ".then(r=>console.log(JSON.stringify(r.issues)))")
    out = subprocess.run(["node", "-e", script, str(tmp_path / "a.glb")], capture_output=True, text=True,
                         cwd=root.parent, env={"NODE_PATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120)
    issues = json.loads(out.stdout)
    assert issues["numErrors"] == 0, issues["messages"][:5]


def test_livelink_csv_parses_like_its_consumers(tmp_path):
    from talkinghead_cli.export import LIVELINK_HEADER, write_livelink

    names = ["jawOpen", "jawLeft", "mouthRight", "eyeBlinkLeft"]
    w = np.array([[0.5, 0.1, 0.2, 0.0]] * 65, np.float32)
    w[64] = [1.0, 0.0, 0.0, 0.3]
    write_livelink(tmp_path, w, names, fps=30.0)
    rows = list(csv.reader((tmp_path / "livelink.csv").open()))
    # by column index (Blender add-ons): 63 columns, shapes at 2..53, rotations after
    assert len(rows[0]) == 63 and rows[0] == LIVELINK_HEADER and all(len(r) == 63 for r in rows)
    assert rows[0][16:20] == ["JawForward", "JawRight", "JawLeft", "JawOpen"] and rows[0][23:25] == ["MouthRight", "MouthLeft"]
    assert rows[1][1] == "61" and float(rows[1][18]) == pytest.approx(0.1) and float(rows[65][19]) == 1.0
    assert all(float(x) == 0 for x in rows[1][54:])
    # by name (csv.DictReader, as MotionBuilder scripts do)
    table = list(csv.DictReader((tmp_path / "livelink.csv").open()))
    assert float(table[64]["JawOpen"]) == 1.0 and float(table[0]["MouthRight"]) == pytest.approx(0.2)
    assert float(table[64]["EyeBlinkLeft"]) == pytest.approx(0.3)
    # timecode as frames: HH:MM:SS:FF.mmm at 30 fps
    def frames(tc):
        h, m, s, f = tc.split(":")
        return round(((int(h) * 60 + int(m)) * 60 + int(s)) * 30 + float(f))
    assert [frames(r["Timecode"]) for r in table] == list(range(65))
    assert table[31]["Timecode"] == "00:00:01:01.000"


def test_usd_points_and_blendshapes_read_back(sphere, tmp_path):
    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom, UsdSkel, UsdValidation

    from talkinghead_cli.export_usd import write_usd

    seq, neutral, faces = _sequence(sphere)
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, len(neutral), 3)).astype(np.float32) * 0.01
    w = solve_arkit(seq, basis, neutral=neutral)
    path = tmp_path / "a.usdc"
    write_usd(path, seq, neutral, faces, fps=30.0, duration=0.7, rig=(["jawOpen", "mouthClose", "mouthFunnel"], basis, w))
    stage = Usd.Stage.Open(str(path))
    validators = UsdValidation.ValidationRegistry().GetOrLoadAllValidators()  # what usdchecker runs
    errors = UsdValidation.ValidationContext(validators).Validate(stage)
    assert len(validators) > 10 and not errors, [e.GetMessage() for e in errors]
    assert stage.GetTimeCodesPerSecond() == 30 and stage.GetEndTimeCode() == pytest.approx(21)
    points = UsdGeom.Mesh(stage.GetPrimAtPath("/face/mesh")).GetPointsAttr()
    got = np.stack([np.asarray(points.Get(i)) for i in range(20)])
    assert np.abs(got - seq).max() <= 1e-6 * np.abs(seq).max()
    stage.GetPrimAtPath("/face").GetVariantSets().GetVariantSet("motion").SetVariantSelection("blendshapes")
    assert UsdSkel.BakeSkinning(stage.Traverse())
    baked = np.stack([np.asarray(points.Get(i)) for i in range(20)])
    assert np.abs(baked - seq).max() < 0.02 * np.abs(seq - neutral).max()


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
    assert rows[0] == ["time_s", *ARKIT_NAMES] and len(rows[0]) == 53 and len(rows) == 3
    assert float(rows[2][1 + ARKIT_NAMES.index("jawOpen")]) == 1.0
    assert float(rows[2][0]) == pytest.approx(1 / 30, abs=1e-6)
    doc = json.loads((tmp_path / "arkit.json").read_text())
    assert doc["fps"] == 30.0 and doc["names"] == list(ARKIT_NAMES) and doc["seconds"][1] == pytest.approx(1 / 30, abs=1e-6)
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
