"""Joint CTC / attention loss of the expert.

    L = ctc_weight * CTC + (1 - ctc_weight) * CE_smoothed        (defaults 0.1 / 0.9, smoothing 0.1)

Reductions:

* ``"sum"`` (Auto-AVSR / the reference AV loss): CTC and CE are summed over frames and
  tokens of each utterance and averaged over the batch.
* ``"mean"``: CTC is divided by each target length and CE by the number of tokens,
  then averaged (values of order 1, easier to weigh against an MSE).

Everything is differentiable with respect to the model inputs, so a loss on rendered
lip windows reaches the renderer's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

IGNORE = -1


@dataclass
class ExpertLoss:
    loss: torch.Tensor
    ctc: torch.Tensor
    ce: torch.Tensor
    accuracy: float


def pad_targets(targets: Sequence[Sequence[int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """List of B token lists -> (padded (B, L) with -1, lengths (B,))."""
    lens = torch.tensor([len(t) for t in targets], dtype=torch.long)
    out = torch.full((len(targets), max(1, int(lens.max()) if len(targets) else 1)), IGNORE, dtype=torch.long)
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.long)
    return out.to(device), lens.to(device)


def add_sos_eos(targets: torch.Tensor, lengths: torch.Tensor, sos: int, eos: int):
    """targets: (B, L) padded with -1 -> decoder input (B, L+1) = [sos, y] (padded with eos),
    decoder target (B, L+1) = [y, eos] (padded with -1), token mask (B, L+1)."""
    b, n = targets.shape
    idx = torch.arange(n + 1, device=targets.device)[None]
    valid = idx <= lengths[:, None]  # sos + y
    ys_in = torch.full((b, n + 1), eos, dtype=torch.long, device=targets.device)
    ys_in[:, 0] = sos
    ys_in[:, 1:] = torch.where(targets >= 0, targets, torch.full_like(targets, eos))
    ys_out = torch.full((b, n + 1), IGNORE, dtype=torch.long, device=targets.device)
    ys_out[:, :n] = targets
    ys_out[torch.arange(b, device=targets.device), lengths] = eos
    return ys_in, ys_out, valid


def smoothed_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Label-smoothed cross-entropy per token (ESPnet style: 1-eps on the truth, eps/(K-1)
    elsewhere). logits: (B, L, K), target: (B, L) with -1 ignored -> (B, L), 0 at ignored."""
    k = logits.shape[-1]
    logp = logits.log_softmax(-1)
    valid = target != IGNORE
    tgt = target.clamp(min=0)
    nll = -logp.gather(-1, tgt[..., None]).squeeze(-1)
    if smoothing > 0:
        others = -logp.sum(-1) - nll  # -sum over j != y of logp_j
        loss = (1 - smoothing) * nll + smoothing / (k - 1) * others
    else:
        loss = nll
    return loss * valid


def joint_ctc_attention_loss(ctc_logits, att_logits, lengths, targets, target_lengths, *,
                             blank: int = 0, ctc_weight: float = 0.1, label_smoothing: float = 0.1,
                             reduction: Literal["sum", "mean"] = "sum") -> ExpertLoss:
    """Joint loss from model outputs.

    Args:
        ctc_logits: (B, T, K); att_logits: (B, L+1, K) from decoder input [sos, y].
        lengths: (B,) valid encoder frames; targets: (B, L) padded with -1;
        target_lengths: (B,).
    """
    b = ctc_logits.shape[0]
    logp = ctc_logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, K)
    flat = torch.cat([targets[i, : target_lengths[i]] for i in range(b)])
    ctc = F.ctc_loss(logp, flat, lengths.long(), target_lengths.long(), blank=blank,
                     reduction="none", zero_infinity=True)  # (B,)
    eos = att_logits.shape[-1] - 1
    _, eos_target, _ = add_sos_eos(targets, target_lengths, eos, eos)  # [y, eos]
    ce_tok = smoothed_ce(att_logits.float(), eos_target, label_smoothing)
    n_tok = (eos_target != IGNORE).sum()
    if reduction == "sum":
        ctc_r, ce_r = ctc.sum() / b, ce_tok.sum() / b
    elif reduction == "mean":
        ctc_r = (ctc / target_lengths.clamp(min=1)).mean()
        ce_r = ce_tok.sum() / n_tok.clamp(min=1)
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    pred = att_logits.argmax(-1)
    valid = eos_target != IGNORE
    acc = float(((pred == eos_target) & valid).sum()) / max(1, int(valid.sum()))
    loss = ctc_weight * ctc_r + (1 - ctc_weight) * ce_r
    return ExpertLoss(loss, ctc_r, ce_r, acc)


def expert_loss(model, targets: Sequence[Sequence[int]], video=None, audio=None, lengths=None,
                mode=None, **kw) -> ExpertLoss:
    """Run ``model`` (a :class:`~talkinghead_cli.lipreader.model.LipReader`) with teacher forcing
    and return the joint loss. video: (B, T, H, W), audio: (B, S), targets: B token lists."""
    ref = video if video is not None else audio
    tgt, tlen = pad_targets(targets, ref.device)
    ys_in, _, token_mask = add_sos_eos(tgt, tlen, model.sos, model.eos)
    ctc_logits, att_logits, lengths = model(video, audio, ys_in, lengths, mode, token_mask)
    return joint_ctc_attention_loss(ctc_logits, att_logits, lengths, tgt, tlen, blank=model.blank, **kw)
