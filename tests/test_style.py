import pytest
import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.style import mix_style, parse_style, subject_style


def test_parse_style():
    subs = ["A", "B", "C"]
    assert parse_style("B", subs).tolist() == [0, 1, 0]
    assert parse_style("A:1,C:3", subs).tolist() == [0.25, 0, 0.75]
    assert parse_style(None, subs).tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(UserError, match="A, B, C"):
        parse_style("D", subs)
    with pytest.raises(UserError):
        parse_style("A:x", subs)


def test_mix_and_subject_style():
    subs = ["A", "B", "C"]
    assert mix_style({"A": 1, "C": 1}, subs).tolist() == [0.5, 0, 0.5]
    with pytest.raises(UserError, match="non-negative"):
        mix_style({"A": -1, "B": 2}, subs)
    assert subject_style("C", subs).tolist() == [0, 0, 1]
    assert torch.allclose(subject_style("Z", subs), torch.full((3,), 1 / 3))
