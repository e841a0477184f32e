import itertools

import pytest
import torch

from talkinghead_cli.lipreader.config import tiny_config
from talkinghead_cli.lipreader.decode import (CTCPrefixScorer, attention_greedy, beam_search, beam_search_one,
                                              ctc_greedy, recognize)
from talkinghead_cli.lipreader.losses import expert_loss
from talkinghead_cli.lipreader.model import LipReader
from talkinghead_cli.lipreader.tokenizer import CharTokenizer


def _collapse(path, blank=0):
    out, prev = [], None
    for tok in path:
        if tok != prev and tok != blank:
            out.append(tok)
        prev = tok
    return out


def test_ctc_greedy_collapses():
    logits = torch.full((1, 7, 4), -5.0)
    for t, k in enumerate([1, 1, 0, 1, 2, 2, 0]):
        logits[0, t, k] = 5.0
    assert ctc_greedy(logits) == [[1, 1, 2]]
    assert ctc_greedy(logits, torch.tensor([3])) == [[1]]


def test_ctc_prefix_scores_match_brute_force():
    torch.manual_seed(0)
    t, k = 4, 3
    logp = torch.randn(t, k).log_softmax(-1).double()
    scorer = CTCPrefixScorer(logp)
    paths = list(itertools.product(range(k), repeat=t))

    def prob(pred):
        total = sum(torch.exp(sum(logp[i, p] for i, p in enumerate(path))) for path in paths
                    if pred(_collapse(path)))
        return torch.log(torch.as_tensor(total, dtype=torch.float64))

    r0 = scorer.initial_state()[None]
    states, psi = scorer.extend(r0, torch.tensor([-1]), torch.tensor([[1, 2]]))
    for c, col in ((1, 0), (2, 1)):
        torch.testing.assert_close(psi[0, col], prob(lambda s: s[:1] == [c]))
        torch.testing.assert_close(scorer.final_score(states[0, col]), prob(lambda s: s == [c]))
    # extend the prefix [1] by 1 (a repeat needs a blank in between) and by 2
    states2, psi2 = scorer.extend(states[:, 0], torch.tensor([1]), torch.tensor([[1, 2]]))
    for c, col in ((1, 0), (2, 1)):
        torch.testing.assert_close(psi2[0, col], prob(lambda s: s[:2] == [1, c]))
        torch.testing.assert_close(scorer.final_score(states2[0, col]), prob(lambda s: s == [1, c]))


@pytest.fixture(scope="module")
def overfit():
    """A tiny video-only expert overfit to two utterances (stops as soon as both decode)."""
    torch.manual_seed(0)
    tok = CharTokenizer()
    texts = ["lips move", "bye"]
    ids = [tok.encode(t)[0] for t in texts]
    cfg = tiny_config(len(tok), modalities="video", dropout=0.0)
    cfg.video_encoder.dropout = cfg.video_encoder.attn_dropout = 0.0
    model = LipReader(cfg)
    video = torch.randn(2, 12, 32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(200):
        model.train()
        out = expert_loss(model, ids, video=video, ctc_weight=0.3, reduction="mean")
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if step % 5 == 4 and recognize(model, tok, video=video, method="ctc") == texts \
                and recognize(model, tok, video=video, method="attention") == texts:
            break
    print(f"overfit in {step + 1} steps")
    return model.eval(), tok, texts, video


def test_greedy_ctc_and_beam_recover_transcripts(overfit):
    model, tok, texts, video = overfit
    assert recognize(model, tok, video=video, method="ctc") == texts
    assert recognize(model, tok, video=video, method="beam", beam=4, ctc_weight=0.3) == texts
    assert recognize(model, tok, video=video, method="beam", beam=1, ctc_weight=0.1) == texts


def test_beam_width_one_equals_greedy_attention(overfit):
    model, _, _, video = overfit
    torch.manual_seed(1)
    noisy = video + 0.8 * torch.randn_like(video)  # a harder input, so the outputs are not trivial
    with torch.no_grad():
        memory, lengths = model.encode(noisy)
        greedy = attention_greedy(model, memory, lengths)
        beam1 = beam_search(model, memory, lengths, beam=1, ctc_weight=0.0)
    assert beam1 == greedy


def test_beam_hypotheses_sorted_and_bounded(overfit):
    model, _, _, video = overfit
    with torch.no_grad():
        memory, lengths = model.encode(video[:1])
        hyps = beam_search_one(model, memory, int(lengths[0]), beam=3, ctc_weight=0.5)
    assert hyps and all(a.score >= b.score for a, b in zip(hyps, hyps[1:]))
    assert all(h.score == h.score and h.score > float("-inf") for h in hyps)  # no NaN, no impossible
    assert all(len(h.tokens) <= int(lengths[0]) for h in hyps)
