import numpy as np
import pytest
import soundfile as sf
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep caches (e.g. retargeting maps) out of the user's ~/.cache during tests."""
    monkeypatch.setenv("AVTALK_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "avtalk-cache"))


@pytest.fixture
def sphere():
    """A small closed triangle mesh (642 vertices)."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=3)
    return np.asarray(m.vertices, dtype=np.float32), np.asarray(m.faces, dtype=np.int64)


@pytest.fixture
def tone_wav(tmp_path):
    """A 1 s, 44.1 kHz stereo WAV with a 220 Hz tone."""
    sr = 44_100
    t = np.arange(sr) / sr
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([wave, wave], axis=1), sr)
    return path
