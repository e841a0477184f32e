"""Training losses added on top of an animator's own ``training_loss``.

The loss (as in the paper): L = λ_mse·L_mse + λ_av·L_av + λ_rlv·L_rlv. The animators compute L_mse
(and CodeTalker its VQ terms) themselves; the trainer adds L_rlv, the MSE over the lip
vertices, and L_av, the lip-reading expert's joint CTC/attention loss on lip windows
rendered from the predicted meshes (:func:`av_loss`, :class:`AVLoss`), here.
Shapes: B batch, T frames, V vertices, N lip vertices, F faces, S audio samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from talkinghead_cli.lipreader.losses import ExpertLoss, expert_loss
from talkinghead_cli.lipreader.model import fold_batch_norms
from talkinghead_cli.lipreader.views import lip_video


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


def opening_indices(template: torch.Tensor, lip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper, lower) lip vertices near the mouth's vertical centre line, for :func:`lip_gap_loss`.

    The lip vertices within 15 % of the lips' width of their centre, split at their median
    height. Works for any topology with lip indices (the synthetic rig, FLAME, BIWI).

    Args:
        template: (V, 3); lip: (N,) vertex indices.
    """
    p = template[lip].double()
    cx, width = p[:, 0].mean(), p[:, 0].max() - p[:, 0].min()
    mid = lip[(p[:, 0] - cx).abs() < 0.15 * width]
    y = template[mid, 1]
    order = mid[torch.argsort(y, stable=True)]
    half = len(order) // 2
    return order[len(order) - half:], order[:half]


def lip_gap_loss(pred: torch.Tensor, target: torch.Tensor, upper: torch.Tensor,
                 lower: torch.Tensor, closed_weight: float = 1.0, closed_below: float = 0.25,
                 range_weight: float = 0.0) -> torch.Tensor:
    """MSE of the mouth-opening curves (mean upper minus mean lower lip height per frame).

    The vertex MSE spreads its error over thousands of vertices; this term looks only at how
    far the mouth opens, so a prediction that hovers at the mean mouth (half open at every
    /p b m/, half shut at every open vowel) pays for it directly.

    ``closed_weight`` > 1 weights the frames where the target's lips are shut that much more:
    a seal lasts a few frames, so in a plain mean a prediction that stops short of it costs
    little. Shut: the target's curve within ``closed_below`` of its range (smallest value to
    95th percentile) above its smallest value, per sequence (these vertices sit on the lips'
    outer faces, so a shut mouth's curve is the lips' thickness, not 0).

    ``range_weight`` > 0 adds that times the mean over sequences of (std_t(pred curve) −
    std_t(target curve))²: a prediction whose opening swings less than the target's (close
    vowels too open, open vowels too shut) pays for the missing range even where its
    frame-by-frame error is small.

    Args:
        pred, target: (B, T, V, 3) (cut to the shorter length); upper, lower: index tensors.
    Returns:
        scalar (the weighted mean; equal to the MSE when ``closed_weight`` is 1 and
        ``range_weight`` 0).
    """
    t = min(pred.shape[1], target.shape[1])

    def gap(v):
        return v[:, :t, upper.to(v.device), 1].float().mean(-1) - v[:, :t, lower.to(v.device), 1].float().mean(-1)

    g_pred, g_true = gap(pred), gap(target)
    if closed_weight == 1.0:
        loss = torch.nn.functional.mse_loss(g_pred, g_true)
    else:
        g = g_true.detach()
        low, p95 = g.min(dim=1, keepdim=True).values, torch.quantile(g, 0.95, dim=1, keepdim=True)
        w = torch.where(g - low < closed_below * (p95 - low), closed_weight, 1.0)
        loss = (w * (g_pred - g_true) ** 2).sum() / w.sum()
    if range_weight > 0 and t > 1:
        spread = (g_pred.std(dim=1) - g_true.std(dim=1)) ** 2
        loss = loss + range_weight * spread.mean()
    return loss


def velocity_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE of frame-to-frame vertex motion (pred[t+1] − pred[t] against the target's).

    Args:
        pred, target: (B, T, V, 3) (cut to the shorter length).
    """
    t = min(pred.shape[1], target.shape[1])
    return torch.nn.functional.mse_loss(torch.diff(pred[:, :t].float(), dim=1), torch.diff(target[:, :t].float(), dim=1))


def laplacian_loss(pred: torch.Tensor, target: torch.Tensor, lap: torch.Tensor) -> torch.Tensor:
    """MSE of the uniform mesh Laplacians of the prediction and the target (L_lap).

    The Laplacian of a vertex is its offset from the mean of its mesh neighbours, so this term
    is blind to smooth motion and charges for creases and bumps the target does not have: the
    lip-reading loss acts on a few lip vertices through the renderer and, unchecked, pulls them
    out of the surface around them (the mouth-corner crease of an AV-trained model).

    Args:
        pred, target: (B, T, V, 3) (cut to the shorter length).
        lap: (V, V) sparse Laplacian (:func:`talkinghead_cli.articulation_metrics.laplacian_matrix`).
    Returns:
        scalar.
    """
    t = min(pred.shape[1], target.shape[1])
    diff = pred[:, :t].float() - target[:, :t].float()  # linear: L(pred) - L(target) = L(pred - target)
    b, _, v, _ = diff.shape
    flat = diff.permute(2, 0, 1, 3).reshape(v, -1)
    return torch.sparse.mm(lap.to(diff.device), flat).pow(2).mean()


class _SmoothGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``(I - alpha·L)ᵀ`` ``steps`` times."""

    @staticmethod
    def forward(ctx, x, lap_t, steps: int, alpha: float):
        ctx.save_for_backward(lap_t)
        ctx.steps, ctx.alpha = steps, alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (lap_t,) = ctx.saved_tensors
        b, t, v, c = grad.shape
        flat = grad.permute(2, 0, 1, 3).reshape(v, -1).float()
        for _ in range(ctx.steps):
            flat = flat - ctx.alpha * torch.sparse.mm(lap_t, flat)
        return flat.reshape(v, b, t, c).permute(1, 2, 0, 3).to(grad.dtype), None, None, None


def smooth_gradient(x: torch.Tensor, lap: torch.Tensor, steps: int, alpha: float = 0.5) -> torch.Tensor:
    """``x`` unchanged, its gradient diffused over the mesh: ``((I - alpha·L)ᵀ)^steps g``.

    The lip reader sees the rendered lips, so L_av's gradient lands on the few vertices of the
    lip outline and pulls them out of the surface around them (creases, a rougher head). This
    spreads that gradient over the neighbouring vertices (about ``sqrt(steps)`` rings) without
    changing what the expert reads: the animator is pushed towards the same lip shape by a
    smooth change of the surface. ``steps=0`` returns ``x`` itself.

    Args:
        x: (B, T, V, 3) vertices.
        lap: (V, V) sparse uniform Laplacian I - D^-1 A
            (:func:`talkinghead_cli.articulation_metrics.laplacian_matrix`).
        steps: smoothing steps; alpha: step size in (0, 1].
    Returns:
        (B, T, V, 3), equal to ``x``.
    """
    if steps <= 0:
        return x
    return _SmoothGradient.apply(x, lap.t().coalesce().to(x.device), int(steps), float(alpha))


def smooth_gradient_reference(grad: torch.Tensor, lap: torch.Tensor, steps: int, alpha: float = 0.5) -> torch.Tensor:
    """Readable reference of :func:`smooth_gradient`'s backward: (B, T, V, 3) gradient ->
    ``((I - alpha·L)ᵀ)^steps`` applied per frame and coordinate, with a dense matrix."""
    m = torch.eye(lap.shape[0], dtype=torch.float64) - alpha * lap.to_dense().double()
    op = torch.linalg.matrix_power(m.t(), steps)
    return torch.einsum("uv,btvc->btuc", op, grad.double()).to(grad.dtype)


def total_loss(model_loss: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
               lip: torch.Tensor | None, lip_weight: float, *, mse_weight: float = 1.0,
               av: ExpertLoss | None = None, av_weight: float = 0.0,
               opening: tuple[torch.Tensor, torch.Tensor] | None = None, gap_weight: float = 0.0,
               vel_weight: float = 0.0, lap: torch.Tensor | None = None,
               lap_weight: float = 0.0, closed_weight: float = 1.0, closed_below: float = 0.25,
               range_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """L = mse_weight × (the animator's loss) + lip_weight × L_rlv + av_weight × L_av
    + gap_weight × L_gap + vel_weight × L_vel + lap_weight × L_lap.

    L_rlv is added when lip indices are known, L_av when ``av`` (from :func:`av_loss`) is given,
    L_gap (:func:`lip_gap_loss`, its shut frames weighted ``closed_weight``, its range term
    ``range_weight``) when ``opening`` =
    (upper, lower) indices is given, L_vel
    (:func:`velocity_loss`), L_lap (:func:`laplacian_loss`) when the Laplacian ``lap`` is given.
    A weight of 0 drops its term from the graph.

    Returns:
        (loss scalar, logs {"loss", "mse", and "lip", "gap", "vel", "lap", "av", "ctc", "ce" when
        present}).
    """
    logs = {"mse": float(model_loss.detach())}
    loss = mse_weight * model_loss if mse_weight != 1.0 else model_loss
    if lip is not None and lip_weight > 0 and pred is not None:
        rlv = lip_vertex_loss(pred, target, lip)
        loss = loss + lip_weight * rlv
        logs["lip"] = float(rlv.detach())
    if opening is not None and gap_weight > 0 and pred is not None:
        gap = lip_gap_loss(pred, target, *opening, closed_weight=closed_weight, closed_below=closed_below,
                           range_weight=range_weight)
        loss = loss + gap_weight * gap
        logs["gap"] = float(gap.detach())
    if vel_weight > 0 and pred is not None:
        vel = velocity_loss(pred, target)
        loss = loss + vel_weight * vel
        logs["vel"] = float(vel.detach())
    if lap is not None and lap_weight > 0 and pred is not None:
        smooth = laplacian_loss(pred, target, lap)
        loss = loss + lap_weight * smooth
        logs["lap"] = float(smooth.detach())
    if av is not None:
        if av_weight > 0:
            loss = loss + av_weight * av.loss
        logs.update(av=float(av.loss.detach()), ctc=float(av.ctc.detach()), ce=float(av.ce.detach()))
    logs["loss"] = float(loss.detach())
    return loss, logs


def av_loss(pred: torch.Tensor, window_from: torch.Tensor, faces: torch.Tensor, lip: torch.Tensor,
            fps: float, expert, targets: Sequence[Sequence[int]], *, audio: torch.Tensor | None = None,
            mode: Literal["video", "av"] = "video", ctc_weight: float = 0.1, label_smoothing: float = 0.1,
            reduction: Literal["sum", "mean"] = "sum", **render_kw) -> ExpertLoss:
    """L_av = ctc_weight·L_ctc + (1 − ctc_weight)·L_ce of the expert reading the predicted lips.

    Predicted meshes are rendered (in float32, outside autocast) into normalised 25 fps lip
    windows through the windows of ``window_from`` (the ground truth, so prediction and
    ground truth are seen through the same window), read by ``expert`` visual-only
    (``mode="video"``) or audio-visually (``mode="av"``, with ``audio``), and scored against
    the transcript tokens with teacher forcing. Differentiable w.r.t. ``pred`` through the
    shading and the soft outlines of the renderer.

    Args:
        pred: (B, T, V, 3) predicted meshes at ``fps``.
        window_from: (B, T', V, 3) ground-truth meshes (only their lip window is used).
        faces: (F, 3) long; lip: (N,) long lip vertex indices.
        expert: a :class:`~talkinghead_cli.lipreader.model.LipReader`.
        targets: B token lists (no blank / sos / eos).
        audio: (B, S) waveform at the expert's sample rate (``mode="av"`` only).
        render_kw: passed to :func:`~talkinghead_cli.lipreader.views.lip_video` (sigma, ...).
    Returns:
        :class:`~talkinghead_cli.lipreader.losses.ExpertLoss` (loss, ctc, ce scalars, accuracy).
    """
    if mode == "av" and audio is None:
        raise ValueError("mode 'av' needs the audio")
    t = min(pred.shape[1], window_from.shape[1])
    with torch.autocast(device_type=pred.device.type, enabled=False):
        video = lip_video(pred[:, :t].float(), faces, lip, fps, window_from=window_from[:, :t].float(),
                          **render_kw)
    return expert_loss(expert, targets, video=video, audio=audio if mode == "av" else None, mode=mode,
                       ctc_weight=ctc_weight, label_smoothing=label_smoothing, reduction=reduction)


class AVLoss(torch.nn.Module):
    """The expert as a loss module: holds the expert (a submodule, so DDP and ``.to`` see it),
    the mesh faces and lip indices, the loss settings and the lip-window render settings; with
    ``smooth_lap`` (the mesh's Laplacian) and ``smooth_steps`` > 0, the loss's gradient on the
    vertices is diffused over the mesh (:func:`smooth_gradient`).

    ``frozen=True``: the expert stays in eval mode and its parameters take no gradient (the
    gradient still flows through it to the lip video and the meshes); its batch norms are
    folded into the layers before them, in place (:func:`~talkinghead_cli.lipreader.model.fold_batch_norms`). ``frozen=False``
    (joint): the expert trains with the animator (dropout on, parameters optimised).
    """

    def __init__(self, expert, faces: torch.Tensor, lip: torch.Tensor, fps: float, *, frozen: bool = True,
                 mode: Literal["video", "av"] = "video", ctc_weight: float = 0.1,
                 label_smoothing: float = 0.1, reduction: Literal["sum", "mean"] = "sum",
                 render: dict | None = None, smooth_lap: torch.Tensor | None = None, smooth_steps: int = 0):
        super().__init__()
        self.expert = expert
        self.register_buffer("faces", torch.as_tensor(faces).long(), persistent=False)
        self.register_buffer("lip", torch.as_tensor(lip).long(), persistent=False)
        self.fps, self.frozen, self.mode = float(fps), frozen, mode
        self.kw = {"ctc_weight": ctc_weight, "label_smoothing": label_smoothing, "reduction": reduction}
        #: lip_video settings (size, margin, sigma, video_fps): those the expert was trained with
        self.render = dict(render or {})
        #: L_av's gradient on the vertices diffused over the mesh (:func:`smooth_gradient`)
        self.smooth_steps = int(smooth_steps) if smooth_lap is not None else 0
        self.register_buffer("smooth_lap", smooth_lap, persistent=False)
        if frozen:  # the batch norms folded into their layers: same function, less work
            fold_batch_norms(expert.requires_grad_(False).eval())
        self.train(True)

    def train(self, mode: bool = True) -> AVLoss:
        super().train(mode)
        if self.frozen:
            self.expert.eval()
        return self

    def forward(self, pred: torch.Tensor, window_from: torch.Tensor, targets: Sequence[Sequence[int]],
                audio: torch.Tensor | None = None) -> ExpertLoss:
        """pred: (B, T, V, 3), window_from: (B, T', V, 3), audio: (B, S) -> ExpertLoss."""
        if self.smooth_steps:
            pred = smooth_gradient(pred, self.smooth_lap, self.smooth_steps)
        return av_loss(pred, window_from, self.faces, self.lip, self.fps, self.expert, targets,
                       audio=audio, mode=self.mode, **self.kw, **self.render)
