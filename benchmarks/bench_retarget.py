"""Retargeting and export timings on the facecap head (needs openfacefx + meshopt), and the
scaling of ``avtalk animate`` with the template's size.

``--scaling``: the bundled model's face (4,368 vertices, animated directly), a 5,024-vertex
FLAME-sized remesh of it (its faces nearest the mouth subdivided) and the face subdivided 1-4
times (16,746 / 65,628 / 259,896 / 1,034,448 vertices), each animated from 3 s of speech with
``--format npy --no-video`` in a child process under ``/usr/bin/time -v``: wall time and peak
memory (max RSS). The mapping cache is off, so every run aligns from scratch.

    python benchmarks/bench_retarget.py --scaling [--levels flame,0,1,2,3,4]

Otherwise: builds the mapping from the rig to a remeshed copy of its head of other proportions
(12 % wider, lower face 15 % shorter, 10.4k vertices, rotated, scaled x3), then times the
per-frame transfer (one sparse product for all frames) against the readable reference, the
GLB export and the ARKit solve, and prints the lip-transfer error with and without the
non-rigid step.

    python benchmarks/bench_retarget.py [--frames 300]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def _templates(folder: Path, levels: list[str]) -> dict[str, Path]:
    """The bundled face, a FLAME-sized remesh and subdivisions of it, as OBJ files."""
    import trimesh

    from talkinghead_cli.pretrained import resolve
    from talkinghead_cli.checkpoint import load_checkpoint

    ck = load_checkpoint(resolve(None, "animator"), kind="animator")
    v0, f0 = ck["template"].numpy().astype(np.float64), ck["faces"].numpy()
    out = {}
    for level in levels:
        if level == "flame":  # subdivide the faces nearest the mouth until about 5,023 vertices
            mouth = v0[ck["lip_indices"].numpy()].mean(axis=0)
            order = np.argsort(np.linalg.norm(v0[f0].mean(axis=1) - mouth, axis=1))
            lo, hi = 1, len(f0)
            while lo < hi:
                k = (lo + hi) // 2
                n = len(trimesh.remesh.subdivide(v0, f0, face_index=order[:k])[0])
                lo, hi = (k + 1, hi) if n < 5023 else (lo, k)
            v, f = trimesh.remesh.subdivide(v0, f0, face_index=order[:lo])
        else:
            v, f = v0, f0
            for _ in range(int(level)):
                v, f = trimesh.remesh.subdivide(v, f)
        out[level] = folder / f"face_{level}.obj"
        trimesh.Trimesh(v, f, process=False).export(str(out[level]))
    return out


def scaling(levels: list[str], seconds: float) -> None:
    """Print vertices, wall time and peak memory of ``avtalk animate`` per template."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wave, sr = sf.read(str(ROOT / "examples" / "speech.wav"))
        speech = tmp / "speech.wav"
        sf.write(str(speech), np.resize(wave, int(seconds * sr)), sr)
        paths = _templates(tmp, levels)
        env = {**os.environ, "AVTALK_CACHE_DIR": "off", "PYTHONPATH": str(ROOT)}
        print(f"load before: {os.getloadavg()[0]:.2f} (1-min load average, {os.cpu_count()} CPUs)")
        print(f"{'template':>9} {'vertices':>10} {'wall s':>8} {'max RSS MB':>11}  result")
        for level, path in paths.items():
            verts = sum(1 for line in open(path) if line.startswith("v "))
            cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "talkinghead_cli", "-q", "animate", str(speech),
                   "-t", str(path), "-o", str(tmp / f"out_{level}"), "--format", "npy", "--no-video"]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", r.stderr).group(1)
            secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
            rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1024
            status = "ok" if r.returncode == 0 else f"exit {r.returncode}: {r.stderr.strip().splitlines()[0]}"
            print(f"{level:>9} {verts:>10,} {secs:>8.1f} {rss:>11.0f}  {status}", flush=True)
        print(f"load after: {os.getloadavg()[0]:.2f}  (timings on a shared CPU are inflated by other jobs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--scaling", action="store_true", help="time animate with templates of 4k to 1M vertices")
    ap.add_argument("--levels", default="0,flame,1,2,3,4", help="templates for --scaling: flame or subdivisions 0-4")
    ap.add_argument("--seconds", type=float, default=3.0, help="speech length for --scaling")
    args = ap.parse_args()
    if args.scaling:
        scaling(args.levels.split(","), args.seconds)
        return

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
