"""Renderer benchmark: frames/s and ms/frame of ``render_mesh`` and ``render_lip_windows``.

Prints, for a ~10k-triangle closed head-like mesh rendered front-on: 88², 224² and 512²,
forward and forward+backward, batch 1 and 32; then 88² lip windows, batched; and, when the
``deodr`` package imports, deodr's per-frame time (one frame at a time: it is not batched) at
the same sizes, forward and forward+backward, beside ours.

    python benchmarks/bench_render.py            # everything (a few minutes on 2 cores)
    python benchmarks/bench_render.py --quick    # fewer repeats, no 512² at batch 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from talkinghead_cli.render import front_camera, lip_window_camera, render_lip_windows, render_mesh


def head_mesh(rings: int = 72):
    """A closed ellipsoid "head" of about 10k triangles with a mouth-like region.

    Returns verts (V, 3) float32, faces (F, 3) int64, lip vertex indices (R,).
    """
    import trimesh

    m = trimesh.creation.uv_sphere(radius=1.0, count=[rings, rings])
    v = np.asarray(m.vertices, np.float32) * np.array([0.8, 1.0, 0.9], np.float32)
    f = np.asarray(m.faces, np.int64)
    # rotate so the poles are at the top and bottom (uv_sphere's axis is z)
    v = v[:, [0, 2, 1]] * np.array([1, 1, -1], np.float32)
    f = f[:, [0, 2, 1]]  # keep the outward winding after the reflection
    lips = np.nonzero((v[:, 2] > 0.5) & (np.abs(v[:, 0]) < 0.3) & (np.abs(v[:, 1] + 0.45) < 0.12))[0]
    return v, f, lips


def _time(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _frames(verts: np.ndarray, batch: int) -> torch.Tensor:
    """(batch, V, 3): the mesh with small per-frame deformations."""
    g = torch.Generator().manual_seed(0)
    base = torch.tensor(verts)[None].repeat(batch, 1, 1)
    return base + 0.002 * torch.randn(base.shape, generator=g)


def bench_ours(verts, faces, sizes, batches, repeats, skip):
    f = torch.tensor(faces)
    for size in sizes:
        cam = front_camera(verts, size)
        for batch in batches:
            if (size, batch) in skip:
                continue
            v = _frames(verts, batch)

            def fwd():
                with torch.no_grad():
                    render_mesh(v, f, cam)

            def fwd_bwd():
                vg = v.clone().requires_grad_(True)
                render_mesh(vg, f, cam).images.mean().backward()

            for name, fn in (("forward", fwd), ("fwd+bwd", fwd_bwd)):
                dt = _time(fn, repeats) / batch
                print(f"ours   {size:4d}²  B={batch:<3d} {name:8s} {1e3 * dt:8.2f} ms/frame  {1 / dt:8.1f} frames/s",
                      flush=True)


def bench_lips(verts, faces, lips, batch, repeats, size=88):
    f = torch.tensor(faces)
    v = _frames(verts, batch)
    cam = lip_window_camera(v, torch.tensor(lips), size=size)

    def fwd():
        with torch.no_grad():
            render_lip_windows(v, f, lips, size=size, camera=cam)

    def fwd_bwd():
        vg = v.clone().requires_grad_(True)
        render_lip_windows(vg, f, lips, size=size, camera=cam).mean().backward()

    for name, fn in (("forward", fwd), ("fwd+bwd", fwd_bwd)):
        dt = _time(fn, repeats) / batch
        print(f"ours   lips {size}²  B={batch:<3d} {name:8s} {1e3 * dt:8.2f} ms/frame  {1 / dt:8.1f} frames/s",
              flush=True)


def bench_deodr(verts, faces, sizes, repeats):
    """deodr (C++, one frame per call, float64) with a comparable perspective front camera."""
    try:
        from deodr.pytorch import CameraPytorch, ColoredTriMeshPytorch, Scene3DPytorch
    except Exception as e:  # noqa: BLE001
        print(f"deodr  not available ({type(e).__name__}: {e})")
        return
    v64 = torch.tensor(verts, dtype=torch.float64)
    colors = torch.full((len(verts), 3), 0.7, dtype=torch.float64)
    for size in sizes:
        ours = front_camera(verts, size, projection="persp")
        # deodr's camera looks along +z with y down: rotate our (x right, y up, z to viewer) frame
        rot = np.diag([1.0, -1.0, -1.0])
        pos = -ours.T[0].numpy().astype(np.float64)
        extrinsic = np.column_stack((rot, -rot @ pos))
        f = float(ours.focal[0, 0])
        intrinsic = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
        camera = CameraPytorch(extrinsic=extrinsic, intrinsic=intrinsic, height=size, width=size)

        def run(backward: bool):
            vg = v64.clone().requires_grad_(backward)
            mesh = ColoredTriMeshPytorch(faces=faces.astype(np.int32).copy(), vertices=vg, colors=colors)
            scene = Scene3DPytorch()
            scene.set_mesh(mesh)
            scene.set_light(light_directional=torch.tensor([0.0, 0.0, -0.7], dtype=torch.float64),
                            light_ambient=0.3)
            scene.set_background_color(np.zeros(3))
            scene.sigma = 1.0
            image = scene.render(camera)
            if backward:
                image.mean().backward()

        for name, bw in (("forward", False), ("fwd+bwd", True)):
            dt = _time(lambda: run(bw), repeats)
            print(f"deodr  {size:4d}²  B=1   {name:8s} {1e3 * dt:8.2f} ms/frame  {1 / dt:8.1f} frames/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip 512² at batch 32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-deodr", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    verts, faces, lips = head_mesh()
    repeats = 2 if args.quick else 5
    print(f"mesh: {len(verts)} vertices, {len(faces)} triangles; lip region {len(lips)} vertices; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    skip = {(512, 32)} if args.quick else set()
    bench_ours(verts, faces, (88, 224, 512), (1, 32), repeats, skip)
    bench_lips(verts, faces, lips, 32, repeats)
    if not args.no_deodr:
        bench_deodr(verts, faces, (88, 224, 512), repeats)


if __name__ == "__main__":
    main()
