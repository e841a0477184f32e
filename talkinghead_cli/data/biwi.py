"""BIWI (B3D(AC)^2) in FaceFormer/CodeTalker's processed layout.

Files: ``wav/F2_e01.wav`` (44.1 kHz, resampled to 16 kHz on reading),
``vertices_npy/F2_e01.npy`` of shape (T, 70110) at 25 fps, ``templates.pkl`` of
subject -> (23370, 3), optionally ``templates/BIWI.ply`` or ``BIWI.ply`` (the faces) and
``regions/lve.txt`` / ``regions/fdd.txt`` (CodeTalker ships both, comma separated).

Published split (FaceFormer/CodeTalker): training subjects F2 F3 F4 M3 M4 M5 with
sentences e01-e32, validation e33-e36 of the same subjects, test-A e37-e40 of the same
subjects, test-B the unseen subjects F1 F5 F6 F7 F8 M1 M2 M6 with e37-e40.
"""

from __future__ import annotations

import re
from pathlib import Path

from talkinghead_cli.data.dataset import (Corpus, finish_corpus, load_faces, load_templates_pkl,
                                          pair_files, read_regions)
from talkinghead_cli.errors import UserError

FPS = 25
TRAIN_SUBJECTS = ["F2", "F3", "F4", "M3", "M4", "M5"]
TEST_B_SUBJECTS = ["F1", "F5", "F6", "F7", "F8", "M1", "M2", "M6"]
FACE_FILES = ["templates/BIWI.ply", "BIWI.ply"]


def split_of(subject: str, sentence: int) -> str | None:
    """The published split of one utterance (``test`` is test-A), or None."""
    if subject in TRAIN_SUBJECTS:
        if 1 <= sentence <= 32:
            return "train"
        if 33 <= sentence <= 36:
            return "val"
        if 37 <= sentence <= 40:
            return "test"
    if subject in TEST_B_SUBJECTS and 37 <= sentence <= 40:
        return "test_b"
    return None


def parse_name(stem: str) -> tuple[str, int] | None:
    """``F2_e01`` -> (``F2``, 1)."""
    m = re.fullmatch(r"([FM]\d+)_e(\d+)", stem)
    return (m.group(1), int(m.group(2))) if m else None


def read_biwi(root: str | Path, faces_from: str | Path | None = None) -> Corpus:
    """Read and check a processed BIWI folder (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("dataset folder not found", root, "check --data-root")
    templates = load_templates_pkl(root / "templates.pkl")
    utts = pair_files(root, parse_name, split_of)
    num_verts = int(next(iter(templates.values())).shape[0])
    lip, upper = read_regions(root, num_verts)
    faces = load_faces(root, FACE_FILES, faces_from, num_verts)
    present = {u.subject for u in utts if u.split == "train"}
    corpus = Corpus("biwi", root, float(FPS), 1, 16_000, templates, faces, lip, upper, utts,
                    [s for s in TRAIN_SUBJECTS if s in present])
    return finish_corpus(corpus, root / "templates.pkl")
