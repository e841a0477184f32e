"""One evaluation loop for ``train``'s validation and ``score --dataset``, so they cannot drift:
each utterance predicted as ``avtalk animate`` does, LVE/FDD/MVE pooled over the set
(:class:`~talkinghead_cli.metrics.MetricAccumulator`), and, when asked, the lips read.

Shapes: T frames, V vertices, N subjects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from talkinghead_cli.data.dataset import SequenceDataset
from talkinghead_cli.metrics import MetricAccumulator

#: (prediction (1, T, V, 3), ground truth (1, T', V, 3) on the device, dataset item) -> transcript
ReadFn = Callable[[torch.Tensor, torch.Tensor, dict], str]


@dataclass
class Evaluation:
    metrics: dict[str, float]  # lve, fdd, mve (those the corpus' regions allow); empty without a model
    hypotheses: dict[str, str] = field(default_factory=dict)  # utterance id -> what ``read`` gave


@torch.no_grad()
def evaluate(model, dataset: SequenceDataset, device: torch.device, *, stage: int = 2,
             style: Callable[[dict], torch.Tensor] | None = None, read: ReadFn | None = None,
             tick: Callable[[], None] | None = None, lip: torch.Tensor | None = None,
             upper: torch.Tensor | None = None) -> Evaluation:
    """Predict every item of ``dataset`` and score it.

    Args:
        model: an animator, or None to read the ground truth itself (no metrics).
        stage: CodeTalker stage 1 (a motion autoencoder) is scored on its reconstructions.
        style: item -> (N,) style (default: the item's own, over the corpus' train subjects).
        read: called per item with the prediction (the ground truth without a model).
        tick: called after each item.
        lip, upper: (N,) region indices for LVE / FDD (default: the corpus').
    """
    corpus = dataset.corpus
    if lip is None and corpus.lip_indices is not None:
        lip = torch.as_tensor(corpus.lip_indices)
    if upper is None and corpus.upper_indices is not None:
        upper = torch.as_tensor(corpus.upper_indices)
    acc = MetricAccumulator(lip, upper)
    hyps: dict[str, str] = {}
    was = None if model is None else model.training
    if model is not None:
        model.eval()
    for i in range(len(dataset)):
        item = dataset[i]
        verts = item["verts"][None].to(device)
        pred = verts
        if model is not None:
            audio, template = item["audio"][None].to(device), item["template"][None].to(device)
            s = (item["style"] if style is None else style(item))[None].to(device)
            if stage == 1:
                _, _, pred = model.training_loss(audio, template, s, verts)
            else:
                pred = model.predict(audio, template, s, num_frames=verts.shape[1])
            acc.add(pred[0].float().cpu(), item["verts"], item["template"])
        if read is not None:
            hyps[item["id"]] = read(pred, verts, item)
        if tick is not None:
            tick()
    if model is not None:
        model.train(was)
    return Evaluation(acc.result() if model is not None else {}, hyps)
