import json

import pytest

from talkinghead_cli import pretrained
from talkinghead_cli.errors import UserError


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "anim.pt").write_bytes(b"weights-a")
    (tmp_path / "exp.pt").write_bytes(b"weights-e")
    reg = {"models": {
        "anim-small": {"file": "anim.pt", "kind": "animator", "default": True,
                       "sha256": pretrained.sha256(tmp_path / "anim.pt")},
        "anim-other": {"file": "missing.pt", "kind": "animator"},
        "expert-small": {"file": "exp.pt", "kind": "expert", "default": True, "sha256": "0" * 64},
    }}
    (tmp_path / "registry.json").write_text(json.dumps(reg))
    monkeypatch.setenv("AVTALK_MODELS", str(tmp_path))
    pretrained._read_registry.cache_clear()
    yield tmp_path
    pretrained._read_registry.cache_clear()


def test_names_paths_and_defaults(models, tmp_path):
    assert pretrained.resolve(None, "animator") == models / "anim.pt"
    assert pretrained.resolve("anim-small", "animator", verify=True) == models / "anim.pt"
    own = tmp_path / "own.pt"
    own.write_bytes(b"x")
    assert pretrained.resolve(own, "animator") == own
    assert pretrained.default_name("expert") == "expert-small"


def test_registry_errors(models):
    with pytest.raises(UserError, match="unknown animator model 'nope'.*anim-small, anim-other"):
        pretrained.resolve("nope", "animator")
    with pytest.raises(UserError, match="checkpoint not found"):
        pretrained.resolve("runs/x/best.pt", "animator")
    with pytest.raises(UserError, match="an animator is needed"):
        pretrained.resolve("expert-small", "animator")
    with pytest.raises(UserError, match="missing its weights"):
        pretrained.resolve("anim-other", "animator")
    with pytest.raises(UserError, match="checksum"):
        pretrained.resolve("expert-small", "expert", verify=True)


def test_no_registry_means_no_default(tmp_path, monkeypatch):
    monkeypatch.setenv("AVTALK_MODELS", str(tmp_path / "empty"))
    pretrained._read_registry.cache_clear()
    with pytest.raises(UserError, match="no default animator"):
        pretrained.resolve(None, "animator")
    pretrained._read_registry.cache_clear()
