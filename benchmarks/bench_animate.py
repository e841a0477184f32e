"""`avtalk animate` on ~10 s of speech with the default model: OBJ frames + a 512² MP4.

Prints the end-to-end wall time of the real command (a subprocess, imports included) and
the split of the work in-process: model (load + predict), writing (OBJ frames), video
(render + encode). Target (issue 6): <= 5 s wall on the 2-core CPU.

    python benchmarks/bench_animate.py [--checkpoint NAME_OR_PATH] [--seconds 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from talkinghead_cli.animate import load_animator, predict_windowed  # noqa: E402
from talkinghead_cli.audio import load_audio  # noqa: E402
from talkinghead_cli.mesh import write_sequence  # noqa: E402
from talkinghead_cli.pretrained import resolve  # noqa: E402
from talkinghead_cli.style import parse_style  # noqa: E402
from talkinghead_cli.video import render_preview  # noqa: E402


def make_speech(path: Path, seconds: float) -> float:
    """Repeat the bundled example speech (the project's own TTS) to about ``seconds``."""
    wave, sr = sf.read(REPO / "examples" / "speech.wav", dtype="float32")
    reps = int(np.ceil(seconds * sr / len(wave)))
    long = np.tile(wave, reps)[: int(seconds * sr)]
    sf.write(path, long, sr)
    return len(long) / sr


def split_timings(ckpt_path: Path, wav: Path, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    model, ckpt = load_animator(ckpt_path, torch.device("cpu"))
    audio = load_audio(wav, model.sample_rate)
    template = torch.as_tensor(np.asarray(ckpt["template"], dtype=np.float32))
    faces = np.asarray(ckpt["faces"])
    style = parse_style(None, list(ckpt["subjects"]))
    t = int(model.num_frames(len(audio)))
    verts = np.zeros((t, template.shape[0], 3), np.float32)
    window = int(round(60 * model.fps))
    predict_windowed(model, audio, template, style, verts, window, min(int(model.fps), (window - 1) // 2))
    t1 = time.perf_counter()
    write_sequence(out / "meshes", verts, faces, fmt="obj")
    t2 = time.perf_counter()
    render_preview(verts, faces, out / "preview.mp4", fps=model.fps, audio=audio,
                   sample_rate=model.sample_rate, size=512)
    t3 = time.perf_counter()
    return {"frames": t, "model": t1 - t0, "writing": t2 - t1, "video": t3 - t2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="path or registered name [default: the bundled default]")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ckpt = resolve(args.checkpoint, "animator")
    print(f"torch threads: {torch.get_num_threads()}, checkpoint: {ckpt}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wav = tmp / "speech10.wav"
        dur = make_speech(wav, args.seconds)
        walls = []
        for i in range(args.repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "talkinghead_cli", "--quiet", "animate", str(wav),
                            "-c", str(ckpt), "-o", str(tmp / f"out{i}"), "--format", "obj"], check=True)
            walls.append(time.perf_counter() - start)
        print(f"avtalk animate, {dur:.1f} s of speech, OBJ + 512^2 MP4: wall {min(walls):.2f} s "
              f"(best of {args.repeat}; all: {', '.join(f'{w:.2f}' for w in walls)})")
        parts = split_timings(ckpt, wav, tmp / "split")
        print(f"split (in-process, {parts['frames']} frames): model {parts['model']:.2f} s, "
              f"writing {parts['writing']:.2f} s, video {parts['video']:.2f} s")


if __name__ == "__main__":
    main()
