"""Retargeting: animate a face mesh of any topology with a model trained on another one.

The model predicts vertices on its own template (the *source*, Vt vertices). A user's mesh
(the *target*, Vu vertices, any triangulation, pose, scale and position) is animated by:

1. **Alignment.** A similarity transform ``x_user = s R x_src + t`` found from area-weighted
   surface moments (centroid, scale, principal axes) under all 24 axis-permutation/sign
   hypotheses, each refined by a short rigid-plus-scale ICP of the source's face region onto
   the user's surface (closest points from a :class:`~talkinghead_cli.surface.SurfaceIndex`:
   KD-trees and chunked closest-triangle queries, memory linear in the mesh); the best
   hypothesis is refined further.
   With ``landmarks`` (user vertex -> source vertex pairs) the initial transform is their
   Umeyama/Procrustes fit instead.
2. **Alignment error.** Distances from the source's face region (lips + upper face when the
   checkpoint knows them, else all vertices), aligned, to the user's surface, relative to the
   source's size (bounding-box diagonal): mean and 95th percentile. Over ``max_error`` the mesh
   is refused as not face-like.
3. **Mapping.** The source, placed in the user's frame, has its main surface (the skin, not
   eyes or teeth) bent onto the user's by non-rigid ICP (``trimesh.registration.nricp_amberg``)
   so that faces of other proportions meet mouth to mouth (a template of more than
   ``PROXY_FACES`` triangles, e.g. a scan, is stood in for by a vertex-clustered copy a
   little finer than the model's face). Each user vertex takes the
   barycentric coordinates of its closest bent-source triangle that faces the same way
   (closed lips map to their own lip), times a smooth falloff from 1 (on the surface) to 0
   (``FALLOFF`` distances away: back of the head, neck, borders): a sparse (Vu, Vt) matrix ``W``.
4. **Cache.** ``avtalk animate`` keeps each mapping (sparse weights + transform + figures)
   under ``~/.cache/avtalk/retarget`` keyed by a hash of both meshes, the region and the
   landmarks, so a template is aligned once (``AVTALK_CACHE_DIR`` moves or disables it).
5. **Transfer.** Per frame, ``d_user = s R (W @ (pred - source))``: displacements
   interpolated on the source, rotated and scaled into the user's frame. One sparse matmul
   per block of frames (:meth:`Retargeting.transfer_chunks`), written as it is made.

Shapes: T frames, V vertices (Vt source, Vu user), F faces.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from talkinghead_cli.errors import UserError
from talkinghead_cli.mesh import Mesh
from talkinghead_cli.progress import ProgressFn, report
from talkinghead_cli.surface import SurfaceIndex, cluster_proxy, surface_area, surface_moments, vertex_normals

__all__ = ["surface_moments"]  # re-exported for callers of the former location

MAX_ERROR = 0.02  # refuse when the p95 alignment error exceeds 2 % of the template's diagonal
FALLOFF = (0.01, 0.04)  # full motion below 1 %, none beyond 4 % of the diagonal
MIN_LANDMARKS = 4
_ICP_POINTS = 600
# Templates with more faces are aligned (24 hypotheses) and bent onto a vertex-clustered stand-in
# with cubes of PROXY_CELL times the model face's typical edge at the template's size (the final
# ICP, the error and the per-vertex mapping always use every vertex).
PROXY_FACES = 100_000
PROXY_CELL = 0.25
# Non-rigid ICP schedule (stiffness, landmark weight, normal weight, iterations): trimesh's
# default weights with at most 5 iterations per step.
NRICP_STEPS = [[0.01, 10, 0.5, 5], [0.02, 5, 0.5, 5], [0.03, 2.5, 0.5, 5], [0.01, 0, 0.0, 5]]


@dataclass
class Retargeting:
    """A cached mapping from the model's template to a user's mesh.

    Attributes:
        weights: (Vu, Vt) sparse CSR, barycentric weights times falloff (rows sum to <= 1).
        rotation: (3, 3), scale: float, translation: (3,): ``x_user = scale * rotation @ x_src + translation``.
        error: ``{"mean": .., "p95": ..}`` alignment error relative to the template diagonal.
        falloff: (Vu,) motion weight of each user vertex in [0, 1].
        method: ``"automatic"`` or ``"landmarks"``; nonrigid: the template was bent onto the mesh.
        source: the model's template the mapping was built for (set by :func:`for_checkpoint`).
    """

    weights: sp.csr_matrix
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    error: dict = field(default_factory=dict)
    falloff: np.ndarray = field(default_factory=lambda: np.zeros(0))
    method: str = "automatic"
    nonrigid: bool = False
    cached: bool = False  # loaded from the mapping cache
    source: Mesh | None = None  # the model's template, when built for a checkpoint

    def transfer(self, pred: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Animate the user's mesh.

        Args:
            pred: (T, Vt, 3) model vertices; source: (Vt, 3) the model's template;
            target: (Vu, 3) the user's neutral vertices.
        Returns:
            (T, Vu, 3) float32.
        """
        to_user = (self.scale * self.rotation).astype(np.float32)  # d_user = s R d_src
        disp = (np.asarray(pred, np.float32) - np.asarray(source, np.float32)[None]) @ to_user.T  # rotate first:
        t, vt, _ = disp.shape  # W (s R d) = s R (W d), and Vt is small
        weights = self.weights if self.weights.dtype == np.float32 else self.weights.astype(np.float32)
        moved = weights @ np.ascontiguousarray(disp.transpose(1, 0, 2)).reshape(vt, t * 3)  # (Vu, T*3)
        out = moved.reshape(-1, t, 3).transpose(1, 0, 2)  # (T, Vu, 3)
        out += np.asarray(target, np.float32)[None]
        return np.ascontiguousarray(out, dtype=np.float32)

    def transfer_into(self, pred: np.ndarray, source: np.ndarray, target: np.ndarray, out: np.ndarray,
                      chunk: int | None = None) -> np.ndarray:
        """:meth:`transfer` ``chunk`` frames at a time into ``out`` (T, Vu, 3), e.g. memory maps."""
        for a, frames in self.transfer_chunks(pred, source, target, chunk):
            out[a:a + len(frames)] = frames
        return out

    def transfer_chunks(self, pred: np.ndarray, source: np.ndarray, target: np.ndarray, chunk: int | None = None):
        """:meth:`transfer` in blocks of frames: yields (first frame, (t, Vu, 3) float32). The
        default block holds about 8 M user vertex positions (~100 MB), whatever Vu is."""
        chunk = chunk or max(1, min(500, 8_000_000 // max(1, self.weights.shape[0])))
        target = np.asarray(target, np.float32)
        for a in range(0, len(pred), chunk):
            yield a, self.transfer(np.asarray(pred[a:a + chunk]), source, target)

    def map_indices(self, indices: np.ndarray | None) -> np.ndarray | None:
        """Source vertex indices (e.g. lips) -> the user vertices that take most of their
        motion from them (weight share >= 0.5). Returns sorted (N,) int64, or None."""
        if indices is None:
            return None
        mask = np.zeros(self.weights.shape[1])
        mask[np.asarray(indices, np.int64)] = 1.0
        share = (self.weights @ mask) / np.maximum(np.asarray(self.weights.sum(axis=1)).ravel(), 1e-12)
        return np.flatnonzero((share >= 0.5) & (self.falloff >= 0.5)).astype(np.int64)

    def transfer_reference(self, pred: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Slow, readable version of :meth:`transfer` (loops over frames and user vertices)."""
        w = self.weights.tocsr()
        out = np.repeat(np.asarray(target, np.float64)[None], len(pred), axis=0)
        for f in range(len(pred)):
            disp = pred[f].astype(np.float64) - source
            for u in range(w.shape[0]):
                lo, hi = w.indptr[u], w.indptr[u + 1]
                d = (w.data[lo:hi, None] * disp[w.indices[lo:hi]]).sum(axis=0)
                out[f, u] += self.scale * self.rotation @ d
        return out.astype(np.float32)

    def info(self) -> dict:
        return {"method": self.method, "nonrigid": self.nonrigid, "cached": self.cached, "scale": float(self.scale),
                "alignment_error": {k: float(v) for k, v in self.error.items()},
                "moving_vertices": int((self.falloff > 0).sum()),
                "num_verts": int(self.weights.shape[0])}


# ----------------------------------------------------------------------------- geometry helpers


def _trimesh(mesh: Mesh):
    import trimesh

    return trimesh.Trimesh(np.asarray(mesh.verts, np.float64), mesh.faces, process=False)


def axis_hypotheses() -> list[np.ndarray]:
    """The 24 proper rotations that map coordinate axes onto signed coordinate axes."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            p = np.zeros((3, 3))
            p[list(range(3)), list(perm)] = signs
            if np.linalg.det(p) > 0:
                out.append(p)
    return out


def _matrix(rotation: np.ndarray, scale: float, translation: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = scale * rotation
    m[:3, 3] = translation
    return m


def _split(matrix: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    lin = matrix[:3, :3]
    s = float(np.cbrt(np.linalg.det(lin)))
    return lin / s, s, matrix[:3, 3].copy()


def closest_on_surface(mesh, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface points of a trimesh. points: (N, 3).
    Returns (closest (N, 3), distance (N,), triangle id (N,))."""
    import trimesh

    closest, dist, tri = trimesh.proximity.closest_point(mesh, points)
    return np.asarray(closest), np.asarray(dist), np.asarray(tri, np.int64)


def closest_facing(mesh, points: np.ndarray, normals: np.ndarray, penalty: float,
                   neighbours: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface points that face the same way as the query points.

    Where two surfaces touch (closed upper and lower lips) the plain closest triangle may be
    on the wrong one. Here each point's candidates are the triangles around its
    ``neighbours`` nearest mesh vertices plus those with the nearest centroids
    (:class:`~talkinghead_cli.surface.SurfaceIndex`, in bounded memory); a candidate whose
    normal points against the query's normal costs ``penalty`` extra distance. Only these
    local candidates are compared, so a facing triangle on a far side of the mesh is never
    preferred to a near one.

    Args:
        mesh: trimesh; points, normals: (N, 3) (unit normals).
    Returns:
        (closest (N, 3), distance (N,), triangle id (N,)).
    """
    index = SurfaceIndex(mesh.vertices, mesh.faces, neighbours=neighbours)
    closest, dist, tri, _ = index.query(points, normals, penalty)
    return closest, dist, tri


def closest_facing_reference(verts: np.ndarray, faces: np.ndarray, points: np.ndarray,
                             normals: np.ndarray | None = None, penalty: float = 0.0):
    """Slow, readable brute force of :func:`closest_facing` (or, without normals, of
    :func:`closest_on_surface`): every point against every triangle."""
    import trimesh

    tri = verts[faces].astype(np.float64)
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    best = np.full(len(points), np.inf)
    out_p, out_t = np.zeros((len(points), 3)), np.zeros(len(points), np.int64)
    for i, p in enumerate(points):
        cand = trimesh.triangles.closest_point(tri, np.repeat(p[None], len(tri), axis=0))
        d = np.linalg.norm(cand - p, axis=1)
        score = d if normals is None else d + penalty * (fn @ normals[i] < 0)
        j = int(np.argmin(score))
        best[i], out_p[i], out_t[i] = d[j], cand[j], j
    return out_p, best, out_t


# ----------------------------------------------------------------------------- alignment


def _region_points(source: Mesh, region: np.ndarray | None, n: int, seed: int = 0) -> np.ndarray:
    pts = source.verts[region] if region is not None and len(region) >= 10 else source.verts
    if len(pts) > n:
        pts = pts[np.random.default_rng(seed).choice(len(pts), n, replace=False)]
    return np.asarray(pts, np.float64)


def _icp(points: np.ndarray, user: SurfaceIndex, initial: np.ndarray, iterations: int) -> np.ndarray:
    """Rigid + uniform-scale ICP of source points (N, 3) onto the user's surface (as
    ``trimesh.registration.icp``, with the closest points from ``user``). Returns 4x4."""
    from trimesh.registration import procrustes

    a = points @ initial[:3, :3].T + initial[:3, 3]
    total, old_cost = initial, np.inf
    for _ in range(iterations):
        closest = user.query(a)[0]
        matrix, a, cost = procrustes(a, closest, reflection=False, scale=True)
        total = matrix @ total
        if old_cost - cost < 1e-7:
            break
        old_cost = cost
    return total


def alignment_error(points: np.ndarray, matrix: np.ndarray, user: SurfaceIndex, diagonal: float) -> dict:
    """Distances of source points (N, 3), mapped by ``matrix``, to the user's surface, relative
    to the mapped source diagonal. Returns {"mean", "p95"}."""
    mapped = points @ matrix[:3, :3].T + matrix[:3, 3]
    dist = user.query(mapped)[1]
    rel = dist / (diagonal * _split(matrix)[1])
    return {"mean": float(rel.mean()), "p95": float(np.percentile(rel, 95))}


def align_automatic(source: Mesh, user: Mesh, region: np.ndarray | None = None,
                    index: SurfaceIndex | None = None, progress: ProgressFn | None = None,
                    coarse_index: SurfaceIndex | None = None) -> np.ndarray:
    """Source -> user similarity (4x4) from surface moments, 24 axis hypotheses and ICP
    (the hypotheses on ``coarse_index``, a stand-in of a dense mesh, when given).
    ``progress`` is called with (hypotheses tried, 25)."""
    full = index if index is not None else SurfaceIndex(user.verts, user.faces)
    user_tm = coarse_index if coarse_index is not None else full
    mu_s, ax_s, sd_s = surface_moments(source.verts, source.faces)
    mu_u, ax_u, sd_u = surface_moments(user.verts, user.faces)
    scale = float(np.sqrt((sd_u ** 2).sum() / max((sd_s ** 2).sum(), 1e-30)))
    coarse = _region_points(source, region, 200)
    diag = float(np.linalg.norm(np.ptp(source.verts, axis=0)))
    best, best_err = None, np.inf
    hypotheses = axis_hypotheses()
    for i, p in enumerate(hypotheses):
        rot = ax_u @ p @ ax_s.T
        init = _matrix(rot, scale, mu_u - scale * rot @ mu_s)
        m = _icp(coarse, user_tm, init, 6)
        err = alignment_error(coarse, m, user_tm, diag)["mean"]
        if err < best_err:
            best, best_err = m, err
        report(progress, i + 1, len(hypotheses) + 1)
    return _icp(_region_points(source, region, _ICP_POINTS, seed=1), full, best, 30)


def align_landmarks(source: Mesh, user: Mesh, pairs: np.ndarray, region: np.ndarray | None = None,
                    index: SurfaceIndex | None = None) -> np.ndarray:
    """Source -> user similarity (4x4) from landmark pairs (N, 2) of (user, source) vertex
    indices (Umeyama fit), refined by ICP."""
    from trimesh.registration import procrustes

    m, _, _ = procrustes(source.verts[pairs[:, 1]].astype(np.float64), user.verts[pairs[:, 0]].astype(np.float64),
                         reflection=False, scale=True)
    index = index if index is not None else SurfaceIndex(user.verts, user.faces)
    return _icp(_region_points(source, region, _ICP_POINTS, seed=1), index, m, 30)


def main_surface(mesh: Mesh, share: float = 0.1) -> np.ndarray:
    """Faces (indices) of the connected components holding at least ``share`` of the surface
    area: the skin, without eyeballs, teeth or tongue."""
    import trimesh

    tm = _trimesh(mesh)
    labels = trimesh.graph.connected_component_labels(tm.face_adjacency, node_count=len(mesh.faces))
    area = np.bincount(labels, weights=tm.area_faces)
    return np.flatnonzero(area[labels] >= share * area.sum())


def stand_in(user: Mesh, num_source: int) -> Mesh | None:
    """A vertex-clustered copy of a dense template (over ``PROXY_FACES`` triangles) a little
    finer than the model's face would be at the template's size, or None for a small one."""
    if len(user.faces) <= PROXY_FACES:
        return None
    edge = np.sqrt(2 * surface_area(user.verts, user.faces) / (np.sqrt(3) * num_source))  # equilateral mesh
    return Mesh(*cluster_proxy(user.verts, user.faces, PROXY_CELL * edge))


def refine_nonrigid(source: Mesh, user: Mesh, matrix: np.ndarray, proxy: Mesh | None = None) -> np.ndarray | None:
    """Source vertices placed by ``matrix`` in the user's frame, then the main surface bent
    onto the user's (or its stand-in ``proxy``) by non-rigid ICP
    (``trimesh.registration.nricp_amberg``), so that mouth, nose and eyes of another face
    shape meet. Returns (Vt, 3), or None if it fails."""
    from trimesh.registration import nricp_amberg

    placed = source.verts.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    faces = source.faces[main_surface(source)]
    idx = np.unique(faces)
    remap = np.full(source.num_verts, -1)
    remap[idx] = np.arange(len(idx))
    sub = _trimesh(Mesh(placed[idx], remap[faces]))
    size = float(np.linalg.norm(np.ptp(placed[idx], axis=0)))
    target = _trimesh(user if proxy is None else proxy)
    try:
        bent = np.asarray(nricp_amberg(sub, target, distance_threshold=0.05 * size, steps=NRICP_STEPS))
    except (np.linalg.LinAlgError, ValueError, RuntimeError):
        return None
    if bent.shape != (len(idx), 3) or not np.isfinite(bent).all():
        return None
    placed[idx] = bent
    return placed


# ----------------------------------------------------------------------------- landmarks file


def read_landmarks(path: str | Path, num_user: int, num_source: int) -> np.ndarray:
    """Read ``user_vertex template_vertex`` pairs.

    Formats: JSON (``[[u, t], ...]`` or ``{"pairs": [[u, t], ...]}`` or ``{"u": t, ...}``) or
    text with one ``u t`` pair per line (``#`` comments). Returns (N, 2) int64.

    Raises:
        UserError: unreadable file, bad format, fewer than ``MIN_LANDMARKS`` pairs, indices
        out of range.
    """
    path = Path(path)
    fix = f"write at least {MIN_LANDMARKS} lines 'USER_VERTEX TEMPLATE_VERTEX' (or JSON [[u, t], ...])"
    if not path.is_file():
        raise UserError("landmarks file not found", path, "check the path")
    text = path.read_text(errors="replace")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            if isinstance(data, dict) and "pairs" in data:
                data = data["pairs"]
            elif isinstance(data, dict):
                data = [[int(k), v] for k, v in data.items()]
            pairs = np.asarray(data, dtype=np.float64)
        else:
            rows = [ln.split("#")[0].replace(",", " ").split() for ln in text.splitlines()]
            pairs = np.asarray([[float(x) for x in r] for r in rows if r], dtype=np.float64)
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot parse the landmarks ({type(e).__name__})", path, fix) from e
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.all(pairs == np.round(pairs)):
        raise UserError("landmarks must be pairs of integer vertex indices", path, fix)
    if len(pairs) < MIN_LANDMARKS:
        raise UserError(f"{len(pairs)} landmark pairs given, at least {MIN_LANDMARKS} are needed", path, fix)
    pairs = pairs.astype(np.int64)
    if pairs.min() < 0 or pairs[:, 0].max() >= num_user or pairs[:, 1].max() >= num_source:
        raise UserError(f"a landmark index is out of range (user mesh {num_user}, template {num_source} vertices)",
                        path, "use 0-based vertex indices: user mesh first, model template second")
    return pairs


# ----------------------------------------------------------------------------- mapping


def smooth_falloff(rel_dist: np.ndarray, inner: float, outer: float) -> np.ndarray:
    """1 below ``inner``, 0 beyond ``outer``, a smoothstep between. rel_dist: (N,)."""
    x = np.clip((rel_dist - inner) / max(outer - inner, 1e-12), 0.0, 1.0)
    return 1.0 - x * x * (3.0 - 2.0 * x)


def barycentric_weights(source: Mesh, points: np.ndarray, normals: np.ndarray,
                        falloff: tuple[float, float] = FALLOFF, progress: ProgressFn | None = None):
    """Sparse barycentric interpolation from the source surface to ``points`` (N, 3) with
    unit ``normals`` (N, 3), in one frame; triangles facing away from a point's normal are
    avoided (:func:`closest_facing`). Distances for the falloff are relative to the source's
    bounding-box diagonal.

    Returns (W (N, Vt) CSR with rows of barycentrics x falloff, falloff (N,), distance (N,))."""
    diag = float(np.linalg.norm(np.ptp(source.verts, axis=0)))
    index = SurfaceIndex(source.verts, source.faces)
    _, dist, tri, bary = index.query(points, normals, penalty=falloff[1] * diag, progress=progress)
    bary = np.clip(np.nan_to_num(bary), 0, None)
    bary /= np.maximum(bary.sum(axis=1, keepdims=True), 1e-12)
    fall = smooth_falloff(dist / diag, *falloff)
    rows = np.repeat(np.arange(len(points)), 3)
    w = sp.csr_matrix(((bary * fall[:, None]).astype(np.float32).ravel(), (rows, source.faces[tri].ravel())),
                      shape=(len(points), source.num_verts))
    w.eliminate_zeros()
    return w, fall, dist


def build_retargeting(source: Mesh, user: Mesh, region: np.ndarray | None = None,
                      landmarks: np.ndarray | None = None, max_error: float = MAX_ERROR,
                      user_path: str | Path | None = None, nonrigid: bool = True,
                      progress: ProgressFn | None = None) -> Retargeting:
    """Align ``user`` to the model's template ``source`` and cache the vertex mapping.

    Args:
        source: the model's template (Vt vertices); user: any triangle mesh (Vu vertices).
        region: source vertex indices of the face (lips + upper face) used for alignment and
            its error; None uses every vertex.
        landmarks: (N, 2) (user vertex, source vertex) pairs for the initial transform.
        max_error: refuse when the p95 relative alignment error (of the similarity
            transform, before any bending) exceeds it.
        nonrigid: bend the model's template onto the user's mesh (:func:`refine_nonrigid`)
            before mapping, so faces of other proportions map mouth to mouth.
        progress: called with (percent done, 100): alignment to 40, bending to 60, the
            per-vertex mapping to 100.
    Raises:
        UserError: the mesh is not face-like (alignment error over ``max_error``).

    Memory is linear in Vu: KD-trees and chunked closest-triangle queries
    (:class:`~talkinghead_cli.surface.SurfaceIndex`), a sparse (Vu, Vt) result.
    """
    report(progress, 0, 100)
    index = SurfaceIndex(user.verts, user.faces)
    proxy = stand_in(user, source.num_verts)
    if landmarks is not None:
        matrix, method = align_landmarks(source, user, landmarks, region, index), "landmarks"
    else:
        step = None if progress is None else (lambda done, total: progress(40 * done / total, 100))
        coarse = None if proxy is None else SurfaceIndex(proxy.verts, proxy.faces)
        matrix, method = align_automatic(source, user, region, index, step, coarse), "automatic"
    report(progress, 40, 100)
    diag = float(np.linalg.norm(np.ptp(source.verts, axis=0)))
    pts = source.verts[region] if region is not None and len(region) >= 10 else source.verts
    err = alignment_error(np.asarray(pts, np.float64), matrix, index, diag)
    del index
    if not err["p95"] <= max_error:
        hint = ("check the landmark pairs (user vertex, template vertex)" if landmarks is not None else
                "give a face mesh, or pass --landmarks with a few user/template vertex pairs")
        raise UserError(f"the template ({user.num_verts} vertices, retargeted from the model's {source.num_verts}) "
                        f"does not look like a face: alignment error {100 * err['p95']:.1f} % "
                        f"of the face size (95th percentile; at most {100 * max_error:.1f} % accepted)",
                        user_path, hint)
    rot, scale, trans = _split(matrix)
    placed = refine_nonrigid(source, user, matrix, proxy) if nonrigid else None
    bent = placed is not None
    if not bent:
        placed = source.verts.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    report(progress, 60, 100)
    normals = (np.asarray(_trimesh(user).vertex_normals) if len(user.faces) <= PROXY_FACES
               else vertex_normals(user.verts, user.faces))  # trimesh's angle weighting, or area weighting in chunks
    step = None if progress is None else (lambda done, total: progress(60 + 40 * done / total, 100))
    w, fall, _ = barycentric_weights(Mesh(placed, source.faces), user.verts, normals, progress=step)
    return Retargeting(w, rot, scale, trans, err, fall, method, bent)


def for_checkpoint(ckpt: dict, user: Mesh, template_path: str | Path | None = None,
                   landmarks_path: str | Path | None = None, progress: ProgressFn | None = None) -> Retargeting | None:
    """The retargeting ``avtalk animate`` needs, or None when ``user`` has the model's topology
    (same vertex count) and no landmarks were given: then the model animates it directly.

    The source is the checkpoint's training template with its faces; the alignment region is
    its lip and upper-face vertices when it knows them.
    Raises:
        UserError: no faces in the checkpoint, a bad landmarks file, a mesh that is not face-like.
    """
    num_verts = int(ckpt["config"]["animator"]["num_verts"])
    if user.num_verts == num_verts and landmarks_path is None:
        return None
    if ckpt.get("faces") is None or len(ckpt["faces"]) == 0:
        raise UserError(f"the template has {user.num_verts} vertices, the model {num_verts}, and the checkpoint "
                        "carries no faces to retarget with", template_path,
                        "give a template with the model's topology")
    source = Mesh(ckpt["template"].numpy().astype(np.float32), ckpt["faces"].numpy().astype(np.int64))
    parts = [ckpt[k].numpy() for k in ("lip_indices", "upper_indices") if ckpt.get(k) is not None]
    region = np.unique(np.concatenate(parts)).astype(np.int64) if parts else None
    pairs = None if landmarks_path is None else read_landmarks(landmarks_path, user.num_verts, num_verts)
    path = cache_path(source, user, region, pairs)
    rt = load_cached(path) if path is not None else None
    if rt is None:
        rt = build_retargeting(source, user, region, pairs, user_path=template_path, progress=progress)
        if path is not None:
            save_cached(path, rt)
    rt.source = source
    return rt


# ----------------------------------------------------------------------------- mapping cache

CACHE_VERSION = 1


def cache_dir() -> Path | None:
    """Where mappings are kept: ``$AVTALK_CACHE_DIR/retarget`` or
    ``$XDG_CACHE_HOME/avtalk/retarget`` (``~/.cache/...``); ``AVTALK_CACHE_DIR=off`` disables."""
    import os

    root = os.environ.get("AVTALK_CACHE_DIR")
    if root is not None:
        return None if root.lower() in ("", "0", "off", "none") else Path(root) / "retarget"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "avtalk" / "retarget"


def cache_path(source: Mesh, user: Mesh, region: np.ndarray | None, pairs: np.ndarray | None) -> Path | None:
    """The cache file of one (model template, user mesh, region, landmarks) combination."""
    import hashlib

    folder = cache_dir()
    if folder is None:
        return None
    h = hashlib.sha256(f"avtalk-retarget-{CACHE_VERSION}-{MAX_ERROR}-{FALLOFF}-{NRICP_STEPS}".encode())
    for a in (source.verts, source.faces, user.verts, user.faces, region, pairs):
        h.update(b"none" if a is None else np.ascontiguousarray(a).tobytes() + str(np.asarray(a).shape).encode())
    return folder / f"{h.hexdigest()[:32]}.npz"


def save_cached(path: Path, rt: Retargeting) -> None:
    """Keep a mapping (atomically); a cache that cannot be written is skipped silently."""
    from talkinghead_cli.atomic import atomic_file

    w = rt.weights.tocsr()
    try:
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, data=w.data, indices=w.indices, indptr=w.indptr, shape=np.asarray(w.shape),
                         rotation=rt.rotation, scale=rt.scale, translation=rt.translation, falloff=rt.falloff,
                         error=json.dumps(rt.error), method=rt.method, nonrigid=rt.nonrigid)
    except (OSError, UserError):
        pass


def load_cached(path: Path) -> Retargeting | None:
    """A kept mapping, or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            w = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            return Retargeting(w, z["rotation"], float(z["scale"]), z["translation"], json.loads(str(z["error"])),
                               z["falloff"], str(z["method"]), bool(z["nonrigid"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None
