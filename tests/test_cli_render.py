import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from talkinghead_cli.cli import main
from talkinghead_cli.mesh import write_sequence

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def files(tmp_path, sphere):
    """A template OBJ, a 6-frame NPZ sequence (fps 25) and the same as a folder of OBJ frames."""
    verts, faces = sphere
    template = tmp_path / "template.obj"
    trimesh.Trimesh(verts, faces, process=False).export(str(template))
    seq = np.repeat(verts[None], 6, axis=0)
    seq[:, :, 1] *= np.linspace(1.0, 0.8, 6)[:, None]
    npz = write_sequence(tmp_path / "seq.npz", seq, faces, fmt="npz", fps=25)
    folder = write_sequence(tmp_path / "frames", seq, faces, fmt="obj", fps=25)
    return template, npz, folder


def run_main(capsys, *args):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(["--quiet", *map(str, args)])
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def test_render_end_to_end_with_audio(tmp_path, files, tone_wav):
    template, npz, _ = files
    out = tmp_path / "preview.mp4"
    r = subprocess.run([sys.executable, "-m", "talkinghead_cli", "render", str(npz), "--template", str(template),
                        "--audio", str(tone_wav), "-o", str(out), "--size", "64"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # 1 s of audio at the NPZ's 25 fps: 25 frames (motion padded with its last frame)
    assert str(out) in r.stdout and "25 frames at 25 fps" in r.stdout and "audio 1.00 s" in r.stdout
    assert out.stat().st_size > 1000
    assert "\x1b[" not in r.stdout + r.stderr  # no control codes when not on a terminal


def test_render_folder_of_frames_silent(tmp_path, files, capsys):
    template, _, folder = files
    out = tmp_path / "sub" / "silent.mp4"
    code, stdout, _ = run_main(capsys, "render", folder, "--template", template, "-o", out, "--size", "32",
                               "--fps", "10")
    assert code == 0 and out.exists()
    assert "6 frames at 10 fps, 0.60 s" in stdout


def test_bundled_example_renders(tmp_path, capsys):
    out = tmp_path / "example.mp4"
    code, stdout, err = run_main(capsys, "render", EXAMPLES / "sequence.npz", "--template",
                                 EXAMPLES / "template.obj", "--audio", EXAMPLES / "speech.wav",
                                 "-o", out, "--size", "32")
    assert code == 0, err
    assert out.exists() and "at 30 fps" in stdout


def test_bundled_example_talks():
    """The example's lips open (> 5 mm) and press shut again (/m/ in "am", "my", "move",
    /p/ in "speak"): the lip gap of the rig's midline vertices, which the example keeps first."""
    pytest.importorskip("openfacefx")
    pytest.importorskip("meshopt")
    from talkinghead_cli.data.synthetic.regions import lip_gap, lip_midline
    from talkinghead_cli.data.synthetic.rig import load_rig

    data = np.load(EXAMPLES / "sequence.npz")
    verts = data["verts"].astype(np.float32)
    assert verts.shape[0] >= 60 and float(data["fps"]) == 30
    rig = load_rig()
    gap = lip_gap(verts[:, :rig.num_verts], *lip_midline(rig))
    shut = gap < 0.5e-3
    closures = np.flatnonzero(shut[1:] & ~shut[:-1])  # open -> shut transitions
    assert gap.max() > 5e-3 and len(closures) >= 3, (gap.max(), closures)
    assert sum(p.stat().st_size for p in EXAMPLES.iterdir() if p.is_file()) < 2_000_000


def _error_cases(tmp_path, template, npz):
    other = tmp_path / "other.obj"
    trimesh.creation.box().export(str(other))
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = tmp_path / "o.mp4"
    return {
        "missing sequence": ["render", tmp_path / "nope.npz", "--template", template, "-o", out],
        "missing template": ["render", npz, "--template", tmp_path / "nope.obj", "-o", out],
        "missing audio": ["render", npz, "--template", template, "--audio", tmp_path / "nope.wav", "-o", out],
        "vertex mismatch": ["render", npz, "--template", other, "-o", out],
        "odd size": ["render", npz, "--template", template, "-o", out, "--size", "65"],
        "tiny size": ["render", npz, "--template", template, "-o", out, "--size", "4"],
        "negative fps": ["render", npz, "--template", template, "-o", out, "--fps", "-3"],
        "not mp4": ["render", npz, "--template", template, "-o", tmp_path / "o.gif"],
        "unwritable output": ["render", npz, "--template", template, "-o", blocker / "o.mp4"],
    }


def test_user_errors_exit_2_with_one_line(tmp_path, files, capsys):
    template, npz, _ = files
    cases = _error_cases(tmp_path, template, npz)
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, args in cases.items():
        code, stdout, err = run_main(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, name  # nothing written


def test_user_error_exit_code_from_the_console_script(tmp_path, files):
    template, npz, _ = files
    r = subprocess.run([sys.executable, "-m", "talkinghead_cli", "render", str(npz), "--template", str(template),
                        "-o", str(tmp_path / "x.mp4"), "--size", "33"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists()
