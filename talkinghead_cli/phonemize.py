"""Offline phonemizer: words -> ARPAbet, and ARPAbet -> viseme classes (for VER).

Words are looked up in the CMU pronouncing dictionary that ships with ``pocketsphinx``
(first pronunciation, stress digits dropped). A word missing from it (a misspelling in a
lip reader's hypothesis, a name) is spelled by a letter-to-sound fallback:

1. espeak-ng (``espeakng-loader``), through its ``espeak_TextToPhonemes`` call in IPA (run
   in a child process, see :func:`espeak_ipa`), mapped to ARPAbet with
   :func:`~talkinghead_cli.data.synthetic.phonemes.ipa_to_arpabet`;
2. when espeak-ng is not installed, a small rule set (:func:`letters_to_sound`:
   digraphs first, then one phoneme per letter), crude but deterministic.

Visemes: :func:`to_visemes` maps phonemes with ``data/visemes_ver.json`` (the IBM
viseme set of Neti / Potamianos et al. 2003; the file documents its source).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
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


# espeak-ng runs in a child Python process: the library keeps global state (voice, callbacks,
# synthesis history) that the corpus TTS (data/synthetic/tts.py) relies on being pristine, so
# this process never initialises it. One child spells all unknown words of a call (~0.1 s).
_SPELL_SCRIPT = r"""
import ctypes, json, sys
import espeakng_loader
lib = ctypes.CDLL(espeakng_loader.get_library_path())
lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
if lib.espeak_Initialize(2, 200, espeakng_loader.get_data_path().encode(), 0) < 0:
    sys.exit(3)
if lib.espeak_SetVoiceByName(b"en-us") != 0:
    sys.exit(4)
out = []
for word in json.load(sys.stdin):
    buf = ctypes.c_char_p(word.encode("utf-8"))
    parts = []
    while buf.value:
        res = lib.espeak_TextToPhonemes(ctypes.pointer(buf), 1, 0x02)  # UTF-8 text in, IPA out
        if res:
            parts.append(res.decode("utf-8", "replace"))
    out.append(" ".join(parts))
json.dump(out, sys.stdout)
"""

_SPELLED: dict[str, tuple[str, ...]] = {}


@lru_cache(maxsize=1)
def fallback_backend() -> str:
    """Name of the letter-to-sound fallback in use: ``espeak-ng`` or ``rules``."""
    return "espeak-ng" if importlib.util.find_spec("espeakng_loader") is not None else "rules"


def espeak_ipa(words: list[str]) -> list[str] | None:
    """IPA of each word from espeak-ng (en-us) in a child process; None when it cannot run."""
    if not words or fallback_backend() != "espeak-ng":
        return None
    try:
        done = subprocess.run([sys.executable, "-c", _SPELL_SCRIPT], input=json.dumps(words),
                              capture_output=True, text=True, timeout=60, check=True)
        ipa = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return None
    return ipa if isinstance(ipa, list) and len(ipa) == len(words) else None


def spell_unknown(words: list[str]) -> None:
    """Spell the words missing from the dictionary (and not yet spelled), all in one go."""
    table = cmudict()
    todo = sorted({w for w in words if w not in table and w not in _SPELLED})
    if not todo:
        return
    ipa = espeak_ipa(todo) or [""] * len(todo)
    for word, sounds in zip(todo, ipa):
        phones = [p for p in ipa_to_arpabet(sounds) if p in ARPABET]
        _SPELLED[word] = tuple(phones) if phones else tuple(letters_to_sound(word))


def word_phonemes(word: str) -> tuple[str, ...]:
    """ARPAbet of one lower-case word: the CMU dictionary, else the letter-to-sound fallback."""
    found = cmudict().get(word)
    if found is not None:
        return found
    spell_unknown([word])
    return _SPELLED[word]


def phonemize(text: str) -> list[str]:
    """ARPAbet phonemes of ``text`` (lower-cased words of letters and apostrophes)."""
    words = _WORD.findall(text.lower())
    spell_unknown(words)
    out: list[str] = []
    for word in words:
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
