"""Speech in, mesh sequence out: the library function behind ``avtalk animate``.

``animate(cfg)`` loads an animator checkpoint, a template and the speech, predicts the
vertex sequence and writes, atomically, into ``cfg.out``::

    vertices.npy     (T, V, 3) float32
    face.npz         template, faces, lip/upper-face indices, fps (for ``avtalk score``)
    meshes/          frame_00000.obj ... (or .ply; --format is a comma list of obj, ply,
                     npy (vertices.npy only), npz (sequence.npz), gltf (animation.glb:
                     morph targets + animation), arkit (arkit.csv/json, models with a rig))
    preview.mp4      the sequence rendered with the speech (unless --no-video)
    animation.json   fps, sample rate, model, template, duration, frames, style

One speech file gives one such set in ``out/``; several files, folders or globs give one
set per file under ``out/<stem>/`` (``out/<stem>-2/``... when two inputs share a stem).
Only these names are replaced in an output folder; anything else there is left alone.

Long audio is animated in windows of ``window_seconds`` that overlap by
``overlap_seconds``, linearly cross-faded in vertex space; window sizes in frames come
from the model's own fps and sample rate. Only one window's model state is alive at a
time and the vertices are written into a memory-mapped ``vertices.npy`` whose size is
reserved on disk first (a retargeted mesh is written block by block instead), so memory
stays bounded however long the speech and however large the template. The output's size is
estimated and checked against the free space before any work.
Shapes: S samples, T frames, V vertices, F faces.
"""

from __future__ import annotations

import glob
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from talkinghead_cli.atomic import atomic_outputs
from talkinghead_cli.audio import ACCEPTED, AUDIO_SUFFIXES, is_audio_file, load_audio
from talkinghead_cli.checkpoint import load_checkpoint
from talkinghead_cli.config import AnimateConfig
from talkinghead_cli.device import resolve_device
from talkinghead_cli.diskspace import animate_bytes, check_room, reserved_npy, stream_npy
from talkinghead_cli.errors import UserError
from talkinghead_cli.export import rig_for_formats, write_formats
from talkinghead_cli.mesh import Mesh, load_template
from talkinghead_cli.pretrained import resolve
from talkinghead_cli.progress import ProgressFn, report
from talkinghead_cli.style import parse_style

if TYPE_CHECKING:
    from talkinghead_cli.retarget import Retargeting

__all__ = ["AUDIO_SUFFIXES", "AnimationResult", "animate", "speech_inputs"]


@dataclass
class AnimationResult:
    """What was written for one speech file."""

    audio: Path
    out_dir: Path  # final location
    frames: int = 0
    duration: float = 0.0
    fps: float = 0.0
    notes: list[str] = field(default_factory=list)  # retargeting and export figures, one line each
    files: list[str] = field(default_factory=list)  # written into out_dir ("meshes/" for a folder)
    seconds: float = 0.0  # wall time of this input
    error: str | None = None  # one line when this input failed (nothing written for it)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return {"input": str(self.audio), "status": "ok" if self.ok else "failed", "error": self.error,
                "output": str(self.out_dir), "files": self.files, "frames": self.frames, "fps": self.fps,
                "duration": self.duration, "seconds": round(self.seconds, 3)}


# ----------------------------------------------------------------------------- model and inputs


def load_animator(path: str | Path, device: torch.device):
    """Rebuild an animator from a one-file checkpoint. Returns (model in eval mode, ckpt)."""
    from talkinghead_cli.animator import AnimatorConfig, build_animator

    ckpt = load_checkpoint(path, kind="animator")
    try:
        acfg = AnimatorConfig(**ckpt["config"]["animator"])
        model = build_animator(acfg)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"the checkpoint does not rebuild an animator ({type(e).__name__})", path,
                        "pass a checkpoint written by `avtalk train`") from e
    return model.to(device).eval(), ckpt


def resolve_template(cfg: AnimateConfig, ckpt: dict) -> Mesh:
    """The template to animate: ``cfg.template`` (any topology; see :func:`_retargeting`) or
    the checkpoint's training template."""
    faces = None if ckpt.get("faces") is None else ckpt["faces"].numpy()
    if cfg.template is None:
        verts = ckpt["template"].numpy()
        if faces is None:
            return Mesh(verts.astype(np.float32), np.zeros((0, 3), np.int64))
        return Mesh(verts.astype(np.float32), faces.astype(np.int64))
    return load_template(cfg.template, faces=faces)


def _retargeting(cfg: AnimateConfig, ckpt: dict, mesh: Mesh,
                 progress: ProgressFn | None = None) -> tuple[Retargeting | None, dict]:
    """Retargeting of a template of another topology (or with ``--landmarks``), and the
    checkpoint as seen on the user's mesh (lip/upper-face indices mapped onto it)."""
    if cfg.template is None:
        if cfg.landmarks is not None:
            raise UserError("--landmarks needs --template", cfg.landmarks, "pass your face mesh with --template")
        return None, ckpt
    from talkinghead_cli.retarget import (
        for_checkpoint,  # scipy: imported only when a template is given
    )

    rt = for_checkpoint(ckpt, mesh, cfg.template, cfg.landmarks, progress=progress)
    if rt is None:
        return None, ckpt
    mapped = {k: rt.map_indices(None if ckpt.get(k) is None else ckpt[k].numpy())
              for k in ("lip_indices", "upper_indices")}
    return rt, {**ckpt, **{k: None if v is None else torch.from_numpy(v) for k, v in mapped.items()}}


# ----------------------------------------------------------------------------- windowing


def window_plan(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Frame ranges [start, end) covering ``num_frames``; neighbours share ``overlap`` frames."""
    if window <= 2 * overlap:
        raise ValueError("the window must be longer than twice the overlap")
    starts = [0]
    while starts[-1] + window < num_frames:
        starts.append(starts[-1] + window - overlap)
    return [(s, min(s + window, num_frames)) for s in starts]


def crossfade_weights(overlap: int) -> np.ndarray:
    """Weights (overlap,) of the incoming window across an overlap: a linear ramp in (0, 1)."""
    return (np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1))


@torch.no_grad()
def predict_windowed(model, audio: np.ndarray, template: torch.Tensor, style: torch.Tensor,
                     out: np.ndarray, window: int, overlap: int,
                     progress: ProgressFn | None = None) -> np.ndarray:
    """Animate ``audio`` window by window into ``out``.

    Args:
        audio: (S,) float32 at ``model.sample_rate``.
        template: (V, 3) on the model's device; style: (N_subj,).
        out: (T, V, 3) float32 to fill (may be a memory map), T = model.num_frames(S).
        window, overlap: in frames.
        progress: called with (frames done, T).
    Returns:
        ``out``.
    """
    total = out.shape[0]
    spf = model.sample_rate / model.fps
    device = template.device
    prev_end = 0
    for start, end in window_plan(total, window, overlap):
        a0, a1 = int(round(start * spf)), min(len(audio), int(round(end * spf)))
        chunk = torch.from_numpy(np.ascontiguousarray(audio[a0:a1]))[None].to(device)
        pred = model.predict(chunk, template[None], style[None].to(device), num_frames=end - start)
        pred = pred[0, : end - start].float().cpu().numpy()
        shared = prev_end - start
        if shared > 0:
            w = crossfade_weights(shared)[:, None, None]
            out[start:prev_end] = (1 - w) * out[start:prev_end] + w * pred[:shared]
        out[max(start, prev_end):end] = pred[max(shared, 0):]
        prev_end = end
        report(progress, end, total)
    return out


# ----------------------------------------------------------------------------- one file


def speech_inputs(inputs: list[Path]) -> tuple[list[Path], list[AnimationResult], list[Path]]:
    """Expand the speech arguments: files, folders (their audio files, sorted) and globs.

    Returns:
        (speech files in order without repeats, a failed result per argument that names
        nothing usable, files of a folder or glob skipped for their suffix).
    """
    files, failed, skipped = [], [], []
    for arg in inputs:
        text = str(arg)
        if not arg.exists() and glob.has_magic(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            picked = [m for m in matches if m.is_file() and is_audio_file(m)]
            skipped += [m for m in matches if m.is_file() and not is_audio_file(m)]
            if not picked:
                failed.append(AnimationResult(arg, Path(), error=f"no speech file matches '{text}'"))
            files += picked
        elif not arg.exists():
            failed.append(AnimationResult(arg, Path(), error=f"speech file or folder not found, {arg}, check the path"))
        elif arg.is_dir():
            entries = sorted(p for p in arg.iterdir() if p.is_file() and not p.name.startswith("."))
            picked = [p for p in entries if is_audio_file(p)]
            skipped += [p for p in entries if not is_audio_file(p)]
            if not picked:
                failed.append(AnimationResult(arg, Path(), error=f"the folder holds no speech files, {arg}, "
                                                             f"give {ACCEPTED}"))
            files += picked
        else:
            files.append(arg)  # a file named explicitly is tried whatever its suffix
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, failed, skipped


def output_names(files: list[Path]) -> list[str]:
    """One sub-folder name per speech file: its stem, and ``stem-2``, ``stem-3``... (in input
    order) for later files whose stem is taken, so no two inputs share a folder."""
    taken, names = set(), []
    for f in files:
        name, k = f.stem or "speech", 2
        while name in taken:
            name, k = f"{f.stem}-{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


def _previous_outputs(folder: Path) -> list[str]:
    """Top-level names an earlier ``avtalk animate`` wrote into ``folder`` (its animation.json)."""
    try:
        meta = json.loads((folder / "animation.json").read_text())
        return sorted({str(f).split("/")[0] for f in meta.get("files", [])} | {"animation.json"})
    except (OSError, ValueError, AttributeError, TypeError):
        return []


def _warm_preview() -> threading.Thread:
    """Start loading the preview's compiled kernels on a thread (:func:`~talkinghead_cli.video.warm_preview`)
    so that it overlaps the model's loading and prediction."""

    def run() -> None:
        try:
            from talkinghead_cli.video import warm_preview

            warm_preview()
        except Exception:  # noqa: BLE001 - only a head start: the preview itself reports any failure
            pass

    thread = threading.Thread(target=run, name="avtalk-warm-preview", daemon=True)
    thread.start()
    return thread


def _write_preview(verts, mesh: Mesh, path: Path, fps: float, audio: np.ndarray, sample_rate: int,
                   warm: threading.Thread | None = None) -> None:
    from talkinghead_cli.video import render_preview

    if warm is not None:
        warm.join()
    render_preview(verts, mesh.faces, path, fps=fps, audio=audio, sample_rate=sample_rate, template=mesh.verts)


def _animate_one(cfg: AnimateConfig, model, ckpt: dict, mesh: Mesh, style: torch.Tensor,
                 wav: Path, dest: Path, final: Path, progress: ProgressFn | None,
                 rt: Retargeting | None = None, rig: tuple | None = None,
                 warm: threading.Thread | None = None) -> AnimationResult:
    """Write vertices.npy, meshes, preview and animation.json of one file into ``dest``."""
    device = next(model.parameters()).device
    audio = load_audio(wav, model.sample_rate, allow_long=cfg.allow_long)
    fps = float(model.fps)
    num_frames = int(model.num_frames(len(audio)))
    dest.mkdir(parents=True, exist_ok=True)
    window = max(2, int(round(cfg.window_seconds * fps)))
    overlap = min(int(round(cfg.overlap_seconds * fps)), (window - 1) // 2)
    source = mesh if rt is None else rt.source  # the mesh the model animates
    # memory maps with their size reserved on disk: a full disk is an ENOSPC here, never a SIGBUS later
    pred = reserved_npy(dest / ("vertices.npy" if rt is None else ".model_vertices.npy"),
                        (num_frames, source.num_verts, 3))
    predict_windowed(model, audio, torch.from_numpy(source.verts).to(device), style, pred, window, overlap, progress)
    pred.flush()
    if rt is None:
        out = pred
    else:  # the user's (maybe huge) mesh: written block by block, never held or mapped for writing
        stream_npy(dest / "vertices.npy", (num_frames, mesh.num_verts, 3),
                   (block for _, block in rt.transfer_chunks(pred, source.verts, mesh.verts)))
        out = np.load(dest / "vertices.npy", mmap_mode="r")
    _write_face(dest / "face.npz", mesh, ckpt, fps)
    files = ["vertices.npy", "face.npz"]
    needs_faces = any(f not in ("npy", "arkit", "livelink") for f in cfg.formats) or cfg.video
    if needs_faces and len(mesh.faces) == 0:
        raise UserError("the checkpoint carries no faces, so meshes and video cannot be written",
                        cfg.checkpoint, "pass --template with faces, or --format npy --no-video")
    # the preview renders (numba threads + an ffmpeg process) while this thread writes the mesh
    # files: on 2 cores that hides most of the OBJ writing (benchmarks/bench_animate.py); leaving
    # the pool waits for the render, also when the mesh writing failed
    with ThreadPoolExecutor(1) as pool:
        video = pool.submit(_write_preview, out, mesh, dest / "preview.mp4", fps, audio,
                            model.sample_rate, warm) if cfg.video else None
        written, exported = write_formats(cfg.formats, dest, out, mesh.verts, mesh.faces, fps, rig,
                                          (pred, source.verts), duration=len(audio) / model.sample_rate,
                                          visuals=mesh.visuals)
    files += written
    if video is not None:
        video.result()  # re-raises the preview's error
        files.append("preview.mp4")
    if rt is not None:
        del pred
        (dest / ".model_vertices.npy").unlink()
    duration = len(audio) / model.sample_rate
    meta = {"fps": fps, "sample_rate": int(model.sample_rate), "frames": num_frames,
            "duration": duration, "audio": str(wav),
            "model": {"checkpoint": str(cfg.checkpoint), **_model_card(ckpt)},
            "template": str(cfg.template) if cfg.template else "checkpoint training template",
            "num_verts": mesh.num_verts, "style": dict(zip(ckpt["subjects"], style.tolist())),
            "format": cfg.format, "window_frames": window, "overlap_frames": overlap,
            "files": files + ["animation.json"]}
    meta.update(retarget=None if rt is None else rt.info(), exports=exported)
    (dest / "animation.json").write_text(json.dumps(meta, indent=1))
    return AnimationResult(wav, final, num_frames, duration, fps, _notes(meta), files=meta["files"])


def _notes(meta: dict) -> list[str]:
    """Human-readable lines of the retargeting and export figures in ``meta``."""
    notes = []
    if meta.get("retarget"):
        r = meta["retarget"]
        e = r["alignment_error"]
        bent = (" + non-rigid" if r.get("nonrigid") else "") + (", cached" if r.get("cached") else "")
        notes.append(f"retargeted ({r['method']} alignment{bent}): error {100 * e['mean']:.2f} % mean, "
                     f"{100 * e['p95']:.2f} % p95 of the face size; {r['moving_vertices']} of {r['num_verts']} "
                     "vertices move")
    ex = meta.get("exports") or {}
    if "gltf" in ex:
        g = ex["gltf"]
        rig = f" ({g['rig_blendshapes']} ARKit blendshapes + residuals)" if g.get("rig_blendshapes") else ""
        notes.append(f"animation.glb: {g['morph_targets']} morph targets{rig}, "
                     f"{100 * g['relative_error']:.2f} % reconstruction error, largest vertex error "
                     f"{g['max_vertex_error']:.2g} (mesh units)")
    if "arkit" in ex:
        notes.append(f"ARKit curves: {ex['arkit']['blendshapes']} rig blendshapes solved, "
                     f"{100 * ex['arkit']['relative_error']:.1f} % fit error")
    return notes


def _write_face(path: Path, mesh: Mesh, ckpt: dict, fps: float) -> None:
    """face.npz: what scoring needs to render the sequence on its own (``avtalk score``).

    ``template`` (V, 3) float32, ``faces`` (F, 3) int64 (may be empty), ``lip_indices`` and
    ``upper_indices`` (N,) int64 (empty when the checkpoint has none), ``fps``.
    """
    idx = lambda k: np.zeros(0, np.int64) if ckpt.get(k) is None else ckpt[k].numpy().astype(np.int64)  # noqa: E731
    with open(path, "wb") as fh:
        np.savez(fh, template=mesh.verts.astype(np.float32), faces=mesh.faces.astype(np.int64),
                 lip_indices=idx("lip_indices"), upper_indices=idx("upper_indices"), fps=np.float64(fps))


def _model_card(ckpt: dict) -> dict:
    a = ckpt["config"]["animator"]
    return {"kind": a.get("kind"), "size": a.get("size"), "encoder": a.get("encoder")}


def planned_frames(files: list[Path], model) -> list[int]:
    """Frames the model will make for each speech file, from the files' headers (0 where
    the header cannot be read: the decoder reports that file later)."""
    import soundfile as sf

    frames = []
    for f in files:
        try:
            info = sf.info(str(f))
            samples = info.frames * model.sample_rate / max(info.samplerate, 1)
        except Exception:  # noqa: BLE001 - any unreadable header: counted as 0, refused by load_audio
            samples = 0
        frames.append(int(model.num_frames(int(samples))) if samples > 0 else 0)
    return frames


def check_output_room(cfg: AnimateConfig, files: list[Path], model, ckpt: dict, mesh: Mesh) -> int:
    """Estimate what ``animate`` will write (:func:`~talkinghead_cli.diskspace.animate_bytes`)
    and refuse before any work when the output's filesystem lacks the room. Returns bytes."""
    model_verts = int(ckpt["config"]["animator"]["num_verts"])
    retarget = model_verts if (cfg.template is not None and mesh.num_verts != model_verts) or cfg.landmarks else None
    need = sum(animate_bytes(t, mesh.verts, mesh.faces, cfg.formats, cfg.video, retarget)
               for t in planned_frames(files, model))
    check_room(cfg.out, need, f"animating {len(files)} file{'s' if len(files) > 1 else ''}",
               per_frame_files=any(f in ("obj", "ply") for f in cfg.formats))
    return need


def animate(cfg: AnimateConfig, progress: ProgressFn | None = None,
            log: Callable[[AnimationResult], None] | None = None,
            align_progress: ProgressFn | None = None) -> list[AnimationResult]:
    """Animate each speech input into ``cfg.out``.

    One speech file given alone is written into ``cfg.out`` itself; several inputs, a
    folder or a glob give ``cfg.out/<stem>/`` each (``<stem>-2``... for repeated stems).
    Each input's outputs are committed on their own (:func:`atomic_outputs`): files of other
    names in the output folder are never touched, and a bad input is reported and skipped
    without losing the others. The output's size is estimated first and a filesystem without
    the room is refused before any work.

    Args:
        progress: called with (frames predicted, total frames) per file.
        log: called with each input's result as soon as it is done (or failed).
        align_progress: called with (percent, 100) while a template of another topology is aligned.
    Returns:
        one :class:`AnimationResult` per input, failed ones with ``error`` set.
    Raises:
        UserError: nothing to animate, bad checkpoint, a template that is not a face-like
            triangle mesh, bad landmarks, a model without a rig for ``arkit``, unknown style,
            not enough free space for the estimated output (a bad audio input of a batch is
            reported in its result instead).
        OSError: ENOSPC when the disk fills up anyway (the temporary folder is removed).
    """
    files, failed, _ = speech_inputs(list(cfg.audio))
    if not files:
        raise UserError(failed[0].error if len(failed) == 1 else "no speech file among the inputs", None,
                        None if len(failed) == 1 else f"give {ACCEPTED}")
    single = len(cfg.audio) == 1 and Path(cfg.audio[0]).is_file()
    cfg = cfg.model_copy(update={"checkpoint": resolve(cfg.checkpoint, "animator")})
    warm = _warm_preview() if cfg.video else None  # overlaps the model's loading and prediction
    try:
        device = resolve_device(cfg.device)
        model, ckpt = load_animator(cfg.checkpoint, device)
        mesh = resolve_template(cfg, ckpt)
        check_output_room(cfg, files, model, ckpt, mesh)  # before the alignment and the prediction
        rt, ckpt = _retargeting(cfg, ckpt, mesh, align_progress)
        rig = rig_for_formats(ckpt, cfg.formats, cfg.checkpoint)
        style = parse_style(cfg.style, list(ckpt["subjects"]), cfg.checkpoint)
        results = list(failed)
        for r in failed:
            if log is not None:
                log(r)
        names = [""] if single else output_names(files)
        for wav, name in zip(files, names):
            final = Path(cfg.out) / name
            start = time.perf_counter()
            try:
                with atomic_outputs(final, stale=_previous_outputs(final)) as tmp:
                    r = _animate_one(cfg, model, ckpt, mesh, style, wav, tmp, final, progress, rt, rig, warm)
            except UserError as e:
                if single:
                    raise
                r = AnimationResult(wav, final, error=e.line())
            r.seconds = time.perf_counter() - start
            results.append(r)
            if log is not None:
                log(r)
        return results
    finally:  # an early refusal must not leave the thread inside numba as the interpreter exits
        if warm is not None:
            warm.join()


def summary(results: list[AnimationResult], cfg: AnimateConfig, seconds: float) -> dict:
    """The machine-readable summary of a run (``avtalk animate --json``)."""
    return {"inputs": [str(p) for p in cfg.audio], "output": str(cfg.out),
            "checkpoint": str(cfg.checkpoint), "formats": cfg.formats, "seconds": round(seconds, 3),
            "succeeded": sum(r.ok for r in results), "failed": sum(not r.ok for r in results),
            "results": [r.to_json() for r in results]}
