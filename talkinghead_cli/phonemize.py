"""Offline phonemizer: words -> ARPAbet, and ARPAbet -> viseme classes (for VER).

Words are looked up in the CMU pronouncing dictionary that ships with ``pocketsphinx``
(first pronunciation, stress digits dropped). A word missing from it (a misspelling in a
lip reader's hypothesis, a name) is spelled by a letter-to-sound fallback:

1. espeak-ng (``espeakng-loader``), through its ``espeak_TextToPhonemes`` call in IPA,
   mapped to ARPAbet with :func:`~talkinghead_cli.data.synthetic.phonemes.ipa_to_arpabet`;
2. when espeak-ng is not installed, a small rule set (:func:`letters_to_sound`:
   digraphs first, then one phoneme per letter), crude but deterministic.

Visemes: :func:`to_visemes` maps phonemes with ``data/visemes_ver.json`` (the IBM
viseme set of Neti / Potamianos et al. 2003; the file documents its source).
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
from functools import lru_cache
from pathlib import Path

from talkinghead_cli.data.synthetic.phonemes import ARPABET, ipa_to_arpabet
from talkinghead_cli.errors import UserError

VISEME_FILE = Path(__file__).parent / "data" / "visemes_ver.json"

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


# ----------------------------------------------------------------------------- CMU dictionary


def cmudict_path() -> Path:
    """The CMU dictionary file inside the installed pocketsphinx package."""
    try:
        import pocketsphinx
    except ModuleNotFoundError as e:
        raise UserError("phonemes (for VER) need the CMU dictionary from pocketsphinx", None,
                        'install the score extras: pip install -e ".[score]"') from e
    path = Path(pocketsphinx.__file__).parent / "model" / "en-us" / "cmudict-en-us.dict"
    if not path.exists():
        raise UserError("pocketsphinx ships no cmudict-en-us.dict", path, "reinstall pocketsphinx>=5")
    return path


@lru_cache(maxsize=1)
def cmudict() -> dict[str, tuple[str, ...]]:
    """{word: ARPAbet phonemes} of the first pronunciation of each word (no stress digits)."""
    table: dict[str, tuple[str, ...]] = {}
    for line in cmudict_path().read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 2 or "(" in parts[0]:  # alternates are written word(2)
            continue
        table.setdefault(parts[0].lower(), tuple(re.sub(r"\d", "", p).upper() for p in parts[1:]))
    return table


# ----------------------------------------------------------------------------- letter to sound

# Digraphs (checked first) and single letters -> ARPAbet. A deliberately small rule set:
# it only has to give a plausible viseme string for words the dictionary lacks.
_DIGRAPHS = {"ch": ["CH"], "sh": ["SH"], "th": ["TH"], "ph": ["F"], "wh": ["W"], "ng": ["NG"],
             "ck": ["K"], "qu": ["K", "W"], "ee": ["IY"], "ea": ["IY"], "oo": ["UW"], "ou": ["AW"],
             "ow": ["OW"], "ai": ["EY"], "ay": ["EY"], "oi": ["OY"], "oy": ["OY"], "au": ["AO"],
             "aw": ["AO"], "er": ["ER"], "ir": ["ER"], "ur": ["ER"], "ar": ["AA", "R"], "or": ["AO", "R"]}
_LETTERS = {"a": ["AE"], "b": ["B"], "c": ["K"], "d": ["D"], "e": ["EH"], "f": ["F"], "g": ["G"],
            "h": ["HH"], "i": ["IH"], "j": ["JH"], "k": ["K"], "l": ["L"], "m": ["M"], "n": ["N"],
            "o": ["AA"], "p": ["P"], "q": ["K"], "r": ["R"], "s": ["S"], "t": ["T"], "u": ["AH"],
            "v": ["V"], "w": ["W"], "x": ["K", "S"], "y": ["Y"], "z": ["Z"]}


def letters_to_sound(word: str) -> list[str]:
    """Rule-based spelling of a lower-case word in ARPAbet (digraphs, then letters).

    A final silent ``e`` after a consonant is dropped; doubled consonants count once.
    """
    w = re.sub(r"[^a-z]", "", word.lower())
    if len(w) > 2 and w.endswith("e") and w[-2] not in "aeiou":
        w = w[:-1]
    out: list[str] = []
    i = 0
    while i < len(w):
        pair = w[i:i + 2]
        if pair in _DIGRAPHS:
            out += _DIGRAPHS[pair]
            i += 2
            continue
        if i > 0 and w[i] == w[i - 1] and w[i] not in "aeiou":
            i += 1
            continue
        out += _LETTERS.get(w[i], [])
        i += 1
    return out


class _Espeak:
    """espeak-ng's text-to-phonemes call (IPA) through ctypes; one instance per process."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        # AUDIO_OUTPUT_SYNCHRONOUS (no sound device), as the TTS module initialises it
        if lib.espeak_Initialize(2, 200, espeakng_loader.get_data_path().encode(), 0) < 0:
            raise RuntimeError("espeak-ng failed to initialise")
        if lib.espeak_SetVoiceByName(b"en-us") != 0:
            raise RuntimeError("espeak-ng has no en-us voice")
        self._lib = lib

    def ipa(self, text: str) -> str:
        """IPA of ``text`` (clauses joined by spaces)."""
        buf = ctypes.c_char_p(text.encode("utf-8"))
        ptr = ctypes.pointer(buf)
        parts = []
        with self._lock:
            while buf.value:
                res = self._lib.espeak_TextToPhonemes(ptr, 1, 0x02)  # UTF-8 text, IPA out
                if res:
                    parts.append(res.decode("utf-8", errors="replace"))
        return " ".join(parts)


@lru_cache(maxsize=1)
def _espeak() -> _Espeak | None:
    try:
        return _Espeak()
    except (ImportError, OSError, RuntimeError, AttributeError):
        return None


def fallback_backend() -> str:
    """Name of the letter-to-sound fallback in use: ``espeak-ng`` or ``rules``."""
    return "espeak-ng" if _espeak() is not None else "rules"


@lru_cache(maxsize=4096)
def word_phonemes(word: str) -> tuple[str, ...]:
    """ARPAbet of one lower-case word: the CMU dictionary, else the letter-to-sound fallback."""
    found = cmudict().get(word)
    if found is not None:
        return found
    engine = _espeak()
    if engine is not None:
        phones = [p for p in ipa_to_arpabet(engine.ipa(word)) if p in ARPABET]
        if phones:
            return tuple(phones)
    return tuple(letters_to_sound(word))


def phonemize(text: str) -> list[str]:
    """ARPAbet phonemes of ``text`` (lower-cased words of letters and apostrophes)."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        out += word_phonemes(word)
    return out


# ----------------------------------------------------------------------------- visemes


@lru_cache(maxsize=1)
def viseme_map() -> dict[str, str]:
    """{ARPAbet phoneme: viseme class} from ``data/visemes_ver.json``."""
    data = json.loads(VISEME_FILE.read_text(encoding="utf-8"))
    table = {ph: cls for cls, phones in data["classes"].items() for ph in phones}
    missing = [p for p in ARPABET if p not in table]
    if missing:
        raise ValueError(f"{VISEME_FILE} lacks visemes for {missing}")
    return table


def to_visemes(phonemes: list[str]) -> list[str]:
    """Viseme class of each phoneme (unknown symbols are skipped)."""
    table = viseme_map()
    return [table[p] for p in phonemes if p in table]


def text_visemes(text: str) -> list[str]:
    """``text`` -> phonemes -> viseme classes."""
    return to_visemes(phonemize(text))
