"""Bundled models, registered by name.

The registry is data: ``models/registry.json`` beside the weights lists each model's file,
kind (``animator`` or ``expert``), SHA-256 and model card, and which model is the default of
each kind. Commands accept either a path or a registered name wherever they take a
checkpoint; with no checkpoint at all they use the default of the kind they need.

Where the models folder is looked up, in order: ``$AVTALK_MODELS``, then ``models/`` at the
root of the source checkout this package runs from (an editable install or a clone).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from talkinghead_cli.errors import UserError

REGISTRY_NAME = "registry.json"


def models_dir() -> Path:
    """The folder holding ``registry.json`` and the bundled weights."""
    env = os.environ.get("AVTALK_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models"


@lru_cache(maxsize=4)
def _read_registry(folder: str) -> dict:
    path = Path(folder) / REGISTRY_NAME
    if not path.exists():
        return {"models": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"the model registry is not valid JSON ({e.msg})", path, "restore it from git") from e
    if not isinstance(data.get("models"), dict):
        raise UserError("the model registry has no 'models' table", path, "restore it from git")
    return data


def registry() -> dict[str, dict]:
    """Name -> entry (``file``, ``kind``, ``sha256``, ``card``, ``default``, ``description``)."""
    return dict(_read_registry(str(models_dir()))["models"])


def default_name(kind: str) -> str | None:
    """The registered default model of ``kind``, if any."""
    for name, entry in registry().items():
        if entry.get("kind") == kind and entry.get("default"):
            return name
    return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(name_or_path: str | Path | None, kind: str, verify: bool = False) -> Path:
    """Turn a checkpoint argument into a file path.

    Args:
        name_or_path: an existing file, a registered name, or None for the default of ``kind``.
        kind: ``animator`` or ``expert`` (only names of that kind are accepted).
        verify: check the file's SHA-256 against the registry.
    Raises:
        UserError: unknown name, a name of another kind, no default, or a missing bundled file.
    """
    if name_or_path is not None and Path(name_or_path).exists():
        return Path(name_or_path)
    models = registry()
    name = str(name_or_path) if name_or_path is not None else default_name(kind)
    if name is None:
        raise UserError(f"no {kind} checkpoint given and no default {kind} is bundled", models_dir(),
                        f"pass a checkpoint path, or restore models/{REGISTRY_NAME}")
    if name not in models:
        known = ", ".join(n for n, e in models.items() if e.get("kind") == kind) or "none"
        looks_like_path = any(sep in name for sep in "/\\") or name.endswith((".pt", ".pth", ".ckpt"))
        what = "checkpoint not found" if looks_like_path else f"unknown {kind} model '{name}'"
        raise UserError(what, name if looks_like_path else None, f"give a file path or one of: {known}")
    entry = models[name]
    if entry.get("kind") != kind:
        raise UserError(f"'{name}' is an {entry.get('kind')} model, an {kind} is needed", None,
                        f"choose a registered {kind}")
    path = models_dir() / entry["file"]
    if not path.exists():
        raise UserError(f"the bundled model '{name}' is missing its weights", path,
                        "restore the file from git (git lfs is not used) or rebuild it from its model card")
    if verify and entry.get("sha256") and sha256(path) != entry["sha256"]:
        raise UserError(f"the bundled model '{name}' does not match its registered checksum", path,
                        "restore the file from git or rebuild it from its model card")
    return path
