"""Decoding: greedy CTC, greedy attention, and joint CTC/attention beam search.

Beam search (one utterance at a time, hypotheses batched): each step the decoder scores
every running hypothesis, the ``pre_beam`` best next tokens by attention score are
kept, and each candidate gets

    score(h + c) = score(h) + (1 - λ) log p_att(c | h) + λ [log ψ_ctc(h + c) - log ψ_ctc(h)]

with ψ_ctc the CTC prefix probability (the probability that the CTC output starts with
the prefix), computed by the forward recursion of Watanabe et al. (2017). <eos> gets
the full-sequence CTC probability instead. Finished hypotheses are ranked by their
score divided by their length (tokens + <eos>).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


def ctc_greedy(ctc_logits: torch.Tensor, lengths: torch.Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. ctc_logits: (B, T, K)."""
    best = ctc_logits.argmax(-1).tolist()
    out = []
    for i, path in enumerate(best):
        n = len(path) if lengths is None else int(lengths[i])
        ids, prev = [], None
        for tok in path[:n]:
            if tok != prev and tok != blank:
                ids.append(tok)
            prev = tok
        out.append(ids)
    return out


@torch.no_grad()
def attention_greedy(model, memory: torch.Tensor, lengths: torch.Tensor, max_len: int | None = None) -> list[list[int]]:
    """Autoregressive argmax decoding with the attention decoder. memory: (B, T, D)."""
    b = memory.shape[0]
    max_len = int(lengths.max()) if max_len is None else max_len
    tokens = torch.full((b, 1), model.sos, dtype=torch.long, device=memory.device)
    done = torch.zeros(b, dtype=torch.bool, device=memory.device)
    for _ in range(max_len):
        logp = model.decode_logits(tokens, memory, lengths)[:, -1].log_softmax(-1)
        logp[:, model.blank] = NEG_INF
        nxt = logp.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, model.eos), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == model.eos
        if bool(done.all()):
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[: row.index(model.eos)] if model.eos in row else row)
    return out


class CTCPrefixScorer:
    """CTC prefix probabilities for one utterance, batched over hypotheses and candidates.

    A hypothesis state is ``r`` (T, 2): log probabilities, at each frame t, of all CTC
    paths over frames 0..t that output exactly the prefix and end in a non-blank (``r[:, 0]``)
    or in a blank (``r[:, 1]``).
    """

    def __init__(self, logp: torch.Tensor, blank: int = 0):
        """logp: (T, K) CTC log-probabilities of the utterance's valid frames."""
        self.logp, self.blank = logp, blank
        self.t = logp.shape[0]

    def initial_state(self) -> torch.Tensor:
        """State of the empty prefix: (T, 2); blanks only."""
        r = torch.full((self.t, 2), NEG_INF, device=self.logp.device, dtype=self.logp.dtype)
        r[:, 1] = torch.cumsum(self.logp[:, self.blank], 0)
        return r

    def extend(self, r: torch.Tensor, last: torch.Tensor, cands: torch.Tensor):
        """Prefix scores of every hypothesis extended by each of its candidates.

        Args:
            r: (N, T, 2) states; last: (N,) last label of each prefix (-1 if empty);
            cands: (N, C) candidate labels.
        Returns:
            new states (N, C, T, 2) and log ψ of the extended prefixes (N, C).
        """
        n, c = cands.shape
        x = self.logp[:, cands]  # (T, N, C)
        r_sum = torch.logaddexp(r[..., 0], r[..., 1]).T  # (T, N)
        same = (cands == last[:, None])[None]  # (1, N, C)
        # phi[t]: paths for the prefix up to t that may be followed by a new label c
        phi = torch.where(same, r[..., 1].T[..., None], r_sum[..., None])  # (T, N, C)
        empty = (last < 0)[:, None]
        new_n = [torch.where(empty, x[0], torch.full_like(x[0], NEG_INF))]
        new_b = [torch.full_like(x[0], NEG_INF)]
        psi = new_n[0]
        blank = self.logp[:, self.blank]
        for t in range(1, self.t):
            new_n.append(torch.logaddexp(new_n[-1], phi[t - 1]) + x[t])
            new_b.append(torch.logaddexp(new_n[-2], new_b[-1]) + blank[t])
            psi = torch.logaddexp(psi, phi[t - 1] + x[t])
        state = torch.stack([torch.stack(new_n), torch.stack(new_b)], dim=-1)  # (T, N, C, 2)
        return state.permute(1, 2, 0, 3), psi

    @staticmethod
    def final_score(r: torch.Tensor) -> torch.Tensor:
        """log P(output == prefix) for states r: (..., T, 2) -> (...)."""
        return torch.logaddexp(r[..., -1, 0], r[..., -1, 1])


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float


@torch.no_grad()
def beam_search_one(model, memory: torch.Tensor, length: int, beam: int = 10, ctc_weight: float = 0.1,
                    max_len: int | None = None, pre_beam: int | None = None) -> list[Hypothesis]:
    """Joint CTC/attention beam search on one utterance; memory: (1, T, D).

    Returns the finished hypotheses, best first (by length-normalised score).
    """
    if not 0.0 <= ctc_weight < 1.0:
        raise ValueError("ctc_weight must be in [0, 1)")
    memory = memory[:, :length]
    k_vocab = model.config.vocab_size
    pre_beam = min(k_vocab - 1, pre_beam or max(1, int(1.5 * beam)))
    max_len = length if max_len is None else max_len
    scorer = CTCPrefixScorer(model.ctc_logits(memory)[0].float().log_softmax(-1), model.blank)
    lens = torch.tensor([length], device=memory.device)
    seqs = torch.full((1, 1), model.sos, dtype=torch.long, device=memory.device)
    scores = torch.zeros(1, device=memory.device)
    states, psi = scorer.initial_state()[None], torch.zeros(1, device=memory.device)
    ended: list[Hypothesis] = []
    for step in range(max_len + 1):
        n = seqs.shape[0]
        att = model.decode_logits(seqs, memory.expand(n, -1, -1), lens.expand(n))[:, -1].float().log_softmax(-1)
        att[:, model.blank] = NEG_INF
        if step == max_len:  # out of frames: every running hypothesis must end here
            cands = torch.full((n, 1), model.eos, dtype=torch.long, device=memory.device)
        else:
            cands = att.topk(pre_beam, dim=-1).indices  # (N, C)
        total = scores[:, None] + (1 - ctc_weight) * att.gather(1, cands)
        new_states = None
        if ctc_weight > 0:
            last = seqs[:, -1] if seqs.shape[1] > 1 else torch.full_like(seqs[:, -1], -1)
            new_states, new_psi = scorer.extend(states, last, cands)
            eos_psi = scorer.final_score(states)[:, None].expand_as(new_psi)
            new_psi = torch.where(cands == model.eos, eos_psi, new_psi)
            # a prefix CTC cannot emit in the frames available scores -inf (not NaN)
            delta = torch.where(torch.isinf(new_psi), new_psi, new_psi - psi[:, None])
            total = total + ctc_weight * delta
        top = total.flatten().topk(min(beam, total.numel())).indices
        rows, cols = top // cands.shape[1], top % cands.shape[1]
        keep = []
        for r_, c_ in zip(rows.tolist(), cols.tolist()):
            tok = int(cands[r_, c_])
            if not torch.isfinite(total[r_, c_]):
                continue
            if tok == model.eos:
                toks = seqs[r_, 1:].tolist()
                ended.append(Hypothesis(toks, float(total[r_, c_]) / (len(toks) + 1)))
            else:
                keep.append((r_, c_))
        if not keep:
            break
        ri = torch.tensor([k[0] for k in keep], device=memory.device)
        ci = torch.tensor([k[1] for k in keep], device=memory.device)
        seqs = torch.cat([seqs[ri], cands[ri, ci][:, None]], dim=1)
        scores = total[ri, ci]
        if new_states is not None:
            states, psi = new_states[ri, ci], new_psi[ri, ci]
    return sorted(ended, key=lambda h: -h.score)


@torch.no_grad()
def beam_search(model, memory: torch.Tensor, lengths: torch.Tensor, beam: int = 10,
                ctc_weight: float = 0.1, max_len: int | None = None) -> list[list[int]]:
    """Best hypothesis per utterance. memory: (B, T, D), lengths: (B,)."""
    out = []
    for i in range(memory.shape[0]):
        hyps = beam_search_one(model, memory[i : i + 1], int(lengths[i]), beam, ctc_weight, max_len)
        out.append(hyps[0].tokens if hyps else [])
    return out


@torch.no_grad()
def recognize(model, tokenizer, video=None, audio=None, lengths=None, mode=None,
              method: str = "beam", beam: int = 10, ctc_weight: float = 0.1) -> list[str]:
    """Transcribe a batch. video: (B, T, H, W) normalised lips at the model's fps; audio: (B, S).

    ``method``: "beam" (joint CTC/attention), "ctc" (greedy CTC) or "attention" (greedy).
    """
    was_training = model.training
    model.eval()
    try:
        memory, lengths = model.encode(video, audio, lengths, mode)
        if method == "ctc":
            ids = ctc_greedy(model.ctc_logits(memory), lengths, model.blank)
        elif method == "attention":
            ids = attention_greedy(model, memory, lengths)
        elif method == "beam":
            ids = beam_search(model, memory, lengths, beam, ctc_weight)
        else:
            raise ValueError(f"unknown decoding method {method!r}")
    finally:
        model.train(was_training)
    return [tokenizer.decode(x) for x in ids]
