"""Vertex regions of a rig: the mouth's boundary loop, lip vertices (LVE), upper face (FDD).

All choices are geometric and deterministic (no randomness, ties broken by index), so the
same rig file always gives the same index lists. Conventions: +Y up, +Z towards the viewer
(glTF's), which the rig loader has already applied.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class RigLike(Protocol):
    """What the regions read of a :class:`~talkinghead_cli.data.synthetic.rig.Rig` (this module
    sits below the rig, which calls it while loading)."""

    template: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    basis: np.ndarray  # (K, V, 3)
    names: list[str]
    head: np.ndarray  # (V,) bool

    def index(self, name: str) -> int: ...

LIP_TARGETS = ("mouthFunnel", "mouthPucker", "mouthClose", "mouthRollLower", "mouthRollUpper",
               "mouthUpperUpLeft", "mouthUpperUpRight", "mouthLowerDownLeft", "mouthLowerDownRight")


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary edges (edges used by one triangle).

    Args:
        faces: (F, 3) int.
    Returns:
        list of vertex-index arrays, each a loop, sorted by their smallest index.
    """
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = np.sort(e, axis=1)
    uniq, counts = np.unique(key, axis=0, return_counts=True)
    edges = uniq[counts == 1]
    adj: dict[int, list[int]] = {}
    for a, b in edges.tolist():
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    seen: set[int] = set()
    loops = []
    for start in sorted(adj):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [n for n in sorted(adj[cur]) if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        loops.append(np.asarray(loop, np.int64))
    return loops


def _lip_motion(rig: RigLike) -> np.ndarray:
    """(V,) largest offset of each vertex over the lip targets the rig has."""
    ks = [rig.index(n) for n in LIP_TARGETS if n in rig.names]
    return np.linalg.norm(rig.basis[ks], axis=2).max(axis=0)


def mouth_loop(rig: RigLike) -> np.ndarray:
    """Indices of the head's boundary loop that outlines the mouth opening.

    The loop whose vertices move most under the lip targets (mean offset); if the head
    has no boundary there (a closed mouth bag), the most-moving head vertices instead.
    """
    head_faces = rig.faces[rig.head[rig.faces].all(axis=1)]
    motion = _lip_motion(rig)
    loops = [lp for lp in boundary_loops(head_faces) if len(lp) >= 8]
    if loops:
        scores = [motion[lp].mean() for lp in loops]
        best = loops[int(np.argmax(scores))]
        if motion[best].mean() > 0.3 * motion.max():
            return best
    order = np.argsort(-motion, kind="stable")
    return np.sort(order[: max(8, int(0.02 * rig.head.sum()))])


def lip_indices(rig: RigLike) -> np.ndarray:
    """Lip vertices: near the mouth loop and in the support of the lip targets.

    A head vertex is a lip vertex if it lies inside an ellipse around the mouth loop's
    centre (semi-axes 0.65 mouth widths across, 0.35 vertically), not deeper than a
    quarter mouth width behind it, and moves at least 20% of the largest lip-target
    offset. The mouth loop itself is always included.
    """
    loop = mouth_loop(rig)
    p = rig.template
    c = p[loop].mean(axis=0)
    width = np.ptp(p[loop, 0])
    motion = _lip_motion(rig)
    dx = (p[:, 0] - c[0]) / (0.65 * width)
    dy = (p[:, 1] - c[1]) / (0.35 * width)
    inside = (dx ** 2 + dy ** 2 <= 1.0) & (p[:, 2] > c[2] - 0.25 * width)
    keep = rig.head & inside & (motion >= 0.2 * motion.max())
    keep[loop] = True
    return np.flatnonzero(keep).astype(np.int64)


def upper_face_indices(rig: RigLike) -> np.ndarray:
    """Upper-face vertices (eyes, brows, forehead) for FDD.

    Head vertices higher than the midpoint between the mouth centre and the eyes'
    height, on the front half of the head (z above the mouth loop's depth minus a mouth
    width). The eyes' height is the eyeBlink targets' centre of motion, or the top
    quarter of the head if the rig has no blink target.
    """
    loop = mouth_loop(rig)
    p = rig.template
    c = p[loop].mean(axis=0)
    width = np.ptp(p[loop, 0])
    blink = [rig.index(n) for n in ("eyeBlinkLeft", "eyeBlinkRight") if n in rig.names]
    if blink:
        w = np.linalg.norm(rig.basis[blink], axis=2).sum(axis=0)
        eye_y = float((w * p[:, 1]).sum() / max(w.sum(), 1e-12))
    else:
        head_y = p[rig.head, 1]
        eye_y = float(head_y.max() - 0.25 * np.ptp(head_y))
    y_cut = c[1] + 0.6 * (eye_y - c[1])
    keep = rig.head & (p[:, 1] > y_cut) & (p[:, 2] > c[2] - 2.0 * width)
    return np.flatnonzero(keep).astype(np.int64)


def lip_midline(rig: RigLike) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lip vertices on the mouth loop near the mouth's centre line.

    Returns (upper, lower) index arrays: the loop vertices within 15% of the mouth width
    of the centre, split at their median height. The lip gap of a pose is
    mean(y[upper]) - mean(y[lower]).
    """
    loop = mouth_loop(rig)
    p = rig.template
    cx = p[loop, 0].mean()
    width = np.ptp(p[loop, 0])
    mid = loop[np.abs(p[loop, 0] - cx) < 0.15 * width]
    order = mid[np.argsort(p[mid, 1], kind="stable")]
    half = len(order) // 2
    return np.sort(order[len(order) - half:]), np.sort(order[:half])


def lip_gap(verts: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Vertical lip opening per frame.

    Args:
        verts: (T, V, 3).
    Returns:
        (T,) mean upper-lip height minus mean lower-lip height.
    """
    return verts[:, upper, 1].mean(axis=1) - verts[:, lower, 1].mean(axis=1)
