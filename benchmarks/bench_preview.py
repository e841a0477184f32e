"""Preview speed: ``avtalk render`` of 300 frames at 512x512 with audio, end to end.

Prints frames/s for the whole job (load files, render, encode H.264 + AAC, mux, rename)
and, separately, for rendering alone and for encoding alone (pre-rendered frames piped
into the same ffmpeg command). Rendering and encoding overlap in the real job, so the
end-to-end time is below the sum of the two.

    python benchmarks/bench_preview.py [--frames 300] [--size 512] [--batch 16] [--mesh flame|example]

Target (issue 2): >= 25 frames/s end to end. On a shared, busy machine the figures are
inflated; the thread count is printed with them.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mesh_io import flame_sized_mesh  # noqa: E402

from talkinghead_cli.mesh import obj_faces_text, obj_text, write_sequence  # noqa: E402
from talkinghead_cli.render import front_camera  # noqa: E402
from talkinghead_cli.video import (RenderConfig, _FrameWriter, ffmpeg_command,  # noqa: E402
                                   render_frames, render_sequence_file)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def make_inputs(folder: Path, frames: int, fps: float, mesh: str) -> tuple[Path, Path, Path]:
    """Template OBJ, (T, V, 3) NPZ and a speech-length WAV in ``folder``."""
    if mesh == "example":
        data = np.load(EXAMPLES / "sequence.npz")
        seq = data["verts"].astype(np.float32)
        faces = data["faces"].astype(np.int64)
        verts0 = seq[0]
        seq = np.concatenate([seq] * (frames // len(seq) + 1))[:frames]
    else:
        verts0, faces = flame_sized_mesh()
        t = np.arange(frames)[:, None]
        seq = np.repeat(verts0[None], frames, axis=0)
        seq[:, :, 1] -= 0.05 * np.abs(np.sin(t / 4.0)) * (verts0[None, :, 1] < -0.3)  # a moving "jaw"
    template = folder / "template.obj"
    template.write_text(obj_text(verts0, obj_faces_text(faces)))
    npz = write_sequence(folder / "seq.npz", seq, faces, fmt="npz", fps=fps)
    sr = 16_000
    n = int(frames / fps * sr)
    wave = 0.2 * np.sin(2 * np.pi * 180 * np.arange(n) / sr) * (1 + np.sin(np.arange(n) / 2000)) / 2
    wav = folder / "speech.wav"
    sf.write(str(wav), wave.astype(np.float32), sr)
    return template, npz, wav


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process (all threads) and by its finished children (ffmpeg)."""
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), child.ru_utime + child.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--mesh", choices=("flame", "example"), default="flame")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--reference-frames", type=int, default=32,
                    help="frames rendered with the differentiable render_mesh for comparison (0: skip)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_preview-") as tmp:
        tmp = Path(tmp)
        template, npz, wav = make_inputs(tmp, args.frames, args.fps, args.mesh)
        seq = torch.from_numpy(np.load(npz)["verts"])
        faces = torch.from_numpy(np.load(npz)["faces"])
        print(f"{args.frames} frames at {args.size}x{args.size}, {seq.shape[1]} vertices, {len(faces)} faces, "
              f"batch {args.batch}, torch threads {torch.get_num_threads()}")
        config = RenderConfig(sequence=npz, template=template, audio=wav, output=tmp / "out.mp4",
                              fps=args.fps, size=args.size, batch=args.batch)
        t0, c0 = time.perf_counter(), cpu_seconds()
        result = render_sequence_file(config)
        total, c1 = time.perf_counter() - t0, cpu_seconds()
        camera = front_camera(seq[0], image_size=args.size, projection="ortho", margin=0.1)
        t0 = time.perf_counter()
        frames = np.concatenate(list(render_frames(seq, faces, camera, args.batch)))
        render_s, c2 = time.perf_counter() - t0, cpu_seconds()
        writer = _FrameWriter(ffmpeg_command(tmp / "enc.mp4", args.size, args.size, args.fps, wav), tmp / "log")
        t0 = time.perf_counter()
        for start in range(0, len(frames), args.batch):
            writer.write(frames[start:start + args.batch])
        code = writer.close()
        encode_s, c3 = time.perf_counter() - t0, cpu_seconds()
        assert code == 0, (tmp / "log").read_text()
        n_ref = min(len(seq), args.reference_frames)  # the differentiable renderer, for comparison
        t0 = time.perf_counter()
        for _ in render_frames(seq[:n_ref], faces, camera, args.batch, fast=False):
            pass
        ref_s, c4 = time.perf_counter() - t0, cpu_seconds()
    n = result.frames
    print("wall time is what a user waits; CPU time (python process / ffmpeg) is what the work costs,\n"
          "which on a machine shared with other jobs is the steadier figure")
    print(f"{'stage':<20}{'frames/s':>10}{'ms/frame':>10}{'cpu ms/frame (py + ffmpeg)':>30}")

    def row(name, seconds, cpu_py, cpu_ff, count):
        print(f"{name:<20}{count / seconds:>10.1f}{1e3 * seconds / count:>10.2f}"
              f"{1e3 * cpu_py / count:>18.2f} + {1e3 * cpu_ff / count:.2f}")

    row("end to end", total, c1[0] - c0[0], c1[1] - c0[1], n)
    row("  render only", render_s, c2[0] - c1[0], c2[1] - c1[1], len(frames))
    row("  encode+mux only", encode_s, c3[0] - c2[0], c3[1] - c2[1], len(frames))
    if n_ref:
        row("  render_mesh (a.a.)", ref_s, c4[0] - c3[0], c4[1] - c3[1], n_ref)
    print(f"target: >= 25 frames/s end to end (wall) -> {'met' if n / total >= 25 else 'MISSED'}")


if __name__ == "__main__":
    main()
