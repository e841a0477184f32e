"""Training losses added on top of an animator's own ``training_loss``.

DESIGN.md §1: L = λ_mse·L_mse + λ_av·L_av + λ_rlv·L_rlv. The animators compute L_mse
(and CodeTalker its VQ terms) themselves; the trainer adds L_rlv, the MSE over the lip
vertices, here. L_av (the lip-reading expert) arrives with the expert.
Shapes: B batch, T frames, V vertices, N lip vertices.
"""

from __future__ import annotations

import torch


def lip_vertex_loss(pred: torch.Tensor, target: torch.Tensor, lip: torch.Tensor) -> torch.Tensor:
    """Mean squared error over lip vertices (L_rlv).

    Args:
        pred, target: (B, T, V, 3) (the longer one is cut to the shorter length).
        lip: (N,) vertex indices.
    Returns:
        scalar.
    """
    t = min(pred.shape[1], target.shape[1])
    idx = lip.to(pred.device)
    return torch.nn.functional.mse_loss(pred[:, :t, idx].float(), target[:, :t, idx].float())


def total_loss(model_loss: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
               lip: torch.Tensor | None, lip_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The animator's loss plus ``lip_weight`` × L_rlv (when lip indices are known).

    Returns:
        (loss scalar, logs {"loss", "lip"}).
    """
    logs = {}
    loss = model_loss
    if lip is not None and lip_weight > 0 and pred is not None:
        rlv = lip_vertex_loss(pred, target, lip)
        loss = loss + lip_weight * rlv
        logs["lip"] = float(rlv.detach())
    logs["loss"] = float(loss.detach())
    return loss, logs
