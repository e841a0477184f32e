"""One AV-loss training step vs one MSE-only step on the same sequence (tiny models, CPU).

Target (issue 5): the AV step costs at most 3x the MSE-only step. Prints the median time
of both full steps (forward, backward, Adam update; the two run alternately, so that both see
the same machine load, and the ratio is the median of the per-pair ratios), the split of the AV
step (animator forward, render, expert forward, expert backward, render backward,
animator backward + update), and the gradient-norm ratio on the lip vertices that
``lambda_av`` is chosen from:

    ratio = |d(lambda_mse * L_mse)/d pred_lips| / |d L_av / d pred_lips|  (at the loaded animator)

so ``lambda_av ~ ratio`` gives L_av's gradient on the lips the size of L_mse's.

    python benchmarks/bench_av_step.py                                   # toy corpus
    python benchmarks/bench_av_step.py --dataset synthetic --data-root corpus/ [--expert E.pt] \
        [--init-from runs/base/best.pt]

Without ``--expert`` a randomly initialised tiny visual-only expert is used (the cost is
the same as a trained one's; the gradient ratio is indicative only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import talkinghead_cli  # noqa: F401  (before torch: the package's OpenMP spin setting, see its __init__)
import torch

from talkinghead_cli.animator import AnimatorConfig, build_animator
from talkinghead_cli.checkpoint import read_torch_file
from talkinghead_cli.data import vocaset
from talkinghead_cli.data.dataset import SequenceDataset, read_transcripts, write_toy_corpus
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.lipreader import build_expert, tiny_config
from talkinghead_cli.lipreader.checkpoint import load_expert
from talkinghead_cli.lipreader.losses import expert_loss
from talkinghead_cli.lipreader.model import fold_batch_norms
from talkinghead_cli.lipreader.tokenizer import CharTokenizer
from talkinghead_cli.lipreader.views import lip_video
from talkinghead_cli.training.losses import av_loss, total_loss


def _toy(root: Path, seconds: float) -> Path:
    subjects = {vocaset.TRAIN_SUBJECTS[0]: [1, 2]}
    write_toy_corpus(root, subjects, seconds=seconds)
    (root / "sentencestext").mkdir()
    (root / "sentencestext" / f"{vocaset.TRAIN_SUBJECTS[0]}.txt").write_text(
        "\n".join(["the quick brown fox jumps"] * 40))
    return root


def _interleaved(first, second, repeats: int) -> tuple[float, float, float]:
    """Median times of ``first`` and ``second`` run alternately (so both see the same machine
    load), and the median of the per-pair ratios second / first."""
    first(), second()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((first, a), (second, b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b), statistics.median(y / x for x, y in zip(a, b))


class Bench:
    def __init__(self, args, root: Path):
        corpus = open_corpus(args.dataset, root, faces_from=args.faces_from)
        item = SequenceDataset(corpus, corpus.split("train"), corpus.sample_rate)[0]
        self.audio, self.template, self.style, self.verts = (item[k][None] for k in
                                                             ("audio", "template", "style", "verts"))
        torch.manual_seed(0)
        acfg = AnimatorConfig(kind="faceformer", size="tiny", num_verts=corpus.num_verts,
                              subjects=corpus.train_subjects, fps=corpus.fps, sample_rate=corpus.sample_rate)
        self.model = build_animator(acfg).train()
        if args.init_from:  # a trained animator: predictions (and so lip windows) like stage 2's
            self.model.load_state_dict(read_torch_file(args.init_from)["state_dict"])
        # lr 0: every timed step does the full Adam update but leaves the weights as loaded, so
        # all steps see the same predictions (dozens of updates on one sequence would overfit
        # it and change the lip shapes, and with them the renderer's work)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.0)
        self.render = {}  # the expert's own lip-window settings, as the trainer uses them
        if args.expert:
            self.expert, tok, ckpt = load_expert(args.expert)
            trained_on = (ckpt.get("extra") or {}).get("render") or {}
            self.render = {k: trained_on[k] for k in ("size", "margin", "sigma", "video_fps") if k in trained_on}
        else:
            self.expert, tok = build_expert(tiny_config(modalities="video")).eval(), CharTokenizer()
        fold_batch_norms(self.expert.requires_grad_(False).eval())  # as the trainer's frozen expert (AVLoss)
        self.tokens = [tok.encode(read_transcripts(corpus)[item["id"]])[0]]
        self.faces, self.lip = torch.as_tensor(corpus.faces), torch.as_tensor(corpus.lip_indices)
        self.fps, self.lambda_av = corpus.fps, args.lambda_av
        print(f"sequence {item['id']}: {self.verts.shape[1]} frames, {corpus.num_verts} vertices, "
              f"{len(self.faces)} faces, {len(self.tokens[0])} tokens; lip windows {self.render or 'default'}")

    def mse_step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        model_loss, _, pred = self.model.training_loss(self.audio, self.template, self.style, self.verts)
        total_loss(model_loss, pred, self.verts, self.lip, 1.0)[0].backward()
        self.opt.step()

    def av_step(self) -> None:
        """The trainer's step: one graph, one backward."""
        self.opt.zero_grad(set_to_none=True)
        model_loss, _, pred = self.model.training_loss(self.audio, self.template, self.style, self.verts)
        av = av_loss(pred, self.verts, self.faces, self.lip, self.fps, self.expert, self.tokens, **self.render)
        total_loss(model_loss, pred, self.verts, self.lip, 1.0, av=av, av_weight=self.lambda_av)[0].backward()
        self.opt.step()

    def av_split(self) -> dict[str, float]:
        """The same step cut at the meshes and the video, each part timed."""
        t, marks = time.perf_counter, {}
        t0 = t()
        self.opt.zero_grad(set_to_none=True)
        model_loss, _, pred = self.model.training_loss(self.audio, self.template, self.style, self.verts)
        marks["animator forward"] = t() - t0
        t0 = t()
        p = pred.detach().requires_grad_(True)
        video = lip_video(p, self.faces, self.lip, self.fps, window_from=self.verts, **self.render)
        marks["render forward"] = t() - t0
        t0 = t()
        v = video.detach().requires_grad_(True)
        av = expert_loss(self.expert, self.tokens, video=v, mode="video")
        marks["expert forward"] = t() - t0
        t0 = t()
        av.loss.backward()
        marks["expert backward"] = t() - t0
        t0 = t()
        video.backward(v.grad)
        marks["render backward"] = t() - t0
        t0 = t()
        loss, _ = total_loss(model_loss, pred, self.verts, self.lip, 1.0)
        (loss + self.lambda_av * (pred * p.grad).sum()).backward()
        self.opt.step()
        marks["animator backward + step"] = t() - t0
        return marks

    def grad_ratio(self) -> tuple[float, float]:
        """(|grad of L_mse| / |grad of L_av|, same for L_mse + L_rlv) on the predicted lip vertices."""
        model_loss, _, pred = self.model.training_loss(self.audio, self.template, self.style, self.verts)
        g_mse, = torch.autograd.grad(model_loss, pred, retain_graph=True)
        g_all, = torch.autograd.grad(total_loss(model_loss, pred, self.verts, self.lip, 1.0)[0], pred,
                                     retain_graph=True)
        av = av_loss(pred, self.verts, self.faces, self.lip, self.fps, self.expert, self.tokens, **self.render)
        g_av, = torch.autograd.grad(av.loss, pred)
        n_av = g_av[:, :, self.lip].norm()
        return float(g_mse[:, :, self.lip].norm() / n_av), float(g_all[:, :, self.lip].norm() / n_av)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="vocaset", choices=["vocaset", "biwi", "synthetic"])
    ap.add_argument("--data-root", type=Path, default=None, help="default: a toy corpus in a temp folder")
    ap.add_argument("--faces-from", type=Path, default=None)
    ap.add_argument("--expert", type=Path, default=None, help="expert checkpoint [default: random tiny]")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="animator checkpoint to start from (stage 2 starts from a trained one) "
                         "[default: untrained]")
    ap.add_argument("--lambda-av", type=float, default=1e-8)
    ap.add_argument("--seconds", type=float, default=2.0, help="toy corpus: seconds per sequence")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root
        if root is None:
            root = _toy(Path(tmp) / "corpus", args.seconds)
            args.faces_from = args.faces_from or root / "templates" / "FLAME_sample.ply"
        b = Bench(args, root)
    torch.manual_seed(0)
    r_mse, r_all = b.grad_ratio()  # at the animator as loaded (--init-from) or initialised
    mse, av, ratio = _interleaved(b.mse_step, b.av_step, args.repeats)
    print(f"MSE-only step: {mse * 1e3:.1f} ms   AV step: {av * 1e3:.1f} ms   ratio {ratio:.2f}x "
          f"(target <= 3x; {args.threads} threads, medians of {args.repeats} interleaved pairs; "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'default')})")
    b.av_split()
    splits = [b.av_split() for _ in range(args.repeats)]
    for k in splits[0]:
        print(f"  {k:26s} {statistics.median(s[k] for s in splits) * 1e3:8.1f} ms")
    print(f"gradient norm on lip vertices, L_mse / L_av(sum): {r_mse:.3g}  (L_mse + L_rlv) / L_av: {r_all:.3g}")


if __name__ == "__main__":
    main()
