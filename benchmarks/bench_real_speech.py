"""Real human speech (not TTS) through `avtalk animate`: does the mouth open when the voice is loud?

For each recording the bundled default animator is run in-process (the library function behind
`avtalk animate`, vertices only, no video) and two curves are compared frame by frame at the
model's own fps:

- mouth opening: mean height of the upper-lip minus the lower-lip midline vertices
  (``data.synthetic.regions.lip_gap``; the vertex sets are the synthetic rig's ``lip_midline``, or, for a
  model without that rig, the checkpoint's lip vertices near the centre line split at their
  median height);
- loudness: linear RMS of the audio the model heard (resampled to its rate) in a window of one
  frame period centred on each frame (``metrics.loudness_envelope``).

Printed per recording: duration, frames, the lip opening's 5-95 % range in mm, Pearson r of the
two curves at lag 0 (linear RMS), r of the RMS in dB (floored 50 dB below the loudest frame),
and the best r within +-2 frames with its lag (positive: the mouth follows the sound). The
project's own TTS example (examples/speech.wav) is added as a reference row.
Target (issue 6): real speech drives visibly correct motion, i.e. a clearly positive r.

Recordings used (real human voices from Debian packages; nothing is copied into the repo):

    cd /tmp && apt-get update && apt-get download alsa-utils pocketsphinx-testdata
    dpkg-deb -x alsa-utils_*.deb /tmp/alsa                     # 1.2.8-1: /usr/share/sounds/alsa
    dpkg-deb -x pocketsphinx-testdata_*.deb /tmp/pstd          # 0.8+5prealpha+1-15
    D=/tmp/pstd/usr/share/pocketsphinx/test/data
    python benchmarks/bench_real_speech.py $D/librivox $D/cards $D/goforward.raw \\
        /tmp/alsa/usr/share/sounds/alsa --exclude Noise

    python benchmarks/bench_real_speech.py PATH... [--checkpoint NAME_OR_PATH] [--max-lag 2]
        [--raw-rate 16000] [--exclude SUBSTRING ...] [--no-reference]

PATH is a WAV/FLAC/OGG file, a headerless 16-bit mono .raw file (at --raw-rate), or a folder
of them.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from talkinghead_cli import metrics
from talkinghead_cli.animate import AUDIO_SUFFIXES, animate
from talkinghead_cli.audio import load_audio
from talkinghead_cli.config import AnimateConfig
from talkinghead_cli.data.synthetic.regions import lip_gap

REFERENCE = REPO / "examples" / "speech.wav"
# Where the recordings come from, by a fragment of their path (see the docstring).
SOURCES = {"sounds/alsa": "alsa-utils (Debian)", "pocketsphinx/test/data": "pocketsphinx-testdata (Debian)",
           "examples/speech.wav": "avtalk example (TTS)"}


def source_of(path: Path) -> str:
    text = str(path.resolve())
    return next((name for frag, name in SOURCES.items() if frag in text), "?")


def speech_files(paths: list[Path], exclude: list[str]) -> list[Path]:
    files = []
    for p in paths:
        found = sorted(q for q in p.iterdir() if q.suffix.lower() in (*AUDIO_SUFFIXES, ".raw")) if p.is_dir() else [p]
        files += [q for q in found if not any(x in q.name for x in exclude)]
    return files


def as_wav(path: Path, raw_rate: int, tmp: Path) -> Path:
    """A readable copy of a headerless 16-bit mono .raw file; other files as they are."""
    if path.suffix.lower() != ".raw":
        return path
    wave = np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
    out = tmp / f"{path.stem}.wav"
    sf.write(out, wave, raw_rate)
    return out


@functools.lru_cache(maxsize=2)
def _rig_midline(num_verts: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The synthetic rig's lip midline if the model animates that rig's topology."""
    try:
        from talkinghead_cli.data.synthetic.regions import lip_midline
        from talkinghead_cli.data.synthetic.rig import default_rig_path, load_rig

        rig = load_rig(default_rig_path())
        if rig.num_verts == num_verts:
            up, lo = lip_midline(rig)
            return up, lo, f"rig {rig.name} lip_midline ({len(up)} upper, {len(lo)} lower vertices)"
    except Exception as e:  # noqa: BLE001 - no rig: fall back to the checkpoint's lip vertices
        print(f"(no synthetic rig: {type(e).__name__}; using the checkpoint's lip vertices)")
    return None


def lip_sets(face: dict, num_verts: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(upper, lower) lip vertex indices and how they were chosen."""
    found = _rig_midline(num_verts)
    if found is not None:
        return found
    lip, p = face["lip_indices"], face["template"]
    if not len(lip):
        raise SystemExit("the model has no lip indices; cannot measure the mouth opening")
    width = np.ptp(p[lip, 0])
    mid = lip[np.abs(p[lip, 0] - p[lip, 0].mean()) < 0.15 * width]
    y = np.median(p[mid, 1])
    return mid[p[mid, 1] > y], mid[p[mid, 1] <= y], f"checkpoint lip vertices near the centre line ({len(mid)})"


def measure(wav: Path, checkpoint: str | None, out: Path, max_lag: int) -> dict:
    """Animate one recording and correlate its mouth opening with its loudness."""
    t0 = time.perf_counter()
    (res,) = animate(AnimateConfig(audio=wav, out=out, checkpoint=checkpoint, format="npy", video=False))
    seconds_wall = time.perf_counter() - t0
    meta = json.loads((out / "animation.json").read_text())
    verts = np.load(out / "vertices.npy")
    face = dict(np.load(out / "face.npz"))
    up, lo, how = lip_sets(face, verts.shape[1])
    opening = torch.from_numpy(lip_gap(verts.astype(np.float64), up, lo))
    audio = load_audio(wav, meta["sample_rate"])
    env = metrics.loudness_envelope(torch.from_numpy(audio), meta["sample_rate"], res.fps, res.frames)
    db = 20 * torch.log10(env.clamp(min=float(env.max()) * 10 ** (-50 / 20) + 1e-12))
    lags = metrics.lagged_pearson(opening, env, max_lag)
    best = max(lags, key=lambda k: -np.inf if np.isnan(lags[k]) else lags[k])
    rest = torch.from_numpy(lip_gap(face["template"][None].astype(np.float64), up, lo))
    rel = (opening - rest).numpy() * 1000  # mm, relative to the template's (rest) opening
    return {"seconds": res.duration, "frames": res.frames, "wall": seconds_wall, "how": how,
            "open_mm": (float(np.percentile(rel, 5)), float(np.percentile(rel, 95))),
            "r": lags[0], "r_db": metrics.pearson(opening, db), "best_r": lags[best], "best_lag": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", type=Path, nargs="*")
    ap.add_argument("--checkpoint", default=None, help="default: the bundled default animator")
    ap.add_argument("--max-lag", type=int, default=2)
    ap.add_argument("--raw-rate", type=int, default=16000, help="sample rate of headerless .raw files")
    ap.add_argument("--exclude", nargs="*", default=[], help="skip files whose name contains any of these")
    ap.add_argument("--no-reference", action="store_true", help="leave out examples/speech.wav")
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = speech_files(args.paths, args.exclude) + ([] if args.no_reference else [REFERENCE])
    if not files:
        raise SystemExit("no recordings given")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, f in enumerate(files):
            rows.append((f, measure(as_wav(f, args.raw_rate, tmp), args.checkpoint, tmp / f"out{i}", args.max_lag)))
    print(f"mouth opening: {rows[0][1]['how']}; loudness: linear RMS, 1-frame window centred on each frame")
    head = f"{'recording':<44} {'source':<31} {'s':>5} {'frames':>6} {'open mm p5..p95':>16} " \
           f"{'r lag0':>7} {'r dB':>6} {'best r':>7} {'lag':>4}"
    print(head)
    print("-" * len(head))
    for f, m in rows:
        name = f.name if len(f.name) <= 44 else "…" + f.name[-43:]
        print(f"{name:<44} {source_of(f):<31} {m['seconds']:5.2f} {m['frames']:6d} "
              f"{m['open_mm'][0]:7.2f}..{m['open_mm'][1]:<7.2f} {m['r']:7.3f} {m['r_db']:6.3f} "
              f"{m['best_r']:7.3f} {m['best_lag']:+4d}")
    real = [m for f, m in rows if f != REFERENCE]
    if real:
        r = np.array([m["r"] for m in real])
        print(f"real speech: {len(real)} recordings, {sum(m['seconds'] for m in real):.1f} s; r lag 0 "
              f"mean {r.mean():.3f}, median {np.median(r):.3f}, min {r.min():.3f}; best-lag r mean "
              f"{np.mean([m['best_r'] for m in real]):.3f}")
    print(f"animate wall time: {sum(m['wall'] for _, m in rows):.1f} s for {len(rows)} recordings")


if __name__ == "__main__":
    main()
