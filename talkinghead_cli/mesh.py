"""Mesh I/O: templates in, mesh sequences out.

Templates load through trimesh with ``process=False`` and ``maintain_order=True`` so the
vertex order and count are exactly the file's (models index vertices by position).
Sequence writers take ``verts: (T, V, 3)`` and write atomically (temp folder, rename).
The OBJ/PLY writers are vectorised: faces are formatted once, OBJ vertex lines with array
operations (``obj_vertex_bytes``, byte-identical to the ``"%.6f"`` string format of
``obj_text``); ``write_obj_reference`` is the plain per-frame trimesh path they are
benchmarked and tested against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from talkinghead_cli.atomic import atomic_dir, atomic_file
from talkinghead_cli.errors import UserError
from talkinghead_cli.progress import ProgressFn, report

if TYPE_CHECKING:
    from talkinghead_cli.mesh_visuals import Visuals

TEMPLATE_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".npy", ".npz", ".stl", ".off")
SEQUENCE_FORMATS = ("npy", "npz", "obj", "ply")
NORMALS_BLOCK = 32  # frames whose OBJ normals are computed together (write_sequence)


@dataclass
class Mesh:
    """A triangle mesh. verts: (V, 3) float32, faces: (F, 3) int64; visuals: UVs and
    material of an OBJ template (see :mod:`talkinghead_cli.mesh_visuals`), or None."""

    verts: np.ndarray
    faces: np.ndarray
    visuals: Visuals | None = None

    @property
    def num_verts(self) -> int:
        return int(self.verts.shape[0])


def validate_mesh(verts: np.ndarray, faces: np.ndarray | None, path: str | Path | None = None) -> Mesh:
    """Check shapes, finiteness and face indices; return a normalised :class:`Mesh`."""
    verts = np.asarray(verts)
    if verts.ndim != 2 or verts.shape[1] != 3 or verts.shape[0] < 3:
        raise UserError(f"expected vertices of shape (V, 3) with V >= 3, got {verts.shape}", path,
                        "give a triangle mesh")
    if not np.isfinite(verts).all():
        raise UserError("the mesh has NaN or infinite vertex coordinates", path, "repair the mesh")
    if faces is None or len(faces) == 0:
        raise UserError("the mesh has no faces (a point cloud?)", path, "give a triangle mesh")
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise UserError(f"faces must be triangles, got shape {faces.shape}", path, "triangulate the mesh")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise UserError("face indices out of range", path, "repair the mesh")
    return Mesh(verts.astype(np.float32), faces.astype(np.int64))


def _trimesh_geometry(path: Path):
    import trimesh

    try:
        loaded = trimesh.load(str(path), process=False, maintain_order=True, skip_materials=True)
    except Exception as e:  # trimesh raises many types for malformed files
        raise UserError(f"cannot read the mesh ({type(e).__name__}: {e})", path,
                        "check that it is a valid OBJ/PLY/GLB file") from e
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        if not geoms:
            raise UserError("the file contains no triangle mesh", path, "give a triangle mesh")
        loaded = geoms[0] if len(geoms) == 1 else trimesh.util.concatenate(geoms)
    if not isinstance(loaded, trimesh.Trimesh):
        raise UserError(f"the file holds a {type(loaded).__name__}, not a triangle mesh", path,
                        "give a triangle mesh")
    return loaded


def load_template(path: str | Path, faces: np.ndarray | None = None) -> Mesh:
    """Load a template mesh.

    Args:
        path: OBJ, PLY, GLB/GLTF, STL, OFF, NPZ (``verts``/``vertices`` + ``faces``) or
            NPY (``(V, 3)`` vertices only; then ``faces`` must be given, e.g. a model's).
        faces: (F, 3) faces to use when the file carries none.
    Returns:
        Mesh with verts (V, 3) float32 in the file's order and faces (F, 3) int64.
    """
    path = Path(path)
    if not path.exists():
        raise UserError("template not found", path, "check the path")
    suffix = path.suffix.lower()
    if suffix not in TEMPLATE_SUFFIXES:
        raise UserError(f"unsupported template format '{suffix}'", path,
                        "use OBJ, PLY, GLB/GLTF, NPZ or NPY")
    if suffix in (".npy", ".npz"):
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as e:
            raise UserError("cannot read the array file", path, "save it with numpy.save") from e
        if suffix == ".npz":
            key = "verts" if "verts" in data else "vertices" if "vertices" in data else None
            if key is None:
                raise UserError("the NPZ has no 'verts' array", path, "save verts=(V,3) and faces=(F,3)")
            verts = data[key]
            faces = data["faces"] if "faces" in data else faces
        else:
            verts = data
        verts = np.asarray(verts)
        if verts.ndim == 1 and verts.size % 3 == 0:
            verts = verts.reshape(-1, 3)
        if faces is None:
            raise UserError("the NPY template has vertices but no faces", path,
                            "give an OBJ/PLY/NPZ with faces")
        return validate_mesh(verts, faces, path)
    geom = _trimesh_geometry(path)
    mesh = validate_mesh(np.asarray(geom.vertices), np.asarray(geom.faces), path)
    if suffix == ".obj":
        from talkinghead_cli.mesh_visuals import read_obj_visuals

        mesh.visuals = read_obj_visuals(path, mesh.faces)
    return mesh


# ----------------------------------------------------------------------------- writers


def _check_sequence(verts: np.ndarray, faces: np.ndarray | None = None) -> np.ndarray:
    verts = np.asarray(verts, dtype=np.float32)
    if verts.ndim != 3 or verts.shape[2] != 3:
        raise ValueError(f"verts must be (T, V, 3), got {verts.shape}")
    if faces is not None and len(faces) and int(np.max(faces)) >= verts.shape[1]:
        raise ValueError("faces index past the vertex count")
    return verts


def obj_text(verts: np.ndarray, faces_text: str) -> str:
    """One OBJ file as text. verts: (V, 3); ``faces_text`` from :func:`obj_faces_text`."""
    v = verts.shape[0]
    return ("v %.6f %.6f %.6f\n" * v) % tuple(verts.ravel().tolist()) + faces_text


def _digit_tables() -> np.ndarray:
    """(3 kinds, 3 positions, 1000) uint8: the ASCII digits of 0..999 as ``%03d`` (kind 0),
    as ``%3d`` with blanks as 0 bytes (kind 1), and like kind 1 but with 0 fully blank
    (kind 2: a zero group above the units group prints nothing)."""
    full = np.frombuffer("".join(f"{n:03d}" for n in range(1000)).encode(), np.uint8).reshape(1000, 3)
    lead = np.frombuffer("".join(f"{n:3d}" for n in range(1000)).encode(), np.uint8).reshape(1000, 3).copy()
    lead[lead == ord(" ")] = 0
    blank = lead.copy()
    blank[0] = 0
    return np.ascontiguousarray(np.stack([full, lead, blank]).transpose(0, 2, 1))


_DIGIT_TABLES = _digit_tables()


def _fixed6_columns(values: np.ndarray) -> np.ndarray:
    """``"%.6f" % v`` for each float32 value, as columns of ASCII bytes (0 = no character).

    Exact for float32 input: ``v * 1e6`` is exact in float64 (24 + 14 significant bits),
    and ``np.rint`` rounds halves to even like C's printf. The sign follows the sign bit,
    so ``-0.0`` and tiny negatives print as ``-0.000000`` as printf does. Digits are
    looked up three at a time; the layout is column-major so every write is contiguous.

    Args:
        values: (N,) float32, finite, |v| < 1e12.
    Returns:
        (1 + 3G + 7, N) uint8: sign, G groups of 3 integer digits (leading zeros blank),
        ``.``, 6 fraction digits.
    """
    scaled = np.rint(np.abs(values.astype(np.float64)) * 1e6).astype(np.int64)
    whole, frac = np.divmod(scaled, 1_000_000)
    groups = max(1, -(-len(str(int(whole.max(initial=0)))) // 3))
    d = 1 + 3 * groups  # row of the decimal point
    cols = np.zeros((d + 7, len(values)), dtype=np.uint8)
    cols[0] = np.where(np.signbit(values), ord("-"), 0)
    cols[d] = ord(".")
    hi, lo = np.divmod(frac, 1000)
    for p in range(3):
        cols[d + 1 + p] = np.take(_DIGIT_TABLES[0, p], hi)
        cols[d + 4 + p] = np.take(_DIGIT_TABLES[0, p], lo)
    higher = np.zeros(len(values), dtype=bool)  # a non-zero group above this one
    for g in range(groups):
        group = (whole // 1000 ** (groups - 1 - g)) % 1000
        kind = np.where(higher, 0, 1 if g == groups - 1 else 2)
        for p in range(3):
            cols[1 + 3 * g + p] = np.take(_DIGIT_TABLES[:, p].ravel(), kind * 1000 + group)
        higher |= group > 0
    return cols


def obj_vertex_bytes(verts: np.ndarray, key: str = "v") -> bytes:
    """The ``v x y z`` lines of one OBJ frame, byte-identical to :func:`obj_text`'s
    ``"v %.6f %.6f %.6f\\n"`` formatting but built with array operations.

    Args:
        verts: (V, 3) float32.
        key: the line's keyword (``v``, or ``vn`` for normals).
    """
    verts = np.asarray(verts, dtype=np.float32)
    if not np.isfinite(verts).all() or np.abs(verts).max(initial=0) >= 1e12:
        v = verts.shape[0]
        return ((f"{key} %.6f %.6f %.6f\n" * v) % tuple(verts.ravel().tolist())).encode("ascii")
    cols = _fixed6_columns(verts.ravel()).reshape(-1, len(verts), 3)  # (W, V, xyz)
    w, k = cols.shape[0], len(key) + 1
    lines = np.zeros((k + 3 * (w + 1), len(verts)), dtype=np.uint8)  # one column per line
    lines[:k] = np.frombuffer(key.encode("ascii") + b" ", np.uint8)[:, None]
    for c in range(3):
        start = k + c * (w + 1)
        lines[start:start + w] = cols[:, :, c]
        lines[start + w] = ord(" ") if c < 2 else ord("\n")
    return lines.T.tobytes().translate(None, b"\0")  # row-major text, blank (0) bytes dropped


def obj_faces_text(faces: np.ndarray) -> str:
    """The ``f a b c`` block of an OBJ (1-based indices), formatted once per sequence."""
    f = np.asarray(faces, dtype=np.int64) + 1
    return ("f %d %d %d\n" * len(f)) % tuple(f.ravel().tolist())


def obj_extras(tmp: Path, faces: np.ndarray, visuals: Visuals | None) -> tuple[bytes, bytes]:
    """What every OBJ frame shares besides ``v``/``vn``: (header, faces) bytes.

    The header names ``face.mtl`` (written into ``tmp``, with the template's material and a
    copy of its texture, or a plain grey one) and holds the template's ``vt`` lines; faces
    are ``f v/vt/vn`` (``f v//vn`` without UVs), normals indexed like vertices.
    """
    from talkinghead_cli.mesh_visuals import Material, write_mtl

    material = (visuals.material if visuals is not None else None) or Material()
    head = f"mtllib {write_mtl(tmp, material)}\n"
    f = np.asarray(faces, np.int64) + 1
    uv = None if visuals is None else visuals.corner_uv
    if uv is None:
        body = ("f %d//%d %d//%d %d//%d\n" * len(f)) % tuple(np.repeat(f.ravel(), 2).tolist())
        return head.encode("ascii"), f"usemtl {material.name}\n{body}".encode("ascii")
    table, corner = np.unique(np.asarray(uv, np.float32).reshape(-1, 2), axis=0, return_inverse=True)
    head += ("vt %.6f %.6f\n" * len(table)) % tuple(table.ravel().tolist())
    triples = np.stack([f.ravel(), corner.reshape(-1) + 1, f.ravel()], 1)
    body = ("f %d/%d/%d %d/%d/%d %d/%d/%d\n" * len(f)) % tuple(triples.ravel().tolist())
    return head.encode("ascii"), f"usemtl {material.name}\n{body}".encode("ascii")


def ply_header(num_verts: int, num_faces: int) -> bytes:
    """Header of a binary little-endian PLY with float xyz vertices and int triangles."""
    return (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {num_verts}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {num_faces}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")


def ply_face_block(faces: np.ndarray) -> bytes:
    """The binary face records of a PLY, built once per sequence. faces: (F, 3)."""
    rec = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    rec["n"] = 3
    rec["idx"] = faces
    return rec.tobytes()


def write_obj_reference(path: str | Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """Slow, readable reference: one frame through trimesh's exporter."""
    import trimesh

    trimesh.Trimesh(verts, faces, process=False).export(str(path), file_type="obj")


def write_sequence(
    out: str | Path,
    verts: np.ndarray,
    faces: np.ndarray,
    fmt: str = "obj",
    fps: float | None = None,
    progress: ProgressFn | None = None,
    visuals: Visuals | None = None,
    normals: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Path:
    """Write a mesh sequence atomically.

    Args:
        out: for ``npy``/``npz`` a file path; for ``obj``/``ply`` a folder that receives
            ``frame_00000.<fmt>`` ... .
        verts: (T, V, 3).
        faces: (F, 3).
        fmt: one of ``npy``, ``npz`` (adds faces and fps), ``obj`` (with per-frame vertex
            normals ``vn``, ``face.mtl``, and the template's ``vt`` when ``visuals`` has UVs),
            ``ply`` (binary).
        progress: called with (frames written, T).
        visuals: the template's UVs and material, for OBJ.
        normals: OBJ vertex normals of a block of frames, (b, V, 3), (F, 3) -> (b, V, 3)
            (default :func:`talkinghead_cli.mesh_visuals.vertex_normals`; ``avtalk animate``
            passes the compiled :func:`talkinghead_cli.render.shade_jit.vertex_normals_frames`).
    Returns:
        the path written.
    """
    verts = _check_sequence(verts, faces)
    faces = np.asarray(faces, dtype=np.int64)
    out = Path(out)
    t = verts.shape[0]
    if fmt == "npy":
        with atomic_file(out) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, verts)
        report(progress, t, t)
        return out
    if fmt == "npz":
        with atomic_file(out) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, verts=verts, faces=faces, fps=np.float32(fps or 0.0))
        report(progress, t, t)
        return out
    if fmt not in ("obj", "ply"):
        raise UserError(f"unknown mesh format '{fmt}'", None, f"use one of {', '.join(SEQUENCE_FORMATS)}")
    with atomic_dir(out) as tmp:
        if fmt == "obj":
            from talkinghead_cli.mesh_visuals import vertex_normals

            normals = normals or vertex_normals

            head, faces_bytes = obj_extras(tmp, faces, visuals)
            for b0 in range(0, t, NORMALS_BLOCK):  # normals of a block of frames at once (faster)
                block = np.asarray(verts[b0:b0 + NORMALS_BLOCK])
                block_normals = normals(block, faces)
                for k in range(len(block)):
                    vn = obj_vertex_bytes(block_normals[k], "vn")
                    (tmp / f"frame_{b0 + k:05d}.obj").write_bytes(head + obj_vertex_bytes(block[k]) + vn + faces_bytes)
                    report(progress, b0 + k + 1, t)
        else:
            header, face_block = ply_header(verts.shape[1], len(faces)), ply_face_block(faces)
            for i in range(t):
                body = np.ascontiguousarray(verts[i], dtype="<f4").tobytes()
                (tmp / f"frame_{i:05d}.ply").write_bytes(header + body + face_block)
                report(progress, i + 1, t)
        if fps:
            (tmp / "sequence.json").write_text(json.dumps({"fps": fps, "frames": t}))
    return out


# ----------------------------------------------------------------------------- readers


def _frame_files(folder: Path) -> list[Path]:
    files: Iterable[Path] = list(folder.glob("*.obj")) or list(folder.glob("*.ply"))
    return sorted(files)


def load_sequence(path: str | Path, num_verts: int | None = None) -> tuple[np.ndarray, float | None]:
    """Read a mesh sequence.

    Args:
        path: ``.npy`` of (T, V, 3) or (T, V*3); ``.npz`` with ``verts`` (and ``fps``); or
            a folder of OBJ/PLY frames (sorted by name).
        num_verts: vertex count needed to unflatten (T, V*3) arrays, if known.
    Returns:
        verts: (T, V, 3) float32, and the fps stored with it (or None).
    """
    path = Path(path)
    if not path.exists():
        raise UserError("sequence not found", path, "check the path")
    fps = None
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise UserError("the folder holds no OBJ or PLY frames", path, "point to a folder of frame_*.obj")
        meta = path / "sequence.json"
        if meta.exists():
            fps = float(json.loads(meta.read_text()).get("fps") or 0) or None
        verts = np.stack([load_template(f).verts for f in files])
        return verts, fps
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise UserError(f"unsupported sequence format '{suffix}'", path,
                        "use .npy, .npz or a folder of OBJ/PLY frames")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError("cannot read the array file", path, "save it with numpy.save") from e
    if suffix == ".npz":
        if "verts" not in data:
            raise UserError("the NPZ has no 'verts' array", path, "save verts=(T,V,3)")
        fps = float(data["fps"]) if "fps" in data and float(data["fps"]) > 0 else None
        data = data["verts"]
    verts = np.asarray(data, dtype=np.float32)
    if verts.ndim == 2 and verts.shape[1] % 3 == 0:
        verts = verts.reshape(verts.shape[0], -1, 3)
    if verts.ndim != 3 or verts.shape[2] != 3 or verts.shape[0] == 0:
        raise UserError(f"expected a (T, V, 3) or (T, V*3) array, got {verts.shape}", path,
                        "save the sequence as frames x vertices x 3")
    if num_verts is not None and verts.shape[1] != num_verts:
        raise UserError(f"the sequence has {verts.shape[1]} vertices, the template {num_verts}", path,
                        "use the template the sequence was made with")
    if not np.isfinite(verts).all():
        raise UserError("the sequence has NaN or infinite values", path, "regenerate it")
    return verts, fps
