"""Shared pieces of the dataset readers: the corpus description, safe template loading,
region index files, the torch ``Dataset`` and a tiny toy corpus for tests and benchmarks.

All three corpora (VOCASET, BIWI, synthetic) use FaceFormer's processed layout::

    root/wav/<subject>_<sentence>.wav          speech (any rate; resampled to 16 kHz)
    root/vertices_npy/<subject>_<sentence>.npy (T, V*3) float vertex positions
    root/templates.pkl                          {subject: (V, 3)} neutral faces
    root/regions/lve.txt, regions/fdd.txt       lip / upper-face vertex indices (optional)

The corpus-specific modules (:mod:`.vocaset`, :mod:`.biwi`, :func:`read_synthetic`) only
decide how file names map to subject/sentence, the frame rate and the split of each
utterance; :mod:`.registry` maps a dataset name to its reader. Shapes: T frames, V vertices, S audio samples, F faces.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from talkinghead_cli.audio import SAMPLE_RATE, load_audio
from talkinghead_cli.errors import UserError
from talkinghead_cli.style import subject_style

SPLITS = ("train", "val", "test", "test_b")


# ----------------------------------------------------------------------------- safe pickle

# Exactly what numpy needs to rebuild ndarrays, dtypes and scalars from a pickle (numpy 1
# and numpy 2 module names), plus the codec call Python 3 uses for bytes in protocol 2.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy needs; anything else is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def load_templates_pkl(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``templates.pkl`` safely: only dicts, strings and numpy arrays are admitted.

    Python 2 pickles (VOCASET's) are read with ``latin1`` so their arrays decode.

    Returns:
        {subject: (V, 3) float32}.
    Raises:
        UserError: missing file, a pickle that names any other global (e.g. ``os.system``),
            or content that is not a dict of (V, 3) arrays.
    """
    path = Path(path)
    if not path.exists():
        raise UserError("templates.pkl not found", path, "put the subjects' neutral meshes there")
    try:
        with open(path, "rb") as fh:
            data = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise UserError(f"refused to load the templates pickle ({e})", path,
                        "it must hold only a dict of subject name -> numpy array") from e
    except Exception as e:
        raise UserError(f"cannot read the templates pickle ({type(e).__name__})", path,
                        "regenerate templates.pkl") from e
    if not isinstance(data, dict) or not data:
        raise UserError("templates.pkl does not hold a dict of subject -> (V, 3) array", path,
                        "regenerate templates.pkl")
    out: dict[str, np.ndarray] = {}
    for key, value in data.items():
        arr = np.asarray(value) if isinstance(value, np.ndarray) else None
        if not isinstance(key, str) or arr is None or arr.size % 3 or arr.size == 0:
            raise UserError(f"templates.pkl entry {key!r} is not a (V, 3) array", path,
                            "regenerate templates.pkl")
        out[key] = arr.reshape(-1, 3).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- regions


def read_indices(path: str | Path) -> np.ndarray:
    """Read a vertex index file: integers separated by commas and/or whitespace.

    Returns:
        (N,) int64.
    """
    path = Path(path)
    text = path.read_text()
    tokens = [t for t in re.split(r"[\s,]+", text) if t]
    try:
        idx = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError as e:
        raise UserError("the index file holds something that is not an integer", path,
                        "write vertex indices separated by commas or spaces") from e
    if idx.size == 0:
        raise UserError("the index file is empty", path, "write the region's vertex indices")
    return idx


def read_regions(root: Path, num_verts: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Lip (``regions/lve.txt``) and upper-face (``regions/fdd.txt``) indices, when present."""
    found = []
    for name in ("lve.txt", "fdd.txt"):
        path = root / "regions" / name
        if not path.exists():
            found.append(None)
            continue
        idx = read_indices(path)
        if idx.min() < 0 or idx.max() >= num_verts:
            raise UserError(f"vertex index {int(idx.max())} is out of range for {num_verts} vertices",
                            path, "use the index file that belongs to this mesh topology")
        found.append(idx)
    return found[0], found[1]


# ----------------------------------------------------------------------------- corpus


@dataclass
class Utterance:
    """One recorded sentence: its files, subject, sentence number and split."""

    id: str
    subject: str
    sentence: int
    wav: Path
    verts: Path
    split: str
    num_frames: int = 0  # at the corpus fps, after the frame step


@dataclass
class Corpus:
    """A dataset on disk, read and checked.

    Attributes:
        name: ``vocaset``, ``biwi`` or ``synthetic``.
        fps: frame rate of the sequences served (after ``frame_step``).
        frame_step: take every n-th stored frame (VOCASET 60 -> 30 fps uses 2).
        templates: {subject: (V, 3) float32}.
        faces: (F, 3) int64 or None when the corpus carries no mesh topology.
        lip_indices / upper_indices: (N,) int64 or None.
        train_subjects: the speaking styles, in one-hot order.
    """

    name: str
    root: Path
    fps: float
    frame_step: int
    sample_rate: int
    templates: dict[str, np.ndarray]
    faces: np.ndarray | None
    lip_indices: np.ndarray | None
    upper_indices: np.ndarray | None
    utterances: list[Utterance]
    train_subjects: list[str]
    extra: dict = field(default_factory=dict)

    @property
    def num_verts(self) -> int:
        return int(next(iter(self.templates.values())).shape[0])

    def split(self, name: str) -> list[Utterance]:
        return [u for u in self.utterances if u.split == name]


def require_folder(root: Path, name: str, fix: str) -> Path:
    path = root / name
    if not path.is_dir():
        raise UserError(f"the dataset has no '{name}/' folder", path, fix)
    return path


def pair_files(
    root: Path,
    parse: Callable[[str], tuple[str, int] | None],
    assign: Callable[[str, int], str | None],
) -> list[Utterance]:
    """Pair ``wav/*.wav`` with ``vertices_npy/*.npy`` by stem.

    Args:
        parse: stem -> (subject, sentence) or None when the name does not fit the corpus.
        assign: (subject, sentence) -> split name or None (not part of any split).
    Raises:
        UserError: missing folders, or a WAV whose mesh sequence is missing.
    """
    wav_dir = require_folder(root, "wav", "point --data-root at the processed dataset folder")
    npy_dir = require_folder(root, "vertices_npy", "point --data-root at the processed dataset folder")
    utts = []
    for wav in sorted(wav_dir.glob("*.wav")):
        parsed = parse(wav.stem)
        if parsed is None:
            warnings.warn(f"{wav}: the name does not follow the dataset's naming; skipped", stacklevel=2)
            continue
        subject, sentence = parsed
        split = assign(subject, sentence)
        if split is None:
            continue
        npy = npy_dir / f"{wav.stem}.npy"
        if not npy.exists():
            raise UserError("this WAV has no matching mesh sequence", wav,
                            f"add {npy.name} to vertices_npy/ or remove the WAV")
        utts.append(Utterance(wav.stem, subject, sentence, wav, npy, split))
    wav_stems = {w.stem for w in wav_dir.glob("*.wav")}
    orphans = [p.name for p in sorted(npy_dir.glob("*.npy")) if p.stem not in wav_stems]
    if orphans:
        warnings.warn(f"{npy_dir}: {len(orphans)} mesh sequence(s) without a WAV skipped "
                      f"(e.g. {orphans[0]})", stacklevel=2)
    return utts


def check_shapes(utts: list[Utterance], templates: dict[str, np.ndarray], frame_step: int,
                 template_file: Path) -> None:
    """Check each sequence against its subject's template (reads only the .npy headers)."""
    for u in utts:
        if u.subject not in templates:
            raise UserError(f"subject {u.subject!r} has no template", template_file,
                            f"add {u.subject} to templates.pkl")
        v3 = templates[u.subject].size
        try:
            arr = np.load(u.verts, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise UserError(f"cannot read the mesh sequence ({type(e).__name__})", u.verts,
                            "regenerate it with numpy.save") from e
        shape = arr.shape
        flat = int(np.prod(shape[1:])) if len(shape) >= 2 else -1
        if len(shape) not in (2, 3) or flat != v3 or shape[0] == 0:
            raise UserError(f"mesh sequence of shape {shape} does not match the template of "
                            f"{v3 // 3} vertices (expected (T, {v3}))", u.verts,
                            "use the template of this subject, or regenerate the sequence")
        u.num_frames = len(range(0, shape[0], frame_step))


def finish_corpus(corpus: Corpus, template_file: Path) -> Corpus:
    """Run the shared checks and fill in the frame counts."""
    if not corpus.split("train"):
        raise UserError(f"no training sequences found for {corpus.name}", corpus.root / "wav",
                        "check the subject and sentence names against the split")
    check_shapes(corpus.utterances, corpus.templates, corpus.frame_step, template_file)
    counts = {len(t) for t in corpus.templates.values()}
    if len(counts) != 1:
        raise UserError(f"templates have different vertex counts {sorted(counts)}", template_file,
                        "all subjects must share one mesh topology")
    return corpus


def load_faces(root: Path, candidates: list[str], faces_from: str | Path | None,
               num_verts: int) -> np.ndarray | None:
    """Mesh faces from ``faces_from`` (any mesh file) or the first candidate present in root."""
    from talkinghead_cli.mesh import load_template

    paths = [Path(faces_from)] if faces_from else [root / c for c in candidates if (root / c).exists()]
    if faces_from and not paths[0].exists():
        raise UserError("the --faces-from mesh was not found", faces_from, "check the path")
    if not paths:
        return None
    mesh = load_template(paths[0])
    if mesh.num_verts != num_verts:
        raise UserError(f"the mesh has {mesh.num_verts} vertices, the dataset {num_verts}", paths[0],
                        "give a mesh of the dataset's topology")
    return mesh.faces


# ----------------------------------------------------------------------------- torch dataset


class SequenceDataset(torch.utils.data.Dataset):
    """Serves one utterance at a time as a dict:

    ``audio`` (S,) float32 at ``sample_rate``; ``verts`` (T, V, 3); ``template`` (V, 3);
    ``style`` (N_subj,) one-hot over ``corpus.train_subjects`` (a uniform mix for a
    subject unseen in training); ``id`` and ``subject``. Audio is cached after the first
    read; vertices are read from disk (memory-mapped) each time.
    """

    def __init__(self, corpus: Corpus, utterances: list[Utterance], sample_rate: int = SAMPLE_RATE):
        self.corpus = corpus
        self.utts = utterances
        self.sample_rate = sample_rate
        self._audio: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.utts)

    def style(self, subject: str) -> torch.Tensor:
        """(N_subj,): see :func:`talkinghead_cli.style.subject_style`."""
        return subject_style(subject, self.corpus.train_subjects)

    def __getitem__(self, i: int) -> dict:
        u = self.utts[i]
        if u.id not in self._audio:
            self._audio[u.id] = load_audio(u.wav, self.sample_rate)
        raw = np.load(u.verts, mmap_mode="r", allow_pickle=False)
        verts = np.array(raw[:: self.corpus.frame_step], dtype=np.float32)
        verts = verts.reshape(verts.shape[0], -1, 3)
        return {
            "audio": torch.from_numpy(self._audio[u.id]),
            "verts": torch.from_numpy(verts),
            "template": torch.from_numpy(self.corpus.templates[u.subject]),
            "style": self.style(u.subject),
            "id": u.id,
            "subject": u.subject,
        }


# ----------------------------------------------------------------------------- synthetic


def read_synthetic(root: str | Path, faces_from: str | Path | None = None) -> Corpus:
    """The corpus written by ``avtalk synth``: splits and fps come from ``manifest.json``."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("dataset folder not found", root, "check --data-root")
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise UserError("the synthetic corpus has no manifest.json", root,
                        "point --data-root at a folder written by `avtalk synth`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"manifest.json is not valid JSON ({e.msg})", manifest_path,
                        "regenerate the corpus") from e
    if not str(manifest.get("format", "")).startswith("avtalk-synthetic/"):
        raise UserError("manifest.json is not an avtalk synthetic corpus manifest", manifest_path,
                        "regenerate the corpus with `avtalk synth`")
    splits = {(u["subject"], int(u["sentence"])): u["split"] for u in manifest.get("utterances", [])}
    templates = load_templates_pkl(root / "templates.pkl")

    def parse(stem: str):
        m = re.fullmatch(r"(.+)_sentence(\d+)", stem)
        return (m.group(1), int(m.group(2))) if m else None

    utts = pair_files(root, parse, lambda s, n: splits.get((s, n)))
    num_verts = int(next(iter(templates.values())).shape[0])
    lip, upper = read_regions(root, num_verts)
    faces = load_faces(root, ["faces.npy"], faces_from, num_verts) if faces_from else None
    if faces is None and (root / "faces.npy").exists():
        faces = np.load(root / "faces.npy", allow_pickle=False).astype(np.int64)
    train_subjects = sorted({u.subject for u in utts if u.split == "train"})
    corpus = Corpus("synthetic", root, float(manifest.get("fps", 30)), 1,
                    int(manifest.get("sample_rate", SAMPLE_RATE)), templates, faces, lip, upper,
                    utts, train_subjects, extra={"manifest": manifest_path})
    return finish_corpus(corpus, root / "templates.pkl")


# ----------------------------------------------------------------------------- toy corpus


def write_toy_corpus(
    root: str | Path,
    subjects: dict[str, list[int]],
    seconds: float = 1.0,
    subdivisions: int = 2,
    fps: int = 60,
    sample_rate: int = 16_000,
    seed: int = 0,
) -> Path:
    """Write a tiny corpus in FaceFormer's VOCASET layout (for tests and benchmarks).

    Each subject is an icosphere (162 vertices at ``subdivisions=2``) scaled a little
    differently. The "speech" is a buzz whose loudness follows a random smooth envelope
    e(t); the lower front of the sphere (the "mouth") opens by ``0.1 * e(t)``, so audio
    and motion are tied and a model can learn the mapping. ``regions/lve.txt`` lists the
    mouth vertices, ``regions/fdd.txt`` the upper half, ``templates/FLAME_sample.ply``
    carries the faces.

    Args:
        subjects: {subject name: [sentence numbers]}.
    """
    import pickle as _pickle

    import soundfile as sf
    import trimesh

    root = Path(root)
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    base = np.asarray(sphere.vertices, dtype=np.float32)
    mouth = np.where((base[:, 2] > 0.5) & (base[:, 1] < 0.0) & (base[:, 1] > -0.6))[0]
    upper = np.where(base[:, 1] > 0.3)[0]
    for sub in ("wav", "vertices_npy", "regions", "templates"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    templates = {}
    for k, (subject, sentences) in enumerate(subjects.items()):
        templates[subject] = base * (1.0 + 0.05 * k)
        for n in sentences:
            frames = int(round(seconds * fps))
            knots = rng.uniform(0, 1, size=max(2, int(seconds * 6)))
            env = np.interp(np.linspace(0, len(knots) - 1, frames), np.arange(len(knots)), knots)
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            env_audio = np.interp(t, np.arange(frames) / fps, env)
            wave = 0.5 * env_audio * np.sign(np.sin(2 * np.pi * (110 + 20 * k) * t))
            wave += 0.01 * rng.standard_normal(len(t))
            name = f"{subject}_sentence{n:02d}"
            sf.write(root / "wav" / f"{name}.wav", wave.astype(np.float32), sample_rate)
            verts = np.repeat(templates[subject][None], frames, axis=0)
            verts[:, mouth, 1] -= 0.1 * env[:, None].astype(np.float32)
            np.save(root / "vertices_npy" / f"{name}.npy", verts.reshape(frames, -1))
    with open(root / "templates.pkl", "wb") as fh:
        _pickle.dump(templates, fh, protocol=2)
    (root / "regions" / "lve.txt").write_text(", ".join(map(str, mouth)))
    (root / "regions" / "fdd.txt").write_text(" ".join(map(str, upper)))
    trimesh.Trimesh(base, sphere.faces, process=False).export(root / "templates" / "FLAME_sample.ply")
    return root


def read_transcripts(corpus: Corpus, file: str | Path | None = None) -> dict[str, str]:
    """{utterance id: transcript} of every utterance that has one: the one reader behind
    ``train --av-loss``, ``finetune-expert`` and ``score --dataset``.

    Sources, first found wins: ``file`` when given (a JSON object utterance id -> text, the
    only source then); an ``Utterance.text`` attribute; the synthetic corpus's
    ``manifest.json`` (``utterances[].text``); ``sentencestext/<subject>.txt`` (line n =
    sentence n, as ``avtalk synth`` writes it); ``sentencestext/<subject>/sentenceNN.txt``.
    """
    if file is not None:
        return _transcripts_file(Path(file))
    texts: dict[str, str] = {}
    manifest = (corpus.extra or {}).get("manifest")
    if manifest is not None and Path(manifest).exists():
        for entry in json.loads(Path(manifest).read_text()).get("utterances", []):
            if entry.get("text"):
                texts[str(entry["id"])] = str(entry["text"])
    lines: dict[str, list[str]] = {}
    folder = Path(corpus.root) / "sentencestext"
    for u in corpus.utterances:
        if getattr(u, "text", None):
            texts[u.id] = str(u.text)
        if u.id in texts:
            continue
        if u.subject not in lines:
            f = folder / f"{u.subject}.txt"
            lines[u.subject] = f.read_text(encoding="utf-8").splitlines() if f.is_file() else []
        one = folder / u.subject / f"sentence{u.sentence:02d}.txt"
        if 1 <= u.sentence <= len(lines[u.subject]) and lines[u.subject][u.sentence - 1].strip():
            texts[u.id] = lines[u.subject][u.sentence - 1].strip()
        elif one.is_file():
            texts[u.id] = one.read_text(encoding="utf-8").strip()
    return texts


def _transcripts_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the transcripts ({type(e).__name__})", path,
                        'write a JSON object {"<subject>_<sentence>": "text", ...}') from e
    if not isinstance(data, dict):
        raise UserError("the transcripts file is not a JSON object", path,
                        'write {"<utterance id>": "text", ...}')
    return {str(k): str(v) for k, v in data.items()}


def require_transcripts(corpus: Corpus, ids: list[str], why: str,
                        file: str | Path | None = None) -> dict[str, str]:
    """{id: transcript} for the utterances ``ids`` (:func:`read_transcripts`); a UserError
    starting with ``why`` when any of them has none."""
    texts = read_transcripts(corpus, file)
    missing = [uid for uid in ids if uid not in texts]
    if missing:
        raise UserError(f"{why}; no transcript for {len(missing)} utterance(s) (e.g. {missing[0]})",
                        file or Path(corpus.root) / "sentencestext",
                        "add sentencestext/<subject>.txt (line n = sentence n)"
                        + ("" if file is None else " or fix the --transcripts file"))
    return {uid: texts[uid] for uid in ids}
