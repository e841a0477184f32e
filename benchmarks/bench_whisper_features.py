"""whisper-tiny-ct2 (frozen Whisper tiny.en via CTranslate2): what its features cost and how
they behave on short inputs.

Prints: the one-off costs (model check = sha256 of model.bin, model load); seconds per clip
for 3 / 10 / 30 s of audio on 1 and 2 threads, as avtalk computes them (each window padded to
Whisper's 30 s) and encoding only the frames that hold audio (CTranslate2 accepts that); how
far the short-input features are from the padded ones (relative L2 and cosine per frame,
over the frames that hold audio; int8 vs float32 of the padded window as the noise floor);
and the time to cache a corpus, extrapolated from ``--utterances`` of its files.

    python benchmarks/bench_whisper_features.py [--corpus DIR --utterances 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from talkinghead_cli.animator import whisper_ct2 as W  # noqa: E402
from talkinghead_cli.audio import load_audio  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def encode_exact(model, audio: np.ndarray) -> np.ndarray:
    """Only the mel frames that hold audio (an even count), no padding to 30 s."""
    import ctranslate2

    n = W.num_features(len(audio))
    mel = W.log_mel(audio)[:, : 2 * n]
    return np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))))[0, :n]


def compare(a: np.ndarray, b: np.ndarray) -> str:
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return f"rel L2 mean {rel.mean():.3f} (max {rel.max():.3f}), cosine mean {cos.mean():.3f} (min {cos.min():.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--corpus", type=Path, default=None, help="a corpus folder with wav/ (time its caching)")
    ap.add_argument("--utterances", type=int, default=50)
    args = ap.parse_args()
    import ctranslate2

    t = time.perf_counter()
    folder = W.model_dir()
    print(f"model check (sha256 of {W.MODEL_FILE}, {(folder / W.MODEL_FILE).stat().st_size / 1e6:.1f} MB): "
          f"{time.perf_counter() - t:.2f} s")
    speech = load_audio(REPO / "examples" / "speech.wav")
    for threads in (2, 1):
        t = time.perf_counter()
        model = W._ct2_model(folder, threads)
        print(f"\n{threads} thread(s): model load {time.perf_counter() - t:.2f} s (ctranslate2 {ctranslate2.__version__}, int8)")
        for sec in (3, 10, 30):
            audio = np.resize(speech, sec * W.SAMPLE_RATE)
            padded = best(lambda: W.whisper_features(audio, threads=threads, folder=folder), args.repeat)
            exact = best(lambda: encode_exact(model, audio), args.repeat)
            print(f"  {sec:2d} s audio: padded to 30 s {padded:.3f} s ({padded / sec:.3f} s per s of audio); "
                  f"only its frames {exact:.3f} s")
    model = W._ct2_model(folder, 2)
    ref = W.whisper_features(speech, threads=2, folder=folder)
    print(f"\nshort input vs padded, examples/speech.wav ({len(speech) / W.SAMPLE_RATE:.2f} s, {len(ref)} frames):")
    print("  only its frames:       ", compare(encode_exact(model, speech), ref))
    m32 = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=2)
    print("  float32 vs int8 padded:", compare(W.encode_window(m32, speech), ref))
    if args.corpus is not None:
        wavs = sorted((args.corpus / "wav").glob("*.wav"))
        sample = wavs[:: max(1, len(wavs) // args.utterances)][: args.utterances]
        audio = [load_audio(p) for p in sample]
        t = time.perf_counter()
        for a in audio:
            W.whisper_features(a, threads=2, folder=folder)
        dt = time.perf_counter() - t
        sec = sum(len(a) for a in audio) / W.SAMPLE_RATE
        print(f"\ncorpus {args.corpus}: {len(sample)} utterances ({sec / len(sample):.2f} s each) in {dt:.1f} s "
              f"-> {dt / len(sample):.2f} s per utterance; all {len(wavs)}: ~{dt / len(sample) * len(wavs) / 60:.1f} min")


if __name__ == "__main__":
    main()
