"""LVE, FDD and MVE on small cases computed by hand."""

import pytest
import torch

from talkinghead_cli import metrics


def _seq(frames):
    return torch.tensor(frames, dtype=torch.float32)


def test_lve_pools_frames_takes_max_over_lips_and_truncates():
    gt1 = torch.zeros(2, 3, 3)
    # frame 0: lip sq errors 1 and 4 (vertex 2 is not a lip vertex: 100 ignored) -> 4
    # frame 1: 2 and 0 -> 2; a third predicted frame (huge error) is cut off
    pred1 = _seq([[[1, 0, 0], [0, 2, 0], [10, 0, 0]],
                  [[1, 1, 0], [0, 0, 0], [0, 0, 0]],
                  [[99, 0, 0], [99, 0, 0], [99, 0, 0]]])
    gt2 = torch.zeros(1, 3, 3)
    pred2 = _seq([[[0, 0, 3], [0, 0, 0], [0, 0, 0]]])  # 9
    lip = torch.tensor([0, 1])
    # pooled over the 3 frames: (4 + 2 + 9) / 3 = 5 (a per-sequence mean would give 6)
    assert metrics.lve([pred1, pred2], [gt1, gt2], lip) == pytest.approx(5.0)
    assert metrics.lip_max_sq_error(pred1, gt1, lip).tolist() == [4.0, 2.0]
    # without lip indices every vertex counts: frame 0 max is 100
    assert metrics.lip_max_sq_error(pred1, gt1, None)[0] == pytest.approx(100.0)


def test_fdd_is_signed_gt_minus_pred_and_averaged_over_sequences():
    template = torch.zeros(2, 3)
    upper = torch.tensor([0])
    # sequence 1: GT vertex 0 squared norms 1, 9 -> std 4; prediction 4, 4 -> std 0: +4
    gt1 = _seq([[[1, 0, 0], [5, 5, 5]], [[3, 0, 0], [0, 0, 0]]])
    pred1 = _seq([[[2, 0, 0], [0, 0, 0]], [[2, 0, 0], [7, 7, 7]]])
    # sequence 2: GT still (std 0); prediction 0, 4 -> std 2: -2
    gt2 = torch.zeros(2, 2, 3)
    pred2 = _seq([[[0, 0, 0], [0, 0, 0]], [[0, 0, 2], [0, 0, 0]]])
    assert metrics.fdd_one(pred1, gt1, template, upper) == pytest.approx(4.0)
    assert metrics.fdd_one(pred2, gt2, template, upper) == pytest.approx(-2.0)
    assert metrics.fdd([pred1, pred2], [gt1, gt2], [template, template], upper) == pytest.approx(1.0)


def test_fdd_measures_motion_from_the_template():
    template = _seq([[1, 0, 0]])
    gt = _seq([[[2, 0, 0]], [[4, 0, 0]]])  # motion 1, 3 -> sq 1, 9 -> std 4
    pred = _seq([[[1, 0, 0]], [[1, 0, 0]]])
    assert metrics.fdd_one(pred, gt, template, None) == pytest.approx(4.0)


def test_mve_is_mean_l2_over_all_vertices_and_frames():
    gt = torch.zeros(1, 2, 3)
    pred = _seq([[[3, 4, 0], [0, 0, 0]]])
    assert metrics.mve([pred], [gt]) == pytest.approx(2.5)


def test_accumulator_matches_the_functions():
    g = torch.Generator().manual_seed(0)
    gts = [torch.randn(5, 7, 3, generator=g), torch.randn(3, 7, 3, generator=g)]
    preds = [torch.randn(6, 7, 3, generator=g), torch.randn(3, 7, 3, generator=g)]
    tmpl = [torch.randn(7, 3, generator=g)] * 2
    lip, upper = torch.tensor([1, 2, 3]), torch.tensor([4, 5])
    acc = metrics.MetricAccumulator(lip, upper)
    for p, gt, t in zip(preds, gts, tmpl):
        acc.add(p, gt, t)
    res = acc.result()
    assert res["lve"] == pytest.approx(metrics.lve(preds, gts, lip))
    assert res["fdd"] == pytest.approx(metrics.fdd(preds, gts, tmpl, upper))
    assert res["mve"] == pytest.approx(metrics.mve(preds, gts))


def test_topology_mismatch_is_refused():
    with pytest.raises(ValueError):
        metrics.mve([torch.zeros(2, 4, 3)], [torch.zeros(2, 5, 3)])
