"""Preview videos: render a mesh sequence front-on and encode it to an MP4 with sound.

Frames are rendered in batches under a front camera framed once (from the template, or
the first frame) so the head does not jump. The renderer is :func:`preview_render`, the
renderer's hard layer without gradients (:mod:`talkinghead_cli.render.preview`: the same
pixels as ``talkinghead_cli.render.render_mesh(..., sigma=0)``, its reference, for a
fraction of the CPU time); ``render_mesh`` with anti-aliased outlines is
available through ``render_frames(fast=False)``. Frames (grey) are converted to uint8 and
piped as raw ``gray`` into the ffmpeg that ships with ``imageio-ffmpeg``, which encodes
H.264 (``yuv420p``, ``+faststart``) and muxes the audio as AAC. ffmpeg runs in its own
process and a writer thread feeds its stdin, so encoding overlaps with rendering.

Duration rule: with audio, the video gets exactly ``N = ceil(audio_seconds * fps)``
frames. A shorter sequence is padded by repeating its last frame, a longer one is
trimmed. The video therefore lasts ``N / fps`` seconds, at most one frame longer than
the audio and never shorter. Without audio the MP4 is silent and holds all T frames.

The output is written atomically: ffmpeg writes a temporary file beside the target,
which is renamed into place only when encoding succeeded.
"""

from __future__ import annotations

import contextlib
import math
import queue
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
import torch
from pydantic import BaseModel, Field

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.errors import UserError
from talkinghead_cli.progress import ProgressFn, report

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")
DEFAULT_FPS = 30.0


@dataclass
class PreviewResult:
    """What :func:`render_preview` wrote."""

    path: Path
    frames: int
    fps: float
    duration: float  # seconds of video
    audio_duration: float | None  # seconds of audio muxed in, None for a silent MP4


# ----------------------------------------------------------------------------- frames


def frames_for_audio(num_samples: int, sample_rate: int, fps: float) -> int:
    """Frame count N = ceil(S / sample_rate * fps): the shortest video not shorter than the audio."""
    exact = num_samples * fps / sample_rate
    return max(1, math.ceil(exact - 1e-6))


def fit_to_length(verts: torch.Tensor, n: int) -> torch.Tensor:
    """Pad (repeat the last frame) or trim a sequence to n frames.

    Args:
        verts: (T, V, 3).
    Returns:
        (n, V, 3); a view when trimming.
    """
    t = verts.shape[0]
    if n <= t:
        return verts[:n]
    pad = verts[-1:].expand(n - t, -1, -1)
    return torch.cat([verts, pad], dim=0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, H, W, C) float in [0, 1] -> (B, H, W, C) uint8 on the CPU (rounded, clamped).

    A grey image broadcast over its channels (stride 0) is converted once, then repeated.
    """
    if images.stride(-1) == 0 and images.shape[-1] > 1:
        grey = (images[..., :1].detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        return np.repeat(grey, images.shape[-1], axis=-1)
    with torch.no_grad():
        return images.clamp(0, 1).mul_(255).add_(0.5).to(torch.uint8).cpu().numpy()


# ----------------------------------------------------------------------------- fast preview raster


def preview_render(verts: torch.Tensor, faces: torch.Tensor, camera, cull: bool = False,
                   window: tuple[int, int, int, int] | None = None, jit: bool | None = None) -> torch.Tensor:
    """Fast, non-differentiable front render for previews (hard edges, orthographic camera):
    :func:`talkinghead_cli.render.preview.preview_frames` (the renderer's own rasterizer, shading
    and interpolation; ``render_mesh(verts, faces, camera, sigma=0)``'s pixels), shown as RGB.

    Args:
        verts: (B, V, 3) float.
        faces: (F, 3) long on the same device.
        camera: an orthographic :class:`talkinghead_cli.render.Camera` with batch 1.
        cull: skip faces seen from behind (faster; wrong where the inside of the mesh shows).
        window: ``(top, left, height, width)`` in pixels: render only this rectangle of the
            image (the pixels it holds in the full render).
        jit: the compiled kernels (None: on CPU when numba is installed); False:
            ``render(..., sigma=0)``, the readable reference.
    Returns:
        (B, H, W, 3) float in [0, 1]; (B, height, width, 3) with ``window``.
    """
    from talkinghead_cli.render.preview import preview_frames

    grey = preview_frames(verts, faces, camera, cull=cull, window=window, jit=jit).to(verts.dtype)
    return grey[..., None].expand(*grey.shape, 3)


def warm_preview() -> None:
    """Load the preview's compiled kernels (numba's on-disk cache, ~0.7 s on the 2-core CPU)
    by rendering one tiny frame of a single triangle. ``avtalk animate`` runs this on a
    thread while the model predicts, so the preview does not wait for the loading; without
    numba it does nothing."""
    from talkinghead_cli.render import front_camera
    from talkinghead_cli.render.preview import preview_frames, use_jit

    verts = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    camera = front_camera(verts[0], image_size=16, projection="ortho")
    if use_jit(verts, camera):
        faces = torch.tensor([[0, 1, 2]])
        preview_frames(verts, faces, camera)
        preview_frames(verts, faces, camera, window=(2, 2, 8, 8))


@contextlib.contextmanager
def _frame_parallel(device: torch.device):
    """On CPU, trade torch's intra-op threads for frame-level threads.

    The preview's tensor ops are small (~64k elements), so splitting each op across
    threads gains little and, on a busy machine, costs a lot (every op waits for its
    slowest thread). Rendering whole frames on separate Python threads (torch releases
    the GIL inside ops) with one intra-op thread each scales better. Yields the number of
    frame workers; restores the thread count afterwards.
    """
    if device.type != "cpu":
        yield 1
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield max(1, threads)
    finally:
        torch.set_num_threads(threads)


def changing_window(verts: torch.Tensor, faces: torch.Tensor, camera) -> tuple[int, int, int, int] | None:
    """The pixel rectangle outside which every frame of a sequence looks like its first.

    A preview pixel depends on the faces that cover it, through their corners' positions
    and (Gouraud shading) their corners' normals. A vertex's normal changes only when a
    face around it has a moving corner. So the faces whose pixels can change are those
    with a corner in the one-ring of a moving vertex, and outside the rectangle that
    bounds them in every frame (and in the first) the first frame's pixels hold exactly.
    Talking faces move the mouth and jaw only, so the rectangle is a fraction of the image.

    Args:
        verts: (T, V, 3) float.
        faces: (F, 3) long.
        camera: the preview camera (orthographic, batch 1).
    Returns:
        ``(top, left, height, width)`` clamped to the image, or None when nothing moves.
    """
    height, width = camera.image_size
    moving = (verts != verts[:1]).any(-1).any(0)  # (V,)
    if not bool(moving.any()):
        return None
    ring = faces[moving[faces].any(1)].unique()  # vertices whose normal can change
    touched = torch.zeros_like(moving)
    touched[ring] = True
    corners = faces[touched[faces].any(1)].unique()
    pv = camera.project(verts[:, corners])[..., :2].reshape(-1, 2)
    (x0, y0), (x1, y1) = pv.amin(0).tolist(), pv.amax(0).tolist()
    # pixel centres at k + 0.5; one pixel of slack on every side
    left, top = max(0, math.floor(x0) - 1), max(0, math.floor(y0) - 1)
    right, bottom = min(width, math.ceil(x1) + 1), min(height, math.ceil(y1) + 1)
    if right <= left or bottom <= top:
        return None
    return top, left, bottom - top, right - left


def _preview_parallel(verts: torch.Tensor, faces: torch.Tensor, camera, pool, workers: int,
                      window=None) -> torch.Tensor:
    """:func:`preview_render` with the frames of ``verts`` (B, V, 3) split over ``workers`` threads.
    Returns (B, H, W, 1) grey (the window's size with ``window``)."""
    if pool is None or verts.shape[0] == 1:
        return preview_render(verts, faces, camera, window=window)[..., :1]
    parts = verts.tensor_split(min(workers, verts.shape[0]))
    return torch.cat(list(pool.map(lambda part: preview_render(part, faces, camera, window=window)[..., :1],
                                   parts)))


def render_frames(verts: torch.Tensor, faces: torch.Tensor, camera, batch: int, fast: bool = True,
                  incremental: bool = True, grey: bool = False):
    """Yield uint8 frames batch by batch.

    Args:
        verts: (T, V, 3) float tensor.
        faces: (F, 3) long tensor on the same device.
        camera: a :class:`talkinghead_cli.render.Camera` framed once for the sequence.
        batch: frames per render call.
        fast: use :func:`preview_render` (hard edges; on CPU, frames in parallel on as
            many threads as torch is set to use); else the differentiable ``render_mesh``
            with its anti-aliased outlines (several times slower).
        incremental: (fast only) render the first frame whole and, for every frame, only
            the rectangle of :func:`changing_window`; same pixels as rendering each frame
            whole (tested); on the bundled face the rectangle (mouth and jaw) is about a
            third of the image, which saves about a quarter of the rendering time.
        grey: yield one channel (the renders are grey: default albedo, white lights).
    Yields:
        (b, H, W, 3) uint8 numpy arrays, b <= batch, in order; (b, H, W, 1) with ``grey``.
    """
    channels = 1 if grey else 3
    from talkinghead_cli.render import render_mesh

    if not fast:
        with torch.no_grad():
            for start in range(0, verts.shape[0], batch):
                yield to_uint8(render_mesh(verts[start:start + batch], faces, camera).images[..., :channels])
        return
    with torch.no_grad(), _frame_parallel(verts.device) as workers, \
            ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        if not incremental:
            for start in range(0, verts.shape[0], batch):
                image = _preview_parallel(verts[start:start + batch], faces, camera, pool, workers)
                yield to_uint8(image.expand(-1, -1, -1, channels))
            return
        # the first frame in full, then only the rectangle where frames differ from it
        window = changing_window(verts, faces, camera)
        first = preview_render(verts[:1], faces, camera)[..., :1]
        for start in range(0, verts.shape[0], batch):
            image = first.expand(min(batch, verts.shape[0] - start), -1, -1, -1).clone()
            if window is not None:
                top, left, h, w = window
                image[:, top:top + h, left:left + w] = _preview_parallel(verts[start:start + batch], faces,
                                                                         camera, pool, workers, window)
            yield to_uint8(image.expand(-1, -1, -1, channels))


# ----------------------------------------------------------------------------- ffmpeg


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_command(out: Path, width: int, height: int, fps: float, audio_wav: Path | None,
                   crf: int = 20, preset: str = "veryfast", pix_fmt: str = "rgb24") -> list[str]:
    """The ffmpeg command line: raw frames on stdin (``rgb24``, or ``gray`` for one channel)
    (+ a WAV) -> H.264/AAC MP4."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}", "-r", f"{fps:g}",
           "-i", "pipe:0"]
    if audio_wav is not None:
        cmd += ["-i", str(audio_wav)]
    cmd += ["-map", "0:v:0"]
    if audio_wav is not None:
        cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
    cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-f", "mp4", str(out)]
    return cmd


class _FrameWriter:
    """Feeds frames to an ffmpeg process from a thread so rendering and encoding overlap."""

    def __init__(self, cmd: list[str], log_path: Path, depth: int = 2):
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self._log)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                self.proc.stdin.write(chunk)
        except BaseException as e:  # broken pipe when ffmpeg died; reported in close()
            self._error = e
            while self._queue.get() is not None:  # drain so put() never blocks forever
                pass

    def write(self, frames: np.ndarray) -> None:
        """frames: (b, H, W, C) uint8, C as the command's pixel format (handed over: the caller
        must not modify it)."""
        self._queue.put(memoryview(np.ascontiguousarray(frames)).cast("B"))

    def close(self) -> int:
        """Finish the stream; return ffmpeg's exit code (non-zero also if a write failed)."""
        self._queue.put(None)
        self._thread.join()
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait()
        self._log.close()
        return code if self._error is None else (code or 1)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._queue.put(None)  # the thread's writes now fail, so it drains the queue and stops
        self._thread.join()
        self._log.close()


def _ffmpeg_tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").strip().splitlines()
    return " | ".join(lines[-3:]) or "no message"


# ----------------------------------------------------------------------------- preview


def _as_audio(audio, sample_rate: int) -> tuple[np.ndarray | None, int]:
    """Audio argument -> ((S,) float32 or None, its sample rate). Paths keep their own rate."""
    if audio is None:
        return None, sample_rate
    if isinstance(audio, (str, Path)):
        from talkinghead_cli.audio import load_audio

        path = Path(audio)
        if path.is_file():
            try:
                sample_rate = int(sf.info(str(path)).samplerate)
            except (sf.LibsndfileError, RuntimeError):
                pass  # load_audio reports the unreadable file
        return load_audio(path, sample_rate), sample_rate
    wave = torch.as_tensor(audio).detach().cpu().numpy().astype(np.float32).reshape(-1)
    if wave.size == 0:
        raise ValueError("audio is empty")
    return wave, sample_rate


def _check_output(out_path: Path) -> None:
    if out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"the output must be an MP4 file, got '{out_path.suffix or out_path.name}'",
                        out_path, "name it e.g. preview.mp4")
    if out_path.is_dir():
        raise UserError("the output path is a folder", out_path, "give a file name like preview.mp4")


def render_preview(
    verts,
    faces,
    out_path: str | Path,
    fps: float = DEFAULT_FPS,
    audio=None,
    sample_rate: int = 16_000,
    size: int = 512,
    batch: int = 16,
    template=None,
    progress: ProgressFn | None = None,
) -> PreviewResult:
    """Render a mesh sequence to an H.264 MP4, with the audio muxed as AAC.

    Args:
        verts: (T, V, 3) float array or tensor; rendered on its device (CPU for numpy).
        faces: (F, 3) integer array or tensor.
        out_path: the ``.mp4`` to write (atomically).
        fps: frame rate of the sequence.
        audio: (S,) waveform in [-1, 1] at ``sample_rate``, a path to an audio file
            (read at its own rate), or None for a silent video.
        sample_rate: rate of a waveform given as ``audio``.
        size: frame width and height in pixels (even, for yuv420p).
        batch: frames rendered per call.
        template: (V, 3) mesh used to frame the camera; the first frame when None.
        progress: called with (frames rendered and handed to the encoder, total frames).
    Returns:
        PreviewResult with the frame count and durations. See the module docstring for
        how the frame count follows the audio's length.
    """
    from talkinghead_cli.render import front_camera

    out_path = Path(out_path)
    _check_output(out_path)
    if size < 16 or size % 2:
        raise UserError(f"--size must be an even number >= 16, got {size}", None, "use e.g. 512")
    if not fps or fps <= 0:
        raise UserError(f"the frame rate must be positive, got {fps}", None, "pass --fps 30")
    with warnings.catch_warnings():  # a read-only memory map (a retargeted animation) is only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        verts_t = torch.as_tensor(verts)
    if verts_t.ndim != 3 or verts_t.shape[-1] != 3 or verts_t.shape[0] == 0:
        raise ValueError(f"verts must be (T, V, 3) with T >= 1, got {tuple(verts_t.shape)}")
    verts_t = verts_t.float()
    faces_t = torch.as_tensor(np.asarray(faces) if not torch.is_tensor(faces) else faces)
    faces_t = faces_t.long().to(verts_t.device)
    wave, wave_sr = _as_audio(audio, sample_rate)
    n = verts_t.shape[0] if wave is None else frames_for_audio(len(wave), wave_sr, fps)
    verts_t = fit_to_length(verts_t, n)
    frame0 = verts_t[0] if template is None else torch.as_tensor(template).float().to(verts_t.device)
    camera = front_camera(frame0, image_size=size, projection="ortho", margin=0.1)
    with atomic_file(out_path) as tmp, tempfile.TemporaryDirectory(prefix=".avtalk-") as work:
        work = Path(work)
        wav_path = None
        if wave is not None:
            wav_path = work / "audio.wav"
            sf.write(str(wav_path), wave, wave_sr, subtype="FLOAT")
        _encode(verts_t, faces_t, camera, tmp, size, fps, wav_path, work / "ffmpeg.log", batch, progress)
    audio_seconds = None if wave is None else len(wave) / wave_sr
    return PreviewResult(out_path, n, float(fps), n / fps, audio_seconds)


def _encode(verts, faces, camera, tmp: Path, size: int, fps: float, wav_path: Path | None,
            log_path: Path, batch: int, progress: ProgressFn | None) -> None:
    """Render verts (T, V, 3) batch by batch into ffmpeg; raise if ffmpeg fails."""
    # previews are grey: one channel through the pipe (a third of the bytes), ffmpeg makes Y'UV
    writer = _FrameWriter(ffmpeg_command(tmp, size, size, fps, wav_path, pix_fmt="gray"), log_path)
    total, done = verts.shape[0], 0
    try:
        for frames in render_frames(verts, faces, camera, batch, grey=True):
            if frames.shape[1:3] != (size, size):
                raise RuntimeError(f"renderer returned {frames.shape[1:3]} frames, expected {size}x{size}")
            writer.write(frames)
            done += frames.shape[0]
            report(progress, done, total)
    except BaseException:
        writer.kill()
        raise
    if writer.close() != 0:
        raise RuntimeError(f"ffmpeg failed to encode the preview: {_ffmpeg_tail(log_path)}")


# ----------------------------------------------------------------------------- file-level job


class RenderConfig(BaseModel):
    """Options of ``avtalk render``."""

    sequence: Path
    template: Path
    audio: Optional[Path] = None
    output: Path = Path("preview.mp4")
    fps: Optional[float] = Field(default=None, gt=0, description="None: the NPZ's fps, else 30")
    size: int = Field(default=512, ge=16, le=4096)
    batch: int = Field(default=16, ge=1)


def render_sequence_file(config: RenderConfig, progress: ProgressFn | None = None) -> PreviewResult:
    """Load a sequence file/folder, its template and audio, and render the preview MP4.

    Every user mistake (missing file, vertex-count mismatch, odd size, bad output path)
    raises a :class:`UserError` before anything is written.
    """
    from talkinghead_cli.mesh import load_sequence, load_template

    _check_output(config.output)
    if config.size % 2:
        raise UserError(f"--size must be even (H.264 yuv420p), got {config.size}", None,
                        f"use {config.size + 1}")
    template = load_template(config.template)
    try:
        verts, seq_fps = load_sequence(config.sequence, num_verts=template.num_verts)
    except ValueError as e:  # frames of different vertex counts in a folder
        raise UserError(f"the frames do not share one vertex count ({e})", config.sequence,
                        "use frames of one mesh") from e
    if verts.shape[1] != template.num_verts:
        raise UserError(f"the sequence has {verts.shape[1]} vertices, the template {template.num_verts}",
                        config.sequence, "use the template the sequence was made with")
    fps = config.fps or seq_fps or DEFAULT_FPS
    from talkinghead_cli.diskspace import check_room, video_bytes

    check_room(config.output.parent, video_bytes(len(verts), config.size), "the video", per_frame_files=False)
    return render_preview(verts, template.faces, config.output, fps=fps, audio=config.audio,
                          size=config.size, batch=config.batch, template=template.verts,
                          progress=progress)
