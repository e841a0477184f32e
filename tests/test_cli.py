import subprocess
import sys

from talkinghead_cli import __version__


def run(*args):
    return subprocess.run([sys.executable, "-m", "talkinghead_cli", *args], capture_output=True, text=True)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"avtalk {__version__}"


def test_help_lists_options():
    r = run("--help")
    assert r.returncode == 0 and "--verbose" in r.stdout


def test_unknown_command_is_usage_error():
    r = run("no-such-command")
    assert r.returncode == 2


def test_all_zero_loss_weights_are_refused_in_one_line(tmp_path):
    zeros = ("--lambda-mse", "0", "--lambda-rlv", "0", "--lambda-av", "0")
    for extra in ((), ("--av-loss", "--expert", str(tmp_path / "e.pt"))):
        r = run("train", "--dataset", "synthetic", "--data-root", str(tmp_path), *zeros, *extra)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: all loss weights are 0") and len(r.stderr.strip().splitlines()) == 1


def test_animate_help_says_what_audio_is_accepted():
    r = run("animate", "--help")
    text = " ".join(r.stdout.split())
    assert r.returncode == 0
    for name in ("M4A/AAC", "MP3", "Opus", "WebM", "MP4/MOV", "glob", "--json"):
        assert name in text
