"""The offline phonemizer and the phoneme -> viseme map used for VER."""

import json

import pytest

from talkinghead_cli import phonemize as P
from talkinghead_cli.data.synthetic.phonemes import ARPABET

pytest.importorskip("pocketsphinx")


def test_dictionary_words_give_cmu_pronunciations_without_stress():
    assert P.phonemize("Pat, bat!") == ["P", "AE", "T", "B", "AE", "T"]
    assert P.word_phonemes("read") == ("R", "EH", "D")  # the first pronunciation, not read(2)


def test_viseme_map_covers_every_phoneme_and_merges_lookalikes():
    table = P.viseme_map()
    assert set(ARPABET) <= set(table)
    assert table["P"] == table["B"] == table["M"]
    assert table["F"] == table["V"] and table["F"] != table["P"]
    assert P.text_visemes("pat") == P.text_visemes("bat") == P.text_visemes("mat")
    assert P.text_visemes("pat") != P.text_visemes("fat")
    data = json.loads(P.VISEME_FILE.read_text())
    assert "Potamianos" in data["source"]


def test_unknown_words_use_a_letter_to_sound_fallback():
    assert "zorblaxt" not in P.cmudict()
    phones = P.word_phonemes("zorblaxt")
    assert phones and all(p in ARPABET for p in phones)
    assert phones[0] == "Z" and "B" in phones


def test_rule_fallback_handles_digraphs_and_silent_e():
    assert P.letters_to_sound("shape") == ["SH", "AE", "P"]
    assert P.letters_to_sound("buzz") == ["B", "AH", "Z"]
    assert P.letters_to_sound("xqu") == ["K", "S", "K", "W"]
    assert all(p in ARPABET for p in P.letters_to_sound("quickly"))


def test_without_espeak_the_rules_spell_unknown_words(monkeypatch):
    monkeypatch.setattr(P, "fallback_backend", lambda: "rules")
    monkeypatch.setattr(P, "_SPELLED", {})
    assert P.espeak_ipa(["glorpt"]) is None
    assert P.word_phonemes("glorpt") == tuple(P.letters_to_sound("glorpt"))


def test_espeak_runs_outside_this_process():
    """The TTS needs espeak-ng's in-process state untouched: spelling happens in a child."""
    pytest.importorskip("espeakng_loader")
    from pathlib import Path

    def loaded() -> bool:
        maps = Path("/proc/self/maps")
        return maps.exists() and "libespeak-ng" in maps.read_text()

    before = loaded()
    ipa = P.espeak_ipa(["zorblaxt", "cat"])
    assert ipa is not None and len(ipa) == 2 and "k" in ipa[1]
    assert loaded() == before  # the library was not mapped into this process by the call
