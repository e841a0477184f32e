"""Play an avtalk animation in Blender (the ``bpy`` wheel, headless) and compare with vertices.npy.

Imports ``OUT/animation.glb`` with Blender's own glTF importer (and ``OUT/animation.usdc``
with its USD importer, when present), steps through every frame, evaluates the depsgraph
and prints the largest vertex distance to ``OUT/vertices.npy`` per frame and overall.

    python -m venv /work/bpyenv && /work/bpyenv/bin/pip install bpy numpy   # Blender 5 as a module
    avtalk animate examples/speech.wav -o out/ --format npy,gltf,usd --no-video
    /work/bpyenv/bin/python benchmarks/check_blender.py out/ [--tolerance 0.001]

``bpy`` is not a dependency of avtalk (it is large and pinned to one Python version); run this
with an interpreter that has it. Exit status 1 when a frame is off by more than the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _evaluated_positions(obj, depsgraph) -> np.ndarray:
    """World-space vertex positions of ``obj`` after modifiers, shape keys and animation: (V, 3)."""
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float64)
    mesh.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    co = co.reshape(-1, 3)
    m = np.array(ev.matrix_world)
    return co @ m[:3, :3].T + m[:3, 3]


def _match(blender_rest: np.ndarray, ours_rest: np.ndarray) -> np.ndarray:
    """Index into our vertices for each Blender vertex: the nearest at rest (identity when
    the importer kept the order)."""
    if blender_rest.shape == ours_rest.shape and np.abs(blender_rest - ours_rest).max() < 1e-6:
        return np.arange(len(ours_rest))
    out = np.empty(len(blender_rest), np.int64)
    for a in range(0, len(blender_rest), 512):
        d = ((blender_rest[a:a + 512, None] - ours_rest[None]) ** 2).sum(-1)
        out[a:a + 512] = d.argmin(1)
    return out


def check(path: Path, verts: np.ndarray, neutral: np.ndarray, fps: float, kind: str) -> float:
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = int(round(fps)), 1.0
    if kind == "glb":
        bpy.ops.import_scene.gltf(filepath=str(path))
    else:
        bpy.ops.wm.usd_import(filepath=str(path))
    objs = [o for o in scene.objects if o.type == "MESH"]
    assert len(objs) == 1, [o.name for o in objs]
    obj = objs[0]
    depsgraph = bpy.context.evaluated_depsgraph_get()
    # Blender is Z up, glTF and our stage Y up: (x, y, z)_ours = (x, z, -y)_blender
    to_ours = lambda p: np.stack([p[:, 0], p[:, 2], -p[:, 1]], 1)  # noqa: E731
    keys = getattr(obj.data, "shape_keys", None)
    names = [k.name for k in keys.key_blocks] if keys else []
    start = 0  # both importers put time 0 (glTF) / time code 0 (USD) on Blender frame 0
    if kind == "glb":  # the basis shape key is the neutral mesh
        m = np.array(obj.matrix_world)
        rest = np.empty(len(obj.data.vertices) * 3)
        obj.data.vertices.foreach_get("co", rest)
        idx = _match(to_ours(rest.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]), neutral)
    else:  # a point cache has no rest shape: match on the first frame
        scene.frame_set(start)
        idx = _match(to_ours(_evaluated_positions(obj, bpy.context.evaluated_depsgraph_get())), verts[0])
    errors = []
    for i in range(len(verts)):
        scene.frame_set(start + i)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        pos = to_ours(_evaluated_positions(obj, depsgraph))
        errors.append(float(np.linalg.norm(pos - verts[i][idx], axis=1).max()))
    errors = np.asarray(errors)
    print(f"{kind}: Blender {bpy.app.version_string}, {len(obj.data.vertices)} vertices, {len(names)} shape keys"
          f" ({', '.join(names[1:4])}, ...), scene frames {scene.frame_start}-{scene.frame_end} at {scene.render.fps} fps")
    print(f"{kind}: max vertex error per frame (mm): " + " ".join(f"{1000 * e:.3f}" for e in errors))
    print(f"{kind}: worst frame {int(errors.argmax())}: {1000 * errors.max():.4f} mm; mean of per-frame max "
          f"{1000 * errors.mean():.4f} mm over {len(errors)} frames")
    return float(errors.max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="an `avtalk animate` output folder")
    ap.add_argument("--tolerance", type=float, default=0.001, help="metres (default 1 mm)")
    args = ap.parse_args()
    verts = np.load(args.out / "vertices.npy").astype(np.float64)
    neutral = np.load(args.out / "face.npz")["template"].astype(np.float64)
    fps = json.loads((args.out / "animation.json").read_text())["fps"]
    worst = {}
    for name, kind in (("animation.glb", "glb"), ("animation.usdc", "usd")):
        if (args.out / name).exists():
            worst[kind] = check(args.out / name, verts, neutral, fps, kind)
    bad = {k: v for k, v in worst.items() if v > args.tolerance}
    print("OK" if not bad else f"FAILED: {bad}")
    return 1 if bad or not worst else 0


if __name__ == "__main__":
    sys.exit(main())
