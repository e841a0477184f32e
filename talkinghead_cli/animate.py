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

A folder of WAVs gives one such set per file under ``out/<stem>/``.

Long audio is animated in windows of ``window_seconds`` that overlap by
``overlap_seconds``, linearly cross-faded in vertex space; window sizes in frames come
from the model's own fps and sample rate. Only one window's model state is alive at a
time and the vertices are written into a memory-mapped ``vertices.npy``, so memory stays
bounded however long the speech. Shapes: S samples, T frames, V vertices, F faces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from talkinghead_cli.atomic import atomic_dir
from talkinghead_cli.audio import load_audio
from talkinghead_cli.checkpoint import load_checkpoint
from talkinghead_cli.config import AnimateConfig
from talkinghead_cli.device import resolve_device
from talkinghead_cli.errors import UserError
from talkinghead_cli.export import checkpoint_rig, write_formats
from talkinghead_cli.mesh import Mesh, load_template
from talkinghead_cli.pretrained import resolve
from talkinghead_cli.progress import ProgressFn, report
from talkinghead_cli.style import parse_style

if TYPE_CHECKING:
    from talkinghead_cli.retarget import Retargeting

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class AnimationResult:
    """What was written for one speech file."""

    audio: Path
    out_dir: Path  # final location
    frames: int
    duration: float
    fps: float
    notes: list[str] = field(default_factory=list)  # retargeting and export figures, one line each


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


def _retargeting(cfg: AnimateConfig, ckpt: dict, mesh: Mesh) -> tuple[Retargeting | None, dict]:
    """Retargeting of a template of another topology (or with ``--landmarks``), and the
    checkpoint as seen on the user's mesh (lip/upper-face indices mapped onto it)."""
    if cfg.template is None:
        if cfg.landmarks is not None:
            raise UserError("--landmarks needs --template", cfg.landmarks, "pass your face mesh with --template")
        return None, ckpt
    from talkinghead_cli.retarget import (
        for_checkpoint,  # scipy: imported only when a template is given
    )

    rt = for_checkpoint(ckpt, mesh, cfg.template, cfg.landmarks)
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


def _speech_files(path: Path) -> list[Path]:
    if not path.exists():
        raise UserError("speech file or folder not found", path, "check the path")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UserError("the folder holds no WAV/FLAC/OGG files", path, "point to speech files")
    return files


def _animate_one(cfg: AnimateConfig, model, ckpt: dict, mesh: Mesh, style: torch.Tensor,
                 wav: Path, dest: Path, final: Path, progress: ProgressFn | None,
                 rt: Retargeting | None = None, rig: tuple | None = None) -> AnimationResult:
    """Write vertices.npy, meshes, preview and animation.json of one file into ``dest``."""
    device = next(model.parameters()).device
    audio = load_audio(wav, model.sample_rate, allow_long=cfg.allow_long)
    fps = float(model.fps)
    num_frames = int(model.num_frames(len(audio)))
    dest.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(dest / "vertices.npy", mode="w+", dtype=np.float32,
                                    shape=(num_frames, mesh.num_verts, 3))
    window = max(2, int(round(cfg.window_seconds * fps)))
    overlap = min(int(round(cfg.overlap_seconds * fps)), (window - 1) // 2)
    source = mesh if rt is None else rt.source  # the mesh the model animates
    pred = out if rt is None else np.lib.format.open_memmap(
        dest / ".model_vertices.npy", mode="w+", dtype=np.float32, shape=(num_frames, source.num_verts, 3))
    predict_windowed(model, audio, torch.from_numpy(source.verts).to(device), style, pred, window, overlap, progress)
    if rt is not None:
        rt.transfer_into(pred, source.verts, mesh.verts, out)
    out.flush()
    _write_face(dest / "face.npz", mesh, ckpt, fps)
    files = ["vertices.npy", "face.npz"]
    needs_faces = any(f not in ("npy", "arkit") for f in cfg.formats) or cfg.video
    if needs_faces and len(mesh.faces) == 0:
        raise UserError("the checkpoint carries no faces, so meshes and video cannot be written",
                        cfg.checkpoint, "pass --template with faces, or --format npy --no-video")
    written, exported = write_formats(cfg.formats, dest, out, mesh.verts, mesh.faces, fps, rig, (pred, source.verts))
    files += written
    if rt is not None:
        del pred
        (dest / ".model_vertices.npy").unlink()
    if cfg.video:
        from talkinghead_cli.video import render_preview

        render_preview(out, mesh.faces, dest / "preview.mp4", fps=fps, audio=audio,
                       sample_rate=model.sample_rate, template=mesh.verts)
        files.append("preview.mp4")
    duration = len(audio) / model.sample_rate
    meta = {"fps": fps, "sample_rate": int(model.sample_rate), "frames": num_frames,
            "duration": duration, "audio": str(wav),
            "model": {"checkpoint": str(cfg.checkpoint), **_model_card(ckpt)},
            "template": str(cfg.template) if cfg.template else "checkpoint training template",
            "num_verts": mesh.num_verts, "style": dict(zip(ckpt["subjects"], style.tolist())),
            "format": cfg.format, "window_frames": window, "overlap_frames": overlap, "files": files}
    meta.update(retarget=None if rt is None else rt.info(), exports=exported)
    (dest / "animation.json").write_text(json.dumps(meta, indent=1))
    return AnimationResult(wav, final, num_frames, duration, fps, _notes(meta))


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
        notes.append(f"animation.glb: {ex['gltf']['morph_targets']} morph targets, "
                     f"{100 * ex['gltf']['relative_error']:.2f} % reconstruction error")
    if "arkit" in ex:
        notes.append(f"arkit.csv/json: {ex['arkit']['blendshapes']} rig blendshapes solved, "
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


def animate(cfg: AnimateConfig, progress: ProgressFn | None = None) -> list[AnimationResult]:
    """Animate one speech file, or each speech file of a folder, into ``cfg.out``.

    Args:
        progress: called with (frames predicted, total frames) per file.
    Returns:
        one :class:`AnimationResult` per speech file.
    Raises:
        UserError: bad checkpoint, a template that is not a face-like triangle mesh, bad
            landmarks, a model without a rig for ``arkit``, unknown style, bad audio.
    """
    files = _speech_files(cfg.audio)
    cfg = cfg.model_copy(update={"checkpoint": resolve(cfg.checkpoint, "animator")})
    device = resolve_device(cfg.device)
    model, ckpt = load_animator(cfg.checkpoint, device)
    mesh = resolve_template(cfg, ckpt)
    rt, ckpt = _retargeting(cfg, ckpt, mesh)
    rig = checkpoint_rig(ckpt, cfg.checkpoint) if "arkit" in cfg.formats else None
    style = parse_style(cfg.style, list(ckpt["subjects"]), cfg.checkpoint)
    results = []
    with atomic_dir(cfg.out) as tmp:
        for wav in files:
            sub = "" if cfg.audio.is_file() else wav.stem
            results.append(_animate_one(cfg, model, ckpt, mesh, style, wav, tmp / sub,
                                        Path(cfg.out) / sub, progress, rt, rig))
    return results
