import pytest

from talkinghead_cli.errors import UserError
from talkinghead_cli.lipreader.tokenizer import CharTokenizer, SentencePieceTokenizer, tokenizer_from_state
from talkinghead_cli.text_metrics import normalize_text


def test_char_vocabulary_layout():
    tok = CharTokenizer()
    assert len(tok) == 31
    assert tok.vocabulary[0] == "<blank>" and tok.vocabulary[-1] == "<sos/eos>"
    assert tok.vocabulary[1] == "<unk>" and " " in tok.vocabulary and "'" in tok.vocabulary


def test_normalisation_reports_what_was_dropped():
    norm = normalize_text("Hello, World! It's 3 o'clock -- café.")
    assert norm.text == "hello world it's o'clock cafe"
    assert norm.dropped == [",", "!", "3", "."]


def test_char_roundtrip_and_dropped():
    tok = CharTokenizer()
    ids, dropped = tok.encode("Don't STOP; now!")
    assert tok.decode(ids) == "don't stop now"
    assert dropped == [";", "!"]
    assert all(0 < i < len(tok) - 1 for i in ids)


def _train_spm(tmp_path, upper):
    spm = pytest.importorskip("sentencepiece")
    lines = ["the quick brown fox jumps over the lazy dog", "hello world this is a test",
             "lips move when people speak", "reading lips is hard without sound",
             "a small model for a small test", "the dog and the fox are friends"] * 4
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(l.upper() if upper else l for l in lines))
    prefix = tmp_path / "unigram"
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), vocab_size=40,
                                   model_type="unigram", character_coverage=1.0)
    return prefix.with_suffix(".model")


@pytest.mark.parametrize("upper", [True, False])
def test_sentencepiece_roundtrip(tmp_path, upper):
    model_file = _train_spm(tmp_path, upper)
    tok = SentencePieceTokenizer(model_file)
    assert tok.upper is upper
    assert tok.vocabulary[0] == "<blank>" and tok.vocabulary[1] == "<unk>" and tok.vocabulary[-1] == "<sos/eos>"
    ids, dropped = tok.encode("The lazy fox, reading lips!")
    assert dropped == [",", "!"]
    assert tok.unk not in ids  # every letter is covered after case normalisation
    assert tok.decode(ids) == "the lazy fox reading lips"
    # the tokenizer survives a checkpoint round trip (model bytes stored as a tensor)
    again = tokenizer_from_state(tok.state(), tok.vocabulary)
    assert again.encode("hello world") == tok.encode("hello world")


def test_sentencepiece_units_file(tmp_path):
    model_file = _train_spm(tmp_path, True)
    units = tmp_path / "units.txt"
    base = SentencePieceTokenizer(model_file)
    units.write_text("\n".join(f"{u} {i + 1}" for i, u in enumerate(base.vocabulary[1:-1])))
    tok = SentencePieceTokenizer(model_file, units_file=units)
    assert tok.vocabulary == base.vocabulary


def test_sentencepiece_bad_file(tmp_path):
    pytest.importorskip("sentencepiece")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"nope")
    with pytest.raises(UserError, match="SentencePiece"):
        SentencePieceTokenizer(bad)
