"""Edit-distance rates of recognised text: CER and WER (and any other token sequence, e.g. visemes).

    CER = edit_distance(chars(hyp), chars(ref)) / len(chars(ref))
    WER = edit_distance(words(hyp), words(ref)) / len(words(ref))

Both strings are normalised first as the field does (lower case, accents stripped, letters,
apostrophes and single spaces kept; see :func:`normalize_text`),
so punctuation and case never count as errors. Corpus-level rates pool the edits and the
reference lengths over all utterances (:class:`ErrorRate`), as published tables do, rather
than averaging per-utterance rates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field


@dataclass
class Normalized:
    """Normalised text and the characters that normalisation removed (in order, unique)."""

    text: str
    dropped: list[str] = field(default_factory=list)


def normalize_text(text: str, upper: bool = False, keep: str = "'") -> Normalized:
    """Case-fold, strip accents, drop punctuation and other symbols, collapse spaces.

    Letters a-z, the apostrophe (``keep``) and spaces stay; every other non-space
    character is dropped and reported (hyphens and dashes become spaces).
    """
    decomposed = unicodedata.normalize("NFKD", text)
    out, dropped = [], []
    for ch in decomposed:
        if unicodedata.combining(ch):
            continue
        low = ch.lower()
        if "a" <= low <= "z" or low in keep:
            out.append(low)
        elif ch.isspace() or ch in "-\u2010\u2011\u2012\u2013\u2014":
            out.append(" ")
        else:
            out.append(" " if ch in "/_" else "")
            if ch not in dropped:
                dropped.append(ch)
    clean = re.sub(r"\s+", " ", "".join(out)).strip()
    return Normalized(clean.upper() if upper else clean, dropped)


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit-cost substitutions, insertions, deletions) between two sequences.

    One row of the dynamic-programming table at a time: O(len(a) * len(b)) time, O(len(b)) memory.
    """
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def normalize(text: str) -> str:
    """Lower-case letters, apostrophes and single spaces (what CER/WER compare)."""
    return normalize_text(text).text


def _rate(edits: int, n_ref: int) -> float:
    if n_ref == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / n_ref


def cer(hyp: str, ref: str) -> float:
    """Character error rate of ``hyp`` against ``ref`` (spaces count as characters).

    An empty reference gives 0 for an empty hypothesis and 1 otherwise.
    """
    h, r = normalize(hyp), normalize(ref)
    return _rate(edit_distance(h, r), len(r))


def wer(hyp: str, ref: str) -> float:
    """Word error rate of ``hyp`` against ``ref`` (empty reference: 0 or 1 as :func:`cer`)."""
    h, r = normalize(hyp).split(), normalize(ref).split()
    return _rate(edit_distance(h, r), len(r))


@dataclass
class ErrorRate:
    """Pooled CER and WER over many utterances: total edits / total reference length."""

    char_edits: int = 0
    chars: int = 0
    word_edits: int = 0
    words: int = 0
    count: int = 0

    def add(self, hyp: str, ref: str) -> None:
        h, r = normalize(hyp), normalize(ref)
        self.char_edits += edit_distance(h, r)
        self.chars += len(r)
        self.word_edits += edit_distance(h.split(), r.split())
        self.words += len(r.split())
        self.count += 1

    @property
    def cer(self) -> float:
        return _rate(self.char_edits, self.chars)

    @property
    def wer(self) -> float:
        return _rate(self.word_edits, self.words)
