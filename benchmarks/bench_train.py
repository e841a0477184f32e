"""Training throughput (sequences per second) of an animator on CPU (or --device cuda).

Runs the real trainer (`talkinghead_cli.training.trainer.train`) on a small corpus: the
synthetic corpus of `avtalk synth` (--dataset synthetic --data-root DIR) or, by default,
a toy corpus in VOCASET layout written to a temporary folder. Throughput is timed from
the first to the last training step of each epoch after the first (validation and the
first, warm-up epoch excluded) and printed per epoch and as a median.

    python benchmarks/bench_train.py                       # toy corpus, tiny FaceFormer
    python benchmarks/bench_train.py --dataset synthetic --data-root corpus/ --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from talkinghead_cli.config import TrainConfig
from talkinghead_cli.data import vocaset
from talkinghead_cli.data.dataset import write_toy_corpus
from talkinghead_cli.training.trainer import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="vocaset", choices=["vocaset", "biwi", "synthetic"])
    ap.add_argument("--data-root", type=Path, default=None, help="default: a toy corpus in a temp folder")
    ap.add_argument("--animator", default="faceformer", choices=["faceformer", "codetalker"])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--stage", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="toy corpus: seconds per sequence")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root
        if root is None:
            subjects = {s: list(range(1, 5)) for s in vocaset.TRAIN_SUBJECTS[:3]}
            subjects[vocaset.VAL_SUBJECTS[0]] = [21]
            root = write_toy_corpus(Path(tmp) / "corpus", subjects, seconds=args.seconds)
        cfg = TrainConfig(dataset=args.dataset, data_root=root, run_dir=Path(tmp) / "run", epochs=args.epochs,
                          animator=args.animator, size=args.size, stage=args.stage, device=args.device, lr=1e-3)
        ticks: list[float] = []
        start = {}
        train(cfg, progress=lambda done, total: ticks.append(time.perf_counter()),
              log=lambda e: start.update(e) if e["event"] == "start" else None)
    per_epoch = len(ticks) // args.epochs
    rates = []
    for e in range(1, args.epochs):
        first, last = ticks[e * per_epoch], ticks[(e + 1) * per_epoch - 1]
        rates.append((per_epoch - 1) / (last - first))
        print(f"epoch {e + 1}: {rates[-1]:.2f} sequences/s")
    print(f"{args.animator} {args.size} on {args.device} ({args.threads} threads), {per_epoch} sequences/epoch: "
          f"median {statistics.median(rates):.2f} sequences/s" if rates else "need --epochs >= 2")


if __name__ == "__main__":
    main()
