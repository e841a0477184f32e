"""What a template carries besides its shape: texture coordinates and one material, and the
vertex normals every export writes.

A user's OBJ template keeps its ``vt`` coordinates and the first material of its ``mtllib``
(diffuse colour ``Kd``, opacity ``d``, texture ``map_Kd``); exports carry them through
(glTF ``TEXCOORD_0`` + material, OBJ ``vt`` + ``mtllib``, USD ``primvars:st``). UVs are
stored per face corner because a texture seam gives one vertex several UVs; glTF and USD
readers that need one UV per vertex get the seam vertices split (:func:`split_seams`).
Templates in other formats (PLY, GLB, NPZ, ...) carry no UVs through: the outputs then
have normals and a plain material only.

Shapes: V vertices, F faces, V' vertices after splitting seams.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass
class Material:
    """One material: ``color`` RGBA in [0, 1]; ``texture`` a PNG/JPEG base-colour image or None."""

    name: str = "face"
    color: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0)
    texture: Path | None = None


@dataclass
class Visuals:
    """corner_uv: (F, 3, 2) float32 texture coordinates per face corner (OBJ convention:
    v up), or None; material: the template's material (None: a plain grey one);
    notes: what could not be carried, one line each."""

    corner_uv: np.ndarray | None = None
    material: Material | None = None
    notes: list[str] = field(default_factory=list)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals. verts: (V, 3), or (T, V, 3) for T frames at once
    (the same numbers as frame by frame, in a few whole-array operations); faces: (F, 3)
    -> float32 of verts' shape; a vertex on no face (or only on degenerate ones) gets +z."""
    v = np.asarray(verts, np.float64)
    frames = v[None] if v.ndim == 2 else v
    t, n = frames.shape[:2]
    f = np.asarray(faces, np.int64)
    fn = np.cross(frames[:, f[:, 1]] - frames[:, f[:, 0]], frames[:, f[:, 2]] - frames[:, f[:, 0]])  # (T, F, 3), |fn| = 2 area
    bins = [(f[:, k][None] + n * np.arange(t)[:, None]).ravel() for k in range(3)]  # frame-major vertex ids
    out = np.zeros_like(frames)
    for c in range(3):
        w = fn[..., c].ravel()
        out[..., c] = sum(np.bincount(b, weights=w, minlength=t * n) for b in bins).reshape(t, n)
    norm = np.linalg.norm(out, axis=-1, keepdims=True)
    out = np.where(norm > 1e-20, out / np.maximum(norm, 1e-30), [0.0, 0.0, 1.0])
    return out.astype(np.float32).reshape(v.shape)


def split_seams(faces: np.ndarray, corner_uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One UV per vertex: split each vertex into one copy per distinct UV it has.

    Args:
        faces: (F, 3); corner_uv: (F, 3, 2).
    Returns:
        src (V',) the original vertex of each new vertex (every original vertex on a face
        appears at least once, in increasing order of first use), new faces (F, 3) into
        ``src``, uv (V', 2) float32.
    """
    f = np.asarray(faces, np.int64).reshape(-1)
    uv = np.asarray(corner_uv, np.float32).reshape(-1, 2)
    keys = np.concatenate([f[:, None].astype(np.float64), uv.astype(np.float64)], axis=1)
    uniq, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # keep the order of first use
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    src = uniq[order, 0].astype(np.int64)
    return src, rank[inverse.reshape(-1)].reshape(-1, 3), uniq[order, 1:].astype(np.float32)


def _read_mtl(path: Path, wanted: str | None, notes: list[str]) -> Material | None:
    """The material ``wanted`` (or the first) of an MTL file."""
    if not path.is_file():
        notes.append(f"material library {path.name} not found: plain material used")
        return None
    mats: dict[str, dict] = {}
    current = None
    for line in path.read_text(errors="replace").splitlines():
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        key, rest = parts[0], parts[1] if len(parts) > 1 else ""
        if key == "newmtl":
            current = mats.setdefault(rest.strip(), {})
        elif current is not None and key in ("Kd", "d", "Tr", "map_Kd"):
            current[key] = rest.strip()
    if not mats:
        return None
    name = wanted if wanted in mats else next(iter(mats))
    m = mats[name]
    try:
        rgb = [float(x) for x in m.get("Kd", "0.8 0.8 0.8").split()[:3]]
        alpha = float(m["d"]) if "d" in m else 1.0 - float(m.get("Tr", 0.0))
    except ValueError:
        rgb, alpha = [0.8, 0.8, 0.8], 1.0
    texture = None
    if "map_Kd" in m:
        tex = path.parent / m["map_Kd"].split()[-1]  # options such as -s come first
        if tex.suffix.lower() in IMAGE_TYPES and tex.is_file():
            texture = tex
        else:
            notes.append(f"texture {tex.name} not found or not PNG/JPEG: colour only")
    return Material(name, (*[min(max(c, 0.0), 1.0) for c in rgb], min(max(alpha, 0.0), 1.0)), texture)


def read_obj_visuals(path: str | Path, faces: np.ndarray) -> Visuals:
    """UVs per face corner and the first material of an OBJ file.

    Polygons are fanned into triangles in file order and matched to ``faces`` (F, 3), the
    template's triangles as the mesh loader made them, corner by corner through their vertex
    indices; if they do not line up, or some face has no ``vt``, no UVs are kept (a note
    says so).
    """
    path = Path(path)
    vts: list[list[float]] = []
    corners: list[list[int]] = []
    mtllib, usemtl, materials = None, None, set()
    missing = False
    with open(path, errors="replace") as fh:
        for line in fh:
            if line.startswith("vt "):
                vts.append([float(x) for x in line.split()[1:3]])
            elif line.startswith("f "):
                refs = [r.split("/") for r in line.split()[1:]]
                pos = [int(r[0]) for r in refs]
                tex = [int(r[1]) if len(r) > 1 and r[1] else 0 for r in refs]
                missing |= 0 in tex
                for k in range(1, len(refs) - 1):
                    corners.append([pos[0], pos[k], pos[k + 1], tex[0], tex[k], tex[k + 1]])
            elif line.startswith("mtllib ") and mtllib is None:
                mtllib = line.split(maxsplit=1)[1].strip()
            elif line.startswith("usemtl "):
                name = line.split(maxsplit=1)[1].strip()
                usemtl = usemtl or name
                materials.add(name)
    out = Visuals()
    if vts and corners:
        out.corner_uv = None if missing else _match_corners(np.asarray(corners, np.int64), len(vts), faces)
        if out.corner_uv is not None:
            out.corner_uv = np.asarray(vts, np.float32)[out.corner_uv]
        else:
            out.notes.append("the template's texture coordinates do not cover every face: UVs left out")
    if mtllib:
        out.material = _read_mtl(path.parent / mtllib, usemtl, out.notes)
        if len(materials) > 1 and out.material is not None:
            out.notes.append(f"the template has {len(materials)} materials: only '{out.material.name}' is kept")
    return out


def _match_corners(corners: np.ndarray, num_vt: int, faces: np.ndarray) -> np.ndarray | None:
    """corners: (F, 6) 1-based OBJ (v, v, v, vt, vt, vt) per fanned triangle -> (F, 3)
    0-based vt index per corner of ``faces``, or None when the triangles do not line up."""
    faces = np.asarray(faces, np.int64)
    if len(corners) != len(faces):
        return None
    pos, tex = corners[:, :3] - 1, corners[:, 3:]
    tex = np.where(tex < 0, tex + num_vt, tex - 1)  # 1-based; negative counts from the end
    if tex.min() < 0 or tex.max() >= num_vt:
        return None
    out = np.full(faces.shape, -1, np.int64)
    for k in range(3):  # the loader may rotate a triangle's corners: match them by vertex
        hit = faces == pos[:, k:k + 1]  # (F, 3 face corners)
        out = np.where(hit, tex[:, k:k + 1], out)
    return None if (out < 0).any() else out


def write_mtl(folder: Path, material: Material, name: str = "face.mtl") -> str:
    """Write ``name`` (and a copy of the texture) into ``folder``; returns the file name."""
    lines = [f"newmtl {material.name}", "Kd {:.6f} {:.6f} {:.6f}".format(*material.color[:3]),
             f"d {material.color[3]:.6f}", "Ks 0 0 0", "illum 1"]
    if material.texture is not None:
        shutil.copyfile(material.texture, folder / material.texture.name)
        lines.append(f"map_Kd {material.texture.name}")
    (folder / name).write_text("\n".join(lines) + "\n")
    return name
