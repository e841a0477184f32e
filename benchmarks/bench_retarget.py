"""Retargeting and export timings on the facecap head (needs openfacefx + meshopt).

Builds the mapping from the rig to a remeshed copy of its head of other proportions
(12 % wider, lower face 15 % shorter, 10.4k vertices, rotated, scaled x3), then times the
per-frame transfer (one sparse product for all frames) against the readable reference, the
GLB export and the ARKit solve, and prints the lip-transfer error with and without the
non-rigid step.

    python benchmarks/bench_retarget.py [--frames 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()

    # the test's remeshed copy of another face shape, so the figures match the test
    from test_retarget import _user_copy

    from talkinghead_cli.data.synthetic.rig import load_rig
    from talkinghead_cli.export import solve_arkit, write_glb
    from talkinghead_cli.mesh import Mesh
    from talkinghead_cli.retarget import build_retargeting

    rig = load_rig()
    user, head = _user_copy(rig, other_face=True)
    source = Mesh(rig.template, rig.faces)
    region = np.union1d(rig.lip_indices, rig.upper_face_indices)
    rng = np.random.default_rng(0)
    weights = np.clip(rng.normal(0.2, 0.2, (args.frames, len(rig.names))), 0, 1).astype(np.float32)
    pred = rig.pose(weights)
    lips = np.searchsorted(head, np.intersect1d(rig.lip_indices, head))
    truth = (pred - rig.template[None])[:, head[lips]]
    print(f"source {source.num_verts} vertices, user {user.num_verts} vertices, {args.frames} frames")
    for nonrigid in (False, True):
        t0 = time.perf_counter()
        rt = build_retargeting(source, user, region, nonrigid=nonrigid)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        anim = rt.transfer(pred, rig.template, user.verts)
        transfer = time.perf_counter() - t0
        moved = ((anim - user.verts[None])[:, lips] @ rt.rotation) / rt.scale
        err = np.linalg.norm(moved - truth, axis=2).mean() / np.linalg.norm(truth, axis=2).mean()
        print(f"nonrigid={nonrigid}: build {build:.2f} s, transfer {1e3 * transfer / args.frames:.3f} ms/frame, "
              f"alignment p95 {100 * rt.error['p95']:.2f} %, lip transfer error {100 * err:.1f} %")
    t0 = time.perf_counter()
    rt.transfer_reference(pred[:2], rig.template, user.verts)
    print(f"reference transfer: {1e3 * (time.perf_counter() - t0) / 2:.1f} ms/frame")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        morph = write_glb(Path(tmp) / "a.glb", anim, user.verts, user.faces, 30.0)
        size = (Path(tmp) / "a.glb").stat().st_size
        print(f"GLB: {time.perf_counter() - t0:.2f} s, {len(morph.targets)} morph targets, "
              f"{100 * morph.error:.2f} % error, {size / 1e6:.1f} MB")
    t0 = time.perf_counter()
    solved = solve_arkit(pred, rig.basis, neutral=rig.template)
    observable = np.linalg.norm(rig.basis.reshape(len(rig.names), -1), axis=1) > 0
    print(f"ARKit NNLS: {1e3 * (time.perf_counter() - t0) / args.frames:.3f} ms/frame, max weight error "
          f"{np.abs(solved - weights)[:, observable].max():.2e} over {int(observable.sum())} observable shapes")
    print("(timings on a shared CPU are inflated by other jobs)")


if __name__ == "__main__":
    main()
