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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--mesh", choices=("flame", "example"), default="flame")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_preview-") as tmp:
        tmp = Path(tmp)
        template, npz, wav = make_inputs(tmp, args.frames, args.fps, args.mesh)
        seq = torch.from_numpy(np.load(npz)["verts"])
        faces = torch.from_numpy(np.load(npz)["faces"])
        print(f"{args.frames} frames at {args.size}x{args.size}, {seq.shape[1]} vertices, {len(faces)} faces, "
              f"batch {args.batch}, torch threads {torch.get_num_threads()}")
        config = RenderConfig(sequence=npz, template=template, audio=wav, output=tmp / "out.mp4",
                              fps=args.fps, size=args.size, batch=args.batch)
        t0 = time.perf_counter()
        result = render_sequence_file(config)
        total = time.perf_counter() - t0
        camera = front_camera(seq[0], image_size=args.size, projection="ortho", margin=0.1)
        t0 = time.perf_counter()
        frames = np.concatenate(list(render_frames(seq, faces, camera, args.batch)))
        render_s = time.perf_counter() - t0
        writer = _FrameWriter(ffmpeg_command(tmp / "enc.mp4", args.size, args.size, args.fps, wav), tmp / "log")
        t0 = time.perf_counter()
        for start in range(0, len(frames), args.batch):
            writer.write(frames[start:start + args.batch])
        code = writer.close()
        encode_s = time.perf_counter() - t0
        assert code == 0, (tmp / "log").read_text()
    n = result.frames
    print(f"{'stage':<22}{'frames/s':>10}{'ms/frame':>10}")
    print(f"{'end to end (render)':<22}{n / total:>10.1f}{1e3 * total / n:>10.2f}")
    print(f"{'  render only':<22}{len(frames) / render_s:>10.1f}{1e3 * render_s / len(frames):>10.2f}")
    print(f"{'  encode+mux only':<22}{len(frames) / encode_s:>10.1f}{1e3 * encode_s / len(frames):>10.2f}")
    print(f"target: >= 25 frames/s end to end -> {'met' if n / total >= 25 else 'MISSED'}")


if __name__ == "__main__":
    main()
