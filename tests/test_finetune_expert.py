"""`avtalk finetune-expert` on a tiny VOCASET-layout corpus: end to end through the CLI, the
lip-window cache, resume, bad input, and a learning test."""

import json

import numpy as np
import pytest
import torch

from talkinghead_cli.checkpoint import save_checkpoint
from talkinghead_cli.cli import main
from talkinghead_cli.config import ExpertTrainConfig
from talkinghead_cli.data.dataset import write_toy_corpus
from talkinghead_cli.data.registry import open_corpus
from talkinghead_cli.data.vocaset import TRAIN_SUBJECTS, VAL_SUBJECTS
from talkinghead_cli.errors import UserError
from talkinghead_cli.lipreader import build_expert, config_for_size
from talkinghead_cli.lipreader.checkpoint import load_expert
from talkinghead_cli.lipreader.import_autoavsr import export_autoavsr_state_dict
from talkinghead_cli.lipreader.views import lip_video
from talkinghead_cli.training.expert_trainer import (
    LipWindowCache,
    finetune_expert,
    render_settings,
    render_windows,
)

TEXTS = {1: "a cat", 2: "go home", 3: "big dog", 21: "a dog"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("expert") / "toy"
    write_toy_corpus(root, {TRAIN_SUBJECTS[0]: [1, 2, 3], VAL_SUBJECTS[0]: [21]}, seconds=0.6)
    lines = [TEXTS.get(n, f"sentence {n}") for n in range(1, 41)]
    (root / "sentencestext").mkdir()
    for s in (TRAIN_SUBJECTS[0], VAL_SUBJECTS[0]):
        (root / "sentencestext" / f"{s}.txt").write_text("\n".join(lines) + "\n")
    return root


def _cfg(corpus, run_dir, **kw):
    base = {"dataset": "vocaset", "data_root": corpus, "run_dir": run_dir, "epochs": 2, "device": "cpu",
            "batch_size": 3, "warmup_steps": 0, "window_size": 32}  # small windows keep the tests quick
    return ExpertTrainConfig(**{**base, **kw})


def _cli(*args):
    with pytest.raises(SystemExit) as e:
        main(["-q", "finetune-expert", *map(str, args)])
    return e.value.code


def test_cli_end_to_end_writes_a_loadable_expert(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    code = _cli("--dataset", "vocaset", "--data-root", corpus, "-o", run, "--epochs", "2",
                "--device", "cpu", "--batch-size", "3")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "epoch 2/2" in captured.err and "CER (video)" in captured.err
    model, _tok, ckpt = load_expert(run / "best.pt")
    assert model.config.size == "tiny" and model.config.modalities == "av"
    assert model.config.p_drop_audio == 0.5  # modality dropout on, so it also reads lips alone
    extra = ckpt["extra"]
    corpus_obj = open_corpus("vocaset", corpus)
    assert torch.equal(extra["lip_indices"], torch.as_tensor(corpus_obj.lip_indices))
    assert extra["data_fps"] == 30.0 and extra["render"]["size"] == 88
    last = load_expert(run / "last.pt")[2]["extra"]
    assert last["epoch"] == 2 and len(last["history"]) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for key in ("val_cer_video", "val_wer_video", "val_cer_av", "val_wer_av"):
        assert 0.0 <= metrics["history"][-1][key]
    assert len(list((run / "cache").glob("*.npy"))) == 4  # 3 train + 1 val utterances


def test_cached_windows_are_the_rendered_ones_and_are_reused(corpus, tmp_path):
    cache_dir = tmp_path / "cache"
    first = finetune_expert(_cfg(corpus, tmp_path / "a", epochs=1, cache_dir=cache_dir))
    assert (first.rendered, first.cached) == (4, 0)
    files = sorted(cache_dir.glob("*.npy"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = finetune_expert(_cfg(corpus, tmp_path / "b", epochs=1, cache_dir=cache_dir))
    assert second.rendered == 0 and second.cached == 4
    assert [f.stat().st_mtime_ns for f in sorted(cache_dir.glob("*.npy"))] == mtimes
    # the cached file holds what lip_video renders from the ground-truth sequence itself
    c = open_corpus("vocaset", corpus)
    u = c.split("train")[0]
    verts = torch.from_numpy(np.load(u.verts)[:: c.frame_step].reshape(-1, c.num_verts, 3).astype(np.float32))
    faces, lip = torch.as_tensor(c.faces), torch.as_tensor(c.lip_indices)
    want = lip_video(verts[None], faces, lip, c.fps, size=32)[0]
    cache = LipWindowCache(c, render_settings(_cfg(corpus, tmp_path), c), cache_dir, torch.device("cpu"), c.faces)
    got = torch.from_numpy(cache.get(u).astype(np.float32))
    assert cache.rendered == 0 and got.shape == want.shape == (15, 32, 32)
    assert torch.allclose(got, want, atol=2e-2)
    # other render settings give another key (no stale windows)
    other = LipWindowCache(c, render_settings(_cfg(corpus, tmp_path, margin=0.5), c), cache_dir,
                           torch.device("cpu"), c.faces)
    assert other.key(u) != cache.key(u)
    assert torch.allclose(render_windows(verts, faces, lip, c.fps, cache.settings), want)


def test_resume_continues_and_existing_run_is_kept(corpus, tmp_path):
    run = tmp_path / "run"
    finetune_expert(_cfg(corpus, run, epochs=1))
    with pytest.raises(UserError, match="already holds a run"):
        finetune_expert(_cfg(corpus, run, epochs=2))
    events = []
    res = finetune_expert(_cfg(corpus, run, epochs=2, resume=True), log=events.append)
    assert events[0]["resumed"] and events[0]["epoch"] == 1
    assert [h["epoch"] for h in res.history] == [1, 2] and res.rendered == 0
    assert load_expert(run / "last.pt")[2]["extra"]["epoch"] == 2
    with pytest.raises(UserError, match="nothing to resume"):
        finetune_expert(_cfg(corpus, tmp_path / "new", resume=True))


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def test_bad_inputs_exit_2_with_one_line(corpus, tmp_path, capsys):
    assert _cli("--dataset", "vocaset", "--data-root", tmp_path / "missing", "-o", tmp_path / "r1") == 2
    assert "not found" in _one_error_line(capsys)
    animator = tmp_path / "animator.pt"
    save_checkpoint(animator, {"kind": "animator", "config": {}, "state_dict": {}})
    assert _cli("--dataset", "vocaset", "--data-root", corpus, "-o", tmp_path / "r2",
                "--expert-checkpoint", animator) == 2
    assert "not a lip-reading expert" in _one_error_line(capsys)
    wrong_vocab = tmp_path / "autoavsr.pth"
    torch.save(export_autoavsr_state_dict(build_expert(config_for_size("tiny", 40))), wrong_vocab)
    assert _cli("--dataset", "vocaset", "--data-root", corpus, "-o", tmp_path / "r3",
                "--expert-checkpoint", wrong_vocab) == 2
    assert "40 tokens" in _one_error_line(capsys)
    # our own tiny expert, asked to continue as a base one
    run = tmp_path / "tiny"
    finetune_expert(_cfg(corpus, run, epochs=1))
    assert _cli("--dataset", "vocaset", "--data-root", corpus, "-o", tmp_path / "r4",
                "--expert-checkpoint", run / "best.pt", "--size", "base") == 2
    assert "size 'tiny'" in _one_error_line(capsys)


def test_missing_transcripts_are_a_user_error(corpus, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(corpus, bare, ignore=shutil.ignore_patterns("sentencestext"))
    with pytest.raises(UserError, match="no transcript"):
        finetune_expert(_cfg(bare, tmp_path / "run"))


def test_autoavsr_start_reports_keys_and_trains(corpus, tmp_path):
    src = tmp_path / "autoavsr.pth"
    torch.save(export_autoavsr_state_dict(build_expert(config_for_size("tiny", 31, "video"))), src)
    events = []
    res = finetune_expert(_cfg(corpus, tmp_path / "run", epochs=1, expert_checkpoint=src), log=events.append)
    init = next(e for e in events if e["event"] == "init")
    assert init["kind"] == "autoavsr" and init["loaded"] > 0 and init["missing"] == [] and init["unexpected"] == []
    model = load_expert(res.run_dir / "best.pt")[0]
    assert model.config.modalities == "video" and "val_cer_av" not in res.history[0]


def test_training_loss_drops_on_repeated_utterances(corpus, tmp_path):
    res = finetune_expert(_cfg(corpus, tmp_path / "run", epochs=15, lr=5e-3, max_val=1, seed=1,
                               modalities="video"))
    losses = [h["loss"] for h in res.history]
    # measured: 3.95 -> 1.57; label smoothing (0.1) keeps the CE part well above 0
    assert losses[-1] < 0.5 * losses[0], losses
