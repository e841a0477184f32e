"""Edit-distance rates of recognised text: CER and WER (and any other token sequence, e.g. visemes).

    CER = edit_distance(chars(hyp), chars(ref)) / len(chars(ref))
    WER = edit_distance(words(hyp), words(ref)) / len(words(ref))

Both strings are normalised first as the field does (lower case, accents stripped, letters,
apostrophes and single spaces kept; see :func:`talkinghead_cli.lipreader.tokenizer.normalize_text`),
so punctuation and case never count as errors. Corpus-level rates pool the edits and the
reference lengths over all utterances (:class:`ErrorRate`), as published tables do, rather
than averaging per-utterance rates.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


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
    from talkinghead_cli.lipreader.tokenizer import normalize_text

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
