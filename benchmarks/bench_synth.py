"""Synthetic corpus throughput: utterances per minute of ``build_corpus``, end to end.

Builds a corpus (TTS, articulation, vertex sequences on facecap, WAV/NPY writing,
manifest) into a temporary folder and prints utterances/min, seconds of speech per
second, the mean utterance length, and a per-stage split measured on a few utterances.

    python benchmarks/bench_synth.py [--subjects 6] [--sentences 10] [--tts piper,espeak,festival] [--jobs 1,2]

Target (issue 3): >= 100 utterances (about 3 s each) per minute on the 2-core CPU.
Model loading (piper's ONNX voice, the rig) is timed separately, not in the rate.
On a shared, busy machine the figures are pessimistic.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from talkinghead_cli.data.synthetic.articulation import articulate
from talkinghead_cli.data.synthetic.corpus import SynthConfig, build_corpus, plan_subjects
from talkinghead_cli.data.synthetic.rig import load_rig
from talkinghead_cli.data.synthetic.sentences import load_sentences
from talkinghead_cli.data.synthetic.tts import backend, synthesize


def stages(tts: list[str], n: int = 6) -> None:
    """Time TTS, articulation and posing per backend on n sentences."""
    rig = load_rig()
    sents = load_sentences()[:n]
    cfg = SynthConfig(out="unused", subjects=len(tts) * 2, sentences=1, tts=tts, test_b_subjects=0)
    seen = set()
    for subj in plan_subjects(cfg):
        v = subj["voice"]
        if v.backend in seen:
            continue
        seen.add(v.backend)
        t_tts = t_art = t_pose = 0.0
        secs = 0.0
        for s in sents:
            t0 = time.perf_counter()
            sp = synthesize(s, v)
            t1 = time.perf_counter()
            frames = int(round(sp.duration * 30))
            w = articulate(sp.segments, frames, 30, rig.names, subj["style"])
            t2 = time.perf_counter()
            rig.pose(w)
            t3 = time.perf_counter()
            t_tts, t_art, t_pose, secs = t_tts + t1 - t0, t_art + t2 - t1, t_pose + t3 - t2, secs + sp.duration
        print(f"  {v.id:22s} per utterance: tts {1000 * t_tts / n:6.1f} ms, articulation {1000 * t_art / n:5.1f} ms, "
              f"pose {1000 * t_pose / n:5.1f} ms  (mean {secs / n:.2f} s of speech)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--sentences", type=int, default=10)
    ap.add_argument("--tts", default="piper,espeak,festival")
    ap.add_argument("--jobs", default="1,2", help="process counts to compare, e.g. 1,2")
    args = ap.parse_args()
    tts = args.tts.split(",")
    print(f"CPU cores visible: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} (other work inflates times)")
    t0 = time.perf_counter()
    load_rig()
    for b in tts:
        backend(b)
    print(f"loading rig + TTS backends: {time.perf_counter() - t0:.2f} s")
    stages(tts)
    for jobs in [int(j) for j in args.jobs.split(",")]:
        tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
        try:
            cfg = SynthConfig(out=tmp / "corpus", subjects=args.subjects, sentences=args.sentences, tts=tts,
                              jobs=jobs)
            t0 = time.perf_counter()
            res = build_corpus(cfg)
            dt = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in (tmp / "corpus").rglob("*") if p.is_file())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        n = res["utterances"]
        print(f"build_corpus --jobs {jobs}: {n} utterances, {res['seconds']:.1f} s of speech in {dt:.1f} s "
              "(worker start-up included)")
        print(f"  {n / dt:.2f} utterances/s, mean {res['seconds'] / n:.2f} s/utterance, "
              f"{res['seconds'] / dt:.1f} s of speech per second, {size / n / 1e6:.2f} MB/utterance on disk")


if __name__ == "__main__":
    main()
