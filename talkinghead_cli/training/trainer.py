"""The animator trainer behind ``avtalk train``.

One process, or data-parallel when launched by ``torchrun --nproc_per_node N`` (gloo on
CPU, NCCL on CUDA; each rank takes every N-th sequence of a seeded shuffle and only rank
0 validates and writes). One sequence per forward pass (sequences differ in length, as
in FaceFormer); ``batch_size`` sequences are accumulated per optimizer step. Mixed
precision on CUDA (bf16 where supported, else fp16 with loss scaling).

After every epoch rank 0 validates (LVE, FDD, MVE on the validation split, predicting
the way ``avtalk animate`` does) and writes ``RUN_DIR/last.pt`` (and ``best.pt`` when the
validation LVE improved) atomically, plus ``metrics.json``. ``resume=True`` continues
from ``last.pt``: an interrupted run loses at most the epoch in progress. Shuffling and
dropout are seeded per epoch (``seed``, epoch), so a resumed run follows the same
course as an uninterrupted one.

With ``av_loss`` (stage 2 of the paper) a lip-reading expert guides the animator:
L = λ_mse·L_mse + λ_av·L_av + λ_rlv·L_rlv, L_av being the expert's joint CTC/attention
loss on lip windows rendered from the predicted meshes against the utterance's
transcript (:class:`~talkinghead_cli.training.losses.AVLoss`). The expert is frozen
(default) or trained jointly at its own, lower learning rate; validation then also
reports the expert's visual-only CER/WER (greedy CTC) on the predicted meshes.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from talkinghead_cli.articulation_metrics import laplacian_matrix
from talkinghead_cli.checkpoint import load_checkpoint, save_checkpoint
from talkinghead_cli.config import TrainConfig
from talkinghead_cli.data.dataset import (
    Corpus,
    SequenceDataset,
    require_transcripts,
)
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.device import resolve_device
from talkinghead_cli.errors import UserError
from talkinghead_cli.export import rig_payload
from talkinghead_cli.progress import ProgressFn, report
from talkinghead_cli.training.evaluate import evaluate
from talkinghead_cli.training.losses import AVLoss, opening_indices, total_loss
from talkinghead_cli.training.run import LogFn, RunFolder, TrainResult, record_epoch


class _TrainStep(torch.nn.Module):
    """Routes ``training_loss`` (and the AV loss) through ``forward`` so DDP's gradient
    hooks see the animator and, in joint mode, the expert."""

    def __init__(self, model: torch.nn.Module, av: AVLoss | None = None):
        super().__init__()
        self.model = model
        self.av = av

    def forward(self, audio, template, style, target, tokens=None, expert_audio=None):
        """-> (model loss, model logs, pred (1, T, V, 3), ExpertLoss or None)."""
        model_loss, logs, pred = self.model.training_loss(audio, template, style, target)
        av = None
        if self.av is not None and tokens is not None:
            av = self.av(pred, target, [tokens], expert_audio)
        return model_loss, logs, pred, av


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device
    d = _Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def _shard(n: int, epoch: int, seed: int, d: _Dist) -> list[int]:
    """This rank's sequence indices for one epoch: a seeded shuffle, every world-th item,
    padded by wrapping so that every rank takes the same number of steps."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    per_rank = math.ceil(n / d.world)
    order = (order * (per_rank * d.world // n + 1))[: per_rank * d.world]
    return order[d.rank:: d.world]


def build_model(cfg: TrainConfig, corpus: Corpus, saved: dict | None = None):
    """The animator ``cfg`` describes for ``corpus`` (random weights) -> (model, AnimatorConfig);
    ``saved``: the animator config of a checkpoint being resumed."""
    from talkinghead_cli.animator import AnimatorConfig, build_animator

    if saved is not None:
        acfg = AnimatorConfig(**saved)
    else:
        acfg = AnimatorConfig(kind=cfg.animator, size=cfg.size, encoder=cfg.encoder, stage=cfg.stage,
                              num_verts=corpus.num_verts, subjects=corpus.train_subjects,
                              fps=corpus.fps, sample_rate=corpus.sample_rate, **cfg.animator_options)
    return build_animator(acfg), acfg


def animator_payload(model, acfg, cfg: TrainConfig, corpus: Corpus, state: dict | None = None) -> dict:
    """The one-file animator checkpoint of ``model`` trained on ``corpus`` (``state``: the run's
    optimizer, epoch and history, kept under ``extra``)."""
    as_t = lambda a: None if a is None else torch.as_tensor(np.asarray(a))
    return {
        "kind": "animator",
        "config": {"animator": acfg.model_dump(mode="json"), "train": cfg.model_dump(mode="json")},
        "state_dict": model.state_dict(),
        "template": as_t(corpus.templates[corpus.train_subjects[0]]),
        "templates": {s: as_t(t) for s, t in corpus.templates.items()},
        "faces": as_t(corpus.faces),
        "fps": float(corpus.fps),
        "sample_rate": int(corpus.sample_rate),
        "subjects": list(corpus.train_subjects),
        "lip_indices": as_t(corpus.lip_indices),
        "rig": rig_payload(corpus),  # ARKit basis of a synthetic corpus, for `animate --format arkit`
        "upper_indices": as_t(corpus.upper_indices),
        "vocabulary": None,
        "extra": state or {},
    }


def save_animator(path: str | Path, model, acfg, cfg: TrainConfig, corpus: Corpus, state: dict | None = None) -> Path:
    """Write ``model`` as an animator checkpoint that ``avtalk animate`` and ``score`` load
    (atomically; see :func:`animator_payload`)."""
    return save_checkpoint(path, animator_payload(model, acfg, cfg, corpus, state))


def _autocast(device: torch.device, cfg: TrainConfig):
    """(autocast context factory, GradScaler) for this device."""
    if device.type != "cuda" or not cfg.amp:
        return contextlib.nullcontext, torch.amp.GradScaler("cuda", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype),
            torch.amp.GradScaler("cuda", enabled=dtype == torch.float16))


def _batch(item: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    """audio (1, S), template (1, V, 3), style (1, N_subj), verts (1, T, V, 3)."""
    return tuple(item[k][None].to(device) for k in ("audio", "template", "style", "verts"))


def validate(model, dataset: SequenceDataset, device: torch.device, stage: int = 2,
             av: _AV | None = None) -> dict[str, float]:
    """LVE, FDD, MVE over ``dataset``, predicting as ``avtalk animate`` does
    (:func:`~talkinghead_cli.training.evaluate.evaluate`, the loop ``score --dataset`` uses).

    CodeTalker stage 1 (a motion autoencoder) is scored on its reconstructions. With ``av``
    also ``av_cer`` / ``av_wer``: the expert reading the predicted lips visual-only (greedy
    CTC, windows from the ground truth), pooled over the utterances.
    """
    from talkinghead_cli.text_metrics import ErrorRate

    read = None if av is None else (lambda pred, verts, item: av.read_lips(pred, verts))
    ev = evaluate(model, dataset, device, stage=stage, read=read)
    model.train()
    result = dict(ev.metrics)
    rates = ErrorRate()
    for uid, hyp in ev.hypotheses.items():
        rates.add(hyp, av.texts[uid])
    if av is not None and rates.count:
        result.update(av_cer=rates.cer, av_wer=rates.wer)
    return result


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """Multiplier of the base learning rates at optimizer step ``step`` (0-based) of ``steps``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1)))
    return 1.0


@dataclass
class _Loop:
    """What every step of one run uses, built once by :func:`_train`: the animator and what
    updates it (``step``: the :class:`_TrainStep`, DDP-wrapped when ``ddp``; optimizer, loss
    scaler, autocast factory), the loss's fixed inputs (``lip`` indices, the mouth-opening
    pairs ``opening``, the mesh Laplacian ``lap``, the AV loss ``av``), what a checkpoint
    records (``acfg``, ``corpus``) and the event log. ``history`` and ``best`` are the run's
    record so far (rank 0)."""

    cfg: TrainConfig
    model: torch.nn.Module
    acfg: Any
    corpus: Corpus
    device: torch.device
    step: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: Any
    autocast: Callable[[], Any]
    ddp: bool
    lip: torch.Tensor | None
    opening: tuple[torch.Tensor, torch.Tensor] | None
    lap: torch.Tensor | None
    av: _AV | None
    log: LogFn
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)

    def run_epoch(self, data: SequenceDataset, order: list[int], epoch: int,
                  tick: Callable[[dict], None]) -> float:
        """One pass over ``order`` (indices into ``data``) in epoch ``epoch``; returns the mean
        training loss. ``tick(logs)`` after every sequence."""
        cfg, opt, scaler = self.cfg, self.opt, self.scaler
        losses = []
        opt.zero_grad(set_to_none=True)
        per_epoch = -(-len(order) // cfg.batch_size)  # optimizer steps per epoch
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])
        for i, idx in enumerate(order):
            group_start = i - i % cfg.batch_size
            group_size = min(cfg.batch_size, len(order) - group_start)
            last_in_group = i == group_start + group_size - 1
            item = data[idx]
            audio, template, style, verts = _batch(item, self.device)
            av_in = self.av.inputs(item, self.device) if self.av is not None and cfg.lambda_av > 0 else {}
            sync = self.step.no_sync() if self.ddp and not last_in_group else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    model_loss, _, pred, av_out = self.step(audio, template, style, verts, **av_in)
                    loss, logs = total_loss(model_loss, pred, verts, self.lip, cfg.lip_weight,
                                            mse_weight=cfg.lambda_mse, av=av_out, av_weight=cfg.lambda_av,
                                            opening=self.opening, gap_weight=cfg.lambda_gap, closed_weight=cfg.gap_closed_weight,
                                            closed_below=cfg.gap_closed_below, range_weight=cfg.gap_range_weight,
                                            vel_weight=cfg.lambda_vel, lap=self.lap, lap_weight=cfg.lambda_lap)
                scaler.scale(loss / group_size).backward()
            if last_in_group:
                factor = lr_factor(cfg.lr_schedule, epoch * per_epoch + i // cfg.batch_size, cfg.epochs * per_epoch)
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * factor
                if cfg.grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                                   cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            if not math.isfinite(logs["loss"]):
                raise UserError(f"the training loss became {logs['loss']}", cfg.run_dir,
                                "lower --lr or check the data")
            losses.append(logs["loss"])
            tick(logs)
        return float(np.mean(losses)) if losses else float("nan")

    def finish_epoch(self, val_ds: SequenceDataset, epoch: int, loss: float) -> None:
        """Validate, record, save last (and best) checkpoints, log the epoch; rank 0 only."""
        stage = self.acfg.stage if self.acfg.kind == "codetalker" else 2
        val = validate(self.model, val_ds, self.device, stage, self.av) if len(val_ds) else {}
        self.history, self.best, entry, improved = record_epoch(self.history, self.best, epoch, loss, val, "lve")
        self.save(epoch + 1, improved)
        self.log({"event": "epoch", "epochs": self.cfg.epochs, "best": improved, **entry})

    def save(self, epochs_done: int, improved: bool) -> None:
        """``last.pt`` (and ``best.pt`` when ``improved``) and ``metrics.json`` in the run folder."""
        state = {"optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epochs_done,
                 "history": self.history, "best": self.best}
        if self.av is not None:
            state["av"] = self.av.record(self.cfg)
        payload = animator_payload(self.model, self.acfg, self.cfg, self.corpus, state)
        RunFolder(Path(self.cfg.run_dir)).save(lambda path: save_checkpoint(path, payload), self.history,
                                               self.best, improved)


def _load_resume(cfg: TrainConfig) -> dict | None:
    ckpt = RunFolder(Path(cfg.run_dir)).resume(cfg.resume, "animator")
    if ckpt is None:
        return None
    last = Path(cfg.run_dir) / "last.pt"
    saved = ckpt["config"]["train"]
    for key in ("dataset", "animator", "size", "stage"):
        if str(saved[key]) != str(getattr(cfg, key)):
            raise UserError(f"the run was trained with {key}={saved[key]}, not {getattr(cfg, key)}",
                            last, f"pass --{key} {saved[key]} or another -o folder")
    return ckpt


def train(cfg: TrainConfig, progress: ProgressFn | None = None, log: LogFn | None = None) -> TrainResult:
    """Train an animator as ``cfg`` says; see the module docstring.

    Args:
        progress: called with (sequences done, total sequences) over all epochs.
        log: called with ``{"event": "start"|"epoch", ...}`` dicts (epoch, loss, val metrics);
            also ``"init"``, ``"expert"`` (the AV loss's expert) and ``"warning"`` (``message``).
    """
    device = resolve_device(cfg.device)
    d, device = _init_distributed(device)
    try:
        return _train(cfg, device, d, progress, log or (lambda e: None))
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, device, d: _Dist, progress, log) -> TrainResult:
    resumed = _load_resume(cfg)
    if resumed is not None:
        keep = ("lr", "lr_schedule", "batch_size", "grad_clip", "lip_weight", "seed", "encoder", "animator_options",
                "augment", "lambda_gap", "lambda_vel", "lambda_lap", "gap_closed_weight", "gap_closed_below", "gap_range_weight",
                "keep_60fps", *(k for k in _AV_KEYS if k != "expert" or cfg.expert is None))
        # validated again, so nested settings (augment) come back as models, not dicts
        cfg = TrainConfig.model_validate({**cfg.model_dump(),
                                          **{k: v for k, v in resumed["config"]["train"].items() if k in keep}})
    corpus = open_corpus(cfg.dataset, cfg.data_root, keep_60fps=cfg.keep_60fps, faces_from=cfg.faces_from)
    if cfg.lambda_lap > 0 and corpus.faces is None:
        raise UserError("--lambda-lap needs the mesh faces and the dataset has none", cfg.data_root,
                        "pass --faces-from MESH")
    torch.manual_seed(cfg.seed)
    model, acfg = build_model(cfg, corpus, None if resumed is None else resumed["config"]["animator"])
    _check_corpus_matches(acfg, corpus, cfg)
    model.to(device)
    if resumed is None:
        _init_weights(model, acfg, cfg, log if d.main else (lambda e: None))
    av = setup_av_loss(cfg, corpus, acfg, device, resumed, log if d.main else (lambda e: None))
    opt = _optimizer(cfg, model, av)
    autocast, scaler = _autocast(device, cfg)
    start, history, best = 0, [], {}
    if resumed is not None:
        model.load_state_dict(resumed["state_dict"])
        opt.load_state_dict(resumed["extra"]["optimizer"])
        scaler.load_state_dict(resumed["extra"]["scaler"])
        start, history, best = (int(resumed["extra"]["epoch"]), list(resumed["extra"]["history"]),
                                dict(resumed["extra"]["best"]))
    _attach_feature_cache(model, corpus, progress if d.main else None, log if d.main else (lambda e: None))
    ddp = d.world > 1
    step_module = _TrainStep(model, None if av is None else av.module)
    if ddp:
        ids = [device.index] if device.type == "cuda" else None
        step_module = torch.nn.parallel.DistributedDataParallel(step_module, device_ids=ids,
                                                                find_unused_parameters=True)
    train_ds = SequenceDataset(corpus, corpus.split("train"), acfg.sample_rate)
    if cfg.augment is not None:
        from talkinghead_cli.data.augment import AugmentedDataset
        from talkinghead_cli.training.features import AUGMENTED

        train_ds = AugmentedDataset(train_ds, cfg.augment, cfg.seed)
        store = getattr(model.audio_encoder, "feature_store", None)
        if store is not None and d.main and not any(AUGMENTED in f.stem for f in store.files.values()):
            log({"event": "warning", "message": f"--augment with {acfg.encoder}: no perturbed audio is in the "
                 "feature cache, so its features are computed at every step (up to ~0.9 s per sequence on 2 CPU "
                 f"cores); `avtalk features --augment --seed {cfg.seed} --epochs {cfg.epochs}` caches them first"})
    val_ds = SequenceDataset(corpus, corpus.split("val"), acfg.sample_rate)
    lip = None if corpus.lip_indices is None else torch.as_tensor(corpus.lip_indices)
    loop = _Loop(cfg, model, acfg, corpus, device, step_module, opt, scaler, autocast, ddp, lip,
                 *_shape_terms(cfg, corpus, lip, device), av, log, history, best)
    per_epoch = len(_shard(len(train_ds), 0, cfg.seed, d))
    total = cfg.epochs * per_epoch
    if d.main:
        _clean_run_dir(Path(cfg.run_dir))
        log({"event": "start", "epoch": start, "epochs": cfg.epochs, "train": len(train_ds),
             "val": len(val_ds), "device": str(device), "world": d.world, "resumed": resumed is not None})
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        done = epoch * per_epoch
        counter = {"i": 0}

        def tick(logs, counter=counter, done=done):
            counter["i"] += 1
            report(progress if d.main else None, done + counter["i"], total)

        loss = loop.run_epoch(train_ds, _shard(len(train_ds), epoch, cfg.seed, d), epoch, tick)
        if d.main:
            loop.finish_epoch(val_ds, epoch, loss)
        if ddp:
            dist.barrier()
    return TrainResult(Path(cfg.run_dir), cfg.epochs, loop.best.get("epoch"), loop.best, loop.history)


def _shape_terms(cfg: TrainConfig, corpus: Corpus, lip: torch.Tensor | None, device: torch.device):
    """The fixed inputs of the lip-gap and Laplacian terms, on ``device`` once for the run ->
    (opening pairs, (V, V) sparse Laplacian), each None when its weight is 0 (or, for the gap,
    without lip indices)."""
    template = corpus.templates[corpus.train_subjects[0]]
    opening = None
    if lip is not None and cfg.lambda_gap > 0:
        opening = tuple(i.to(device) for i in opening_indices(torch.as_tensor(template), lip))
    lap = laplacian_matrix(corpus.faces, len(template)).to(device) if cfg.lambda_lap > 0 else None
    return opening, lap


def subject_rows(state: dict, own: dict, old: list[str], new: list[str]) -> tuple[dict, list[str]]:
    """Fit ``state`` (weights trained on the subjects ``old``) to a model trained on ``new``.

    A tensor whose shape differs from the model's only along one axis that is len(old) in
    ``state`` and len(new) in the model (FaceFormer's ``obj_vector.weight`` (d, N),
    CodeTalker's style embedding (N, d)) is a per-subject table: a subject of the same name
    keeps its row, a new subject starts at the mean of the old rows (an average style).
    Returns (the state to load, the names of the tensors refitted); every other tensor is
    passed as it is (a mismatch there still fails in ``load_state_dict``).
    """
    if not old or old == new:
        return state, []
    state, moved = dict(state), []
    for key, value in state.items():
        mine = own.get(key)
        if mine is None or mine.shape == value.shape or mine.dim() != value.dim():
            continue
        axes = [i for i in range(value.dim()) if value.shape[i] != mine.shape[i]]
        if len(axes) != 1 or value.shape[axes[0]] != len(old) or mine.shape[axes[0]] != len(new):
            continue
        ax = axes[0]
        mean = value.mean(dim=ax, keepdim=True)
        rows = [value.narrow(ax, old.index(name), 1) if name in old else mean for name in new]
        state[key] = torch.cat(rows, dim=ax).to(value.dtype)
        moved.append(key)
    return state, moved


def _init_weights(model, acfg, cfg: TrainConfig, log: LogFn) -> None:
    """Start from ``cfg.init_from`` (CodeTalker stage 2: stage 1's codebook and decoder)."""
    stage2 = acfg.kind == "codetalker" and acfg.stage == 2
    if cfg.init_from is None:
        if stage2:
            raise UserError("CodeTalker stage 2 needs the stage-1 motion codebook", cfg.data_root,
                            "train --stage 1 first, then pass --init-from RUN_DIR/best.pt")
        return
    init = load_checkpoint(cfg.init_from, kind="animator")
    try:
        if stage2 and hasattr(model, "load_stage1"):
            model.load_stage1(init["state_dict"])
            missing, unexpected = [], []
        else:
            state, moved = subject_rows(init["state_dict"], model.state_dict(), list(init.get("subjects") or []),
                                        list(acfg.subjects))
            missing, unexpected = model.load_state_dict(state, strict=False)
            if moved:  # said once the weights have loaded
                log({"event": "init_subjects", "tensors": moved,
                     "kept": sorted(set(acfg.subjects) & set(init.get("subjects") or []))})
    except RuntimeError as e:
        raise UserError("the --init-from weights do not fit this model (another size or topology)",
                        cfg.init_from, "pass a checkpoint trained on this dataset with this --size") from e
    log({"event": "init", "path": str(cfg.init_from), "missing": len(missing), "unexpected": len(unexpected)})


def _attach_feature_cache(model, corpus: Corpus, progress, log: LogFn) -> None:
    """Encoders with frozen pretrained features (whisper-tiny-ct2) read them from the corpus's
    feature cache; the missing ones are computed first (``progress`` counts utterances)."""
    from talkinghead_cli.training.features import attach_features

    utts = [u for u in corpus.utterances if u.split in ("train", "val")]
    attach_features(model, corpus.root, utts, progress, on_start=lambda todo, cached: log(
        {"event": "features", "encoder": model.cfg.encoder, "compute": todo, "cached": cached}))


def _clean_run_dir(run_dir: Path) -> None:
    """Create the run folder and drop temporaries a killed run left behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("last.pt", "best.pt", "metrics.json"):
        for stale in run_dir.glob(f".{name}.tmp-*"):
            stale.unlink(missing_ok=True)


def _check_corpus_matches(acfg, corpus: Corpus, cfg: TrainConfig) -> None:
    if acfg.num_verts != corpus.num_verts or list(acfg.subjects) != list(corpus.train_subjects):
        raise UserError("the dataset does not match the run being resumed (vertex count or subjects)",
                        cfg.data_root, "resume with the dataset the run was started on")


# ----------------------------------------------------------------------------- audio-visual loss

_AV_KEYS = ("av_loss", "expert", "lambda_mse", "lambda_av", "av_ctc_weight", "av_label_smoothing",
            "av_reduction", "expert_mode", "expert_lr", "av_mode", "av_smooth")


@dataclass
class _AV:
    """What the AV loss needs at each step: the loaded expert, the loss module built from it,
    token ids and transcripts per utterance id, and the corpus's audio rate."""

    expert: Expert
    module: AVLoss
    tokens: dict[str, list[int]]
    texts: dict[str, str]
    corpus_rate: int

    def inputs(self, item: dict, device) -> dict:
        """Keyword arguments of ``_TrainStep.forward`` for one dataset item."""
        audio = None
        if self.module.mode == "av":
            wave = item["audio"].numpy()
            if self.corpus_rate != self.expert.sample_rate:
                from talkinghead_cli.audio import resample

                wave = resample(wave, self.corpus_rate, self.expert.sample_rate)
            audio = torch.as_tensor(wave, dtype=torch.float32)[None].to(device)
        return {"tokens": self.tokens[item["id"]], "expert_audio": audio}

    def read_lips(self, pred: torch.Tensor, verts: torch.Tensor) -> str:
        """Greedy-CTC visual-only transcript of pred (1, T, V, 3), windows from verts (1, T', V, 3)."""
        from talkinghead_cli.lipreader.views import lip_video

        t = min(pred.shape[1], verts.shape[1])
        m = self.module
        video = lip_video(pred[:, :t].float(), m.faces, m.lip, m.fps, window_from=verts[:, :t].float(),
                          **m.render)
        return self.expert.read(video)

    def record(self, cfg: TrainConfig) -> dict:
        """What a run checkpoint keeps about the expert (its weights too when trained jointly)."""
        out = {"expert": str(self.expert.path), "vocabulary": list(self.expert.tokenizer.vocabulary),
               "lambda_mse": cfg.lambda_mse, "lambda_av": cfg.lambda_av, "lambda_rlv": cfg.lip_weight,
               "lambda_ctc": cfg.av_ctc_weight, "lambda_ce": 1.0 - cfg.av_ctc_weight,
               "label_smoothing": cfg.av_label_smoothing, "reduction": cfg.av_reduction,
               "expert_mode": cfg.expert_mode, "av_mode": cfg.av_mode, "av_smooth": cfg.av_smooth}
        if not self.module.frozen:
            out["expert_state_dict"] = self.module.expert.state_dict()
        return out


def _tokenize_all(tokenizer, texts: dict[str, str], ids: list[str], log: LogFn) -> dict[str, list[int]]:
    """Token ids per utterance; what normalisation or the vocabulary dropped is reported once."""
    dropped: list[str] = []
    tokens = {}
    for uid in ids:
        ids_, gone = tokenizer.encode(texts[uid])
        unknown = [i for i in ids_ if i == tokenizer.unk]
        dropped += [c for c in gone if c not in dropped]
        if unknown and "<unk>" not in dropped:
            dropped.append("<unk>")
        tokens[uid] = [i for i in ids_ if i != tokenizer.unk]
        if not tokens[uid]:
            raise UserError(f"the transcript of {uid} has nothing the expert can read: {texts[uid]!r}",
                            None, "fix the transcript or drop the utterance")
    if dropped:
        msg = f"transcripts: characters outside the expert's vocabulary dropped: {' '.join(map(repr, dropped))}"
        log({"event": "warning", "message": msg})
    return tokens


def setup_av_loss(cfg: TrainConfig, corpus: Corpus, acfg, device, resumed: dict | None = None,
                  log: LogFn = lambda e: None) -> _AV | None:
    """Load and check the expert and the transcripts for ``--av-loss`` (None without it)."""
    if not cfg.av_loss:
        return None
    from talkinghead_cli.lipreader.expert import open_expert

    saved = (resumed or {}).get("extra", {}).get("av")
    if not Path(cfg.expert).is_file():
        raise UserError("the expert checkpoint was not found", cfg.expert,
                        "pass --expert RUN_DIR/best.pt from avtalk finetune-expert")
    reader = open_expert(cfg.expert, device, vocabulary=saved["vocabulary"] if saved else None, reads_lips=False)
    expert, tokenizer, mods = reader.model, reader.tokenizer, reader.modalities
    if mods == "audio" or (cfg.av_mode == "av" and mods != "av"):
        raise UserError(f"the expert reads {mods!r}, --av-mode {cfg.av_mode} needs "
                        f"{'lips' if mods == 'audio' else 'lips and speech'}", cfg.expert,
                        "pass an expert trained on lip video (finetune-expert --modalities av)")
    if corpus.faces is None or corpus.lip_indices is None:
        raise UserError("--av-loss renders the lips: the dataset needs mesh faces and regions/lve.txt",
                        cfg.data_root, "pass --faces-from MESH and add regions/lve.txt")
    needed = [u.id for u in corpus.utterances if u.split in ("train", "val")]
    texts = require_transcripts(corpus, needed, "--av-loss needs a transcript per utterance")
    tokens = _tokenize_all(tokenizer, texts, needed, log)
    if saved and "expert_state_dict" in saved:
        expert.load_state_dict(saved["expert_state_dict"])
    module = AVLoss(expert, torch.as_tensor(corpus.faces), torch.as_tensor(corpus.lip_indices), corpus.fps,
                    frozen=cfg.expert_mode == "frozen", mode=cfg.av_mode, ctc_weight=cfg.av_ctc_weight,
                    label_smoothing=cfg.av_label_smoothing, reduction=cfg.av_reduction,
                    render=reader.render,
                    smooth_lap=laplacian_matrix(corpus.faces, corpus.num_verts) if cfg.av_smooth else None,
                    smooth_steps=cfg.av_smooth).to(device)
    log({"event": "expert", "path": str(cfg.expert), "mode": cfg.expert_mode, "modalities": mods})
    return _AV(reader, module, tokens, texts, int(acfg.sample_rate))


def _optimizer(cfg: TrainConfig, model, av: _AV | None) -> torch.optim.Optimizer:
    """Adam over the animator at ``lr`` and, in joint mode, the expert at ``expert_lr`` (lr / 10)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    if av is not None and not av.module.frozen:
        groups.append({"params": [p for p in av.module.expert.parameters() if p.requires_grad],
                       "lr": cfg.expert_lr or cfg.lr / 10})
    return torch.optim.Adam(groups, lr=cfg.lr)
