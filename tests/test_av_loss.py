"""The audio-visual lip-reading loss (stage 2): gradients reach the animator through the
renderer's shading and mouth outline, and `avtalk train --av-loss` runs end to end.

Tiny random-weight experts and animators on CPU; a random expert is enough here, since
what is tested is where the gradient goes, not what the expert reads.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead_cli.checkpoint import load_checkpoint
from talkinghead_cli.config import TrainConfig
from talkinghead_cli.data import vocaset as V
from talkinghead_cli.data.dataset import (
    SequenceDataset,
    read_transcripts,
    write_toy_corpus,
)
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.errors import UserError
from talkinghead_cli.lipreader import build_expert, tiny_config
from talkinghead_cli.lipreader.checkpoint import save_expert
from talkinghead_cli.lipreader.tokenizer import CharTokenizer
from talkinghead_cli.articulation_metrics import laplacian_matrix
from talkinghead_cli.training.losses import (
    AVLoss,
    av_loss,
    smooth_gradient,
    smooth_gradient_reference,
    total_loss,
)
from talkinghead_cli.training.trainer import (
    _TrainStep,
    build_model,
    setup_av_loss,
    train,
)

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = {V.TRAIN_SUBJECTS[0]: [1, 2], V.VAL_SUBJECTS[0]: [21]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_toy_corpus(tmp_path_factory.mktemp("avcorpus"), SUBJECTS, seconds=0.4)
    (root / "sentencestext").mkdir()
    for subject in SUBJECTS:
        lines = [f"say word {n}, please" for n in range(1, 41)]
        (root / "sentencestext" / f"{subject}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def expert_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("expert") / "expert.pt"
    save_expert(path, build_expert(tiny_config(modalities="video")), CharTokenizer())
    return path


def _flat_face_with_mouth(n=25, opening=0.15):
    """A flat square "face" in the z = 0 plane facing the camera, with an elliptic mouth hole.

    Flat on purpose: moving a vertex within the plane leaves every normal (0, 0, 1), so
    shading alone gives no x/y gradient; only the outline (soft edges) can.
    Returns verts (V, 3), faces (F, 3), rim (lip) vertex indices.
    """
    g = np.linspace(-1.0, 1.0, n)
    xx, yy = np.meshgrid(g, g)
    verts = np.stack([xx, yy, np.zeros_like(xx)], -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    centre = verts[tris].mean(1)
    hole = (centre[:, 0] / 0.4) ** 2 + ((centre[:, 1] + 0.3) / opening) ** 2 < 1
    kept = tris[~hole]
    on_kept = np.zeros(len(verts), bool)
    on_kept[kept] = True
    on_hole = np.zeros(len(verts), bool)
    on_hole[tris[hole]] = True
    rim = np.nonzero(on_kept & on_hole)[0]
    return torch.tensor(verts, dtype=torch.float32), torch.tensor(kept), torch.tensor(rim)


def _grad_through_expert(verts, faces, lip, expert, tokens, sigma):
    """d L_av / d verts for a (1, T, V, 3) sequence seen through its own (fixed) window."""
    pred = verts.clone().requires_grad_(True)
    loss = av_loss(pred, verts, faces, lip, 25.0, expert, [tokens], sigma=sigma)
    (grad,) = torch.autograd.grad(loss.loss, pred)
    return grad[0]


def test_gradient_flows_through_shading_and_mouth_outline():
    verts, faces, rim = _flat_face_with_mouth()
    # six 25 fps frames, the lower half of the mouth opening a little more each frame
    seq = verts[None].repeat(6, 1, 1)
    lower = rim[verts[rim, 1] < -0.3]
    seq[:, lower, 1] -= torch.linspace(0.0, 0.05, 6)[:, None]
    seq = seq[None]
    torch.manual_seed(0)
    expert = build_expert(tiny_config(modalities="video")).eval().requires_grad_(False)
    tokens, _ = CharTokenizer().encode("open wide")
    soft = _grad_through_expert(seq, faces, rim, expert, tokens, sigma=0.7)
    hard = _grad_through_expert(seq, faces, rim, expert, tokens, sigma=0.0)
    # shading (hard edges) reaches the rim through the normals: depth moves tilt the faces
    assert hard[:, rim, 2].abs().sum() > 0
    # ... but, on a flat face, never moves a vertex within the image plane
    assert hard[..., :2].abs().max() < 1e-6 * hard[..., 2].abs().max()
    # the soft outline moves the mouth's rim vertices in the image plane
    rim_xy = soft[:, rim, :2].norm(dim=-1)  # (T, R)
    assert rim_xy.sum() > 1e-3 * soft[:, rim].norm(dim=-1).sum()
    assert (rim_xy > 1e-4 * rim_xy.max()).float().mean() > 0.3  # many rim vertices, not one
    # away from the mouth (the flat skin far from any edge) no outline gradient exists
    far = torch.nonzero(verts[:, 1] > 0.5).squeeze(1)
    assert soft[:, far, :2].abs().max() < 1e-6 * rim_xy.max()
    assert (soft - hard).norm() > 0.05 * soft.norm()


def test_smooth_gradient_keeps_the_values_and_diffuses_the_gradient_over_the_mesh():
    verts, faces, rim = _flat_face_with_mouth(n=9)
    lap = laplacian_matrix(faces.numpy(), len(verts))
    x = verts[None, None].repeat(2, 3, 1, 1).requires_grad_(True)  # (B=2, T=3, V, 3)
    g = torch.zeros_like(x)
    g[:, :, rim[0]] = torch.tensor([1.0, -2.0, 0.5])  # all of the gradient on one lip vertex
    y = smooth_gradient(x, lap, steps=4)
    assert torch.equal(y, x)  # forward: the identity
    (grad,) = torch.autograd.grad(y, x, g)
    assert torch.allclose(grad, smooth_gradient_reference(g, lap, 4), atol=1e-6)
    # spread over the neighbours: the vertex keeps less than half, others now take a share
    assert grad[0, 0, rim[0]].norm() < 0.5 * g[0, 0, rim[0]].norm()
    assert int((grad[0, 0].norm(dim=-1) > 1e-3).sum()) > 5
    assert smooth_gradient(x, lap, steps=0) is x


def test_av_loss_module_with_smoothing_reads_the_same_and_spreads_its_gradient(corpus, expert_path):
    from talkinghead_cli.lipreader.checkpoint import load_expert

    data = open_corpus("vocaset", corpus, faces_from=corpus / "templates" / "FLAME_sample.ply")
    faces, lip = torch.as_tensor(data.faces), torch.as_tensor(data.lip_indices)
    lap = laplacian_matrix(data.faces, data.num_verts)
    item = SequenceDataset(data, data.split("train"))[0]
    expert, tok, _ = load_expert(expert_path)
    tokens, _ = tok.encode(read_transcripts(data)[item["id"]])
    target = item["verts"][None]
    pred = (target + 1e-3 * torch.randn_like(target)).requires_grad_(True)
    grads, losses = [], []
    for steps in (0, 8):
        av = AVLoss(expert, faces, lip, data.fps, smooth_lap=lap, smooth_steps=steps)
        out = av(pred, target, [tokens])
        (grad,) = torch.autograd.grad(out.loss, pred)
        grads.append(grad[0])
        losses.append(float(out.loss.detach()))
    assert losses[0] == pytest.approx(losses[1])  # the expert reads the same lips
    smooth = lambda g: float(torch.sparse.mm(lap, g.permute(1, 0, 2).reshape(len(lap), -1)).norm() / g.norm())  # noqa: E731
    assert smooth(grads[1]) < 0.5 * smooth(grads[0])  # the gradient field is far smoother


def test_one_step_with_the_av_loss_alone_moves_the_animator(corpus, expert_path):
    from talkinghead_cli.lipreader.checkpoint import load_expert

    cfg = TrainConfig(dataset="vocaset", data_root=corpus, faces_from=corpus / "templates" / "FLAME_sample.ply",
                      av_loss=True, expert=expert_path, lambda_mse=0.0, lip_weight=0.0, lambda_av=1.0)
    data = open_corpus("vocaset", corpus, faces_from=cfg.faces_from)
    torch.manual_seed(0)
    model, _ = build_model(cfg, data)
    expert, tok, _ = load_expert(expert_path)
    av = AVLoss(expert, torch.as_tensor(data.faces), torch.as_tensor(data.lip_indices), data.fps)
    step = _TrainStep(model, av)
    item = SequenceDataset(data, data.split("train"))[0]
    audio, template, style, target = (item[k][None] for k in ("audio", "template", "style", "verts"))
    tokens, _ = tok.encode(read_transcripts(data)[item["id"]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model_loss, _, pred, out = step(audio, template, style, target, tokens=tokens)
    pred.retain_grad()
    loss, logs = total_loss(model_loss, pred, target, torch.as_tensor(data.lip_indices), 0.0,
                            mse_weight=0.0, av=out, av_weight=1.0)
    assert logs["loss"] == pytest.approx(logs["av"]) and logs["av"] > 0
    loss.backward()
    lip = torch.as_tensor(data.lip_indices)
    assert pred.grad[:, :, lip].abs().sum() > 0
    assert all(p.grad is None for p in expert.parameters())  # frozen: nothing to update there
    opt.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the AV loss alone did not change the animator"


def test_train_av_loss_alone_writes_checkpoints_with_the_expert(corpus, expert_path, tmp_path):
    events = []
    cfg = TrainConfig(dataset="vocaset", data_root=corpus, run_dir=tmp_path / "run", epochs=1,
                      faces_from=corpus / "templates" / "FLAME_sample.ply", av_loss=True, expert=expert_path,
                      lambda_mse=0.0, lip_weight=0.0, expert_mode="joint")
    result = train(cfg, log=events.append)
    warn = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warn) == 1 and "','" in warn[0]  # the comma, dropped once for all transcripts
    assert 0.0 <= result.history[-1]["val_av_cer"] <= 1.5
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt", kind="animator")
    av = ckpt["extra"]["av"]
    assert av["expert"] == str(expert_path) and av["lambda_mse"] == 0.0 and av["lambda_rlv"] == 0.0
    assert av["expert_mode"] == "joint" and "expert_state_dict" in av
    assert ckpt["config"]["train"]["av_loss"] is True
    # the expert was trained jointly: its saved weights moved away from the file's
    start = load_checkpoint(expert_path, kind="expert")["state_dict"]
    assert any(not torch.equal(v, start[k]) for k, v in av["expert_state_dict"].items())


def test_lip_windows_are_rendered_as_the_expert_was_trained(corpus, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "e64.pt"
    render = {"size": 64, "margin": 0.5, "sigma": 0.7, "video_fps": 25.0}
    save_expert(path, build_expert(tiny_config(modalities="video")), CharTokenizer(), {"render": render})
    cfg = TrainConfig(dataset="vocaset", data_root=corpus, faces_from=corpus / "templates" / "FLAME_sample.ply",
                      av_loss=True, expert=path)
    data = open_corpus("vocaset", corpus, faces_from=cfg.faces_from)
    _, acfg = build_model(cfg, data)
    av = setup_av_loss(cfg, data, acfg, torch.device("cpu"))
    assert av.module.render == render
    item = SequenceDataset(data, data.split("val"))[0]
    assert isinstance(av.read_lips(item["verts"][None], item["verts"][None]), str)


def test_resume_keeps_the_av_setup_and_checks_the_vocabulary(corpus, expert_path, tmp_path):
    base = {"dataset": "vocaset", "data_root": corpus, "run_dir": tmp_path / "run",
            "faces_from": corpus / "templates" / "FLAME_sample.ply"}
    train(TrainConfig(**base, epochs=1, av_loss=True, expert=expert_path, lambda_av=1e-3, expert_mode="joint"))
    # resumed without repeating the AV options: they come from the run
    result = train(TrainConfig(**base, epochs=2, resume=True))
    assert len(result.history) == 2 and "val_av_cer" in result.history[-1]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt", kind="animator")
    assert ckpt["extra"]["av"]["lambda_av"] == 1e-3 and ckpt["extra"]["av"]["expert_mode"] == "joint"
    # another expert whose vocabulary differs from the run's is refused
    vocab = CharTokenizer().vocabulary
    other = CharTokenizer(vocab[:3] + vocab[4:])  # no apostrophe
    save_expert(tmp_path / "other.pt", build_expert(tiny_config(vocab_size=len(other), modalities="video")), other)
    with pytest.raises(UserError, match="vocabulary"):
        train(TrainConfig(**base, epochs=3, resume=True, av_loss=True, expert=tmp_path / "other.pt"))


def test_missing_transcripts_are_a_user_error(tmp_path, expert_path):
    root = write_toy_corpus(tmp_path / "c", SUBJECTS, seconds=0.3)
    cfg = TrainConfig(dataset="vocaset", data_root=root, run_dir=tmp_path / "run", epochs=1,
                      faces_from=root / "templates" / "FLAME_sample.ply", av_loss=True, expert=expert_path)
    with pytest.raises(UserError, match="transcript"):
        train(cfg)


def _avtalk(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "talkinghead_cli", *map(str, args)], check=False, capture_output=True,
                         text=True, env=env, cwd=REPO)
    return res.returncode, res.stdout + res.stderr


def test_cli_train_av_loss_end_to_end_and_bad_expert(corpus, expert_path, tmp_path):
    common = ["train", "--dataset", "vocaset", "--data-root", corpus, "--epochs", "2",
              "--faces-from", corpus / "templates" / "FLAME_sample.ply", "--device", "cpu"]
    code, output = _avtalk(*common, "-o", tmp_path / "run", "--av-loss", "--expert", expert_path,
                           "--lambda-av", "1e-3", "--lambda-rlv", "0.5", "--av-smooth", "3")
    assert code == 0, output
    assert "AV_CER" in output and "dropped" in output
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt", kind="animator")
    assert ckpt["extra"]["av"]["lambda_av"] == 1e-3 and ckpt["extra"]["av"]["lambda_rlv"] == 0.5
    assert ckpt["extra"]["av"]["av_smooth"] == 3 and ckpt["config"]["train"]["av_smooth"] == 3
    assert len(load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["history"]) == 2
    # an animator checkpoint is not an expert
    code, output = _avtalk(*common, "-o", tmp_path / "bad", "--av-loss", "--expert", tmp_path / "run" / "last.pt")
    assert code == 2 and "error:" in output and "expert" in output and "Traceback" not in output
    # --av-loss without --expert; a visual-only expert asked to listen too
    code, output = _avtalk(*common, "-o", tmp_path / "b2", "--av-loss")
    assert code == 2 and "--expert" in output
    code, output = _avtalk(*common, "-o", tmp_path / "b4", "--av-loss", "--expert", expert_path, "--av-smooth", "-1")
    assert code == 2 and "av_smooth" in output.replace("-", "_") and "Traceback" not in output
    code, output = _avtalk(*common, "-o", tmp_path / "b5", "--av-smooth", "4")
    assert code == 2 and "--av-loss" in output and "Traceback" not in output and not (tmp_path / "b5").exists()
    code, output = _avtalk(*common, "-o", tmp_path / "b3", "--av-loss", "--expert", expert_path, "--av-mode", "av")
    assert code == 2 and "lips and speech" in output
