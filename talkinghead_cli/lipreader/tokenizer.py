"""Tokenizers of the expert: characters (default) and SentencePiece models.

Vocabulary layout (ESPnet / Auto-AVSR): id 0 ``<blank>`` (CTC), id 1 ``<unk>``, then the
units, and the last id ``<sos/eos>``. Text is normalised before encoding; what
normalisation dropped is returned so callers can tell the user.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.text_metrics import Normalized, normalize_text

BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"
CHAR_UNITS = [" ", "'"] + list(string.ascii_lowercase)


class CharTokenizer:
    """Characters: ``<blank> <unk> ' ' "'" a..z <sos/eos>`` (31 tokens)."""

    kind = "char"

    def __init__(self, vocabulary: list[str] | None = None):
        self.vocabulary = list(vocabulary) if vocabulary else [BLANK, UNK] + CHAR_UNITS + [SOS_EOS]
        if self.vocabulary[0] != BLANK or self.vocabulary[-1] != SOS_EOS:
            raise ValueError("a vocabulary starts with <blank> and ends with <sos/eos>")
        self._ids = {u: i for i, u in enumerate(self.vocabulary)}

    def __len__(self) -> int:
        return len(self.vocabulary)

    @property
    def unk(self) -> int:
        return self._ids[UNK]

    def normalize(self, text: str) -> Normalized:
        return normalize_text(text)

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """text -> (token ids without blank/sos/eos, characters dropped by normalisation)."""
        norm = self.normalize(text)
        return [self._ids.get(c, self.unk) for c in norm.text], norm.dropped

    def decode(self, ids) -> str:
        """ids -> text; special tokens are skipped."""
        special = {0, len(self.vocabulary) - 1}
        return "".join(self.vocabulary[i] for i in _as_list(ids) if i not in special and i != self.unk)

    def state(self) -> dict:
        """What a checkpoint stores to rebuild this tokenizer."""
        return {"kind": self.kind}


class SentencePieceTokenizer:
    """A SentencePiece model file (e.g. Auto-AVSR's unigram5000, upper-case units).

    The vocabulary is ``<blank>`` + units + ``<sos/eos>``; units come from an ESPnet
    units file (``"<piece> <id>"`` per line, as Auto-AVSR ships) when given, else from
    the model's pieces with ``<unk>`` first and control pieces (``<s>``, ``</s>``) left out.
    Text is upper-cased when the model's letter pieces are upper case.
    """

    kind = "sentencepiece"

    def __init__(self, model_file: str | Path | None = None, units_file: str | Path | None = None,
                 model_proto: bytes | None = None, units: list[str] | None = None):
        import sentencepiece as spm

        try:
            if model_proto is None:
                model_proto = Path(model_file).read_bytes()
            self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except (OSError, RuntimeError) as e:
            raise UserError(f"cannot read the SentencePiece model ({e})", model_file,
                            "pass a .model file written by sentencepiece") from e
        self.model_proto = model_proto
        if units is None:
            units = _read_units(units_file) if units_file else self._units_from_model()
        self.vocabulary = [BLANK] + list(units) + [SOS_EOS]
        self._ids = {u: i for i, u in enumerate(self.vocabulary)}
        letters = "".join(p for p in units if p.isalpha())
        self.upper = sum(c.isupper() for c in letters) > sum(c.islower() for c in letters)

    def _units_from_model(self) -> list[str]:
        pieces = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())
                  if not self.sp.is_control(i)]
        return [UNK] + [p for p in pieces if p != self.sp.id_to_piece(self.sp.unk_id())]

    def __len__(self) -> int:
        return len(self.vocabulary)

    @property
    def unk(self) -> int:
        return self._ids[UNK]

    def normalize(self, text: str) -> Normalized:
        return normalize_text(text, upper=self.upper)

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """text -> (token ids, characters dropped by normalisation)."""
        norm = self.normalize(text)
        pieces = self.sp.encode(norm.text, out_type=str) if norm.text else []
        return [self._ids.get(p, self.unk) for p in pieces], norm.dropped

    def decode(self, ids) -> str:
        special = {0, len(self.vocabulary) - 1, self.unk}
        pieces = [self.vocabulary[i] for i in _as_list(ids) if i not in special]
        text = self.sp.decode_pieces(pieces) if pieces else ""
        return text.lower()

    def state(self) -> dict:
        return {"kind": self.kind, "units": self.vocabulary[1:-1],
                "model_proto": torch.frombuffer(bytearray(self.model_proto), dtype=torch.uint8)}


def _read_units(path: str | Path) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UserError(f"cannot read the units file ({e.strerror})", path, "check the path") from e
    return [ln.split()[0] for ln in lines if ln.strip()]


def _as_list(ids) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)


def tokenizer_from_state(state: dict, vocabulary: list[str]):
    """Rebuild a tokenizer from :meth:`state` and the checkpoint's vocabulary."""
    if state.get("kind") == "sentencepiece":
        proto = bytes(state["model_proto"].numpy().tobytes())
        tok = SentencePieceTokenizer(model_proto=proto, units=state["units"])
    else:
        tok = CharTokenizer(vocabulary)
    if tok.vocabulary != list(vocabulary):
        raise UserError("the checkpoint's tokenizer does not match its vocabulary", None,
                        "re-export the checkpoint")
    return tok
