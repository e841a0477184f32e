"""ARPAbet symbols, and IPA (as espeak-ng/piper write it) to ARPAbet with durations.

A phoneme segment is ``(start_s, end_s, symbol)`` with ARPAbet symbols without stress
digits, plus ``"SIL"`` for silence/pauses.
"""

from __future__ import annotations

ARPABET = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
           "UH UW V W Y Z ZH").split()
VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
SILENCE = "SIL"

# IPA strings (longest first when matching) -> ARPAbet. Covers General American as
# espeak-ng's en-us writes it, plus common British/other variants of the same symbols.
IPA_TO_ARPABET = {
    "aɪə": "AY", "aʊə": "AW", "eɪ": "EY", "aɪ": "AY", "aʊ": "AW", "oʊ": "OW", "əʊ": "OW", "ɔɪ": "OY",
    "tʃ": "CH", "dʒ": "JH", "ɑː": "AA", "ɑ": "AA", "ɒ": "AA", "æ": "AE", "a": "AE", "ʌ": "AH",
    "ə": "AH", "ɐ": "AH", "ᵻ": "IH", "ɔː": "AO", "ɔ": "AO", "ɛ": "EH", "e": "EH", "ɜː": "ER",
    "ɜ": "ER", "ɚ": "ER", "ɝ": "ER", "ɪ": "IH", "i": "IY", "iː": "IY", "ʊ": "UH", "u": "UW",
    "uː": "UW", "o": "OW", "oː": "OW", "b": "B", "d": "D", "ð": "DH", "f": "F", "ɡ": "G", "g": "G",
    "h": "HH", "j": "Y", "k": "K", "l": "L", "ɫ": "L", "m": "M", "n": "N", "ŋ": "NG", "p": "P",
    "ɹ": "R", "r": "R", "ɾ": "D", "s": "S", "ʃ": "SH", "t": "T", "θ": "TH", "v": "V", "w": "W",
    "z": "Z", "ʒ": "ZH", "ʔ": "T", "x": "K", "ç": "HH", "ʍ": "W", "n̩": "N", "l̩": "L", "m̩": "M",
}
# Symbols that carry no segment of their own.
_MODIFIERS = set("ˈˌːˑ̩̃-")
_PAUSES = set(".,;:!?—–…\"'()")
_MAX_KEY = max(len(k) for k in IPA_TO_ARPABET)


def ipa_to_arpabet(ipa: str) -> list[str]:
    """Split an IPA string into ARPAbet symbols (greedy longest match; modifiers dropped)."""
    out = []
    i = 0
    while i < len(ipa):
        ch = ipa[i]
        if ch in _MODIFIERS or ch.isspace():
            i += 1
            continue
        for n in range(min(_MAX_KEY, len(ipa) - i), 0, -1):
            sym = IPA_TO_ARPABET.get(ipa[i:i + n])
            if sym is not None:
                out.append(sym)
                i += n
                break
        else:
            i += 1  # unknown symbol: skip
    return out


def timed_ipa_to_segments(tokens: list[tuple[str, float]]) -> list[tuple[float, float, str]]:
    """Turn timed IPA code points into ARPAbet segments.

    Args:
        tokens: (ipa code point or string, duration in seconds), in order. Stress marks
            give their time to the next phoneme, length marks to the previous; word spaces
            are split between the neighbours; pauses and ``^``/``$`` become ``SIL``.
    Returns:
        [(start_s, end_s, symbol)], contiguous from 0, adjacent SILs merged.
    """
    # 1) group code points into phoneme strings with durations
    groups: list[list] = []  # [ipa, duration, kind] kind: "ph" | "sp" | "sil"
    carry = 0.0
    for tok, dur in tokens:
        if tok in ("ˈ", "ˌ"):
            carry += dur
        elif tok in ("ː", "ˑ") or (tok and all(c in _MODIFIERS for c in tok)):
            if groups and groups[-1][2] == "ph":
                groups[-1][0] += tok
                groups[-1][1] += dur
            else:
                carry += dur
        elif tok.isspace() or tok == "":
            groups.append(["", dur + carry, "sp"])
            carry = 0.0
        elif tok in ("^", "$", "_") or all(c in _PAUSES for c in tok):
            groups.append(["", dur + carry, "sil"])
            carry = 0.0
        else:
            groups.append([tok, dur + carry, "ph"])
            carry = 0.0
    if carry and groups:
        groups[-1][1] += carry
    # 2) merge consecutive code points that form one ARPAbet symbol (diphthongs, affricates)
    merged: list[list] = []
    for g in groups:
        if (g[2] == "ph" and merged and merged[-1][2] == "ph"
                and len(ipa_to_arpabet(merged[-1][0] + g[0])) == 1
                and len(ipa_to_arpabet(merged[-1][0])) == 1 and len(ipa_to_arpabet(g[0])) == 1):
            merged[-1][0] += g[0]
            merged[-1][1] += g[1]
        else:
            merged.append(list(g))
    # 3) word spaces split between neighbouring phonemes; then cumulative times
    items = [[ipa, dur, kind] for ipa, dur, kind in merged]
    for i, (_, dur, kind) in enumerate(items):
        if kind != "sp":
            continue
        prev_ph = i > 0 and items[i - 1][2] == "ph"
        next_ph = i + 1 < len(items) and items[i + 1][2] == "ph"
        if prev_ph or next_ph:
            share = dur / (int(prev_ph) + int(next_ph))
            if prev_ph:
                items[i - 1][1] += share
            if next_ph:
                items[i + 1][1] += share
            items[i][1] = 0.0
        items[i][2] = "sil"
    segs: list[tuple[float, float, str]] = []
    t = 0.0
    for ipa, dur, kind in items:
        syms = (ipa_to_arpabet(ipa) or [SILENCE]) if kind == "ph" else [SILENCE]
        step = dur / len(syms)
        for sym in syms:
            segs.append((t, t + step, sym))
            t += step
    return merge_silence(segs)


def merge_silence(segs: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    out: list[tuple[float, float, str]] = []
    for a, b, s in segs:
        if b <= a:
            continue
        if out and s == SILENCE and out[-1][2] == SILENCE:
            out[-1] = (out[-1][0], b, s)
        else:
            out.append((a, b, s))
    return out
