"""avtalk's GLB as three.js sees it: GLTFLoader under node (tests/js/load_gltf.mjs).

The node script poses the mesh with three's own code (AnimationMixer -> morphTargetInfluences
-> Mesh.getVertexPosition); here its positions are compared with (a) the file's morph targets
and keyframes read in Python (three must read the same numbers: 1 um), and (b) avtalk's own
``vertices.npy`` of the same run, within the largest vertex error avtalk reports for the
export (``animation.json``: the morph targets are a compressed form of the motion, float32,
not quantised; for the default rig about 0.2 mm at worst, 0.01 mm typical).

Needs node and the npm ``three`` package in .ci/node (installed by .ci/run); skipped without.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clirun import avtalk

from talkinghead_cli.data.synthetic.rig import ARKIT_NAMES, _accessor, _read_glb

ROOT = Path(__file__).resolve().parents[1]
THREE = ROOT / ".ci" / "node" / "node_modules" / "three"
SCRIPT = ROOT / "tests" / "js" / "load_gltf.mjs"

pytestmark = pytest.mark.skipif(shutil.which("node") is None or not (THREE / "build" / "three.module.js").exists(),
                                reason="node or npm three absent (.ci/run installs three into .ci/node)")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("AVTALK_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """The first 0.9 s of the bundled example speech."""
    wave, sr = sf.read(ROOT / "examples" / "speech.wav", dtype="float32")
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    sf.write(path, wave[:int(0.9 * sr)], sr)
    return path, 0.9


def load_in_three(glb: Path, times: list[float]) -> dict:
    out = subprocess.run(["node", str(SCRIPT), str(THREE), str(glb), *map(repr, times)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def file_pose(glb: Path, time: float) -> np.ndarray:
    """(V, 3) the GLB posed at ``time`` from its own accessors (linear keys, held at the ends)."""
    gltf, _ = _read_glb(glb)
    cache: dict = {}
    prim = gltf["meshes"][0]["primitives"][0]
    base = _accessor(gltf, prim["attributes"]["POSITION"], cache)
    targets = np.stack([_accessor(gltf, t["POSITION"], cache) for t in prim["targets"]])
    sampler = gltf["animations"][0]["samplers"][0]
    times = _accessor(gltf, sampler["input"], cache)[:, 0]
    keys = _accessor(gltf, sampler["output"], cache).reshape(len(times), len(targets))
    weights = np.array([np.interp(time, times, keys[:, n]) for n in range(len(targets))])
    return base + np.einsum("n,nvc->vc", weights, targets)


def npy_pose(verts: np.ndarray, time: float, fps: float) -> np.ndarray:
    """(V, 3) avtalk's vertices at ``time``: linear between frames, the last frame held."""
    f = min(time * fps, len(verts) - 1)
    a = int(np.floor(f + 1e-6))
    b, x = min(a + 1, len(verts) - 1), f - a
    return (1 - x) * verts[a] + x * verts[b]


def run_and_load(speech, tmp_path, *extra) -> tuple[dict, dict, np.ndarray, Path]:
    path, _ = speech
    out = tmp_path / "out"
    assert avtalk("-q", "animate", path, "-o", out, "--format", "gltf,npy", "--no-video", *extra) == 0
    meta = json.loads((out / "animation.json").read_text())
    verts = np.load(out / "vertices.npy")
    fps = meta["fps"]
    times = [0.0, 10.5 / fps, (len(verts) - 1) / fps, meta["duration"]]  # start, between keys, last frame, end
    return load_in_three(out / "animation.glb", times), meta, verts, out / "animation.glb"


def check_common(three: dict, meta: dict, verts: np.ndarray, glb: Path, audio_s: float) -> float:
    """Checks both faces share; returns the largest three-vs-vertices.npy distance (m)."""
    fps = meta["fps"]
    assert three["vertices"] == verts.shape[1]
    assert three["morph_targets"] == len(three["morph_target_names"]) == meta["exports"]["gltf"]["morph_targets"]
    clip = three["clip"]
    assert abs(clip["duration"] - audio_s) <= 1 / fps, (clip["duration"], audio_s)
    assert [t["name"] for t in clip["tracks"]] == ["face.morphTargetInfluences"]
    assert 0.0 <= clip["min_value"] and clip["max_value"] <= 1.0
    assert three["material"]["type"] == "MeshStandardMaterial" and three["material"]["metalness"] == 0
    assert three["normals"] and three["morph_targets_relative"] and not three["warnings"]
    declared = meta["exports"]["gltf"]["max_vertex_error"]
    assert declared < 5e-4  # the export's own promise: half a millimetre at most
    worst = 0.0
    for sample in three["samples"]:
        pos = np.asarray(sample["positions"])
        assert np.abs(pos - file_pose(glb, sample["time"])).max() < 1e-6  # three reads the file's numbers
        worst = max(worst, float(np.abs(pos - npy_pose(verts, sample["time"], fps)).max()))
    motion = float(np.abs(verts - verts[0]).max())
    assert worst <= declared + 1e-6 and motion > 20 * worst, (worst, declared, motion)
    return worst


def test_default_rig_plays_its_arkit_blendshapes_in_three(speech, tmp_path):
    three, meta, verts, glb = run_and_load(speech, tmp_path)
    names = three["morph_target_names"]
    assert names[:52] == list(ARKIT_NAMES)
    assert all(re.fullmatch(r"residual\d\d[+-]", n) for n in names[52:])
    check_common(three, meta, verts, glb, speech[1])


def test_retargeted_face_plays_signed_motion_as_target_pairs_in_three(speech, tmp_path):
    three, meta, verts, glb = run_and_load(speech, tmp_path, "--template", ROOT / "examples" / "template.obj")
    names = three["morph_target_names"]
    assert names and all(re.fullmatch(r"motion\d\d[+-]", n) for n in names)
    assert any(n.endswith("-") for n in names)  # a signed component became two non-negative targets
    check_common(three, meta, verts, glb, speech[1])
