"""Expert fine-tuning costs: the one-time render of ground-truth lip windows, and training
throughput from the cache (read windows + pad + forward + backward + AdamW step).

A "lip window" here is one 88 x 88 grayscale frame at 25 fps (one second of video = 25
windows). With ``--checkpoint`` it finally prints the visual-only CER/WER (greedy CTC) of
that expert on ground-truth renders of ``--split``.

    python benchmarks/bench_finetune.py [--dataset synthetic --data-root DIR] [--size tiny]
        [--modalities av|video] [--batch 4] [--steps 5] [--utterances 4] [--threads N]
        [--checkpoint best.pt --split test] [--device cpu|cuda]

Without ``--data-root`` a toy corpus (icosphere heads, 162 vertices) is written to a temp
folder; renders of a real face mesh (e.g. the synthetic corpus, ~2.7k vertices) cost more.
On a shared machine the figures are inflated by contention; threads and load are printed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from talkinghead_cli.config import ExpertTrainConfig
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.lipreader import build_expert, config_for_size
from talkinghead_cli.lipreader.losses import expert_loss
from talkinghead_cli.lipreader.tokenizer import CharTokenizer
from talkinghead_cli.training.expert_trainer import (
    LipWindowCache,
    build_samples,
    collate,
    evaluate,
    read_transcripts,
    render_settings,
)


def toy_corpus(folder: Path) -> tuple[str, Path]:
    from talkinghead_cli.data.dataset import write_toy_corpus
    from talkinghead_cli.data.vocaset import TRAIN_SUBJECTS

    root = write_toy_corpus(folder / "toy", {TRAIN_SUBJECTS[0]: list(range(1, 9))}, seconds=2.0)
    (root / "sentencestext").mkdir()
    lines = ["the quick brown fox", "read my lips", "hello world", "lips move when we speak"] * 10
    (root / "sentencestext" / f"{TRAIN_SUBJECTS[0]}.txt").write_text("\n".join(lines) + "\n")
    return "vocaset", root


def bench_render(corpus, samples, settings, cache_dir: Path, device) -> LipWindowCache:
    cache = LipWindowCache(corpus, settings, cache_dir, device, corpus.faces)
    t0 = time.perf_counter()
    frames = sum(len(cache.get(s.utt)) for s in samples)
    dt = time.perf_counter() - t0
    print(f"render (one-time, no_grad): {len(samples)} utterances, {frames} windows in {dt:.2f} s = "
          f"{1000 * dt / frames:.1f} ms/window, {frames / dt:.1f} windows/s  "
          f"({corpus.num_verts} vertices, {len(corpus.faces)} faces)")
    return cache


def bench_train(model, samples, cache, args, device, mods) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    batch = (samples * args.batch)[: args.batch]

    def step() -> int:
        video, audio, lengths, targets = collate(batch, cache, device, mods == "av")
        out = expert_loss(model, targets, video=video, audio=audio, lengths=lengths, mode=mods)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        return int(lengths.sum())

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    frames = sum(step() for _ in range(args.steps))
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"train from cache ({args.size}, {mods}, batch {args.batch}): {frames} windows in {dt:.2f} s = "
          f"{frames / dt:.1f} windows/s, {dt / args.steps * 1000:.0f} ms/step")


def score(args, corpus, settings, cache_dir, device) -> None:
    from talkinghead_cli.lipreader.checkpoint import load_expert

    model, tok, _ = load_expert(args.checkpoint, device=device)
    utts = corpus.split(args.split)
    if not utts:
        raise SystemExit(f"the corpus has no '{args.split}' utterances")
    samples = build_samples(corpus, utts, tok, read_transcripts(corpus, utts), with_audio=False)
    cache = LipWindowCache(corpus, settings, cache_dir, device, corpus.faces)
    rates, pairs = evaluate(model, tok, samples, cache, device, "video")
    for hyp, ref in pairs[:5]:
        print(f"  ref: {ref}\n  hyp: {hyp}")
    print(f"visual-only greedy CTC on {args.split} ({len(samples)} utterances, {rates.chars} characters): "
          f"CER {rates.cer:.3f}  WER {rates.wer:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--data-root", type=Path)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--modalities", default="av", choices=["av", "video"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--utterances", type=int, default=4, help="utterances rendered for the timings")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--cache", type=Path, help="cache for --checkpoint scoring [default: a temp folder]")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f} (contended figures are inflated)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset, root = (args.dataset, args.data_root) if args.data_root else toy_corpus(tmp)
        corpus = open_corpus(dataset, root)
        settings = render_settings(ExpertTrainConfig(dataset=dataset, data_root=root), corpus)
        utts = corpus.split("train")[: args.utterances]
        tok = CharTokenizer()
        samples = build_samples(corpus, utts, tok, read_transcripts(corpus, utts), with_audio=args.modalities == "av")
        cache = bench_render(corpus, samples, settings, tmp / "cache", device)
        model = build_expert(config_for_size(args.size, len(tok), args.modalities)).to(device)
        bench_train(model, samples, cache, args, device, args.modalities)
        if args.checkpoint:
            score(args, corpus, settings, args.cache or tmp / "cache", device)


if __name__ == "__main__":
    main()
