"""Lip readability and mesh metrics of animations: the library behind ``avtalk score``.

Two modes (:func:`score` picks one from the config):

* **One animation** (:func:`score_animation`): an ``animate`` output folder, or a vertex
  file with a template (faces) and lip indices from ``--template`` / ``--lip-indices`` or
  an animator ``--checkpoint``. The lips are rendered as 25 fps 88x88 lip windows (the
  window is taken from the animation itself), read by the lip-reading expert visual-only
  (and audio-visually when speech is given), decoded (greedy CTC, or joint CTC/attention
  beam search with ``beam``), and compared with the transcript: CER, WER and VER. With a
  reference mesh sequence, LVE/FDD/MVE too (the prediction truncated to the reference
  length, as the field does).
* **A dataset split** (:func:`score_dataset`): every utterance of the split is predicted
  by each animator checkpoint (the utterance's speaking style when the model knows the
  subject, else the mean style), rendered, read visual-only and scored; one row per model,
  plus a ``ground truth`` row that reads the recorded meshes (the expert's ceiling on this
  data). Text rates are pooled: total edits / total reference length.

VER is the edit rate between viseme strings: words -> ARPAbet (:mod:`talkinghead_cli.phonemize`)
-> viseme classes (``data/visemes_ver.json``), without word boundaries.
Shapes: T frames, V vertices, F faces, S samples, N region vertices.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.config import ScoreConfig
from talkinghead_cli.errors import UserError
from talkinghead_cli.lipreader.expert import Expert, open_expert
from talkinghead_cli.metrics import MetricAccumulator
from talkinghead_cli.progress import ProgressFn, report
from talkinghead_cli.style import subject_style
from talkinghead_cli.text_metrics import ErrorRate, edit_distance

GT_ROW = "ground truth"


# ----------------------------------------------------------------------------- text rates


@dataclass
class TextTally:
    """Pooled CER, WER and VER over utterances (total edits / total reference length)."""

    rates: ErrorRate = field(default_factory=ErrorRate)
    viseme_edits: int = 0
    visemes: int = 0
    ver_available: bool = True

    def add(self, hyp: str, ref: str) -> None:
        self.rates.add(hyp, ref)
        if not self.ver_available:
            return
        try:
            from talkinghead_cli.phonemize import text_visemes

            h, r = text_visemes(hyp), text_visemes(ref)
        except UserError:  # no CMU dictionary (pocketsphinx not installed)
            self.ver_available = False
            return
        self.viseme_edits += edit_distance(h, r)
        self.visemes += len(r)

    @property
    def ver(self) -> float | None:
        if not self.ver_available:
            return None
        if self.visemes == 0:
            return 0.0 if self.viseme_edits == 0 else 1.0
        return self.viseme_edits / self.visemes

    def figures(self) -> dict[str, float | None]:
        return {"cer": self.rates.cer, "wer": self.rates.wer, "ver": self.ver}


def ver(hyp: str, ref: str) -> float | None:
    """Viseme error rate of ``hyp`` against ``ref`` (None without the CMU dictionary)."""
    tally = TextTally()
    tally.add(hyp, ref)
    return tally.ver


# ----------------------------------------------------------------------------- expert


def load_reader(cfg: ScoreConfig, device: torch.device, audio_visual: bool = False) -> Expert:
    """The expert of ``cfg.expert`` (path or registered name), checked to read lips."""
    from talkinghead_cli.pretrained import resolve

    path = resolve(cfg.expert, "expert")
    expert = open_expert(path, device, method="ctc" if cfg.beam is None else "beam", beam=cfg.beam or 1)
    if audio_visual and expert.modalities != "av":
        raise UserError("--audio needs an audio-visual expert; this one reads video only", path,
                        "drop --audio or pass an audio-visual expert")
    return expert


def normalise_transcript(expert: Expert, text: str) -> tuple[str, list[str], list[str]]:
    """The transcript as the expert's tokenizer normalises it.

    Returns:
        (normalised text, characters dropped by normalisation, units outside the vocabulary).
    """
    norm = expert.tokenizer.normalize(text)
    ids, _ = expert.tokenizer.encode(text)
    unknown = sorted({c for c in norm.text if c != " "} - set(expert.tokenizer.vocabulary)) \
        if expert.tokenizer.kind == "char" else []
    if not norm.text.strip() or not ids:
        raise UserError("the transcript has no letters the lip reader knows", None,
                        "write the spoken words in --transcript")
    return norm.text.lower(), norm.dropped, unknown


# ----------------------------------------------------------------------------- rendering


@torch.no_grad()
def lip_clip(verts: torch.Tensor, faces: torch.Tensor, lip: torch.Tensor, fps: float,
             **settings) -> torch.Tensor:
    """Render one sequence's lips as the expert's video.

    Args:
        verts: (T, V, 3); faces: (F, 3) long; lip: (N,) long; fps of ``verts``.
        settings: ``size``, ``margin``, ``sigma``, ``video_fps`` (the expert's; defaults
            88, 0.3, the renderer's, 25).
    Returns:
        (1, T25, H, W) normalised lip windows at 25 fps (window from ``verts`` itself).
    """
    from talkinghead_cli.lipreader.views import lip_video

    return lip_video(verts[None].float(), faces, lip, fps, **settings)


# ----------------------------------------------------------------------------- one animation


@dataclass
class Face:
    """What scoring needs besides the vertices: topology, regions, rate."""

    template: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    lip: np.ndarray | None  # (N,)
    upper: np.ndarray | None  # (N,)
    fps: float | None


def _face_from_checkpoint(path) -> Face:
    from talkinghead_cli.checkpoint import load_checkpoint
    from talkinghead_cli.pretrained import resolve

    ck = load_checkpoint(resolve(path, "animator"), kind="animator")
    arr = lambda k: None if ck.get(k) is None else ck[k].numpy()
    return Face(arr("template"), arr("faces"), arr("lip_indices"), arr("upper_indices"), ck.get("fps"))


def _face_from_folder(folder: Path) -> Face | None:
    """``face.npz`` of an animate folder, else the checkpoint named in ``animation.json``."""
    npz = folder / "face.npz"
    if npz.exists():
        d = np.load(npz, allow_pickle=False)
        get = lambda k: d[k] if k in d and d[k].size else None
        return Face(d["template"], d["faces"], get("lip_indices"), get("upper_indices"),
                    float(d["fps"]) if "fps" in d else None)
    meta = folder / "animation.json"
    if meta.exists():
        ckpt = json.loads(meta.read_text()).get("model", {}).get("checkpoint")
        if ckpt and Path(ckpt).exists():
            return _face_from_checkpoint(ckpt)
    return None


def load_animation(cfg: ScoreConfig) -> tuple[np.ndarray, Face, list[str]]:
    """The vertices (T, V, 3), their :class:`Face` and notes about where things came from."""
    from talkinghead_cli.data.dataset import read_indices
    from talkinghead_cli.mesh import load_sequence, load_template

    path, notes = Path(cfg.path), []
    if not path.exists():
        raise UserError("animation not found", path, "pass an `avtalk animate` folder or a .npy/.npz")
    face = None
    if path.is_dir():
        seq = path / "vertices.npy"
        if not seq.exists():
            raise UserError("the folder holds no vertices.npy", path, "pass an `avtalk animate` output folder")
        verts, fps = load_sequence(seq)
        face = _face_from_folder(path)
        meta = path / "animation.json"
        if meta.exists():
            fps = float(json.loads(meta.read_text()).get("fps") or 0) or fps
    else:
        verts, fps = load_sequence(path)
    if cfg.checkpoints:
        face = _face_from_checkpoint(cfg.checkpoints[0])
    if cfg.template is not None:
        mesh = load_template(cfg.template)
        face = Face(mesh.verts, mesh.faces, None if face is None else face.lip,
                    None if face is None else face.upper, None if face is None else face.fps)
    if face is None or face.template is None or face.faces is None or len(face.faces) == 0:
        raise UserError("the animation has no template (mesh faces) to render it with", path,
                        "pass --template MESH and --lip-indices FILE, or --checkpoint ANIMATOR.pt")
    if cfg.lip_indices is not None:
        face.lip = read_indices(cfg.lip_indices)
    if face.lip is None:
        raise UserError("no lip vertex indices for this animation", path,
                        "pass --lip-indices FILE or an animator --checkpoint that has them")
    v = verts.shape[1]
    if len(face.template) != v:
        raise UserError(f"the animation has {v} vertices, its template {len(face.template)}", path,
                        "pass the template the animation was made with")
    if face.lip.max() >= v or (face.upper is not None and face.upper.max() >= v):
        raise UserError(f"a region index is out of range for {v} vertices", cfg.lip_indices or path,
                        "use the indices of this mesh topology")
    fps = cfg.fps or fps or face.fps
    if not fps:
        fps = 30.0
        notes.append("no frame rate stored with the animation: assumed 30 fps (pass --fps)")
    face.fps = float(fps)
    return verts, face, notes


def _mesh_metrics(cfg: ScoreConfig, verts: np.ndarray, face: Face, notes: list[str]) -> dict:
    """LVE/FDD/MVE against ``cfg.reference`` (prediction truncated to its length)."""
    from talkinghead_cli.mesh import load_sequence

    gt, _ = load_sequence(cfg.reference, num_verts=verts.shape[1])
    if len(gt) != len(verts):
        cut = "prediction truncated" if len(verts) > len(gt) else "reference truncated to the prediction"
        notes.append(f"the animation has {len(verts)} frames, the reference {len(gt)}: "
                     f"{cut} to {min(len(gt), len(verts))} frames")
    if face.upper is None:
        notes.append("no upper-face indices: FDD over all vertices")
    lip = torch.as_tensor(face.lip)
    upper = None if face.upper is None else torch.as_tensor(face.upper)
    acc = MetricAccumulator(lip, upper)
    acc.add(torch.from_numpy(verts), torch.from_numpy(gt), torch.from_numpy(face.template))
    return acc.result()


@dataclass
class Reading:
    """One decoding of one animation."""

    mode: str  # "visual" or "audio-visual"
    hypothesis: str
    cer: float
    wer: float
    ver: float | None


@dataclass
class AnimationScore:
    source: str
    transcript: str
    dropped: list[str]
    frames: int
    fps: float
    video_frames: int
    readings: list[Reading]
    mesh: dict[str, float]
    notes: list[str]
    expert: str
    decoding: str

    def to_json(self) -> dict:
        return asdict(self)


def score_animation(cfg: ScoreConfig, progress: ProgressFn | None = None) -> AnimationScore:
    """Read one animation's lips and score them against ``cfg.transcript`` (module docstring)."""
    from talkinghead_cli.audio import load_audio
    from talkinghead_cli.device import resolve_device

    if not cfg.transcript or not cfg.transcript.strip():
        raise UserError("no transcript given", None, 'pass --transcript "the spoken words"')
    device = resolve_device(cfg.device)
    expert = load_reader(cfg, device, audio_visual=cfg.audio is not None)
    ref, dropped, unknown = normalise_transcript(expert, cfg.transcript)
    verts, face, notes = load_animation(cfg)
    if dropped:
        notes.append("dropped from the transcript: " + " ".join(repr(c) for c in dropped))
    if unknown:
        notes.append("outside the expert's vocabulary (read as <unk>): " + " ".join(unknown))
    total = 3 if cfg.audio is not None else 2
    faces = torch.as_tensor(face.faces, dtype=torch.long, device=device)
    lip = torch.as_tensor(face.lip, dtype=torch.long, device=device)
    video = lip_clip(torch.from_numpy(verts).to(device), faces, lip, face.fps, **expert.render)
    report(progress, 1, total)
    clips = [("visual", None)]
    if cfg.audio is not None:
        sr = int(expert.model.config.sample_rate)
        wave = load_audio(cfg.audio, sr)
        seconds = video.shape[1] / float(expert.render["video_fps"])
        if abs(len(wave) / sr - seconds) > 0.1:
            notes.append(f"the speech lasts {len(wave) / sr:.2f} s, the animation {seconds:.2f} s: "
                         "the speech is trimmed or padded to the animation")
        clips.append(("audio-visual", torch.from_numpy(wave)[None].to(device)))
    readings = []
    for i, (mode, audio) in enumerate(clips, start=2):
        hyp = expert.read(video, audio)
        tally = TextTally()
        tally.add(hyp, ref)
        readings.append(Reading(mode, hyp, **tally.figures()))
        report(progress, i, total)
    if readings and readings[0].ver is None:
        notes.append('VER needs the CMU dictionary: pip install -e ".[score]"')
    mesh = _mesh_metrics(cfg, verts, face, notes) if cfg.reference is not None else {}
    decoding = "greedy CTC" if expert.method == "ctc" else f"CTC/attention beam {expert.beam}"
    return AnimationScore(str(cfg.path), ref, dropped, len(verts), face.fps, int(video.shape[1]),
                          readings, mesh, notes, str(expert.path), decoding)


# ----------------------------------------------------------------------------- dataset split


@dataclass
class ModelRow:
    name: str
    lve: float | None
    fdd: float | None
    mve: float | None
    cer: float
    wer: float
    ver: float | None
    utterances: int


@dataclass
class DatasetScore:
    dataset: str
    split: str
    utterances: int
    rows: list[ModelRow]
    notes: list[str]
    expert: str
    decoding: str
    hypotheses: dict[str, dict[str, str]]  # row name -> {utterance id: hypothesis}

    def to_json(self) -> dict:
        return asdict(self)


def _dataset_face(corpus, checkpoints: list) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """faces, lip and upper indices of the corpus, else of the first checkpoint."""
    faces, lip, upper = corpus.faces, corpus.lip_indices, corpus.upper_indices
    if faces is None or lip is None:
        ck = _face_from_checkpoint(checkpoints[0])
        faces = ck.faces if faces is None else faces
        lip = ck.lip if lip is None else lip
        upper = ck.upper if upper is None else upper
    if faces is None or len(faces) == 0:
        raise UserError("neither the corpus nor the checkpoint has mesh faces to render with",
                        corpus.root, "pass --faces-from MESH when training, or add faces.npy")
    if lip is None:
        raise UserError("the corpus has no lip indices (regions/lve.txt)", corpus.root,
                        "add regions/lve.txt")
    return faces, lip, upper


def _score_rows(cfg, corpus, utts, texts, expert, device, progress) -> tuple[list[ModelRow], dict]:
    from talkinghead_cli.animate import load_animator
    from talkinghead_cli.data.dataset import SequenceDataset
    from talkinghead_cli.pretrained import resolve
    from talkinghead_cli.training.evaluate import evaluate

    faces_np, lip_np, upper_np = _dataset_face(corpus, cfg.checkpoints)
    faces = torch.as_tensor(faces_np, dtype=torch.long, device=device)
    lip = torch.as_tensor(lip_np, dtype=torch.long, device=device)
    upper = None if upper_np is None else torch.as_tensor(upper_np)
    runs = [(GT_ROW, None)] + [(str(c), c) for c in cfg.checkpoints]
    total, done = len(runs) * len(utts), 0
    rows, hyps = [], {}
    for name, ckpt in runs:
        model, subjects, sr = None, [], corpus.sample_rate
        if ckpt is not None:
            model, ck = load_animator(resolve(ckpt, "animator"), device)
            if int(ck["config"]["animator"]["num_verts"]) != corpus.num_verts:
                raise UserError(f"the model animates {ck['config']['animator']['num_verts']} vertices, "
                                f"the corpus has {corpus.num_verts}", ckpt, "score it on its own dataset")
            subjects, sr = list(ck["subjects"]), int(model.sample_rate)
        data = SequenceDataset(corpus, utts, sr)

        def read(pred, verts, item):
            return expert.read(lip_clip(pred[0].float(), faces, lip, corpus.fps, **expert.render))

        def tick():
            nonlocal done
            done += 1
            report(progress, done, total)

        ev = evaluate(model, data, device, style=lambda item: subject_style(item["subject"], subjects),
                      read=read, tick=tick, lip=torch.as_tensor(lip_np), upper=upper)
        hyps[name] = ev.hypotheses
        tally = TextTally()
        for uid, hyp in ev.hypotheses.items():
            tally.add(hyp, texts[uid])
        m = ev.metrics
        rows.append(ModelRow(name, m.get("lve"), m.get("fdd"), m.get("mve"), utterances=len(data),
                             **tally.figures()))
    return rows, hyps


def score_dataset(cfg: ScoreConfig, progress: ProgressFn | None = None) -> DatasetScore:
    """Score each animator checkpoint on a dataset split (module docstring)."""
    from talkinghead_cli.data.dataset import require_transcripts
    from talkinghead_cli.data.registry import open_corpus
    from talkinghead_cli.device import resolve_device

    if cfg.data_root is None:
        raise UserError("--dataset needs --data-root", None, "pass the dataset folder")
    if not cfg.checkpoints:
        raise UserError("no animator checkpoint to score", None, "pass --checkpoint A [--checkpoint B ...]")
    device = resolve_device(cfg.device)
    expert = load_reader(cfg, device)
    corpus = open_corpus(cfg.dataset, cfg.data_root)
    utts = corpus.split(cfg.split)
    if not utts:
        raise UserError(f"the {cfg.split} split of this corpus is empty", cfg.data_root,
                        "choose another --split")
    texts = require_transcripts(corpus, [u.id for u in utts], "scoring reads the lips against the text",
                                file=cfg.transcripts)
    rows, hyps = _score_rows(cfg, corpus, utts, texts, expert, device, progress)
    notes = ["ground truth row: the recorded meshes read by the expert (its ceiling on this data)",
             "lips read visual-only; each sequence seen through a lip window fitted to itself"]
    if rows[0].ver is None:
        notes.append('VER needs the CMU dictionary: pip install -e ".[score]"')
    decoding = "greedy CTC" if expert.method == "ctc" else f"CTC/attention beam {expert.beam}"
    return DatasetScore(corpus.name, cfg.split, len(utts), rows, notes, str(expert.path), decoding, hyps)


# ----------------------------------------------------------------------------- entry point


def score(cfg: ScoreConfig, progress: ProgressFn | None = None) -> AnimationScore | DatasetScore:
    """Score one animation (``cfg.path``) or a dataset split (``cfg.dataset``); write
    ``cfg.json_path`` (atomically) when given."""
    if (cfg.path is None) == (cfg.dataset is None):
        raise UserError("give either an animation PATH or --dataset, not both or neither", None,
                        "see `avtalk score --help`")
    if cfg.dataset is not None:
        extra = [f for f in ("audio", "reference", "template", "lip_indices", "transcript")
                 if getattr(cfg, f) is not None]
        if extra:
            raise UserError(f"--{extra[0].replace('_', '-')} applies to one animation, not to --dataset",
                            None, "drop it, or score one animation PATH")
        result = score_dataset(cfg, progress)
    else:
        result = score_animation(cfg, progress)
    if cfg.json_path is not None:
        with atomic_file(cfg.json_path) as tmp:
            tmp.write_text(json.dumps(result.to_json(), indent=1))
    return result
