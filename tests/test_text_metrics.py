"""CER / WER on hand-worked cases."""

import pytest

from talkinghead_cli.text_metrics import ErrorRate, cer, edit_distance, wer


@pytest.mark.parametrize("a,b,d", [
    ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3),
    ("flaw", "lawn", 2), ("abc", "abc", 0), ("abc", "cba", 2),
    (["the", "cat"], ["a", "cat", "sat"], 2), ([1, 2, 3], [1, 3], 1),
])
def test_edit_distance_hand_cases(a, b, d):
    assert edit_distance(a, b) == d
    assert edit_distance(b, a) == d


def test_cer_counts_characters_of_normalised_text():
    assert cer("hello world", "hello world") == 0.0
    # one substitution out of 11 reference characters (the space counts)
    assert cer("hallo world", "hello world") == pytest.approx(1 / 11)
    # case and punctuation are not errors
    assert cer("Hello, World!", "hello world") == 0.0
    assert cer("", "abcd") == 1.0
    assert cer("abcdefgh", "abcd") == 1.0  # 4 insertions / 4 reference characters
    assert cer("x", "") == 1.0 and cer("", "") == 0.0


def test_wer_counts_words():
    assert wer("the cat sat", "the cat sat") == 0.0
    assert wer("the cat sat on", "the cat sat") == pytest.approx(1 / 3)
    assert wer("a cat", "the cat sat") == pytest.approx(2 / 3)
    assert wer("THE  cat's   sat.", "the cat's sat") == 0.0
    assert wer("one two three four", "two") == 3.0  # insertions can push WER above 1


def test_pooled_rates_weight_by_reference_length():
    acc = ErrorRate()
    acc.add("ab", "ab")        # 0 char edits / 2
    acc.add("xbcd", "abcdefgh")  # 1 sub + 4 del = 5 / 8
    assert acc.count == 2
    assert acc.cer == pytest.approx(5 / 10)
    assert acc.wer == pytest.approx(1 / 2)
