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
