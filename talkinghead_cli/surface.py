"""Closest points on triangle meshes of any size, in memory linear in the mesh.

Retargeting asks two kinds of question: where on a user's mesh (up to millions of
vertices, e.g. a photogrammetry scan) do a few hundred model points land, and where on the
model's surface does each of the user's vertices land. :class:`SurfaceIndex` answers both
with two KD-trees (vertices and triangle centroids, ``scipy.spatial.cKDTree``) and a
vertex -> triangle table: a point's candidate triangles are those around its nearest
vertices plus those with the nearest centroids, and the exact closest point is computed on
each candidate (:func:`closest_on_triangles`, Ericson's region test), ``chunk`` points at a
time, so memory stays a small multiple of the chunk whatever the mesh size.
``retarget.closest_facing_reference`` is the brute-force reference it is tested against.

Also here: area-weighted vertex normals and surface moments computed in chunks, and
:func:`cluster_proxy`, a vertex-clustered stand-in for a very dense mesh.

Shapes: N query points, V vertices, F faces.
"""

from __future__ import annotations

import numpy as np

CHUNK = 16_384  # query points per block


def closest_on_triangles(tri: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of each triangle to its point (Ericson, *Real-Time Collision Detection* 5.1.5).

    Args:
        tri: (N, 3, 3) triangle corners; points: (N, 3).
    Returns:
        (closest (N, 3), barycentric coordinates (N, 3) of the closest point, rows sum to 1).
    """
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    ab, ac = b - a, c - a
    ap, bp, cp = points - a, points - b, points - c
    d1, d2 = np.einsum("ij,ij->i", ab, ap), np.einsum("ij,ij->i", ac, ap)
    d3, d4 = np.einsum("ij,ij->i", ab, bp), np.einsum("ij,ij->i", ac, bp)
    d5, d6 = np.einsum("ij,ij->i", ab, cp), np.einsum("ij,ij->i", ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v_in, w_in = vb / denom, vc / denom
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    n = len(points)
    bary = np.empty((n, 3))
    bary[:, 1], bary[:, 2] = v_in, w_in  # interior (the default)
    # the regions in reverse order of Ericson's early returns, so the first test wins
    regions = [
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), lambda m: (0.0, 1 - t_bc[m], t_bc[m])),  # edge BC
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), lambda m: (0.0, 0.0, t_ac[m])),  # edge AC
        ((d6 >= 0) & (d5 <= d6), lambda m: (0.0, 0.0, 1.0)),  # corner C
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), lambda m: (0.0, t_ab[m], 0.0)),  # edge AB
        ((d3 >= 0) & (d4 <= d3), lambda m: (0.0, 1.0, 0.0)),  # corner B
        ((d1 <= 0) & (d2 <= 0), lambda m: (0.0, 0.0, 0.0)),  # corner A
    ]
    for mask, value in regions:
        if mask.any():
            _, v, w = value(mask)
            bary[mask, 1], bary[mask, 2] = v, w
    bad = ~np.isfinite(bary[:, 1:]).all(axis=1)  # degenerate triangle: its first corner
    bary[bad, 1:] = 0.0
    bary[:, 0] = 1.0 - bary[:, 1] - bary[:, 2]
    closest = a + bary[:, 1:2] * ab + bary[:, 2:3] * ac
    return closest, bary


def vertex_faces_csr(faces: np.ndarray, num_verts: int) -> tuple[np.ndarray, np.ndarray]:
    """Triangles around each vertex as CSR: (indptr (V+1,), face ids (3F,))."""
    flat = np.asarray(faces, np.int64).ravel()
    order = np.argsort(flat, kind="stable")
    indptr = np.zeros(num_verts + 1, np.int64)
    np.cumsum(np.bincount(flat, minlength=num_verts), out=indptr[1:])
    return indptr, (order // 3).astype(np.int64)


def _gather(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows ``rows`` (R,) flattened: (row position (M,), value (M,))."""
    start, count = indptr[rows], indptr[rows + 1] - indptr[rows]
    owner = np.repeat(np.arange(len(rows)), count)
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return owner, values[np.repeat(start, count) + offset]


class SurfaceIndex:
    """Closest-point queries on one triangle mesh.

    Args:
        verts: (V, 3); faces: (F, 3).
        neighbours: nearest vertices whose triangles are candidates; centroids: nearest
            triangle centroids that are candidates too (they catch points above the middle
            of triangles much larger than their neighbours).
    """

    def __init__(self, verts: np.ndarray, faces: np.ndarray, neighbours: int = 4, centroids: int = 4):
        from scipy.spatial import cKDTree

        self.verts = np.asarray(verts, np.float64)
        self.faces = np.asarray(faces, np.int64)
        self.neighbours = min(neighbours, len(self.verts))
        self.centroids = min(centroids, len(self.faces))
        self.vertex_tree = cKDTree(self.verts)
        self.centroid_tree = cKDTree(face_centroids(self.verts, self.faces))
        self.indptr, self.vertex_faces = vertex_faces_csr(self.faces, len(self.verts))
        self._normals: np.ndarray | None = None

    @property
    def face_normals(self) -> np.ndarray:
        """(F, 3) unit normals (zero for degenerate triangles), computed once."""
        if self._normals is None:
            self._normals = np.concatenate([_unit(_face_cross(self.verts, self.faces[a:a + 4 * CHUNK]))
                                            for a in range(0, len(self.faces), 4 * CHUNK)])
        return self._normals

    def _candidates(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(point position (M,), face id (M,)) candidate pairs, without repeats."""
        _, nv = self.vertex_tree.query(points, k=self.neighbours)
        _, nc = self.centroid_tree.query(points, k=self.centroids)
        nv, nc = nv.reshape(len(points), -1), nc.reshape(len(points), -1)
        owner, face = _gather(self.indptr, self.vertex_faces, nv.ravel())
        owner = owner // nv.shape[1]
        owner = np.concatenate([owner, np.repeat(np.arange(len(points)), nc.shape[1])])
        face = np.concatenate([face, nc.ravel()])
        key = np.sort(owner * len(self.faces) + face)  # by point; then repeats dropped
        key = key[np.concatenate([[True], key[1:] != key[:-1]])]
        return key // len(self.faces), key % len(self.faces)

    def query(self, points: np.ndarray, normals: np.ndarray | None = None, penalty: float = 0.0,
              chunk: int = CHUNK, progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Closest surface point of each point; with ``normals`` (N, 3), a triangle facing
        against the point's normal costs ``penalty`` extra distance (see
        ``retarget.closest_facing``).

        Args:
            points: (N, 3).
            progress: called with (points done, N) after each chunk.
        Returns:
            (closest (N, 3), distance (N,), triangle id (N,), barycentric (N, 3)).
        """
        points = np.asarray(points, np.float64)
        n = len(points)
        closest, dist = np.zeros((n, 3)), np.zeros(n)
        tri, bary = np.zeros(n, np.int64), np.zeros((n, 3))
        for a in range(0, n, chunk):
            p = points[a:a + chunk]
            owner, face = self._candidates(p)
            near, b = closest_on_triangles(self.verts[self.faces[face]], p[owner])
            d = np.linalg.norm(near - p[owner], axis=1)
            score = d
            if normals is not None and penalty:
                nrm = np.asarray(normals[a:a + chunk], np.float64)
                facing = np.einsum("ij,ij->i", self.face_normals[face], nrm[owner]) >= 0
                score = d + penalty * ~facing
            pick = _argmin_per_group(score, owner, len(p))
            closest[a:a + chunk], dist[a:a + chunk] = near[pick], d[pick]
            tri[a:a + chunk], bary[a:a + chunk] = face[pick], b[pick]
            if progress is not None:
                progress(min(a + chunk, n), n)
        return closest, dist, tri, bary


def _argmin_per_group(score: np.ndarray, owner: np.ndarray, groups: int) -> np.ndarray:
    """Index of the smallest ``score`` of each group; ``owner`` (M,) sorted, every group present.
    The groups are laid out as rows of a padded (groups, largest group) table: no sorting."""
    counts = np.bincount(owner, minlength=groups)
    start = np.cumsum(counts) - counts
    table = np.full((groups, int(counts.max())), np.inf)
    table[owner, np.arange(len(owner)) - start[owner]] = score
    return start + np.argmin(table, axis=1)


def face_centroids(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) triangle centroids."""
    return (verts[faces[:, 0]] + verts[faces[:, 1]] + verts[faces[:, 2]]) / 3.0


def _face_cross(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) cross products (B - A) x (C - A): normal times twice the area."""
    a = verts[faces[:, 0]]
    return np.cross(verts[faces[:, 1]] - a, verts[faces[:, 2]] - a)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def vertex_normals(verts: np.ndarray, faces: np.ndarray, chunk: int = 4 * CHUNK) -> np.ndarray:
    """(V, 3) unit vertex normals: the area-weighted sum of the adjacent face normals."""
    verts = np.asarray(verts, np.float64)
    acc = np.zeros((len(verts), 3))
    for a in range(0, len(faces), chunk):
        f = faces[a:a + chunk]
        cross = _face_cross(verts, f)
        for k in range(3):
            for c in range(3):
                acc[:, c] += np.bincount(f[:, k], weights=cross[:, c], minlength=len(verts))
    return _unit(acc)


def surface_area(verts: np.ndarray, faces: np.ndarray, chunk: int = 4 * CHUNK) -> float:
    """Total triangle area, ``chunk`` faces at a time."""
    verts = np.asarray(verts, np.float64)
    return float(sum(np.linalg.norm(_face_cross(verts, faces[a:a + chunk]), axis=1).sum() / 2
                     for a in range(0, len(faces), chunk)))


def surface_moments(verts: np.ndarray, faces: np.ndarray, chunk: int = 4 * CHUNK
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-weighted centroid (3,), principal axes (3, 3) as columns (right-handed, by
    decreasing extent) and their standard deviations (3,), from face centroids, so the result
    hardly depends on how finely the surface is triangulated. Two passes of ``chunk`` faces."""
    verts = np.asarray(verts, np.float64)
    parts = [(np.linalg.norm(_face_cross(verts, faces[a:a + chunk]), axis=1) / 2, a)
             for a in range(0, len(faces), chunk)]
    total = max(sum(float(w.sum()) for w, _ in parts), 1e-30)
    mu = sum(w @ face_centroids(verts, faces[a:a + chunk]) for w, a in parts) / total
    cov = np.zeros((3, 3))
    for w, a in parts:
        d = face_centroids(verts, faces[a:a + chunk]) - mu
        cov += d.T @ (d * w[:, None])
    cov /= total
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    axes = evecs[:, order]
    if np.linalg.det(axes) < 0:
        axes[:, 2] *= -1
    return mu, axes, np.sqrt(np.maximum(evals[order], 0))


def cluster_proxy(verts: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """A coarse stand-in of a dense mesh by vertex clustering: vertices in the same cube of
    side ``cell`` merge into their mean; triangles that collapse are dropped. The surface
    moves by at most a cube's diagonal.

    Returns:
        (verts (V', 3) float64, faces (F', 3) int64).
    """
    verts = np.asarray(verts, np.float64)
    lo = verts.min(axis=0)
    cube = np.floor((verts - lo) / max(cell, 1e-12)).astype(np.int64)
    n = cube.max(axis=0) + 1
    key = (cube[:, 0] * n[1] + cube[:, 1]) * n[2] + cube[:, 2]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    merged = np.stack([np.bincount(inverse, weights=verts[:, c]) for c in range(3)], axis=1) / counts[:, None]
    f = inverse[faces]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    f = np.unique(f[keep], axis=0)
    used = np.unique(f)
    remap = np.full(len(merged), -1, np.int64)
    remap[used] = np.arange(len(used))
    return merged[used], remap[f]
