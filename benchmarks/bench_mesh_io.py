"""Mesh-sequence writing speed: ours (vectorised, atomic) vs trimesh per-frame export.

Writes T frames of a ~5k-vertex mesh (FLAME's 5,023 vertices is the target size) as OBJ
and binary PLY sequences and prints frames/s and ms/frame for each writer.

    python benchmarks/bench_mesh_io.py [--frames 60] [--repeats 3]

Target (issue 2): OBJ <= 3 ms/frame and >= 5x faster than trimesh.
Figures include file-system time; on a shared, busy machine they are inflated.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

from talkinghead_cli.mesh import obj_text, obj_vertex_bytes, write_obj_reference, write_sequence


def flame_sized_mesh(num_verts: int = 5023) -> tuple[np.ndarray, np.ndarray]:
    """A closed sphere-like mesh with about ``num_verts`` vertices and twice as many faces.

    An icosphere of level 4 (2,562 vertices) with its first n faces subdivided; n is found
    by bisection so the vertex count lands on (or just past) ``num_verts``.

    Returns:
        verts (V, 3) float32, faces (F, 3) int64.
    """
    sphere = trimesh.creation.icosphere(subdivisions=4)
    v0, f0 = np.asarray(sphere.vertices), np.asarray(sphere.faces)

    def split(n):
        return trimesh.remesh.subdivide(v0, f0, face_index=np.arange(n))

    lo, hi = 0, len(f0)
    while lo < hi:  # smallest n with at least num_verts vertices
        mid = (lo + hi) // 2
        if len(split(mid)[0]) < num_verts:
            lo = mid + 1
        else:
            hi = mid
    verts, faces = split(lo)
    return verts.astype(np.float32), faces.astype(np.int64)


def sequence(verts: np.ndarray, frames: int, seed: int = 0) -> np.ndarray:
    """(T, V, 3): the template with small random motion per frame."""
    rng = np.random.default_rng(seed)
    return (verts[None] + 0.01 * rng.standard_normal((frames, *verts.shape))).astype(np.float32)


def trimesh_ply(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """trimesh's binary PLY export of one frame."""
    trimesh.Trimesh(verts, faces, process=False).export(str(path), file_type="ply", encoding="binary")


def time_it(fn, repeats: int) -> tuple[float, float]:
    """Best wall time and best CPU time of ``repeats`` calls (seconds).

    CPU time (this process) is the steadier figure on a machine shared with other jobs;
    wall time also counts waiting for the disk and for the CPU.
    """
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def check_obj_text(verts: np.ndarray) -> None:
    """The vectorised OBJ formatter must give exactly the bytes of ``"%.6f"`` formatting,
    on the benchmark mesh and on values that stress rounding, signs and digit counts."""
    edge = np.array([[0.0, -0.0, -1e-9], [0.0078125, -0.0078125, 0.5], [123456.79, -9.9999996, 1e-7],
                     [5e-7, -5e-7, 1.5e-6], [99999.99, 1.0, -1.0], [1e11, -3e10, 10.0],
                     [1000.0, 1e6, 999.9999995], [1000001.5, -1000.25, 0.9999995]], np.float32)
    for v in (verts, edge, verts * 1e4):
        assert obj_vertex_bytes(v) == obj_text(v, "").encode("ascii"), "OBJ formatter differs from %.6f"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    verts0, faces = flame_sized_mesh()
    seq = sequence(verts0, args.frames)
    t = args.frames
    check_obj_text(seq[0])
    print(f"mesh: {len(verts0)} vertices, {len(faces)} faces; {t} frames, best of {args.repeats}")
    root = Path(tempfile.mkdtemp(prefix="bench_mesh_io-"))
    try:
        def per_frame(writer, fmt):
            def run():
                folder = root / f"ref_{fmt}"
                folder.mkdir(exist_ok=True)
                for i in range(t):
                    writer(folder / f"frame_{i:05d}.{fmt}", seq[i], faces)
            return run

        rows = {}
        for fmt in ("obj", "ply"):
            ours = time_it(lambda: write_sequence(root / f"ours_{fmt}", seq, faces, fmt=fmt), args.repeats)
            ref_writer = write_obj_reference if fmt == "obj" else trimesh_ply
            ref = time_it(per_frame(ref_writer, fmt), args.repeats)
            rows[fmt] = (ours, ref)
        print(f"{'format':<7}{'writer':<10}{'frames/s':>10}{'ms/frame':>10}{'speed-up':>10}{'cpu ms/frame':>14}")
        for fmt, ((ours, ours_cpu), (ref, ref_cpu)) in rows.items():
            print(f"{fmt:<7}{'ours':<10}{t / ours:>10.1f}{1e3 * ours / t:>10.2f}{ref / ours:>9.1f}x"
                  f"{1e3 * ours_cpu / t:>14.2f}")
            print(f"{fmt:<7}{'trimesh':<10}{t / ref:>10.1f}{1e3 * ref / t:>10.2f}{'1.0x':>10}{1e3 * ref_cpu / t:>14.2f}")
        obj_ms = 1e3 * rows["obj"][0][0] / t
        print(f"target: OBJ <= 3 ms/frame and >= 5x trimesh -> "
              f"{'met' if obj_ms <= 3 and rows['obj'][1][0] >= 5 * rows['obj'][0][0] else 'MISSED'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
