"""The trainer and `avtalk train` on a tiny VOCASET-layout corpus (tiny FaceFormer, CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from talkinghead_cli.checkpoint import load_checkpoint
from talkinghead_cli.config import AugmentConfig, TrainConfig, build_config, read_config_file
from talkinghead_cli.data import vocaset as V
from talkinghead_cli.data.dataset import write_toy_corpus
from talkinghead_cli.errors import UserError
from talkinghead_cli.training.trainer import _Dist, _shard, lr_factor, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    subjects = {V.TRAIN_SUBJECTS[0]: [1, 2], V.TRAIN_SUBJECTS[1]: [1, 2], V.VAL_SUBJECTS[0]: [21]}
    return write_toy_corpus(root, subjects, seconds=0.6)


def _cli(*args, env=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "talkinghead_cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_train_writes_one_file_checkpoints(corpus, tmp_path):
    cfg = TrainConfig(dataset="vocaset", data_root=corpus, run_dir=tmp_path / "run", epochs=2, lr=1e-3)
    events, ticks = [], []
    result = train(cfg, progress=lambda d, t: ticks.append((d, t)), log=events.append)
    assert ticks[-1] == (8, 8)  # 4 training sequences x 2 epochs
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    assert {"val_lve", "val_fdd", "val_mve"} <= set(result.history[-1])
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(tmp_path / "run" / name, kind="animator")
        assert ckpt["subjects"] == V.TRAIN_SUBJECTS[:2]
        assert ckpt["fps"] == 30.0 and ckpt["sample_rate"] == 16000
        assert ckpt["template"].shape == (162, 3) and ckpt["faces"].shape[1] == 3
        assert ckpt["lip_indices"].ndim == 1 and "optimizer" in ckpt["extra"]
        assert ckpt["config"]["animator"]["kind"] == "faceformer"
    assert load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["epoch"] == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["history"]) == 2


def test_training_reduces_the_loss(corpus, tmp_path):
    cfg = TrainConfig(dataset="vocaset", data_root=corpus, run_dir=tmp_path / "run", epochs=6, lr=3e-3)
    history = train(cfg).history
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_shards_are_disjoint_and_equal_sized():
    shards = [_shard(5, 3, 0, _Dist(r, 2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    assert set(shards[0][:2]) | set(shards[1][:2]) | {shards[0][2]} == set(range(5))
    assert _shard(5, 3, 0, _Dist()) != _shard(5, 4, 0, _Dist())  # reshuffled each epoch


def test_config_file_json_and_yaml_with_flag_override(tmp_path, corpus):
    (tmp_path / "t.json").write_text(json.dumps({"dataset": "vocaset", "data-root": str(corpus), "epochs": 7}))
    cfg = build_config(TrainConfig, read_config_file(tmp_path / "t.json"), {"epochs": 3, "lr": None})
    assert cfg.epochs == 3 and cfg.lr == 1e-4 and cfg.run_dir == Path("runs/vocaset-faceformer")
    (tmp_path / "t.yaml").write_text(f"dataset: biwi\ndata_root: {corpus}\nanimator: codetalker\n")
    cfg = build_config(TrainConfig, read_config_file(tmp_path / "t.yaml"), {})
    assert cfg.run_dir == Path("runs/biwi-codetalker")
    (tmp_path / "bad.json").write_text(json.dumps({"dataset": "vocaset", "data_root": "x", "epoch": 3}))
    with pytest.raises(UserError, match="'epoch': unknown option"):
        build_config(TrainConfig, read_config_file(tmp_path / "bad.json"), {})


def test_resume_without_last_checkpoint_is_a_user_error(corpus, tmp_path):
    proc = _cli("train", "--dataset", "vocaset", "--data-root", str(corpus), "-o", str(tmp_path / "r"),
                "--resume")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "nothing to resume" in err


def test_kill_mid_epoch_then_resume(corpus, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--dataset", "vocaset", "--data-root", str(corpus), "-o", str(run), "--lr", "1e-3"]
    proc = _cli(*args, "--epochs", "500")
    deadline = time.time() + 180
    while not (run / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.1)  # inside the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(run / "last.pt")["extra"]["epoch"]
    assert 1 <= done < 500
    proc = _cli(*args, "--epochs", str(done + 1), "--resume")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert f"resuming after epoch {done}" in err
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["extra"]["epoch"] == done + 1
    assert [h["epoch"] for h in ckpt["extra"]["history"]] == list(range(1, done + 2))
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no half-written files


def test_ddp_two_cpu_processes_only_rank0_writes(corpus, tmp_path):
    run = tmp_path / "run"
    (tmp_path / "cfg.json").write_text(json.dumps({"animator_options": {"dropout": 0.0}, "seed": 5}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "talkinghead_cli", "train", "--dataset", "vocaset", "--data-root", str(corpus),
           "-o", str(run), "--epochs", "2", "--device", "cpu", "--lr", "1e-3", "--config", str(tmp_path / "cfg.json")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("starting:") == 1 and "(x2)" in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "last.pt", "metrics.json"]
    ddp = load_checkpoint(run / "last.pt")
    assert ddp["extra"]["epoch"] == 2
    # 2 ranks x 1 sequence with averaged gradients == 1 process accumulating 2 sequences
    single = TrainConfig(dataset="vocaset", data_root=corpus, run_dir=tmp_path / "one", epochs=2, lr=1e-3,
                         seed=5, batch_size=2, animator_options={"dropout": 0.0})
    train(single)
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    for k, v in one["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][k], v, rtol=1e-4, atol=1e-5)


def test_codetalker_stage1_then_stage2(corpus, tmp_path):
    base = dict(dataset="vocaset", data_root=corpus, animator="codetalker", epochs=1, lr=1e-3)
    with pytest.raises(UserError, match="stage-1 motion codebook"):
        train(TrainConfig(**base, stage=2, run_dir=tmp_path / "s2"))
    train(TrainConfig(**base, stage=1, run_dir=tmp_path / "s1"))
    events = []
    train(TrainConfig(**base, stage=2, run_dir=tmp_path / "s2", init_from=tmp_path / "s1" / "best.pt"),
          log=events.append)
    assert events[0]["event"] == "init"
    s1 = load_checkpoint(tmp_path / "s1" / "best.pt")["state_dict"]
    s2 = load_checkpoint(tmp_path / "s2" / "last.pt")["state_dict"]
    vq = [k for k in s1 if k.startswith("vqvae.")]
    assert vq and all(torch.equal(s1[k], s2[k]) for k in vq)  # the codebook stays frozen
    assert "val_lve" in load_checkpoint(tmp_path / "s2" / "last.pt")["extra"]["history"][0]


def test_existing_run_is_not_overwritten(corpus, tmp_path):
    cfg = TrainConfig(dataset="vocaset", data_root=corpus, run_dir=tmp_path / "run", epochs=1)
    train(cfg)
    with pytest.raises(UserError, match="already holds a run"):
        train(cfg)


@pytest.mark.parametrize("extra", [{}, {"augment": AugmentConfig(), "lambda_lap": 10.0}], ids=["plain", "augment"])
def test_resumed_run_follows_the_uninterrupted_course(corpus, tmp_path, extra):
    base = dict(dataset="vocaset", data_root=corpus, lr=1e-3, seed=3, **extra)
    train(TrainConfig(**base, run_dir=tmp_path / "a", epochs=2))
    train(TrainConfig(**base, run_dir=tmp_path / "b", epochs=1))
    train(TrainConfig(**base, run_dir=tmp_path / "b", epochs=2, resume=True))
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["extra"]["history"] == b["extra"]["history"]
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0)


class _Stop(Exception):
    pass


def test_cosine_schedule_decays_and_a_killed_run_resumes_on_its_curve(corpus, tmp_path):
    assert lr_factor("cosine", 0, 8) == 1.0 and lr_factor("cosine", 4, 8) == pytest.approx(0.5)
    assert lr_factor("cosine", 8, 8) == pytest.approx(0.0) and lr_factor("constant", 5, 8) == 1.0
    base = dict(dataset="vocaset", data_root=corpus, lr=1e-3, seed=3, epochs=2, lr_schedule="cosine")
    train(TrainConfig(**base, run_dir=tmp_path / "a"))

    def stop_after_first_epoch(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise _Stop  # after epoch 1's checkpoints are written, as a kill there would leave them

    with pytest.raises(_Stop):
        train(TrainConfig(**base, run_dir=tmp_path / "b"), log=stop_after_first_epoch)
    train(TrainConfig(**base, run_dir=tmp_path / "b", resume=True))
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    # 4 sequences x 2 epochs = 8 steps: the last update ran at factor (1 + cos(7/8 pi)) / 2
    assert a["extra"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * lr_factor("cosine", 7, 8))
    assert a["extra"]["history"] == b["extra"]["history"]
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0)
    constant = dict(base, lr_schedule="constant")
    train(TrainConfig(**constant, run_dir=tmp_path / "c"))
    c = load_checkpoint(tmp_path / "c" / "last.pt")
    assert c["extra"]["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert any(not torch.equal(c["state_dict"][k], v) for k, v in a["state_dict"].items())


def test_subject_rows_keep_named_styles_and_average_new_ones():
    from talkinghead_cli.training.trainer import subject_rows

    old = {"obj_vector.weight": torch.tensor([[1.0, 3.0], [2.0, 6.0]]), "emb.weight": torch.tensor([[1.0], [5.0]]),
           "other": torch.zeros(3)}
    own = {"obj_vector.weight": torch.zeros(2, 3), "emb.weight": torch.zeros(3, 1), "other": torch.zeros(4)}
    state, moved = subject_rows(old, own, ["a", "b"], ["b", "c", "a"])
    assert sorted(moved) == ["emb.weight", "obj_vector.weight"]
    assert state["obj_vector.weight"].tolist() == [[3.0, 2.0, 1.0], [6.0, 4.0, 2.0]]  # b, mean, a
    assert state["emb.weight"].tolist() == [[5.0], [3.0], [1.0]]
    assert state["other"].shape == (3,)  # not a subject table: left for load_state_dict to refuse


def test_init_from_a_run_on_other_subjects(corpus, tmp_path):
    root = tmp_path / "other"
    subjects = {V.TRAIN_SUBJECTS[1]: [1, 2], V.TRAIN_SUBJECTS[2]: [1], V.TRAIN_SUBJECTS[3]: [1],
                V.VAL_SUBJECTS[0]: [21]}
    other = write_toy_corpus(root, subjects, seconds=0.6)
    train(TrainConfig(dataset="vocaset", data_root=corpus, run_dir=tmp_path / "a", epochs=1, lr=1e-3))
    events = []
    train(TrainConfig(dataset="vocaset", data_root=other, run_dir=tmp_path / "b", epochs=1, lr=1e-3,
                      init_from=tmp_path / "a" / "best.pt"), log=events.append)
    moved = [e for e in events if e["event"] == "init_subjects"]
    assert moved and moved[0]["tensors"] == ["obj_vector.weight"] and moved[0]["kept"] == [V.TRAIN_SUBJECTS[1]]
    assert load_checkpoint(tmp_path / "b" / "best.pt")["subjects"] == V.TRAIN_SUBJECTS[1:4]
