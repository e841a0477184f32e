"""Renderer benchmark: frames/s and ms/frame of ``render_mesh`` and ``render_lip_windows``.

Prints, for a ~10k-triangle closed head-like mesh rendered front-on: 88², 224² and 512²,
forward and forward+backward, batch 1 and 32; then 88² lip windows, batched; and, when the
``deodr`` package imports, deodr's per-frame time (one frame at a time: it is not batched) at
the same sizes, forward and forward+backward, beside ours.

    python benchmarks/bench_render.py            # everything (a few minutes on 2 cores)
    python benchmarks/bench_render.py --quick    # fewer repeats, no 512² at batch 32

Each line gives wall-clock ms/frame (and frames/s) and the process CPU ms/frame (all threads).
On a shared machine the CPU figure is the steadier one; compare ours and deodr's under the same
load. deodr renders float64 meshes one frame per call on one core.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from talkinghead_cli.render import front_camera, lip_window_camera, render_lip_windows, render_mesh


def head_mesh(rings: int = 50):
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


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and process CPU seconds of ``fn()`` over ``repeats`` runs after a warm-up.

    The CPU time (all threads of this process) is the steadier figure on a shared machine: it
    does not count time spent waiting for a core.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _report(who: str, what: str, batch: int, name: str, times: tuple[float, float], frames: int) -> None:
    wall, cpu = (t / frames for t in times)
    print(f"{who:6s} {what:10s} B={batch:<3d} {name:8s} {1e3 * wall:8.2f} ms/frame wall {1 / wall:8.1f} frames/s"
          f"   {1e3 * cpu:8.2f} ms/frame CPU", flush=True)


def _frames(verts: np.ndarray, batch: int) -> torch.Tensor:
    """(batch, V, 3): the mesh with smooth per-frame deformations (a travelling bulge, as an
    animation moves a face; white noise would instead crumple the surface into spurious
    outlines)."""
    base = torch.tensor(verts)[None].repeat(batch, 1, 1)
    phase = torch.linspace(0, 2 * np.pi, batch)[:, None]
    y = base[..., 1]
    base[..., 2] += 0.03 * torch.sin(3 * y + phase)
    base[..., 0] *= 1 + 0.02 * torch.sin(phase)
    return base


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
                _report("ours", f"{size}²", batch, name, _time(fn, repeats), batch)


def bench_culled(verts, faces, repeats, size=224, batch=32):
    """224², batch 32 with ``cull_backfaces=True`` (exact for a closed, outward-wound mesh)."""
    f = torch.tensor(faces)
    cam = front_camera(verts, size)
    v = _frames(verts, batch)

    def fwd_bwd():
        vg = v.clone().requires_grad_(True)
        render_mesh(vg, f, cam, cull_backfaces=True).images.mean().backward()

    _report("ours", f"{size}² cull", batch, "fwd+bwd", _time(fwd_bwd, repeats), batch)


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
        _report("ours", f"lips {size}²", batch, name, _time(fn, repeats), batch)


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
            _report("deodr", f"{size}²", 1, name, _time(lambda: run(bw), repeats), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip 512² at batch 32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-deodr", action="store_true")
    ap.add_argument("--only", choices=["full", "lips", "deodr"], help="run one part")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    verts, faces, lips = head_mesh(50)
    repeats = 2 if args.quick else 5
    print(f"mesh: {len(verts)} vertices, {len(faces)} triangles; lip region {len(lips)} vertices; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    skip = {(512, 32)} if args.quick else set()
    if args.only in (None, "full"):
        bench_ours(verts, faces, (88, 224, 512), (1, 32), repeats, skip)
        bench_culled(verts, faces, repeats)
    if args.only in (None, "lips"):
        bench_lips(verts, faces, lips, 32, repeats)
    if args.only in (None, "deodr") and not args.no_deodr:
        bench_deodr(verts, faces, (88, 224, 512), repeats)


if __name__ == "__main__":
    main()
