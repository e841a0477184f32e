"""VOCASET in FaceFormer's processed layout.

Files: ``wav/FaceTalk_170728_03272_TA_sentence01.wav``, ``vertices_npy/<same>.npy`` of
shape (T, 15069) at 60 fps, ``templates.pkl`` (a Python 2 pickle of subject -> (5023, 3)),
optionally ``templates/FLAME_sample.ply`` or ``.obj`` (FLAME topology, used for the faces) and
``regions/lve.txt`` / ``regions/fdd.txt``. The field trains at 30 fps by taking every
second frame (``[::2]``); ``keep_60fps=True`` keeps all frames.

Published split (VOCA, used by FaceFormer and CodeTalker): 8 training subjects with
sentences 1-40, 2 validation and 2 test subjects with sentences 21-40.
"""

from __future__ import annotations

import re
from pathlib import Path

from talkinghead_cli.data.dataset import (Corpus, finish_corpus, load_faces, load_templates_pkl,
                                          pair_files, read_regions)
from talkinghead_cli.errors import UserError

RECORDED_FPS = 60
TRAIN_SUBJECTS = [f"FaceTalk_{s}_TA" for s in (
    "170728_03272", "170904_00128", "170725_00137", "170915_00223",
    "170811_03274", "170913_03279", "170904_03276", "170912_03278")]
VAL_SUBJECTS = [f"FaceTalk_{s}_TA" for s in ("170811_03275", "170908_03277")]
TEST_SUBJECTS = [f"FaceTalk_{s}_TA" for s in ("170809_00138", "170731_00024")]
FACE_FILES = ["templates/FLAME_sample.ply", "FLAME_sample.ply", "templates/FLAME_sample.obj", "FLAME_sample.obj"]


def split_of(subject: str, sentence: int) -> str | None:
    """The published split of one utterance, or None if it belongs to none."""
    if subject in TRAIN_SUBJECTS and 1 <= sentence <= 40:
        return "train"
    if subject in VAL_SUBJECTS and 21 <= sentence <= 40:
        return "val"
    if subject in TEST_SUBJECTS and 21 <= sentence <= 40:
        return "test"
    return None


def parse_name(stem: str) -> tuple[str, int] | None:
    """``FaceTalk_170728_03272_TA_sentence01`` -> (``FaceTalk_170728_03272_TA``, 1)."""
    m = re.fullmatch(r"(.+)_sentence(\d+)", stem)
    return (m.group(1), int(m.group(2))) if m else None


def read_vocaset(root: str | Path, keep_60fps: bool = False,
                 faces_from: str | Path | None = None) -> Corpus:
    """Read and check a processed VOCASET folder (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("dataset folder not found", root, "check --data-root")
    templates = load_templates_pkl(root / "templates.pkl")
    utts = pair_files(root, parse_name, split_of)
    num_verts = int(next(iter(templates.values())).shape[0])
    lip, upper = read_regions(root, num_verts)
    faces = load_faces(root, FACE_FILES, faces_from, num_verts)
    present = {u.subject for u in utts if u.split == "train"}
    step = 1 if keep_60fps else 2
    corpus = Corpus("vocaset", root, RECORDED_FPS / step, step, 16_000, templates, faces, lip, upper,
                    utts, [s for s in TRAIN_SUBJECTS if s in present])
    return finish_corpus(corpus, root / "templates.pkl")
