"""Forced alignment of real speech to its transcript with pocketsphinx (phone level).

pocketsphinx ships an English acoustic model and the CMU dictionary; alignment runs in
two passes (word alignment, then phone alignment on the same audio) at 100 frames/s.
A transcript that does not match the audio makes the first pass fail, which is
reported as a UserError. Every call uses a fresh decoder: pocketsphinx adapts its feature
normalisation from one utterance to the next, so a shared decoder made a file's alignment
depend on the files aligned before it (and could fail a file that aligns alone).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from talkinghead_cli.audio import SAMPLE_RATE
from talkinghead_cli.data.synthetic.phonemes import ARPABET, SILENCE
from talkinghead_cli.errors import UserError

_FRAME_S = 0.01


def _decoder():
    """A new pocketsphinx decoder (English model) for one utterance."""
    try:
        from pocketsphinx import Decoder
    except ModuleNotFoundError as e:
        raise UserError("forced alignment needs pocketsphinx", None,
                        'install the synthesis extras: pip install -e ".[synth]"') from e
    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")


def normalise_transcript(text: str) -> list[str]:
    """Lower-case words of letters and apostrophes (digits and symbols dropped)."""
    return re.findall(r"[a-z]+(?:'[a-z]+)*", text.lower())


def align(wave: np.ndarray, text: str, source: str | Path | None = None) -> list[tuple[float, float, str]]:
    """Phone segments of ``wave`` spoken as ``text``.

    Args:
        wave: (S,) float32 at 16 kHz.
        text: the transcript.
        source: the file name, for error messages.
    Returns:
        [(start_s, end_s, ARPAbet or SIL)] covering the whole wave.
    Raises:
        UserError: empty transcript, words missing from the dictionary, or audio the
            transcript cannot be aligned to.
    """
    words = normalise_transcript(text)
    if not words:
        raise UserError("the transcript has no words", source, "write the spoken words in the .txt file")
    d = _decoder()
    oov = [w for w in words if d.lookup_word(w) is None]
    if oov:
        raise UserError(f"words not in the aligner's dictionary: {', '.join(sorted(set(oov))[:5])}", source,
                        "spell numbers and names out in common English words")
    pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    mismatch = UserError("the transcript does not match the recording (alignment failed)", source,
                         "check that the .txt file holds exactly the words spoken")
    try:
        d.set_align_text(" ".join(words))
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        if d.hyp() is None:
            raise mismatch
        d.set_alignment()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        alignment = d.get_alignment()
    except RuntimeError as e:  # pocketsphinx reports a failed search as RuntimeError
        raise mismatch from e
    segs: list[tuple[float, float, str]] = []
    for word in alignment:
        for ph in word:
            name = ph.name.upper()
            sym = name if name in ARPABET else SILENCE
            segs.append((ph.start * _FRAME_S, (ph.start + ph.duration) * _FRAME_S, sym))
    return _fill(segs, len(wave) / SAMPLE_RATE)


def _fill(segs: list[tuple[float, float, str]], duration: float) -> list[tuple[float, float, str]]:
    """Sort, add SIL in gaps and at the ends, clip to the duration, merge adjacent SIL."""
    out: list[tuple[float, float, str]] = []
    t = 0.0
    for a, b, s in sorted(segs):
        a, b = min(a, duration), min(b, duration)
        if a > t + 1e-6:
            out.append((t, a, SILENCE))
        if b > a:
            out.append((max(a, t), b, s))
            t = b
    if t < duration - 1e-6:
        out.append((t, duration, SILENCE))
    merged: list[tuple[float, float, str]] = []
    for a, b, s in out:
        if merged and s == SILENCE and merged[-1][2] == SILENCE:
            merged[-1] = (merged[-1][0], b, s)
        else:
            merged.append((round(a, 5), round(b, 5), s))
    return merged
