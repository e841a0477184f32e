"""Expert training throughput: lip windows per second, forward + backward + optimiser step.

A "lip window" is one (T, 88, 88) grayscale clip at 25 fps (T = 25 by default, 1 s)
with its transcript; the batch is (B, T, 88, 88) plus, in ``av`` mode, (B, T*640)
samples of audio. Also prints decoding speed (greedy CTC and beam search) on the
same windows.

    python benchmarks/bench_expert.py [--size tiny] [--mode video|av] [--batch 4] [--frames 25]
                                      [--steps 5] [--threads N] [--device cpu|cuda]

On a shared machine the figures are inflated by contention; the thread count and the
load average are printed with them.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from talkinghead_cli.lipreader.config import config_for_size
from talkinghead_cli.lipreader.decode import recognize
from talkinghead_cli.lipreader.losses import expert_loss
from talkinghead_cli.lipreader.model import LipReader, normalize_frames
from talkinghead_cli.lipreader.tokenizer import CharTokenizer

SENTENCES = ["the quick brown fox", "lips move when we speak", "read my lips", "hello world"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--mode", default="video", choices=["video", "av", "audio"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    tok = CharTokenizer()
    model = LipReader(config_for_size(args.size, len(tok), modalities=args.mode)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, t = args.batch, args.frames
    video = normalize_frames(torch.rand(b, t, 88, 88, device=dev)) if args.mode != "audio" else None
    audio = torch.randn(b, t * 640, device=dev) if args.mode != "video" else None
    targets = [tok.encode(SENTENCES[i % len(SENTENCES)])[0] for i in range(b)]

    def step() -> None:
        out = expert_loss(model, targets, video=video, audio=audio)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    step()  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"expert {args.size} ({n_params:.2f} M params), mode {args.mode}, device {dev}, "
          f"threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.1f}")
    print(f"train: batch {b} x {t} frames x 88x88: {dt * 1000:.0f} ms/step, "
          f"{b / dt:.2f} lip windows/s, {b * t / dt:.0f} frames/s")
    for method in ("ctc", "beam"):
        t0 = time.perf_counter()
        recognize(model, tok, video=video, audio=audio, method=method, beam=5)
        sync()
        dt = time.perf_counter() - t0
        print(f"decode {method}: {b / dt:.2f} windows/s")


if __name__ == "__main__":
    main()
