import pytest
import torch

from talkinghead_cli.checkpoint import load_checkpoint, save_checkpoint
from talkinghead_cli.errors import UserError


def test_roundtrip_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "m.pt", {"kind": "animator", "config": {"size": "tiny"},
                                               "state_dict": model.state_dict(), "fps": 30.0,
                                               "subjects": ["a", "b"]})
    ckpt = load_checkpoint(path, kind="animator")
    assert ckpt["format_version"] == 1 and ckpt["subjects"] == ["a", "b"]
    torch.testing.assert_close(ckpt["state_dict"]["weight"], model.weight.detach())


def test_wrong_kind_newer_and_garbage(tmp_path):
    path = save_checkpoint(tmp_path / "e.pt", {"kind": "expert", "config": {}, "state_dict": {}})
    with pytest.raises(UserError, match="animator checkpoint is needed"):
        load_checkpoint(path, kind="animator")
    newer = tmp_path / "n.pt"
    torch.save({"format_version": 99, "kind": "animator", "config": {}, "state_dict": {}}, newer)
    with pytest.raises(UserError, match="newer"):
        load_checkpoint(newer)
    junk = tmp_path / "j.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_checkpoint(junk)


class Evil:
    pass


def test_pickled_class_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "kind": "animator", "config": Evil(), "state_dict": {}}, path)
    with pytest.raises(UserError):
        load_checkpoint(path)


def test_release_copy_drops_optimizer_state(tmp_path):
    from talkinghead_cli.checkpoint import release_copy

    model = torch.nn.Linear(64, 64)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 64)).sum().backward()
    opt.step()
    src = save_checkpoint(tmp_path / "train.pt", {"kind": "animator", "config": {}, "state_dict": model.state_dict(),
                                                  "extra": {"optimizer": opt.state_dict(), "epoch": 3}})
    dst = release_copy(src, tmp_path / "release.pt")
    ckpt = load_checkpoint(dst)
    assert ckpt["extra"] == {"epoch": 3}
    torch.testing.assert_close(ckpt["state_dict"]["weight"], model.weight.detach())
    assert dst.stat().st_size < src.stat().st_size
