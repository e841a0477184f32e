"""Exports of an animation: glTF 2.0 binary with morph targets, ARKit blendshape curves.

**glTF** (``write_glb``): the neutral mesh is the base; the per-frame displacements
``D = verts - neutral`` (T, V*3) are compressed by a truncated SVD (through the Gram
matrix of at most 2000 frames) into at most
``max_targets`` morph targets (the fewest that reach ``tolerance`` relative Frobenius
error), and an animation drives the morph weights at the model's fps (LINEAR sampler on
the mesh node's ``weights``). The writer is our own: one JSON chunk, one BIN chunk, one
bufferView per array (4-byte aligned), accessors with min/max where the spec requires
them (POSITION, morph POSITION, sampler input).

**ARKit** (``solve_arkit``): per frame, non-negative least squares of the displacements
against a rig's blendshape basis, bounded to [0, 1], solved for all frames at once by
accelerated projected gradient (``solve_arkit_reference`` uses scipy's ``lsq_linear``
frame by frame). Written as CSV (time + the 52 ARKit names) and JSON (fps, names,
weights). The checkpoint carries its rig (``rig_payload``) when trained on the synthetic
corpus.

Shapes: T frames, V vertices, F faces, K blendshapes, N morph targets.
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.errors import UserError

FORMATS = ("obj", "ply", "npy", "npz", "gltf", "arkit")
MAX_TARGETS = 32
TOLERANCE = 0.01
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def parse_formats(spec: str) -> list[str]:
    """``"obj,gltf"`` -> ``["obj", "gltf"]`` (order kept, duplicates dropped).

    Raises:
        ValueError: an unknown or empty format list.
    """
    out = []
    for part in str(spec).split(","):
        name = part.strip().lower()
        if name == "glb":
            name = "gltf"
        if name not in FORMATS:
            raise ValueError(f"unknown format '{part.strip()}' (use {', '.join(FORMATS)}, comma-separated)")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no format given")
    return out


# ----------------------------------------------------------------------------- morph targets


@dataclass
class MorphTargets:
    """targets: (N, V, 3) float32; weights: (T, N) float32; error: relative reconstruction
    error ``||D - W T|| / ||D||`` (0 for a still sequence)."""

    targets: np.ndarray
    weights: np.ndarray
    error: float


def compress_motion(disp: np.ndarray, max_targets: int = MAX_TARGETS, tolerance: float = TOLERANCE,
                    max_svd_frames: int = 2000, chunk: int = 1000, neutral: np.ndarray | None = None) -> MorphTargets:
    """Truncated SVD of displacements into morph targets.

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


# ----------------------------------------------------------------------------- GLB writer


class _GlbBuilder:
    """Collects arrays into one binary buffer with bufferViews and accessors."""

    def __init__(self):
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, kind: str, component: int, target: int | None = None,
            minmax: bool = False) -> int:
        """Append ``array`` (count, ncomp) or (count,) as an accessor; returns its index."""
        dtype = np.float32 if component == _FLOAT else np.uint32
        data = np.ascontiguousarray(array, dtype=dtype)
        while len(self.blob) % 4:
            self.blob.append(0)
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": data.nbytes}
        if target is not None:
            view["target"] = target
        self.blob += data.tobytes()
        self.views.append(view)
        count = data.shape[0] if kind != "SCALAR" or data.ndim == 1 else data.size
        acc = {"bufferView": len(self.views) - 1, "componentType": component, "count": int(count), "type": kind}
        if minmax:
            flat = data.reshape(int(count), -1)
            acc["min"] = [float(x) for x in flat.min(axis=0)]
            acc["max"] = [float(x) for x in flat.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def glb_bytes(neutral: np.ndarray, faces: np.ndarray, morph: MorphTargets, fps: float,
              name: str = "face", target_names: list[str] | None = None) -> bytes:
    """A glTF 2.0 binary: one mesh (``neutral`` (V, 3), ``faces`` (F, 3)) with ``morph``'s
    N targets and one animation of their weights, key i at time i / fps."""
    b = _GlbBuilder()
    pos = b.add(neutral, "VEC3", _FLOAT, _ARRAY_BUFFER, minmax=True)
    idx = b.add(np.asarray(faces).reshape(-1), "SCALAR", _UINT32, _ELEMENT_ARRAY_BUFFER)
    targets = [{"POSITION": b.add(t, "VEC3", _FLOAT, _ARRAY_BUFFER, minmax=True)} for t in morph.targets]
    n, frames = len(morph.targets), len(morph.weights)
    times = b.add(np.arange(frames, dtype=np.float32) / np.float32(fps), "SCALAR", _FLOAT, minmax=True)
    values = b.add(morph.weights.reshape(-1), "SCALAR", _FLOAT)
    names = target_names or [f"motion{i:02d}" for i in range(n)]
    doc = {
        "asset": {"version": "2.0", "generator": "avtalk"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [{"name": name, "weights": [0.0] * n, "extras": {"targetNames": names},
                    "primitives": [{"attributes": {"POSITION": pos}, "indices": idx, "mode": 4,
                                    "targets": targets}]}],
        "animations": [{"name": "speech", "samplers": [{"input": times, "output": values, "interpolation": "LINEAR"}],
                        "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}],
        "buffers": [{"byteLength": 0}],
        "bufferViews": b.views,
        "accessors": b.accessors,
    }
    while len(b.blob) % 4:
        b.blob.append(0)
    doc["buffers"][0]["byteLength"] = len(b.blob)
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(b.blob)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
            + struct.pack("<I4s", len(b.blob), b"BIN\0") + bytes(b.blob))


def write_glb(path: str | Path, verts: np.ndarray, neutral: np.ndarray, faces: np.ndarray, fps: float,
              max_targets: int = MAX_TARGETS, tolerance: float = TOLERANCE) -> MorphTargets:
    """Write ``verts`` (T, V, 3) as an animated GLB over ``neutral`` (V, 3), atomically.
    Returns the morph targets (their ``error`` is the compression error to report)."""
    morph = compress_motion(verts, max_targets, tolerance, neutral=neutral)
    data = glb_bytes(np.asarray(neutral, np.float32), faces, morph, fps)
    with atomic_file(path) as tmp:
        Path(tmp).write_bytes(data)
    return morph


# ----------------------------------------------------------------------------- ARKit weights


def solve_arkit(disp: np.ndarray, basis: np.ndarray, iterations: int = 300,
                neutral: np.ndarray | None = None) -> np.ndarray:
    """Bounded NNLS of each frame's displacements against a blendshape basis.

    ``min_w ||w @ B - d||^2`` with ``0 <= w <= 1``, by FISTA on the K x K normal equations
    (all frames at once).

    Args:
        disp: (T, V, 3) (may be a memory map; read 1000 frames at a time), or vertices when
            ``neutral`` (V, 3) is given; basis: (K, V, 3).
    Returns:
        (T, K) float32 in [0, 1].
    """
    k = basis.shape[0]
    b = np.asarray(basis, np.float64).reshape(k, -1)  # (K, V*3)
    gram = b @ b.T  # (K, K)
    base = 0.0 if neutral is None else np.asarray(neutral, np.float64)
    rhs = np.concatenate([(np.asarray(disp[a:a + 1000], np.float64) - base).reshape(-1, b.shape[1]) @ b.T
                          for a in range(0, len(disp), 1000)])  # (T, K), bounded memory
    step = 1.0 / max(float(np.linalg.eigvalsh(gram)[-1]), 1e-30)
    w = np.clip(rhs @ np.linalg.pinv(gram), 0.0, 1.0)
    y, t_k = w.copy(), 1.0
    for _ in range(iterations):
        w_next = np.clip(y - step * (y @ gram - rhs), 0.0, 1.0)
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t_k * t_k))
        y = w_next + ((t_k - 1.0) / t_next) * (w_next - w)
        w, t_k = w_next, t_next
    return w.astype(np.float32)


def solve_arkit_reference(disp: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Slow, readable reference: scipy's bounded least squares, one frame at a time."""
    from scipy.optimize import lsq_linear

    a = np.asarray(basis, np.float64).reshape(basis.shape[0], -1).T  # (V*3, K)
    return np.stack([lsq_linear(a, np.asarray(f, np.float64).ravel(), bounds=(0.0, 1.0)).x
                     for f in disp]).astype(np.float32)


def arkit_table(weights: np.ndarray, names: list[str]) -> np.ndarray:
    """Weights (T, K) over ``names`` -> (T, 52) in the ARKit order (absent names are 0)."""
    from talkinghead_cli.data.synthetic.rig import ARKIT_NAMES

    out = np.zeros((len(weights), len(ARKIT_NAMES)), np.float32)
    for j, n in enumerate(names):
        if n in ARKIT_NAMES:
            out[:, ARKIT_NAMES.index(n)] = weights[:, j]
    return out


def write_arkit(folder: str | Path, weights: np.ndarray, names: list[str], fps: float) -> list[str]:
    """Write ``arkit.csv`` (time + 52 columns) and ``arkit.json`` into ``folder``.
    weights: (T, K) over ``names``. Returns the file names."""
    from talkinghead_cli.data.synthetic.rig import ARKIT_NAMES

    table = arkit_table(weights, names)
    folder = Path(folder)
    lines = [",".join(["time", *ARKIT_NAMES])]
    lines += [f"{i / fps:.6f}," + ",".join(f"{x:.5f}" for x in row) for i, row in enumerate(table)]
    with atomic_file(folder / "arkit.csv") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    doc = {"fps": float(fps), "names": list(ARKIT_NAMES), "weights": np.round(table, 5).tolist()}
    with atomic_file(folder / "arkit.json") as tmp:
        Path(tmp).write_text(json.dumps(doc, separators=(",", ":")))
    return ["arkit.csv", "arkit.json"]


def checkpoint_rig(ckpt: dict, path: str | Path | None = None) -> tuple[list[str], np.ndarray]:
    """The ARKit rig a checkpoint was trained on: (K names, basis (K, V, 3) float32).

    Raises:
        UserError: the model was not trained on an ARKit rig.
    """
    rig = ckpt.get("rig")
    if not rig or rig.get("basis") is None:
        raise UserError("this model was not trained on an ARKit rig, so it has no blendshape curves", path,
                        "use a model trained on the synthetic corpus, or another --format")
    return list(rig["names"]), rig["basis"].float().numpy()


@functools.lru_cache(maxsize=4)
def _rig_for_manifest(manifest: str, num_verts: int):
    from talkinghead_cli.data.synthetic.rig import default_rig_path, load_rig

    info = json.loads(Path(manifest).read_text()).get("rig") or {}
    try:
        path = default_rig_path()
    except UserError:
        return None
    if info.get("name") != path.stem or int(info.get("num_verts", -1)) != num_verts:
        return None
    return load_rig(path)


def rig_payload(corpus) -> dict | None:
    """``{"name", "names", "basis" (K, V, 3) float16}`` of a synthetic corpus's rig, for the
    checkpoint; None for other corpora or a rig that cannot be found again."""
    import torch

    manifest = (getattr(corpus, "extra", None) or {}).get("manifest")
    if corpus.name != "synthetic" or manifest is None:
        return None
    rig = _rig_for_manifest(str(manifest), int(corpus.num_verts))
    if rig is None:
        return None
    return {"name": rig.name, "names": list(rig.names), "basis": torch.from_numpy(rig.basis.astype(np.float16))}


# ----------------------------------------------------------------------------- all formats


def write_formats(formats: list[str], dest: Path, verts: np.ndarray, neutral: np.ndarray, faces: np.ndarray,
                  fps: float, rig: tuple[list[str], np.ndarray] | None = None,
                  motion: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[list[str], dict]:
    """Write the requested formats of one animation into ``dest`` (``vertices.npy`` is
    written by the caller).

    Args:
        verts: (T, V, 3) the output mesh sequence; neutral: (V, 3); faces: (F, 3).
        rig: (K names, basis (K, Vm, 3)) for ``arkit``.
        motion: (vertices (T, Vm, 3), neutral (Vm, 3)) on the rig's topology for ``arkit``
            (default: ``verts`` and ``neutral``).
    Returns:
        (files written, figures for animation.json).
    """
    from talkinghead_cli.mesh import write_sequence

    files, info = [], {}
    mesh_formats = [f for f in formats if f in ("obj", "ply")]
    for i, fmt in enumerate(mesh_formats):
        folder = "meshes" if i == 0 else f"meshes_{fmt}"
        write_sequence(dest / folder, verts, faces, fmt, fps=fps)
        files.append(folder + "/")
    if "npz" in formats:
        write_sequence(dest / "sequence.npz", verts, faces, "npz", fps=fps)
        files.append("sequence.npz")
    if "gltf" in formats:
        morph = write_glb(dest / "animation.glb", verts, neutral, faces, fps)
        files.append("animation.glb")
        info["gltf"] = {"morph_targets": len(morph.targets), "relative_error": morph.error}
    if "arkit" in formats:
        if rig is None:
            raise UserError("this model has no ARKit rig", None, "drop arkit from --format")
        names, basis = rig
        mv, mn = motion if motion is not None else (verts, neutral)
        weights = solve_arkit(mv, basis, neutral=mn)
        files += write_arkit(dest, weights, names, fps)
        pick = np.unique(np.linspace(0, len(mv) - 1, min(len(mv), 500)).round().astype(np.int64))
        d = np.asarray(mv[pick], np.float64) - mn
        fit = np.einsum("tk,kvc->tvc", weights[pick].astype(np.float64), basis)
        info["arkit"] = {"blendshapes": len(names),
                         "relative_error": float(np.linalg.norm(fit - d) / max(np.linalg.norm(d), 1e-30))}
    return files, info
