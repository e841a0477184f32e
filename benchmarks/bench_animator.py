"""Animator inference speed: prints seconds of model time per clip length.

Models have random weights at the published sizes (FaceFormer / CodeTalker VOCASET with
a wav2vec2-base-architecture encoder built from its config, nothing downloaded) and the
``tiny`` CPU size with the mel encoder. For each clip the encoder time and the total
``predict`` time are printed; ``--reference`` also times the plain O(T^2) loop.

    python benchmarks/bench_animator.py                       # all targets
    python benchmarks/bench_animator.py --only tiny --seconds 10 60
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from talkinghead_cli.animator import AnimatorConfig, build_animator

VOCASET_TRAIN = [f"FaceTalk_{s}_TA" for s in (
    "170728_03272", "170904_00128", "170725_00137", "170915_00223",
    "170811_03274", "170913_03279", "170904_03276", "170912_03278")]
FLAME_VERTS = 5023


def wav2vec2_base_config() -> dict:
    """wav2vec2-base architecture (transformers' defaults), as plain data."""
    from transformers import Wav2Vec2Config

    d = Wav2Vec2Config().to_dict()
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, list, type(None)))}


def build(name: str):
    common = dict(num_verts=FLAME_VERTS, subjects=VOCASET_TRAIN, fps=30.0)
    if name == "tiny":
        cfg = AnimatorConfig(kind="faceformer", size="tiny", encoder="mel", **common)
    else:
        kind = name.split("-")[0]
        cfg = AnimatorConfig(kind=kind, size="vocaset", encoder="hf:wav2vec2-base(random)",
                             encoder_config=wav2vec2_base_config(), **common)
    model = build_animator(cfg).eval()
    if kind_of(name) == "faceformer":  # the published head is zero at init; make it act
        torch.nn.init.normal_(model.vertice_map_r.weight, std=1e-3)
    else:
        torch.nn.init.normal_(model.feat_map.weight, std=0.02)
    return model


def kind_of(name: str) -> str:
    return "codetalker" if name.startswith("codetalker") else "faceformer"


def time_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(name: str, seconds: list[float], reference: list[float], repeats: int) -> None:
    torch.manual_seed(0)
    model = build(name)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"\n== {name}: {n_params:.1f} M parameters, fps {model.fps}, threads {torch.get_num_threads()}")
    template = torch.zeros(1, FLAME_VERTS, 3)
    style = torch.zeros(1, len(VOCASET_TRAIN))
    style[0, 0] = 1.0
    model.predict(torch.randn(1, 8000) * 0.1, template, style)  # warm-up
    for sec in seconds:
        time_clip(model, sec, template, style, repeats)
    for sec in reference:
        audio = torch.randn(1, int(sec * model.sample_rate)) * 0.1
        ref = time_once(partial(model.predict_reference, audio, template, style))
        print(f"  plain autoregressive loop {sec:6.1f} s speech: {ref:7.2f} s")


def time_clip(model, sec: float, template, style, repeats: int) -> None:
    """End-to-end ``predict``, the encoder alone, and the decoding loop alone."""
    audio = torch.randn(1, int(sec * model.sample_rate)) * 0.1
    frames = model.num_frames(audio.shape[1])
    predict = partial(model.predict, audio, template, style)
    total = min(time_once(predict) for _ in range(repeats))
    with torch.inference_mode():
        enc = min(time_once(partial(model.encode_audio, audio, frames)) for _ in range(repeats))
        memory = model.encode_audio(audio, frames)
    model.encode_audio = lambda a, t: memory  # time the decoding loop alone
    dec = min(time_once(predict) for _ in range(repeats))
    del model.encode_audio
    passes = f", {model.last_passes} passes" if getattr(model, "last_passes", None) else ""
    print(f"  predict {sec:6.1f} s speech ({frames:5d} frames): {total:7.2f} s end to end | "
          f"encoder {enc:6.2f} s + decoding {dec:6.2f} s ({1e3 * dec / frames:.2f} ms/frame{passes})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["tiny", "faceformer-vocaset", "codetalker-vocaset"], nargs="*")
    ap.add_argument("--seconds", type=float, nargs="*", help="clip lengths (default per model)")
    ap.add_argument("--reference", type=float, nargs="*", help="clip lengths for the plain loop")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = {  # targets: faceformer 10 s <= 1.5 s, 60 s <= 10 s; codetalker 10 s <= 10 s; tiny 60 s <= 1 s
        "tiny": ([10.0, 60.0], [10.0]),
        "faceformer-vocaset": ([10.0, 30.0, 60.0], [10.0]),
        "codetalker-vocaset": ([10.0], [2.0]),
    }
    for name in args.only or plan:
        seconds, reference = plan[name]
        run(name, args.seconds or seconds, args.reference if args.reference is not None else reference,
            args.repeats)


if __name__ == "__main__":
    main()
