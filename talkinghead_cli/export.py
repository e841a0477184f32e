"""Exports of an animation: the format list, ARKit blendshape curves, and the dispatcher.

**glTF** (``gltf``): :mod:`talkinghead_cli.export_gltf` (morph targets with weights in
[0, 1]: the rig's own blendshapes for an ARKit-rig face, else the motion's SVD split into
non-negative pairs). **USD** (``usd``): :mod:`talkinghead_cli.export_usd`.

**ARKit** (``solve_arkit``): per frame, non-negative least squares of the displacements
against a rig's blendshape basis, bounded to [0, 1], solved for all frames at once by
accelerated projected gradient (``solve_arkit_reference`` uses scipy's ``lsq_linear``
frame by frame). ``arkit`` writes ``arkit.csv`` (``time_s`` in seconds + the 52 ARKit
names in camelCase) and ``arkit.json`` (fps, seconds, names, weights); ``livelink``
writes ``livelink.csv``, the CSV of Epic's Live Link Face app (``Timecode``
HH:MM:SS:FF.mmm, ``BlendShapeCount`` 61, the 52 shapes in PascalCase in the app's order,
then 9 head and eye rotations, here 0). The checkpoint carries its rig
(``rig_payload``) when trained on the synthetic corpus.

Shapes: T frames, V vertices, F faces, K blendshapes, N morph targets.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.errors import UserError

from talkinghead_cli.export_gltf import (  # noqa: F401  (re-exported)
    MAX_TARGETS,
    TOLERANCE,
    MorphTargets,
    compress_motion,
    glb_bytes,
    split_signed,
    write_glb,
)

FORMATS = ("obj", "ply", "npy", "npz", "gltf", "usd", "arkit", "livelink")
RIG_FORMATS = ("arkit", "livelink", "usd")  # formats that use the model's ARKit rig (usd: when it has one)
# The columns of a Live Link Face CSV, as the app writes them (note JawRight before JawLeft
# and MouthRight before MouthLeft, unlike ARKit's own list).
LIVELINK_SHAPES = (
    "EyeBlinkLeft EyeLookDownLeft EyeLookInLeft EyeLookOutLeft EyeLookUpLeft EyeSquintLeft EyeWideLeft "
    "EyeBlinkRight EyeLookDownRight EyeLookInRight EyeLookOutRight EyeLookUpRight EyeSquintRight EyeWideRight "
    "JawForward JawRight JawLeft JawOpen MouthClose MouthFunnel MouthPucker MouthRight MouthLeft "
    "MouthSmileLeft MouthSmileRight MouthFrownLeft MouthFrownRight MouthDimpleLeft MouthDimpleRight "
    "MouthStretchLeft MouthStretchRight MouthRollLower MouthRollUpper MouthShrugLower MouthShrugUpper "
    "MouthPressLeft MouthPressRight MouthLowerDownLeft MouthLowerDownRight MouthUpperUpLeft MouthUpperUpRight "
    "BrowDownLeft BrowDownRight BrowInnerUp BrowOuterUpLeft BrowOuterUpRight CheekPuff CheekSquintLeft "
    "CheekSquintRight NoseSneerLeft NoseSneerRight TongueOut"
).split()
LIVELINK_ROTATIONS = ("HeadYaw HeadPitch HeadRoll LeftEyeYaw LeftEyePitch LeftEyeRoll "
                      "RightEyeYaw RightEyePitch RightEyeRoll").split()
LIVELINK_HEADER = ["Timecode", "BlendShapeCount", *LIVELINK_SHAPES, *LIVELINK_ROTATIONS]


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
        if name in ("usda", "usdc", "usdz"):
            name = "usd"
        if name not in FORMATS:
            raise ValueError(f"unknown format '{part.strip()}' (valid: {', '.join(FORMATS)}; comma-separated)")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no format given")
    return out


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
    """Write ``arkit.csv`` (``time_s`` in seconds + 52 camelCase columns) and ``arkit.json``
    (fps, seconds, names, weights) into ``folder``. weights: (T, K) over ``names``.
    Returns the file names."""
    from talkinghead_cli.data.synthetic.rig import ARKIT_NAMES

    table = arkit_table(weights, names)
    folder = Path(folder)
    seconds = np.arange(len(table)) / float(fps)
    lines = [",".join(["time_s", *ARKIT_NAMES])]
    lines += [f"{s:.6f}," + ",".join(f"{x:.5f}" for x in row) for s, row in zip(seconds, table)]
    with atomic_file(folder / "arkit.csv") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    doc = {"fps": float(fps), "seconds": np.round(seconds, 6).tolist(), "names": list(ARKIT_NAMES),
           "weights": np.round(table, 5).tolist()}
    with atomic_file(folder / "arkit.json") as tmp:
        Path(tmp).write_text(json.dumps(doc, separators=(",", ":")))
    return ["arkit.csv", "arkit.json"]


def livelink_timecode(frame: int, fps: float) -> str:
    """Frame ``frame`` at ``fps`` as a Live Link Face timecode ``HH:MM:SS:FF.mmm`` (FF counted
    at the rounded fps, mmm the sub-frame in thousandths: 0 for whole frames)."""
    rate = max(1, int(round(fps)))
    sec, ff = divmod(int(frame), rate)
    return f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}:{ff:02d}.000"


def write_livelink(folder: str | Path, weights: np.ndarray, names: list[str], fps: float) -> list[str]:
    """Write ``livelink.csv``: Live Link Face's 63 columns, one row per frame.
    weights: (T, K) over ``names`` (ARKit names, any spelling the rig uses)."""
    from talkinghead_cli.data.synthetic.rig import ARKIT_NAMES

    table = arkit_table(weights, names)  # (T, 52) in ARKit order
    lower = [n.lower() for n in ARKIT_NAMES]
    cols = table[:, [lower.index(n.lower()) for n in LIVELINK_SHAPES]]
    zeros = ",".join(["0.0"] * len(LIVELINK_ROTATIONS))
    lines = [",".join(LIVELINK_HEADER)]
    lines += [f"{livelink_timecode(i, fps)},{len(LIVELINK_SHAPES) + len(LIVELINK_ROTATIONS)},"
              + ",".join(f"{x:.8f}" for x in row) + "," + zeros for i, row in enumerate(cols)]
    with atomic_file(Path(folder) / "livelink.csv") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return ["livelink.csv"]


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


def rig_for_formats(ckpt: dict, formats: list[str], path: str | Path | None = None):
    """The checkpoint's ARKit rig when ``formats`` use one: required by ``arkit`` and
    ``livelink`` (a model without one is refused), used by ``gltf`` and ``usd`` when present.
    Returns (K names, basis (K, V, 3)) or None."""
    if any(f in ("arkit", "livelink") for f in formats):
        return checkpoint_rig(ckpt, path)
    if any(f in ("gltf", "usd") for f in formats) and (ckpt.get("rig") or {}).get("basis") is not None:
        return checkpoint_rig(ckpt, path)
    return None


def _sample(n: int, most: int = 500) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(np.int64))


def _morph_figures(morph: MorphTargets, verts: np.ndarray, neutral: np.ndarray) -> dict:
    """Figures of a morph-target export: count, relative error, largest vertex error (in the
    mesh's units) on up to 500 evenly spaced frames."""
    pick = _sample(len(verts))
    rebuilt = np.einsum("tn,nvc->tvc", morph.weights[pick].astype(np.float64), morph.targets) + neutral
    err = np.linalg.norm(rebuilt - np.asarray(verts[pick], np.float64), axis=-1).max()
    return {"morph_targets": len(morph.targets), "relative_error": morph.error, "max_vertex_error": float(err),
            "rig_blendshapes": sum(1 for n in (morph.names or []) if not n.startswith(("residual", "motion")))}


def write_formats(formats: list[str], dest: Path, verts: np.ndarray, neutral: np.ndarray, faces: np.ndarray,
                  fps: float, rig: tuple[list[str], np.ndarray] | None = None,
                  motion: tuple[np.ndarray, np.ndarray] | None = None, duration: float | None = None,
                  visuals=None) -> tuple[list[str], dict]:
    """Write the requested formats of one animation into ``dest`` (``vertices.npy`` is
    written by the caller).

    Args:
        verts: (T, V, 3) the output mesh sequence; neutral: (V, 3); faces: (F, 3).
        rig: (K names, basis (K, Vm, 3)) for ``arkit``/``livelink`` (and used by ``gltf``
            and ``usd`` when the output face is the rig's own).
        motion: (vertices (T, Vm, 3), neutral (Vm, 3)) on the rig's topology
            (default: ``verts`` and ``neutral``; the same array object means no retargeting).
        duration: the speech's length in seconds (glTF and USD clips end there).
        visuals: the template's :class:`~talkinghead_cli.mesh_visuals.Visuals` (UVs, material).
    Returns:
        (files written, figures for animation.json).
    Raises:
        UserError: ``arkit``/``livelink`` without a rig.
    """
    from talkinghead_cli.mesh import write_sequence

    files, info = [], {}
    mesh_formats = [f for f in formats if f in ("obj", "ply")]
    for i, fmt in enumerate(mesh_formats):
        folder = "meshes" if i == 0 else f"meshes_{fmt}"
        normals = None
        if fmt == "obj":  # the compiled normals (numba is imported only for OBJ)
            from talkinghead_cli.render.shade_jit import vertex_normals_frames as normals
        write_sequence(dest / folder, verts, faces, fmt, fps=fps, visuals=visuals, normals=normals)
        files.append(folder + "/")
    if "npz" in formats:
        write_sequence(dest / "sequence.npz", verts, faces, "npz", fps=fps)
        files.append("sequence.npz")
    mv, mn = motion if motion is not None else (verts, neutral)
    weights = None
    if rig is not None and any(f in formats for f in ("arkit", "livelink", "gltf", "usd")):
        names, basis = rig
        weights = solve_arkit(mv, basis, neutral=mn)  # (T, K) in [0, 1]
    own_rig = None if weights is None or mv is not verts else (names, basis, weights)  # the rig's own face
    if "gltf" in formats:
        morph = write_glb(dest / "animation.glb", verts, neutral, faces, fps, duration=duration, rig=own_rig,
                          visuals=visuals)
        files.append("animation.glb")
        info["gltf"] = _morph_figures(morph, verts, neutral)
    if "usd" in formats:
        from talkinghead_cli.export_usd import write_usd

        files += write_usd(dest / "animation.usdc", verts, neutral, faces, fps, duration=duration,
                           rig=own_rig, visuals=visuals)
        info["usd"] = {"frames": len(verts), "blendshapes": own_rig is not None}
    if "arkit" in formats or "livelink" in formats:
        if weights is None:
            raise UserError("this model has no ARKit rig", None, "drop arkit/livelink from --format")
        if "arkit" in formats:
            files += write_arkit(dest, weights, names, fps)
        if "livelink" in formats:
            files += write_livelink(dest, weights, names, fps)
        pick = _sample(len(mv))
        d = np.asarray(mv[pick], np.float64) - mn
        fit = np.einsum("tk,kvc->tvc", weights[pick].astype(np.float64), basis)
        info["arkit"] = {"blendshapes": len(names),
                         "relative_error": float(np.linalg.norm(fit - d) / max(np.linalg.norm(d), 1e-30))}
    return files, info
