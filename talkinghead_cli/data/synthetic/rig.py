"""Blendshape face rigs from glTF/GLB morph targets with ARKit names.

A :class:`Rig` is a neutral template (V, 3), triangles (F, 3), a blendshape basis
(K, V, 3) with canonical ARKit names, and the vertex regions the metrics need (lip
vertices for LVE, upper-face vertices for FDD). ``verts = template + weights @ basis``.

The GLB reader handles what real exporters write: several meshes in a node hierarchy
(world transforms applied), KHR_mesh_quantization (integer positions and morph
offsets) and EXT_meshopt_compression (decoded with the ``meshopt`` package). Meshes
without morph targets (eyes, teeth) are kept as rigid parts; lower teeth follow the
jaw (see :func:`_attach_lower_teeth`). The default rig is ``facecap.glb`` from the
installed ``openfacefx`` wheel (52 ARKit targets), never copied into this repository.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead_cli.errors import UserError

# The 52 ARKit blendshape names (Apple ARFaceAnchor.BlendShapeLocation).
ARKIT_NAMES = (
    "eyeBlinkLeft eyeLookDownLeft eyeLookInLeft eyeLookOutLeft eyeLookUpLeft eyeSquintLeft eyeWideLeft "
    "eyeBlinkRight eyeLookDownRight eyeLookInRight eyeLookOutRight eyeLookUpRight eyeSquintRight "
    "eyeWideRight jawForward jawLeft jawRight jawOpen mouthClose mouthFunnel mouthPucker mouthLeft "
    "mouthRight mouthSmileLeft mouthSmileRight mouthFrownLeft mouthFrownRight mouthDimpleLeft "
    "mouthDimpleRight mouthStretchLeft mouthStretchRight mouthRollLower mouthRollUpper mouthShrugLower "
    "mouthShrugUpper mouthPressLeft mouthPressRight mouthLowerDownLeft mouthLowerDownRight "
    "mouthUpperUpLeft mouthUpperUpRight browDownLeft browDownRight browInnerUp browOuterUpLeft "
    "browOuterUpRight cheekPuff cheekSquintLeft cheekSquintRight noseSneerLeft noseSneerRight tongueOut"
).split()
HEAD_HEIGHT_M = 0.23
# Targets the articulation model cannot do without.
REQUIRED_MOUTH = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker")

_CANON = {n.lower(): n for n in ARKIT_NAMES}
_COMPONENT = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def canonical_arkit_name(name: str) -> str | None:
    """Map exporter spellings to the ARKit name, or None if it is not one.

    Accepts ``mouthSmile_L``, ``mouthSmileLeft``, ``mouthSmile.L``, ``MouthSmileLeft`` and a
    ``prefix.`` such as ``blendShape1.jawOpen``.
    """
    base = name.split(".")[-1] if not re.search(r"\.[LR]$", name) else name
    base = re.sub(r"[._]L$", "Left", base)
    base = re.sub(r"[._]R$", "Right", base)
    return _CANON.get(base.lower())


@dataclass
class Rig:
    """A blendshape face rig.

    Attributes:
        name: rig name (file stem).
        template: (V, 3) float32 neutral vertices in metres (head mesh scaled to 0.23 m tall).
        faces: (F, 3) int64 triangles.
        basis: (K, V, 3) float32 per-blendshape vertex offsets.
        names: K canonical ARKit names.
        head: (V,) bool, vertices of the morphing head mesh (not eyes/teeth).
        lip_indices: lip vertex indices (sorted).
        upper_face_indices: forehead/eye-region vertex indices (sorted).
    """

    name: str
    template: np.ndarray
    faces: np.ndarray
    basis: np.ndarray
    names: list[str]
    head: np.ndarray
    lip_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    upper_face_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def num_verts(self) -> int:
        return int(self.template.shape[0])

    def index(self, name: str) -> int:
        return self.names.index(name)

    def pose(self, weights: np.ndarray, template: np.ndarray | None = None) -> np.ndarray:
        """Blend weights into vertices.

        Args:
            weights: (T, K) blendshape weights.
            template: (V, 3) neutral to start from (default: the rig's).
        Returns:
            (T, V, 3) float32.
        """
        base = self.template if template is None else template
        k, v = self.basis.shape[0], self.basis.shape[1]
        off = np.asarray(weights, np.float32) @ self.basis.reshape(k, v * 3)
        return (base[None] + off.reshape(-1, v, 3)).astype(np.float32)

    def pose_reference(self, weights: np.ndarray) -> np.ndarray:
        """Slow readable version of :meth:`pose` (a loop over blendshapes), for tests."""
        out = np.repeat(self.template[None], len(weights), axis=0).astype(np.float64)
        for t in range(len(weights)):
            for k in range(len(self.names)):
                out[t] += weights[t, k] * self.basis[k]
        return out.astype(np.float32)

    def info(self) -> dict:
        return {"name": self.name, "num_verts": self.num_verts, "num_faces": int(len(self.faces)),
                "blendshapes": list(self.names), "num_lip_verts": int(len(self.lip_indices)),
                "num_upper_face_verts": int(len(self.upper_face_indices))}


def default_rig_path() -> Path:
    """``facecap.glb`` inside the installed ``openfacefx`` package."""
    try:
        from importlib.resources import files

        path = Path(str(files("openfacefx").joinpath("studio_web/assets/facecap.glb")))
    except ModuleNotFoundError as e:
        raise UserError("the default face rig needs the openfacefx package", None,
                        'install the synthesis extras: pip install -e ".[synth]"') from e
    if not path.exists():
        raise UserError("facecap.glb is missing from the openfacefx package", path,
                        "reinstall openfacefx, or pass --rig avatar.glb")
    return path


# --------------------------------------------------------------------------- GLB reading
def _uri_bytes(path: Path, uri: str | None) -> bytes:
    """A buffer's bytes: none, a base64 ``data:`` URI, or a file beside the glTF."""
    if not uri:
        return b""
    if uri.startswith("data:"):
        import base64

        return base64.b64decode(uri.split(",", 1)[1])
    from urllib.parse import unquote

    return (path.parent / unquote(uri)).read_bytes()


def _read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    if path.suffix.lower() == ".gltf" or data[:1] == b"{":
        gltf = json.loads(data)
        gltf["_bins"] = [_uri_bytes(path, b.get("uri")) for b in gltf.get("buffers", [])]
        return gltf, b""
    if len(data) < 20 or data[:4] != b"glTF":
        raise ValueError("not a GLB file")
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    gltf = json.loads(data[20:20 + json_len])
    rest = 20 + json_len
    binary = b""
    if rest + 8 <= len(data):
        bin_len, _ = struct.unpack_from("<I4s", data, rest)
        binary = data[rest + 8: rest + 8 + bin_len]
    gltf["_bins"] = [binary if "uri" not in b else _uri_bytes(path, b["uri"]) for b in gltf.get("buffers", [])]
    return gltf, binary


def _buffer_view_bytes(gltf: dict, index: int, cache: dict) -> bytes:
    if index in cache:
        return cache[index]
    bv = gltf["bufferViews"][index]
    ext = bv.get("extensions", {}).get("EXT_meshopt_compression")
    if ext is not None:
        import meshopt

        src = gltf["_bins"][ext["buffer"]]
        raw = src[ext.get("byteOffset", 0): ext.get("byteOffset", 0) + ext["byteLength"]]
        out = meshopt.decode_gltf_buffer(raw, ext["count"], ext["byteStride"], ext.get("mode", "ATTRIBUTES"),
                                         ext.get("filter", "NONE"))
        blob = np.ascontiguousarray(out).tobytes()
    else:
        src = gltf["_bins"][bv["buffer"]]
        blob = src[bv.get("byteOffset", 0): bv.get("byteOffset", 0) + bv["byteLength"]]
    cache[index] = blob
    return blob


def _accessor(gltf: dict, index: int, cache: dict) -> np.ndarray:
    """An accessor as float64 (count, ncomp) with normalisation applied."""
    acc = gltf["accessors"][index]
    dtype = np.dtype(_COMPONENT[acc["componentType"]])
    ncomp = _NCOMP[acc["type"]]
    count = acc["count"]
    if "bufferView" not in acc:
        out = np.zeros((count, ncomp))
    else:
        blob = _buffer_view_bytes(gltf, acc["bufferView"], cache)
        stride = gltf["bufferViews"][acc["bufferView"]].get("byteStride") or dtype.itemsize * ncomp
        off = acc.get("byteOffset", 0)
        raw = np.frombuffer(blob, np.uint8, count=(count - 1) * stride + dtype.itemsize * ncomp, offset=off)
        rows = np.lib.stride_tricks.as_strided(raw, (count, dtype.itemsize * ncomp), (stride, 1))
        out = np.ascontiguousarray(rows).view(dtype).reshape(count, ncomp).astype(np.float64)
        if acc.get("normalized"):
            out = out / float(np.iinfo(dtype).max) if dtype.kind in "iu" else out
            out = np.maximum(out, -1.0)
    if "sparse" in acc:
        raise ValueError("sparse accessors are not supported")
    return out


def _node_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T
    t = np.asarray(node.get("translation", [0, 0, 0]), np.float64)
    x, y, z, w = node.get("rotation", [0, 0, 0, 1])
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    s = np.asarray(node.get("scale", [1, 1, 1]), np.float64)
    m = np.eye(4)
    m[:3, :3] = r * s[None, :]
    m[:3, 3] = t
    return m


def _mesh_world_matrices(gltf: dict) -> list[tuple[int, np.ndarray]]:
    """(mesh index, 4x4 world matrix) for every node instancing a mesh, in node order."""
    nodes = gltf.get("nodes", [])
    parent = {}
    for i, n in enumerate(nodes):
        for c in n.get("children", []):
            parent[c] = i
    out = []
    for i, n in enumerate(nodes):
        if "mesh" not in n:
            continue
        m, j = _node_matrix(n), i
        while j in parent:
            j = parent[j]
            m = _node_matrix(nodes[j]) @ m
        out.append((n["mesh"], m))
    if not out:
        out = [(i, np.eye(4)) for i in range(len(gltf.get("meshes", [])))]
    return out


def _target_names(gltf: dict, mesh: dict, n_targets: int) -> list[str]:
    names = mesh.get("extras", {}).get("targetNames")
    if names is None:
        names = mesh["primitives"][0].get("extras", {}).get("targetNames")
    return list(names) if names and len(names) == n_targets else [f"target{i}" for i in range(n_targets)]


def _load_parts(gltf: dict):
    """Yield (positions (n,3), faces (f,3), {name: offsets (n,3)}) per triangle primitive, world space."""
    cache: dict = {}
    for mesh_idx, world in _mesh_world_matrices(gltf):
        mesh = gltf["meshes"][mesh_idx]
        lin = world[:3, :3]
        for prim in mesh["primitives"]:
            if prim.get("mode", 4) != 4 or "POSITION" not in prim["attributes"]:
                continue
            pos = _accessor(gltf, prim["attributes"]["POSITION"], cache)
            pos = pos @ lin.T + world[:3, 3]
            if "indices" in prim:
                idx = _accessor(gltf, prim["indices"], cache).astype(np.int64).reshape(-1, 3)
            else:
                idx = np.arange(len(pos), dtype=np.int64).reshape(-1, 3)
            targets = prim.get("targets", [])
            names = _target_names(gltf, mesh, len(targets))
            offs = {}
            for name, tgt in zip(names, targets):
                if "POSITION" in tgt:
                    offs[name] = _accessor(gltf, tgt["POSITION"], cache) @ lin.T
            yield pos, idx, offs


def load_rig(path: str | Path | None = None) -> Rig:
    """Load a blendshape rig from a GLB/glTF file with ARKit-named morph targets.

    Args:
        path: GLB or glTF file; None loads the default ``facecap.glb``.
    Raises:
        UserError: unreadable file, or no ARKit-named mouth targets.
    """
    path = default_rig_path() if path is None else Path(path)
    if not path.is_file():
        raise UserError("rig file not found", path, "pass a .glb/.gltf with ARKit-named morph targets")
    try:
        gltf, _ = _read_glb(path)
        parts = list(_load_parts(gltf))
    except (ValueError, KeyError, IndexError, OSError, json.JSONDecodeError, struct.error) as e:
        raise UserError(f"cannot read the rig ({type(e).__name__}: {e})", path,
                        "export it again as a glTF 2.0 .glb") from e
    return _assemble(path.stem, parts, path)


def _assemble(name: str, parts: list, path: Path) -> Rig:
    found: list[str] = []
    for _, _, offs in parts:
        for n in offs:
            c = canonical_arkit_name(n)
            if c is not None and c not in found:
                found.append(c)
    missing = [n for n in REQUIRED_MOUTH if n not in found]
    if missing:
        raise UserError(f"the rig has no ARKit-named mouth morph targets ({', '.join(missing)} missing)", path,
                        "use a rig with ARKit blendshapes (jawOpen, mouthClose, mouthFunnel, mouthPucker, ...)")
    names = [n for n in ARKIT_NAMES if n in found]
    verts, faces, head, basis_parts = [], [], [], []
    start = 0
    for pos, idx, offs in parts:
        b = np.zeros((len(names), len(pos), 3))
        for n, o in offs.items():
            c = canonical_arkit_name(n)
            if c is not None:
                b[names.index(c)] = o
        verts.append(pos)
        faces.append(idx + start)
        head.append(np.full(len(pos), bool(offs)))
        basis_parts.append(b)
        start += len(pos)
    template = np.concatenate(verts)
    basis = np.concatenate(basis_parts, axis=1)
    head_mask = np.concatenate(head)
    # Scale to metres: the morphing head mesh is made HEAD_HEIGHT_M tall (rigs come in
    # arbitrary units; facecap's are about decimetres), as VOCASET's FLAME heads are.
    s = HEAD_HEIGHT_M / max(float(np.ptp(template[head_mask, 1])), 1e-12)
    rig = Rig(name=name, template=(template * s).astype(np.float32),
              faces=np.concatenate(faces).astype(np.int64),
              basis=(basis * s).astype(np.float32), names=names, head=head_mask)
    _attach_lower_teeth(rig)
    from talkinghead_cli.data.synthetic.regions import lip_indices, upper_face_indices

    rig.lip_indices = lip_indices(rig)
    rig.upper_face_indices = upper_face_indices(rig)
    return rig


def _attach_lower_teeth(rig: Rig) -> None:
    """Let rigid parts below the mouth follow the jaw.

    Teeth meshes usually carry no morph targets, so jawOpen would leave the lower teeth
    behind. Each rigid vertex below the mouth loop's centre and within a mouth width of it
    takes the jaw targets' offsets of its nearest lower-lip/chin head vertex.
    """
    from talkinghead_cli.data.synthetic.regions import mouth_loop

    rigid = np.flatnonzero(~rig.head)
    if len(rigid) == 0:
        return
    loop = mouth_loop(rig)
    p = rig.template
    c = p[loop].mean(axis=0)
    width = np.ptp(p[loop, 0])
    near = np.linalg.norm(p[rigid] - c, axis=1) < 1.0 * width
    lower = rigid[near & (p[rigid, 1] < c[1])]
    head = np.flatnonzero(rig.head & (p[:, 1] < c[1]) & (np.linalg.norm(p - c, axis=1) < 1.5 * width))
    if len(lower) == 0 or len(head) == 0:
        return
    d = np.linalg.norm(p[lower, None] - p[None, head], axis=2)
    nearest = head[np.argmin(d, axis=1)]
    for name in ("jawOpen", "jawForward", "jawLeft", "jawRight"):
        if name in rig.names:
            k = rig.index(name)
            rig.basis[k, lower] = rig.basis[k, nearest]
