"""Training-audio augmentation (data.augment) and the mouth-opening / velocity / Laplacian losses."""

import numpy as np
import pytest
import torch

from talkinghead_cli.config import AugmentConfig, TrainConfig
from talkinghead_cli.data import augment as A
from talkinghead_cli.data import vocaset as V
from talkinghead_cli.data.dataset import SequenceDataset, write_toy_corpus
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.articulation_metrics import laplacian_matrix, uniform_laplacian_reference
from talkinghead_cli.training.losses import (
    laplacian_loss,
    lip_gap_loss,
    opening_indices,
    total_loss,
    velocity_loss,
)
from talkinghead_cli.training.trainer import train

SR = 16000


def _tone(freq, seconds=1.0):
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / SR)[spec.argmax()]


def test_pitch_shift_moves_the_pitch_and_keeps_the_length():
    x = _tone(200.0)
    y = A.pitch_shift(x, SR, 3.0)
    assert len(y) == len(x)
    assert abs(_peak_hz(y[2000:-2000]) - 200 * 2 ** (3 / 12)) < 4.0  # 237.8 Hz
    assert abs(_peak_hz(A.pitch_shift(x, SR, -3.0)[2000:-2000]) - 200 * 2 ** (-3 / 12)) < 4.0


def test_speed_keeps_audio_and_vertices_in_sync():
    x, verts = _tone(200.0, 2.0), np.random.default_rng(0).random((60, 5, 3)).astype(np.float32)
    cfg = AugmentConfig(speed=1, pitch=0, reverb=0, band=0, noise=0, level=0)
    for seed in range(5):
        w, v, applied = A.augment(x, verts, SR, cfg, np.random.default_rng(seed))
        assert applied == ["speed"]
        assert abs(len(w) / SR * 30 - len(v)) <= 1.0  # still 30 fps over the new duration
        assert 0.85 * len(verts) < len(v) < 1.15 * len(verts)
        np.testing.assert_allclose(v[0], verts[0])
        np.testing.assert_allclose(v[-1], verts[-1], rtol=1e-6)


def test_every_effect_changes_the_sound_but_not_the_shape():
    x = _tone(150.0) + 0.1 * _tone(1234.0)
    verts = np.zeros((30, 4, 3), np.float32)
    for effect in ("pitch", "reverb", "band", "noise", "level"):
        cfg = AugmentConfig(**{k: float(k == effect) for k in A.EFFECTS})
        w, v, applied = A.augment(x, verts, SR, cfg, np.random.default_rng(1))
        assert applied == [effect] and w.shape == x.shape and v is verts and w.dtype == np.float32
        assert np.abs(w - x).mean() > 1e-3, effect
        assert np.abs(w).max() <= 1.0 + 1e-6


def test_band_limit_removes_high_frequencies():
    x = _tone(6000.0)
    y = A.band_limit(x, SR, np.random.default_rng(0))
    assert np.std(y[2000:]) < 0.3 * np.std(x)


def test_augmented_dataset_is_seeded_by_epoch_and_index(tmp_path):
    root = write_toy_corpus(tmp_path / "c", {V.TRAIN_SUBJECTS[0]: [1, 2]}, seconds=0.6)
    corpus = open_corpus("vocaset", root)
    base = SequenceDataset(corpus, corpus.split("train"))
    ds = A.AugmentedDataset(base, AugmentConfig(), seed=3)
    first = ds[0]["audio"].clone()
    assert torch.equal(ds[0]["audio"], first)  # same epoch, same sound
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["audio"], first)
    assert ds[0]["id"] == base[0]["id"] and ds[0]["template"].shape == base[0]["template"].shape


def test_opening_indices_and_gap_loss():
    x, y = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 4))
    template = torch.tensor(np.stack([x.ravel(), y.ravel(), np.zeros(20)], 1), dtype=torch.float32)
    lip = torch.arange(20)
    upper, lower = opening_indices(template, lip)
    assert (template[upper, 1] > 0).all() and (template[lower, 1] < 0).all()
    assert (template[torch.cat([upper, lower]), 0].abs() < 0.3).all()
    closed = template[None, None].repeat(1, 6, 1, 1)
    opened = closed.clone()
    opened[:, :, lower, 1] -= 0.2
    assert lip_gap_loss(closed, closed, upper, lower) == 0
    assert torch.isclose(lip_gap_loss(closed, opened, upper, lower), torch.tensor(0.04))
    assert velocity_loss(closed, closed + 1.0) == 0  # a constant shift has no velocity error
    loss, logs = total_loss(torch.tensor(0.0), closed, opened, None, 0.0, opening=(upper, lower), gap_weight=2.0,
                            vel_weight=1.0)
    assert torch.isclose(loss, torch.tensor(0.08)) and {"gap", "vel"} <= set(logs)


def test_gap_loss_weights_the_shut_frames():
    x, y = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 4))
    template = torch.tensor(np.stack([x.ravel(), y.ravel(), np.zeros(20)], 1), dtype=torch.float32)
    upper, lower = opening_indices(template, torch.arange(20))
    # the target opens by 1.0 on frames 0-4 and is shut (gap as in the template) on 5-9
    target = template[None, None].repeat(1, 10, 1, 1)
    target[:, :5, lower, 1] -= 1.0
    pred = target.clone()
    pred[:, 5:, lower, 1] -= 0.3  # stops 0.3 short of the seal on the shut frames
    base_gap = float((template[upper, 1].mean() - template[lower, 1].mean()))
    plain = lip_gap_loss(pred, target, upper, lower)
    assert plain.item() == pytest.approx(0.5 * 0.09, rel=1e-5)
    weighted = lip_gap_loss(pred, target, upper, lower, closed_weight=4.0)
    # shut frames: the target's gap at its smallest (the template's own, base_gap > 0, the lips'
    # thickness), open ones base_gap + 1: weight 4 on the 5 shut frames
    assert base_gap > 0
    assert weighted.item() == pytest.approx(4 * 5 * 0.09 / (4 * 5 + 5), rel=1e-5)
    assert lip_gap_loss(pred, target, upper, lower, closed_weight=1.0).item() == pytest.approx(plain.item())
    # a half-open frame (0.4 of the range) counts as shut only with a band wider than 0.4
    target[:, 2, lower, 1] += 0.6
    pred[:, 2, lower, 1] += 0.6 - 0.3
    narrow = lip_gap_loss(pred, target, upper, lower, closed_weight=4.0)
    wide = lip_gap_loss(pred, target, upper, lower, closed_weight=4.0, closed_below=0.5)
    assert narrow.item() == pytest.approx((4 * 5 * 0.09 + 0.09) / 25, rel=1e-5)
    assert wide.item() == pytest.approx(4 * 6 * 0.09 / (4 * 6 + 4), rel=1e-5)


def test_gap_range_term_charges_a_shrunken_swing():
    x, y = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 4))
    template = torch.tensor(np.stack([x.ravel(), y.ravel(), np.zeros(20)], 1), dtype=torch.float32)
    upper, lower = opening_indices(template, torch.arange(20))
    target = template[None, None].repeat(1, 8, 1, 1)
    swing = torch.tensor([0.0, 1.0, 0.2, 0.8, 0.0, 1.0, 0.4, 0.6])
    target[0, :, lower, 1] -= swing[:, None]
    shrunk = template[None, None].repeat(1, 8, 1, 1)
    shrunk[0, :, lower, 1] -= (0.5 + 0.5 * (swing - 0.5))[:, None]  # half the swing about its mean
    plain = lip_gap_loss(shrunk, target, upper, lower)
    with_range = lip_gap_loss(shrunk, target, upper, lower, range_weight=2.0)
    assert with_range.item() == pytest.approx(plain.item() + 2.0 * (0.5 * swing.std().item()) ** 2, rel=1e-4)
    # the same swing shifted by a constant costs its MSE but nothing in the range term
    shifted = target.clone()
    shifted[0, :, lower, 1] -= 0.1
    assert lip_gap_loss(shifted, target, upper, lower, range_weight=2.0).item() == pytest.approx(0.01, rel=1e-4)


def test_laplacian_loss_charges_creases_not_smooth_motion():
    x, y = np.meshgrid(np.arange(4.0), np.arange(4.0))
    template = np.stack([x.ravel(), y.ravel(), np.zeros(16)], 1)
    quads = [(r * 4 + c, r * 4 + c + 1, r * 4 + c + 4, r * 4 + c + 5) for r in range(3) for c in range(3)]
    faces = np.array([t for a, b, c, d in quads for t in ((a, b, d), (a, d, c))])
    lap = laplacian_matrix(faces, 16)
    target = torch.tensor(template, dtype=torch.float32)[None, None].repeat(2, 3, 1, 1)
    moved = target + torch.tensor([0.3, -0.1, 0.2])  # a rigid shift: no crease
    assert laplacian_loss(moved, target, lap) < 1e-12
    bump = target.clone()
    bump[:, :, 5, 2] += 0.5  # one vertex pulled out of the surface
    expected = uniform_laplacian_reference((bump - target)[0].numpy(), faces)
    assert torch.isclose(laplacian_loss(bump, target, lap), torch.tensor(float((expected ** 2).mean())))
    pred = bump.clone().requires_grad_(True)
    loss, logs = total_loss(torch.tensor(0.0), pred, target, None, 0.0, lap=lap, lap_weight=3.0)
    loss.backward()
    assert "lap" in logs and pred.grad[:, :, 5, 2].abs().min() > 0  # the gradient flattens the bump
    assert loss.item() == pytest.approx(3.0 * float((expected ** 2).mean()), rel=1e-5)


def test_train_with_augmentation_and_opening_loss(tmp_path):
    root = write_toy_corpus(tmp_path / "c", {V.TRAIN_SUBJECTS[0]: [1, 2], V.VAL_SUBJECTS[0]: [21]}, seconds=0.6)
    cfg = TrainConfig(dataset="vocaset", data_root=root, run_dir=tmp_path / "run", epochs=2, lr=1e-3,
                      augment=AugmentConfig(), lambda_gap=10.0, lambda_vel=1.0, lambda_lap=10.0,
                      gap_closed_weight=5.0)
    result = train(cfg)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["loss"])
    with pytest.raises(ValueError):
        TrainConfig(dataset="vocaset", data_root=root, lambda_mse=0, lip_weight=0)
