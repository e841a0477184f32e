"""Stage 1 of the AV-guided pipeline: fine-tune the lip-reading expert on renders of ground truth.

Behind ``avtalk finetune-expert``. Every utterance's ground-truth mesh sequence is rendered
once, under ``no_grad``, into 88 x 88 normalised grayscale lip windows at 25 fps with
:func:`~talkinghead_cli.lipreader.views.lip_video` (one window per sequence, taken from the
sequence itself, exactly as the AV loss later sees ground truth). The windows are cached as
one float16 ``.npy`` per utterance, named by a hash of the vertex file's bytes and the render
settings, so later epochs and later runs read them instead of rendering.

Training: padded batches of utterances (``lengths``), the joint loss
``λ_ctc·CTC + (1-λ_ctc)·CE`` (label-smoothed) of :func:`~talkinghead_cli.lipreader.losses.expert_loss`,
modality dropout (an ``av`` expert sees lips alone in ``p_drop_audio`` of the samples, so it
also reads without audio), AdamW with linear warm-up and cosine decay, gradient clipping.
After every epoch: greedy-CTC CER/WER on the validation split, visual-only (and audio-visual
for an ``av`` expert); ``RUN_DIR/last.pt`` (and ``best.pt`` when the visual-only CER improved)
and ``metrics.json`` are written atomically. ``resume=True`` continues from ``last.pt``.
Shapes: B batch, T frames, V vertices, H x W window, S audio samples, L tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.checkpoint import read_torch_file
from talkinghead_cli.config import ExpertTrainConfig
from talkinghead_cli.data.dataset import Corpus, Utterance, require_transcripts
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.errors import UserError
from talkinghead_cli.progress import ProgressFn, report
from talkinghead_cli.text_metrics import ErrorRate
from talkinghead_cli.training.run import LogFn, RunFolder, TrainResult, record_epoch

CACHE_VERSION = 2  # 2: lip windows render the mesh interpolated to 25 fps (not blended frames)


@dataclass
class ExpertTrainResult(TrainResult):
    rendered: int = 0  # utterances this run had to render (not in the cache)
    cached: int = 0  # utterances this run found in the cache


# ----------------------------------------------------------------------------- lip windows


def render_settings(cfg: ExpertTrainConfig, corpus: Corpus) -> dict[str, Any]:
    """Everything that decides the pixels of a cached window (part of the cache key)."""
    from talkinghead_cli.lipreader.views import VIDEO_FPS

    return {"version": CACHE_VERSION, "size": cfg.window_size, "margin": cfg.margin, "sigma": cfg.sigma,
            "video_fps": VIDEO_FPS, "fps": float(corpus.fps), "frame_step": int(corpus.frame_step),
            "backend": "auto", "normalized": True}


def render_windows(verts: torch.Tensor, faces: torch.Tensor, lip_idx: torch.Tensor, fps: float,
                   settings: dict[str, Any]) -> torch.Tensor:
    """One ground-truth sequence -> its lip video, without gradients.

    Args:
        verts: (T, V, 3) at ``fps``; faces: (F, 3); lip_idx: (R,).
    Returns:
        (T25, H, W) float32 normalised windows at 25 fps, on ``verts``' device.
    """
    from talkinghead_cli.lipreader.views import lip_video

    with torch.no_grad():
        video = lip_video(verts[None], faces, lip_idx, fps, size=settings["size"], margin=settings["margin"],
                          video_fps=settings["video_fps"], sigma=settings["sigma"])
    return video[0].float()


class LipWindowCache:
    """Lip windows of ground-truth utterances, rendered once and kept as float16 ``.npy`` files.

    ``folder=None`` keeps them in memory for this process only. ``rendered`` / ``hits`` count
    cache misses and hits.
    """

    def __init__(self, corpus: Corpus, settings: dict[str, Any], folder: Path | None,
                 device: torch.device, faces_from_corpus: np.ndarray):
        if corpus.lip_indices is None:
            raise UserError("the dataset names no lip vertices (regions/lve.txt)", corpus.root / "regions",
                            "add regions/lve.txt with the lip vertex indices")
        self.corpus, self.settings, self.folder, self.device = corpus, settings, folder, device
        self.faces = torch.as_tensor(faces_from_corpus, dtype=torch.long, device=device)
        self.lip_idx = torch.as_tensor(corpus.lip_indices, dtype=torch.long, device=device)
        h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        h.update(np.ascontiguousarray(faces_from_corpus, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(corpus.lip_indices, dtype=np.int64).tobytes())
        self._settings_hash = h.hexdigest()
        self._memory: dict[str, np.ndarray] = {}
        self._keys: dict[str, str] = {}
        self.rendered = self.hits = 0

    def key(self, utt: Utterance) -> str:
        """Hash of the vertex file's bytes and the render settings (once per utterance and run)."""
        if utt.id not in self._keys:
            h = hashlib.sha256(self._settings_hash.encode())
            h.update(Path(utt.verts).read_bytes())
            self._keys[utt.id] = h.hexdigest()[:32]
        return self._keys[utt.id]

    def path(self, utt: Utterance) -> Path | None:
        return None if self.folder is None else self.folder / f"{utt.id}-{self.key(utt)}.npy"

    def get(self, utt: Utterance) -> np.ndarray:
        """(T25, H, W) float16 windows of ``utt`` (rendered on a miss)."""
        if utt.id in self._memory:
            return self._memory[utt.id]
        path = self.path(utt)
        if path is not None and path.exists():
            try:
                windows = np.load(path, allow_pickle=False)
                self.hits += 1
                return windows
            except (OSError, ValueError):
                pass  # a damaged cache file is rendered again
        windows = self._render(utt)
        self.rendered += 1
        if path is None:
            self._memory[utt.id] = windows
        else:
            with atomic_file(path) as tmp:
                np.save(tmp, windows)
        return windows

    def _render(self, utt: Utterance) -> np.ndarray:
        raw = np.load(utt.verts, mmap_mode="r", allow_pickle=False)
        verts = np.array(raw[:: self.corpus.frame_step], dtype=np.float32).reshape(-1, self.corpus.num_verts, 3)
        video = render_windows(torch.from_numpy(verts).to(self.device), self.faces, self.lip_idx,
                               self.corpus.fps, self.settings)
        return video.cpu().numpy().astype(np.float16)


# ----------------------------------------------------------------------------- batches


@dataclass
class Sample:
    utt: Utterance
    text: str
    tokens: list[int]
    audio: np.ndarray | None  # (S,) 16 kHz


def collate(samples: list[Sample], cache: LipWindowCache, device: torch.device, with_audio: bool):
    """Padded batch -> video (B, T, H, W), audio (B, S) or None, lengths (B,), token lists."""
    wins = [cache.get(s.utt) for s in samples]
    lengths = torch.tensor([len(w) for w in wins], dtype=torch.long)
    t = int(lengths.max())
    video = torch.zeros(len(wins), t, *wins[0].shape[1:])
    for i, w in enumerate(wins):
        video[i, : len(w)] = torch.from_numpy(w.astype(np.float32))
    audio = None
    if with_audio:
        from talkinghead_cli.lipreader.config import SAMPLES_PER_FRAME

        audio = torch.zeros(len(wins), t * SAMPLES_PER_FRAME)
        for i, s in enumerate(samples):
            a = s.audio[: int(lengths[i]) * SAMPLES_PER_FRAME]
            audio[i, : len(a)] = torch.from_numpy(a)
        audio = audio.to(device)
    return video.to(device), audio, lengths.to(device), [s.tokens for s in samples]


def build_samples(corpus: Corpus, utts: list[Utterance], tokenizer, texts: dict[str, str],
             with_audio: bool) -> list[Sample]:
    from talkinghead_cli.audio import load_audio
    from talkinghead_cli.lipreader.config import SAMPLE_RATE

    out = []
    for u in utts:
        ids, _ = tokenizer.encode(texts[u.id])
        if not ids:
            raise UserError(f"the transcript of {u.id} has no letters the expert knows", u.wav,
                            "fix the transcript")
        audio = load_audio(u.wav, SAMPLE_RATE) if with_audio else None
        out.append(Sample(u, texts[u.id], ids, audio))
    return out


# ----------------------------------------------------------------------------- expert


def _peek(path: Path) -> dict | None:
    """The checkpoint dict when ``path`` is an avtalk checkpoint, None for anything else."""
    obj = read_torch_file(path, "expert checkpoint", "pass an avtalk expert .pt or an Auto-AVSR .pth")
    return obj if isinstance(obj, dict) and "format_version" in obj and "kind" in obj else None


def build_or_load_expert(cfg: ExpertTrainConfig, device: torch.device, log: LogFn):
    """-> (model, tokenizer, resolved size, resolved modalities). See ``--expert-checkpoint``."""
    from talkinghead_cli.lipreader import build_expert, config_for_size
    from talkinghead_cli.lipreader.checkpoint import load_expert
    from talkinghead_cli.lipreader.import_autoavsr import import_autoavsr
    from talkinghead_cli.lipreader.tokenizer import CharTokenizer

    path = cfg.expert_checkpoint
    if path is None:
        tok = CharTokenizer()
        size, mods = cfg.size or "tiny", cfg.modalities or "av"
        model = build_expert(config_for_size(size, len(tok), mods))
    else:
        path = Path(path)
        ours = _peek(path)
        if ours is not None:
            if ours["kind"] != "expert":
                raise UserError(f"this is an {ours['kind']} checkpoint, not a lip-reading expert", path,
                                "pass an expert from `avtalk finetune-expert` or an Auto-AVSR file")
            model, tok, _ = load_expert(path, size=cfg.size)
            log({"event": "init", "path": str(path), "kind": "avtalk"})
        else:
            model, rep = import_autoavsr(path)
            tok = CharTokenizer()
            if model.config.vocab_size != len(tok):
                raise UserError(f"the checkpoint predicts {model.config.vocab_size} tokens, fine-tuning "
                                f"uses the {len(tok)}-token character vocabulary", path,
                                "pass an expert trained with the character vocabulary")
            log({"event": "init", "path": str(path), "kind": "autoavsr", "loaded": rep.loaded,
                 "missing": rep.missing, "unexpected": rep.unexpected})
        size, mods = model.config.size, model.config.modalities
        if mods == "audio" or (cfg.modalities is not None and cfg.modalities != mods):
            raise UserError(f"the expert reads {mods!r}, {cfg.modalities or 'lips'!r} was asked for", path,
                            f"pass --modalities {mods} or another checkpoint" if mods != "audio"
                            else "pass an audio-visual or visual-only expert")
    drops = ({"p_drop_audio": cfg.p_drop_audio, "p_drop_video": cfg.p_drop_video} if mods == "av"
             else {"p_drop_audio": 0.0, "p_drop_video": 0.0})
    model.config = model.config.model_copy(update=drops)
    return model.to(device), tok, size, mods


# ----------------------------------------------------------------------------- loop


def lr_at(step: int, total: int, cfg: ExpertTrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))


@torch.no_grad()
def evaluate(model, tokenizer, samples: list[Sample], cache: LipWindowCache, device, mode: str,
             batch_size: int = 8) -> tuple[ErrorRate, list[tuple[str, str]]]:
    """Greedy-CTC recognition of ``samples`` in ``mode`` ("video" or "av") -> (rates, [(hyp, ref)])."""
    from talkinghead_cli.lipreader.decode import recognize

    rates, pairs = ErrorRate(), []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i: i + batch_size]
        video, audio, lengths, _ = collate(chunk, cache, device, mode == "av")
        hyps = recognize(model, tokenizer, video, audio, lengths, mode=mode, method="ctc")
        for h, s in zip(hyps, chunk):
            rates.add(h, s.text)
            pairs.append((h, s.text))
    return rates, pairs


@dataclass
class _Loop:
    """What every epoch of one fine-tuning run uses, built once by :func:`finetune_expert` (as
    the animator trainer's ``_Loop``): the expert, its tokenizer, the optimizer, the window
    cache, the resolved size and modalities, what a checkpoint records (``corpus``, the render
    ``settings``), optimizer steps per epoch and the event log. ``history`` and ``best`` are the
    run's record so far."""

    cfg: ExpertTrainConfig
    model: torch.nn.Module
    tok: Any
    opt: torch.optim.Optimizer
    cache: LipWindowCache
    corpus: Corpus
    settings: dict[str, Any]
    device: torch.device
    size: str
    mods: str
    steps: int
    log: LogFn
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)

    def run_epoch(self, samples: list[Sample], epoch: int, tick) -> float:
        """One pass over ``samples`` in a seeded order (epoch ``epoch``); returns the mean training
        loss. ``tick(n)`` after every batch of n utterances."""
        from talkinghead_cli.lipreader.losses import expert_loss

        cfg, model, opt = self.cfg, self.model, self.opt
        model.train()
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        losses = []
        for k in range(self.steps):
            batch = [samples[j] for j in order[k * cfg.batch_size: (k + 1) * cfg.batch_size].tolist()]
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * self.steps + k, cfg.epochs * self.steps, cfg)
            video, audio, lengths, targets = collate(batch, self.cache, self.device, self.mods == "av")
            out = expert_loss(model, targets, video=video, audio=audio, lengths=lengths, mode=self.mods,
                              ctc_weight=cfg.ctc_weight, label_smoothing=cfg.label_smoothing,
                              reduction=cfg.loss_reduction)
            if not torch.isfinite(out.loss):
                raise UserError(f"the training loss became {float(out.loss)}", cfg.run_dir,
                                "lower --lr or check the data")
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(float(out.loss.detach()))
            tick(len(batch))
        return float(np.mean(losses)) if losses else float("nan")

    def finish_epoch(self, val: list[Sample], epoch: int, loss: float) -> None:
        """Validate (greedy-CTC CER/WER), record, save last (and best) checkpoints, log the epoch."""
        modes = ("video", "av") if self.mods == "av" else ("video",)
        scores: dict[str, float] = {}
        for mode in modes if val else ():
            rates, _ = evaluate(self.model, self.tok, val, self.cache, self.device, mode)
            scores[f"cer_{mode}"], scores[f"wer_{mode}"] = rates.cer, rates.wer
        self.history, self.best, entry, improved = record_epoch(self.history, self.best, epoch, loss, scores,
                                                                "cer_video")
        self.save(epoch + 1, improved)
        self.log({"event": "epoch", "epochs": self.cfg.epochs, "best": improved, **entry})

    def save(self, epochs_done: int, improved: bool) -> None:
        """``last.pt`` (and ``best.pt`` when ``improved``) and ``metrics.json`` in the run folder."""
        from talkinghead_cli.lipreader.checkpoint import save_expert

        cfg, corpus = self.cfg, self.corpus
        extra = {"epoch": epochs_done, "optimizer": self.opt.state_dict(), "metrics": self.history[-1],
                 "history": self.history, "best": self.best,
                 "train": cfg.model_dump(mode="json") | {"size": self.size, "modalities": self.mods},
                 "render": self.settings, "lip_indices": torch.as_tensor(np.asarray(corpus.lip_indices)),
                 "data_fps": float(corpus.fps), "dataset": corpus.name}
        RunFolder(Path(cfg.run_dir)).save(lambda path: save_expert(path, self.model, self.tok, extra), self.history,
                                          self.best, improved)


def _load_resume(cfg: ExpertTrainConfig) -> dict | None:
    last = Path(cfg.run_dir) / "last.pt"
    ckpt = RunFolder(Path(cfg.run_dir)).resume(cfg.resume, "expert")
    if ckpt is None:
        return None
    saved = ckpt.get("extra", {}).get("train", {})
    if str(saved.get("dataset")) != cfg.dataset:
        raise UserError(f"the run was trained on {saved.get('dataset')}, not {cfg.dataset}", last,
                        f"pass --dataset {saved.get('dataset')} or another -o folder")
    return ckpt


def finetune_expert(cfg: ExpertTrainConfig, progress: ProgressFn | None = None,
                    log: LogFn | None = None) -> ExpertTrainResult:
    """Train the lip-reading expert as ``cfg`` says; see the module docstring.

    Args:
        progress: (utterances done, total): first the renders still to do, then every epoch's
            training utterances.
        log: called with ``{"event": "start"|"init"|"rendered"|"epoch", ...}``.
    """
    from talkinghead_cli.device import resolve_device
    from talkinghead_cli.lipreader.checkpoint import load_expert

    log = log or (lambda e: None)
    device = resolve_device(cfg.device)
    resumed = _load_resume(cfg)
    corpus = open_corpus(cfg.dataset, cfg.data_root, faces_from=cfg.faces_from)
    if corpus.faces is None:
        raise UserError("the dataset carries no mesh faces to render", cfg.data_root,
                        "pass --faces-from MESH with the dataset's topology")
    train_utts, val_utts = corpus.split("train"), corpus.split("val")[: cfg.max_val]
    texts = require_transcripts(corpus, [u.id for u in train_utts + val_utts], "the expert learns from text")
    torch.manual_seed(cfg.seed)
    if resumed is None:
        model, tok, size, mods = build_or_load_expert(cfg, device, log)
    else:
        model, tok, _ = load_expert(Path(cfg.run_dir) / "last.pt", device=device)
        size, mods = model.config.size, model.config.modalities
        model.train()
    settings = render_settings(cfg, corpus)
    folder = None if not cfg.cache else Path(cfg.cache_dir or Path(cfg.run_dir) / "cache")
    cache = LipWindowCache(corpus, settings, folder, device, corpus.faces)
    train_s = build_samples(corpus, train_utts, tok, texts, mods == "av")
    val_s = build_samples(corpus, val_utts, tok, texts, mods == "av")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history, best = 0, [], {}
    if resumed is not None:
        opt.load_state_dict(resumed["extra"]["optimizer"])
        start, history, best = (int(resumed["extra"]["epoch"]), list(resumed["extra"]["history"]),
                                dict(resumed["extra"]["best"]))
    steps = math.ceil(len(train_s) / cfg.batch_size)
    todo = train_s + val_s
    total = len(todo) + (cfg.epochs - start) * len(train_s)
    log({"event": "start", "epoch": start, "epochs": cfg.epochs, "train": len(train_s), "val": len(val_s),
         "device": str(device), "size": size, "modalities": mods, "resumed": resumed is not None})
    for i, s in enumerate(todo):  # render (or find in the cache) every window once
        cache.get(s.utt)
        report(progress, i + 1, total)
    rendered, cached = cache.rendered, cache.hits
    log({"event": "rendered", "rendered": rendered, "cached": cached,
         "cache": None if folder is None else str(folder)})
    done = {"n": len(todo)}

    def tick(n: int) -> None:
        done["n"] += n
        report(progress, done["n"], total)

    loop = _Loop(cfg, model, tok, opt, cache, corpus, settings, device, size, mods, steps, log, history, best)
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        loss = loop.run_epoch(train_s, epoch, tick)
        loop.finish_epoch(val_s, epoch, loss)
    return ExpertTrainResult(Path(cfg.run_dir), cfg.epochs, loop.best.get("epoch"), loop.best, loop.history,
                             rendered, cached)
