"""Make the bundled example: a procedural head that says a sentence.

Writes, next to this script:
  speech.wav     ~3 s of English speech from eSpeak NG, 16 kHz mono 16-bit
  template.obj   a head-like mesh (deformed ellipsoid, nose, eye sockets, a mouth slit
                 whose upper and lower lips are separate vertices)
  sequence.npz   verts (T, V, 3) float16 at 30 fps (+ faces, fps): the lower lip and jaw
                 move down with the speech loudness envelope

    python examples/make_example.py [--text "..."] [--out examples]

Speech comes from the ``espeakng-loader`` wheel (libespeak-ng + its data, driven through
ctypes; installed by ``pip install -e ".[synth]"``), or from an ``espeak-ng`` program on
the PATH when the wheel is missing (Debian: ``apt-get install espeak-ng``). This is a stand-in until a real rig replaces it;
the mouth motion follows loudness, not phonemes.
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
from talkinghead_cli.mesh import obj_faces_text, obj_text

TEXT = "Hello! I am a talking head, and my lips move when I speak."
SAMPLE_RATE = 16_000
FPS = 30.0
RINGS, COLUMNS = 36, 56  # latitude rings (without the poles) x longitude columns
MOUTH_Y = -0.36  # height of the mouth slit on a head of height 2
MOUTH_HALF_ANGLE = 0.42  # half width of the slit, radians of longitude
OPEN_MAX = 0.13  # how far the lower lip drops at full loudness


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


def speak(text: str, voice: str = "en-us", rate: int = 175) -> np.ndarray:
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


def loudness_envelope(wave: np.ndarray, fps: float = FPS) -> np.ndarray:
    """Per-video-frame mouth opening in [0, 1] from the RMS loudness of the speech.

    Args:
        wave: (S,) at 16 kHz.
    Returns:
        (T,) with T = ceil(S / 16000 * fps).
    """
    hop = SAMPLE_RATE / fps
    t = int(np.ceil(len(wave) / hop))
    rms = np.array([np.sqrt(np.mean(wave[int(i * hop): int((i + 1) * hop)] ** 2) + 1e-12) for i in range(t)])
    db = 20 * np.log10(rms / rms.max())
    env = np.clip((db + 35.0) / 30.0, 0.0, 1.0)  # -35 dB -> closed, -5 dB -> fully open
    kernel = np.array([0.25, 0.5, 0.25])  # light smoothing so the jaw does not jitter
    return np.convolve(np.pad(env, 1, mode="edge"), kernel, mode="valid")


# ----------------------------------------------------------------------------- head


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Polar angle (RINGS,) and longitude (COLUMNS,) of the grid; longitude 0 faces +z."""
    theta = np.linspace(0, np.pi, RINGS + 2)[1:-1]
    phi = -np.pi + 2 * np.pi * np.arange(COLUMNS) / COLUMNS
    return theta, phi


def mouth_ring() -> int:
    """Index of the upper-lip ring: the ring just above the mouth height."""
    theta, _ = _grid()
    return int(np.flatnonzero(np.cos(theta) > MOUTH_Y)[-1])


def head_faces() -> np.ndarray:
    """(F, 3) faces of the latitude-longitude head, outward-facing, with the mouth slit cut.

    Vertex 0 is the top pole, then ring by ring, the last vertex is the bottom pole.
    """
    _, phi = _grid()
    idx = 1 + np.arange(RINGS * COLUMNS).reshape(RINGS, COLUMNS)
    bottom = RINGS * COLUMNS + 1
    faces = []
    for j in range(COLUMNS):
        k = (j + 1) % COLUMNS
        faces.append((0, idx[0, j], idx[0, k]))
        faces.append((bottom, idx[-1, k], idx[-1, j]))
    r = mouth_ring()
    for i in range(RINGS - 1):
        for j in range(COLUMNS):
            k = (j + 1) % COLUMNS
            in_mouth = i == r and abs(phi[j]) < MOUTH_HALF_ANGLE and abs(phi[k]) < MOUTH_HALF_ANGLE
            if in_mouth:
                continue  # the slit: upper and lower lip are not joined here
            a, b, c, d = idx[i, j], idx[i, k], idx[i + 1, j], idx[i + 1, k]
            faces.append((a, d, b))
            faces.append((a, c, d))
    return np.asarray(faces, dtype=np.int64)


def _bump(x, y, cx, cy, sx, sy):
    return np.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2)


def head_template() -> np.ndarray:
    """(V, 3) float32 head at rest: y up, +z is the face's front, height about 2."""
    theta, phi = _grid()
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    x, y, z = np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)
    x = x * 0.78 * (1 + 0.22 * np.minimum(y, 0))  # narrower towards the chin
    z = z * 0.86
    front = np.clip(z / 0.86, 0, 1)
    z = z + front * (0.20 * _bump(x, y, 0, -0.02, 0.07, 0.16)  # nose
                     - 0.07 * (_bump(x, y, 0.27, 0.25, 0.11, 0.07) + _bump(x, y, -0.27, 0.25, 0.11, 0.07))
                     + 0.05 * _bump(x, y, 0, 0.38, 0.35, 0.05)  # brow
                     + 0.05 * _bump(x, y, 0, MOUTH_Y, 0.22, 0.08))  # lips
    # close the slit at rest: squeeze the lip rings towards the mouth line
    r = mouth_ring()
    mid = 0.5 * (y[r] + y[r + 1])
    lips = _bump(x, y, 0, MOUTH_Y, 0.45, 0.12) * front
    y = y - 0.9 * (y - mid[None, :]) * lips
    ring_verts = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    top = np.array([[0.0, 1.0, 0.0]])
    bottom = np.array([[0.0, -1.0, 0.0]])
    return np.concatenate([top, ring_verts, bottom]).astype(np.float32)


def mouth_cavity(template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dark "mouth bag": a plate behind the slit, sloping down and back.

    Its normal points mostly downwards, away from the default lights, so what is seen
    through the open mouth is shaded darker than the skin (the renderer lights both sides
    of a face). Returns verts (8 * 4, 3) and faces (42, 3) indexed from 0.
    """
    r = mouth_ring()
    mid_y = float(template[1 + r * COLUMNS: 1 + (r + 2) * COLUMNS, 1].mean())
    nx, ny = 8, 4
    x = np.linspace(-0.3, 0.3, nx)
    s = np.linspace(0.0, 1.0, ny)[:, None]  # 0 front edge, 1 back edge
    y = mid_y + 0.05 - 0.27 * s + 0 * x
    z = 0.55 - 1.1 * s + 0 * x
    verts = np.stack([np.broadcast_to(x, y.shape), y, z], axis=-1).reshape(-1, 3)
    faces = []
    for i in range(ny - 1):
        for j in range(nx - 1):
            a, b, c, d = i * nx + j, i * nx + j + 1, (i + 1) * nx + j, (i + 1) * nx + j + 1
            faces += [(a, b, d), (a, d, c)]
    return verts.astype(np.float32), np.asarray(faces, dtype=np.int64)


def head_mesh() -> tuple[np.ndarray, np.ndarray]:
    """The example template: the head surface plus its mouth cavity. verts (V, 3), faces (F, 3)."""
    head = head_template()
    cavity, cavity_faces = mouth_cavity(head)
    verts = np.concatenate([head, cavity])
    faces = np.concatenate([head_faces(), cavity_faces + len(head)])
    return verts.astype(np.float32), faces


def jaw_weights() -> np.ndarray:
    """(V,) how much each vertex drops when the mouth opens: 1 at the lower lip's centre,
    fading towards the corners, down the chin and away from the face; 0 above the slit."""
    theta, phi = _grid()
    r = mouth_ring()
    w = np.zeros((RINGS, COLUMNS))
    across = np.clip(np.cos(0.5 * np.pi * phi / MOUTH_HALF_ANGLE), 0, None) ** 1.5
    across[np.abs(phi) >= MOUTH_HALF_ANGLE] = 0
    wide = np.clip(np.cos(0.5 * np.pi * phi / (1.8 * MOUTH_HALF_ANGLE)), 0, None)
    wide[np.abs(phi) >= 1.8 * MOUTH_HALF_ANGLE] = 0
    for i in range(r + 1, RINGS):
        down = (i - r - 1) / (RINGS - r - 1)  # 0 at the lower lip, 1 at the bottom pole
        w[i] = (1 - down) * across + down * 0.8 * wide  # lip moves most, chin follows
        w[i] *= np.exp(-3.0 * down ** 2)
    w[r] = -0.15 * across  # upper lip lifts a little
    return np.concatenate([[0.0], w.ravel(), [0.0]])


def animate(template: np.ndarray, opening: np.ndarray) -> np.ndarray:
    """verts (T, V, 3): the template with the jaw dropped by ``opening`` (T,) in [0, 1].
    Vertices past the head surface (the mouth cavity) stay where they are."""
    w = np.zeros(len(template))
    head_w = jaw_weights()
    w[:len(head_w)] = head_w
    verts = np.repeat(template[None], len(opening), axis=0)
    verts[:, :, 1] -= OPEN_MAX * opening[:, None] * w[None, :]
    verts[:, :, 2] -= 0.3 * OPEN_MAX * opening[:, None] * np.clip(w, 0, None)[None, :]  # jaw swings back
    return verts


def main() -> None:
    ap = argparse.ArgumentParser(description="Make examples/{speech.wav,template.obj,sequence.npz}.")
    ap.add_argument("--text", default=TEXT)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    wave = speak(args.text)
    sf.write(str(args.out / "speech.wav"), wave, SAMPLE_RATE, subtype="PCM_16")
    template, faces = head_mesh()
    (args.out / "template.obj").write_text(obj_text(template, obj_faces_text(faces)))
    verts = animate(template, loudness_envelope(wave))
    np.savez_compressed(args.out / "sequence.npz", verts=verts.astype(np.float16),
                        faces=faces.astype(np.int32), fps=np.float32(FPS))
    print(f"{len(wave) / SAMPLE_RATE:.2f} s of speech, {len(verts)} frames at {FPS:g} fps, "
          f"{len(template)} vertices, {len(faces)} faces -> {args.out}")


if __name__ == "__main__":
    main()
