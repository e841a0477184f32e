"""glTF 2.0 binary (GLB) of an animation: morph targets with non-negative weights.

Every player (Blender, three.js, Unity, glTF viewers) must show the same face, so the
weights never leave [0, 1] (Blender's importer clamps a shape key's range from its first
key, so signed weights play wrong there):

- **ARKit rig** (a model trained on one, animating the rig's own face): the targets are the
  rig's blendshapes under their ARKit names (``jawOpen``, ...), with the bounded NNLS
  weights of :func:`~talkinghead_cli.export.solve_arkit`; what the rig cannot express is
  added as ``residualNN+`` / ``residualNN-`` targets (the residual's truncated SVD, each
  signed component as two targets), so the file still plays the predicted vertices.
- **Any other face**: the truncated SVD of the motion (:func:`compress_motion`), each signed
  component as ``motionNN+`` and ``motionNN-`` (weights ``max(w, 0)`` and ``max(-w, 0)``,
  whose linear interpolation is exactly that of ``w``).

The file has per-vertex normals of the template (and per-target normal deltas), a plain
non-metallic material (or the template's UVs, colour and texture), and one LINEAR
animation whose last key, holding the last frame, lies at the end of the speech. Names
of the targets are in ``mesh.extras.targetNames``. The writer is our own: one JSON chunk,
one BIN chunk, one bufferView per array (4-byte aligned), min/max where the spec asks.

Shapes: T frames, V vertices, F faces, K blendshapes, N morph targets.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.mesh_visuals import IMAGE_TYPES, Material, Visuals, split_seams, vertex_normals

MAX_TARGETS = 32
TOLERANCE = 0.005  # relative Frobenius error of the motion the morph targets may leave
TARGET_NORMALS_LIMIT = 20_000_000  # N * V above which per-target normal deltas are left out
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


@dataclass
class MorphTargets:
    """targets: (N, V, 3) float32; weights: (T, N) float32; error: relative reconstruction
    error ``||D - W T|| / ||D||`` (0 for a still sequence); names: N names (or None)."""

    targets: np.ndarray
    weights: np.ndarray
    error: float
    names: list[str] | None = None


def compress_motion(disp: np.ndarray, max_targets: int = MAX_TARGETS, tolerance: float = TOLERANCE,
                    max_svd_frames: int = 2000, chunk: int = 1000, neutral: np.ndarray | None = None) -> MorphTargets:
    """Truncated SVD of displacements into signed morph targets.

    The basis comes from the SVD of at most ``max_svd_frames`` evenly spaced frames; every
    frame's weights are its projection onto that basis (for shorter sequences this is exactly
    the truncated SVD). Memory stays bounded for long sequences (``chunk`` frames at a time).

    Args:
        disp: (T, V, 3) displacements from the neutral mesh (may be a memory map); or
            vertices, when ``neutral`` (V, 3) is given (subtracted block by block).
    Returns:
        the fewest targets (at most ``max_targets``) whose relative error on the sampled frames
        is <= ``tolerance``; each target is scaled so its weight curve peaks at magnitude 1.
        ``error`` is measured on all frames.
    """
    t, v, _ = disp.shape
    base = np.zeros((v, 3)) if neutral is None else np.asarray(neutral, np.float64)
    pick = np.unique(np.linspace(0, t - 1, min(t, max_svd_frames)).round().astype(np.int64))
    d = (np.asarray(disp[pick], np.float64) - base).reshape(len(pick), v * 3)
    if not np.any(d):
        return MorphTargets(np.zeros((1, v, 3), np.float32), np.zeros((t, 1), np.float32), 0.0)
    # SVD through the small (T', T') Gram matrix: eigenvalues are the squared singular values,
    # and the right singular vectors are U^T D / s (several times faster than a dense SVD).
    evals, evecs = np.linalg.eigh(d @ d.T)
    order = np.argsort(evals)[::-1]
    energy, u = np.maximum(evals[order], 0.0), evecs[:, order]
    tail = np.sqrt(np.maximum(energy.sum() - np.cumsum(energy), 0.0) / energy.sum())  # error with n=i+1
    ok = np.flatnonzero(tail <= tolerance)
    rank = int((energy > energy[0] * 1e-12).sum())
    n = int(min(max_targets, rank, ok[0] + 1 if len(ok) else rank))
    basis = (u[:, :n].T @ d) / np.sqrt(energy[:n])[:, None]  # (N, V*3) orthonormal rows
    w = np.zeros((t, n))
    resid = total = 0.0
    for a in range(0, t, chunk):
        block = (np.asarray(disp[a:a + chunk], np.float64) - base).reshape(-1, v * 3)
        w[a:a + chunk] = block @ basis.T
        resid += float(((block - w[a:a + chunk] @ basis) ** 2).sum())
        total += float((block ** 2).sum())
    peak = np.maximum(np.abs(w).max(axis=0), 1e-30)
    targets = (basis * peak[:, None]).reshape(n, v, 3)
    return MorphTargets(targets.astype(np.float32), (w / peak).astype(np.float32), float(np.sqrt(resid / total)))


def split_signed(morph: MorphTargets, prefix: str = "motion") -> MorphTargets:
    """Each signed target as two with non-negative weights: ``+t`` driven by ``max(w, 0)``
    and ``-t`` by ``max(-w, 0)``; a half whose weight is never positive is dropped.
    Returns N' <= 2N targets named ``{prefix}NN+`` / ``{prefix}NN-``."""
    targets, weights, names = [], [], []
    for i, (t, w) in enumerate(zip(morph.targets, morph.weights.T)):
        for sign, mark in ((1.0, "+"), (-1.0, "-")):
            part = np.maximum(sign * w, 0.0)
            if part.max() > 0:
                targets.append(sign * t)
                weights.append(part)
                names.append(f"{prefix}{i:02d}{mark}")
    if not targets:  # a still sequence: one silent target keeps the file well-formed
        return MorphTargets(morph.targets[:1], np.zeros_like(morph.weights[:, :1]), morph.error, [f"{prefix}00+"])
    return MorphTargets(np.stack(targets).astype(np.float32), np.stack(weights, 1).astype(np.float32),
                        morph.error, names)


def rig_morph(verts: np.ndarray, neutral: np.ndarray, names: list[str], basis: np.ndarray,
              weights: np.ndarray, max_targets: int = MAX_TARGETS, tolerance: float = TOLERANCE) -> MorphTargets:
    """The rig's K blendshapes (``weights`` (T, K) in [0, 1]) plus the residual's SVD split
    into non-negative pairs, so that the motion is reproduced to ``tolerance`` (relative to
    the whole motion, like :func:`compress_motion`).

    Args:
        verts: (T, V, 3) (may be a memory map); neutral: (V, 3); basis: (K, V, 3).
    """
    t, v, _ = verts.shape
    b = np.asarray(basis, np.float64)
    resid = np.empty((t, v, 3), np.float32)
    total = 0.0
    for a in range(0, t, 1000):
        d = np.asarray(verts[a:a + 1000], np.float64) - neutral
        total += float((d ** 2).sum())
        resid[a:a + 1000] = d - np.einsum("tk,kvc->tvc", weights[a:a + 1000].astype(np.float64), b)
    rnorm, dnorm = float(np.sqrt((resid.astype(np.float64) ** 2).sum())), np.sqrt(total)
    k_names = list(names)
    if rnorm <= tolerance * dnorm or dnorm == 0:
        return MorphTargets(basis.astype(np.float32), weights.astype(np.float32),
                            rnorm / max(dnorm, 1e-30), k_names)
    res = split_signed(compress_motion(resid, max_targets, tolerance * dnorm / rnorm), "residual")
    return MorphTargets(np.concatenate([basis, res.targets]).astype(np.float32),
                        np.concatenate([weights, res.weights], 1).astype(np.float32),
                        res.error * rnorm / dnorm, k_names + res.names)


# ----------------------------------------------------------------------------- GLB writer


class _GlbBuilder:
    """Collects arrays into one binary buffer with bufferViews and accessors."""

    def __init__(self):
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        """Append raw bytes as a bufferView (4-byte aligned); returns its index."""
        while len(self.blob) % 4:
            self.blob.append(0)
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.blob += data
        self.views.append(view)
        return len(self.views) - 1

    def add(self, array: np.ndarray, kind: str, component: int, target: int | None = None,
            minmax: bool = False) -> int:
        """Append ``array`` (count, ncomp) or (count,) as an accessor; returns its index."""
        dtype = np.float32 if component == _FLOAT else np.uint32
        data = np.ascontiguousarray(array, dtype=dtype)
        view = self.view(data.tobytes(), target)
        count = data.shape[0] if kind != "SCALAR" or data.ndim == 1 else data.size
        acc = {"bufferView": view, "componentType": component, "count": int(count), "type": kind}
        if minmax:
            flat = data.reshape(int(count), -1)
            acc["min"] = [float(x) for x in flat.min(axis=0)]
            acc["max"] = [float(x) for x in flat.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _material(b: _GlbBuilder, doc: dict, material: Material | None, textured: bool) -> None:
    """A plain non-metallic material, or the template's colour and texture."""
    m = material or Material()
    pbr = {"baseColorFactor": [float(c) for c in m.color], "metallicFactor": 0.0, "roughnessFactor": 0.7}
    if textured and m.texture is not None:
        view = b.view(Path(m.texture).read_bytes())
        doc.update(images=[{"bufferView": view, "mimeType": IMAGE_TYPES[m.texture.suffix.lower()]}],
                   samplers=[{"magFilter": 9729, "minFilter": 9987, "wrapS": 10497, "wrapT": 10497}],
                   textures=[{"source": 0, "sampler": 0}])
        pbr["baseColorTexture"] = {"index": 0}
    mat = {"name": m.name, "pbrMetallicRoughness": pbr, "doubleSided": True}
    if m.color[3] < 1.0:
        mat["alphaMode"] = "BLEND"
    doc["materials"] = [mat]


def glb_bytes(neutral: np.ndarray, faces: np.ndarray, morph: MorphTargets, fps: float,
              name: str = "face", duration: float | None = None, visuals: Visuals | None = None) -> bytes:
    """A glTF 2.0 binary: one mesh (``neutral`` (V, 3), ``faces`` (F, 3)) with ``morph``'s
    N targets and one animation of their weights, key i at time i / fps, plus a last key
    at ``duration`` (seconds, when it is later than the last frame) holding the last frame.
    ``visuals``: the template's UVs (seam vertices are split) and material."""
    neutral = np.asarray(neutral, np.float32)
    faces = np.asarray(faces, np.int64)
    src, uv = np.arange(len(neutral)), None
    if visuals is not None and visuals.corner_uv is not None:
        src, faces, uv = split_seams(faces, visuals.corner_uv)
    orig_faces = src[faces]  # the same triangles on the unsplit vertices (normals stay smooth at seams)
    normals = vertex_normals(neutral, orig_faces)
    n = len(morph.targets)
    b = _GlbBuilder()
    attributes = {"POSITION": b.add(neutral[src], "VEC3", _FLOAT, _ARRAY_BUFFER, minmax=True),
                  "NORMAL": b.add(normals[src], "VEC3", _FLOAT, _ARRAY_BUFFER)}
    if uv is not None:
        attributes["TEXCOORD_0"] = b.add(np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1), "VEC2", _FLOAT, _ARRAY_BUFFER)
    idx = b.add(faces.reshape(-1), "SCALAR", _UINT32, _ELEMENT_ARRAY_BUFFER)
    with_normals = n * len(neutral) <= TARGET_NORMALS_LIMIT
    targets = []
    for t in morph.targets:
        target = {"POSITION": b.add(t[src], "VEC3", _FLOAT, _ARRAY_BUFFER, minmax=True)}
        if with_normals:
            delta = vertex_normals(neutral + t, orig_faces) - normals
            target["NORMAL"] = b.add(delta[src], "VEC3", _FLOAT, _ARRAY_BUFFER)
        targets.append(target)
    frames = len(morph.weights)
    times, weights = np.arange(frames, dtype=np.float64) / fps, morph.weights
    if duration is not None and duration > times[-1] + 1e-6:
        times, weights = np.append(times, duration), np.concatenate([weights, weights[-1:]])
    t_acc = b.add(times.astype(np.float32), "SCALAR", _FLOAT, minmax=True)
    w_acc = b.add(np.clip(weights, 0.0, 1.0).reshape(-1), "SCALAR", _FLOAT)
    names = morph.names or [f"motion{i:02d}" for i in range(n)]
    doc = {
        "asset": {"version": "2.0", "generator": "avtalk"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [{"name": name, "weights": [0.0] * n, "extras": {"targetNames": names},
                    "primitives": [{"attributes": attributes, "indices": idx, "mode": 4, "material": 0,
                                    "targets": targets}]}],
        "animations": [{"name": "speech", "samplers": [{"input": t_acc, "output": w_acc, "interpolation": "LINEAR"}],
                        "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}],
    }
    _material(b, doc, visuals.material if visuals else None, uv is not None)
    while len(b.blob) % 4:
        b.blob.append(0)
    doc.update(buffers=[{"byteLength": len(b.blob)}], bufferViews=b.views, accessors=b.accessors)
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(b.blob)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
            + struct.pack("<I4s", len(b.blob), b"BIN\0") + bytes(b.blob))


def write_glb(path: str | Path, verts: np.ndarray, neutral: np.ndarray, faces: np.ndarray, fps: float,
              max_targets: int = MAX_TARGETS, tolerance: float = TOLERANCE, duration: float | None = None,
              rig: tuple[list[str], np.ndarray, np.ndarray] | None = None,
              visuals: Visuals | None = None) -> MorphTargets:
    """Write ``verts`` (T, V, 3) as an animated GLB over ``neutral`` (V, 3), atomically.

    Args:
        duration: the speech's length in seconds (the clip ends there).
        rig: (K names, basis (K, V, 3), weights (T, K) in [0, 1]) when the face is an
            ARKit rig's own; otherwise the motion's SVD is split into non-negative pairs.
    Returns:
        the morph targets written (``error`` is the relative reconstruction error).
    """
    neutral = np.asarray(neutral, np.float32)
    if rig is not None:
        morph = rig_morph(verts, neutral, *rig, max_targets=max_targets, tolerance=tolerance)
    else:
        morph = split_signed(compress_motion(verts, max_targets, tolerance, neutral=neutral))
    data = glb_bytes(neutral, faces, morph, fps, duration=duration, visuals=visuals)
    with atomic_file(path) as tmp:
        Path(tmp).write_bytes(data)
    return morph
