import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from talkinghead_cli.errors import UserError
from talkinghead_cli.video import ffmpeg_exe, fit_to_length, frames_for_audio, render_preview

SIZE = 64


def probe(path, size=SIZE):
    """Decode an MP4 with the bundled ffmpeg.

    Returns:
        frames: (N, size, size, 3) uint8; audio: (S,) float32 at 16 kHz or None; info text.
    """
    exe = ffmpeg_exe()
    info = subprocess.run([exe, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    raw = subprocess.run([exe, "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)
    audio = None
    if "Audio:" in info:
        pcm = subprocess.run([exe, "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le",
                              "-ac", "1", "-ar", "16000", "-"], capture_output=True, check=True).stdout
        audio = np.frombuffer(pcm, np.float32)
    return frames, audio, info


def nodding(sphere, t):
    """(T, V, 3): the sphere moving up and down a little."""
    verts, faces = sphere
    shift = 0.05 * np.sin(np.arange(t) / 3.0)
    seq = np.repeat(verts[None], t, axis=0)
    seq[:, :, 1] += shift[:, None]
    return seq.astype(np.float32), faces


def tone(seconds, sr=16_000):
    n = int(round(seconds * sr))
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / sr)).astype(np.float32)


def test_frames_for_audio_is_the_shortest_cover():
    assert frames_for_audio(16_000, 16_000, 25) == 25  # exact: no extra frame
    assert frames_for_audio(16_001, 16_000, 25) == 26
    assert frames_for_audio(8_000, 16_000, 30) == 15
    assert frames_for_audio(100, 16_000, 30) == 1


def test_fit_to_length_pads_with_last_frame_and_trims():
    v = torch.arange(12.0).reshape(2, 2, 3)
    padded = fit_to_length(v, 4)
    assert padded.shape == (4, 2, 3) and torch.equal(padded[3], v[1]) and torch.equal(padded[:2], v)
    assert torch.equal(fit_to_length(v, 1), v[:1])


@pytest.mark.parametrize("frames,seconds", [(8, 0.5), (20, 0.5)])  # audio longer / shorter than motion
def test_video_duration_matches_audio(tmp_path, sphere, frames, seconds):
    fps = 25.0
    verts, faces = nodding(sphere, frames)
    wave = tone(seconds)
    out = tmp_path / "clip.mp4"
    result = render_preview(verts, faces, out, fps=fps, audio=wave, sample_rate=16_000, size=SIZE, batch=4)
    decoded, audio, _ = probe(out)
    assert len(decoded) == result.frames == frames_for_audio(len(wave), 16_000, fps)
    video_s, audio_s = len(decoded) / fps, len(wave) / 16_000
    assert 0 <= video_s - audio_s < 1 / fps
    assert audio is not None and abs(len(audio) / 16_000 - audio_s) < 1 / fps
    # the tone survived AAC: its energy is where it should be
    assert np.sqrt(np.mean(audio ** 2)) > 0.1


def test_audio_file_keeps_its_rate_and_length(tmp_path, sphere, tone_wav):
    verts, faces = nodding(sphere, 5)
    out = tmp_path / "clip.mp4"
    result = render_preview(verts, faces, out, fps=30, audio=tone_wav, size=SIZE)
    _, audio, info = probe(out)
    assert "44100 Hz" in info
    assert result.frames == 30 and abs(result.audio_duration - 1.0) < 1e-6
    assert abs(len(audio) / 16_000 - 1.0) < 1 / 30


def test_silent_video_has_no_audio_stream_and_all_frames(tmp_path, sphere):
    verts, faces = nodding(sphere, 7)
    out = tmp_path / "silent.mp4"
    result = render_preview(verts, faces, out, fps=30, size=SIZE, batch=3)
    decoded, audio, info = probe(out)
    assert audio is None and "Audio:" not in info and "h264" in info and "yuv420p" in info
    assert len(decoded) == 7 == result.frames
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart: index before the media


def test_read_only_memory_map_renders_without_a_warning(tmp_path, sphere):
    """animate hands a retargeted animation over as a read-only memory map; torch warns about
    non-writable arrays once per process, so this runs in a fresh one with warnings as errors."""
    import sys

    verts, faces = nodding(sphere, 3)
    np.save(tmp_path / "v.npy", np.asarray(verts, np.float32))
    np.save(tmp_path / "f.npy", np.asarray(faces))
    code = ("import numpy as np, sys; from talkinghead_cli.video import render_preview; d = sys.argv[1]; "
            "render_preview(np.load(d + '/v.npy', mmap_mode='r'), np.load(d + '/f.npy'), d + '/a.mp4', fps=30, size=32)")
    r = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code, str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and (tmp_path / "a.mp4").exists(), r.stderr[-500:]


def test_frames_show_the_mesh(tmp_path, sphere):
    verts, faces = nodding(sphere, 3)
    out = tmp_path / "face.mp4"
    render_preview(verts, faces, out, fps=30, size=SIZE)
    frame = probe(out)[0][0].astype(np.float32)
    background = frame[1, 1]
    differs = np.abs(frame - background).max(axis=-1) > 40
    # a centred sphere framed with a 10% margin covers roughly pi/4 * (1/1.2)^2 ~ 55% of the frame
    assert 0.3 < differs.mean() < 0.8
    assert differs[SIZE // 2, SIZE // 2] and not differs[0, 0]
    # shaded, not a flat silhouette
    inside = frame[differs]
    assert inside.std() > 5


def test_camera_is_framed_once_so_the_head_moves(tmp_path, sphere):
    verts, faces = sphere
    seq = np.stack([verts, verts + np.array([0, 0.3, 0], np.float32)])
    out = tmp_path / "move.mp4"
    render_preview(seq, faces, out, fps=30, size=SIZE, template=verts)
    f = probe(out)[0].astype(np.float32)
    rows = [np.flatnonzero((np.abs(x - x[1, 1]).max(-1) > 40).any(1)) for x in f]
    assert rows[1][0] < rows[0][0] - 3  # the top of the head went up in the image


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_interrupted_render_leaves_target_untouched(tmp_path, sphere):
    verts, faces = nodding(sphere, 12)
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"previous")

    def interrupt(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_preview(verts, faces, out, fps=30, audio=tone(0.3), size=SIZE, batch=4, progress=interrupt)
    assert out.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == ["clip.mp4"]


def test_bad_audio_writes_nothing(tmp_path, sphere):
    verts, faces = nodding(sphere, 3)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    with pytest.raises(UserError):
        render_preview(verts, faces, tmp_path / "clip.mp4", audio=bad, size=SIZE)
    assert _leftovers(tmp_path) == ["bad.wav"]


@pytest.mark.parametrize("kwargs", [{"size": 63}, {"fps": 0}, {"out": "clip.avi"}])
def test_bad_options_are_user_errors(tmp_path, sphere, kwargs):
    verts, faces = nodding(sphere, 2)
    out = tmp_path / kwargs.pop("out", "clip.mp4")
    with pytest.raises(UserError):
        render_preview(verts, faces, out, **{"size": SIZE, **kwargs})
    assert _leftovers(tmp_path) == []


def test_progress_counts_frames(tmp_path, sphere):
    verts, faces = nodding(sphere, 10)
    calls = []
    render_preview(verts, faces, tmp_path / "c.mp4", fps=30, size=SIZE, batch=4,
                   progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 10), (8, 10), (10, 10)]


def test_float_audio_written_by_soundfile_roundtrip(tmp_path, sphere):
    """A 22.05 kHz FLAC input is read at its own rate and muxed with the right length."""
    verts, faces = nodding(sphere, 4)
    path = tmp_path / "speech.flac"
    sf.write(str(path), tone(0.7, 22_050), 22_050)
    result = render_preview(verts, faces, tmp_path / "c.mp4", fps=20, audio=path, size=SIZE)
    assert result.frames == 14
    _, audio, _ = probe(tmp_path / "c.mp4")
    assert abs(len(audio) / 16_000 - 0.7) < 1 / 20


def _scene(sphere, size):
    from talkinghead_cli.render import front_camera

    verts, faces = sphere
    v = torch.from_numpy(verts)
    # two frames: the sphere and a squashed, shifted copy; plus a small box in front of it so
    # that the depth test decides which surface shows
    seq = torch.stack([v, v * torch.tensor([1.0, 0.6, 1.0]) + torch.tensor([0.2, 0.1, 0.0])])
    box = trimesh_box()
    bv = torch.from_numpy(box[0]).expand(2, -1, -1) + torch.tensor([0.0, 0.0, 0.9])
    verts2 = torch.cat([seq, bv], 1)
    faces2 = torch.cat([torch.from_numpy(faces), torch.from_numpy(box[1]) + len(verts)])
    return verts2, faces2, front_camera(verts2[0], image_size=size)


def trimesh_box():
    import trimesh

    b = trimesh.creation.box(extents=(0.5, 0.4, 0.3))
    return np.asarray(b.vertices, np.float32), np.asarray(b.faces, np.int64)


@pytest.mark.parametrize("size", [48, 96])
def test_fast_preview_matches_render_mesh_without_outlines(sphere, size):
    """The preview rasterizer against its reference, the differentiable renderer at sigma=0."""
    from talkinghead_cli.render import render_mesh
    from talkinghead_cli.video import preview_render

    verts, faces, cam = _scene(sphere, size)
    ref = render_mesh(verts, faces, cam, sigma=0.0).images
    fast = preview_render(verts, faces, cam)
    assert fast.shape == ref.shape == (2, size, size, 3)
    diff = (fast - ref).abs().amax(-1)
    assert diff.max() < 1e-5  # one rasterizer and tie rule: the same face wins every pixel
    assert (ref.amax(-1) > 0).float().mean() > 0.2  # the scene is not empty


def test_fast_preview_culling_keeps_the_front(sphere):
    from talkinghead_cli.video import preview_render

    verts, faces, cam = _scene(sphere, 48)
    full = preview_render(verts, faces, cam)
    culled = preview_render(verts, faces, cam, cull=True)
    assert torch.allclose(full, culled, atol=1e-6)  # closed meshes: back faces are hidden anyway


def test_slow_path_renders_too(tmp_path, sphere):
    """render_frames(fast=False) goes through render_mesh (anti-aliased outlines)."""
    from talkinghead_cli.render import front_camera
    from talkinghead_cli.video import render_frames

    verts, faces = nodding(sphere, 3)
    v, f = torch.from_numpy(verts), torch.from_numpy(faces)
    cam = front_camera(v[0], image_size=32)
    slow = np.concatenate(list(render_frames(v, f, cam, batch=2, fast=False)))
    fast = np.concatenate(list(render_frames(v, f, cam, batch=2)))
    assert slow.shape == fast.shape == (3, 32, 32, 3) and slow.dtype == np.uint8
    covered = fast.max(-1) > 0
    interior = covered.copy()
    for axis in (1, 2):  # erode the silhouette by 2 pixels
        for shift in (-2, -1, 1, 2):
            interior &= np.roll(covered, shift, axis=axis)
    diff = np.abs(slow.astype(int) - fast.astype(int)).max(-1)
    assert interior.mean() > 0.2 and diff[interior].max() <= 1  # same shading inside
    assert slow.max(-1)[~covered].max() > 10  # the slow path's soft outline spills past the edge


def test_incremental_preview_gives_the_same_frames(sphere):
    """Only the lower half moves: rendering the changing rectangle over the first frame gives
    the pixels of whole-frame rendering, and the rectangle leaves the still top out."""
    from talkinghead_cli.render import front_camera
    from talkinghead_cli.video import changing_window, render_frames

    verts, faces = sphere
    v = torch.from_numpy(verts)
    low = v[:, 1] < -0.3
    seq = v.repeat(6, 1, 1)
    for t in range(1, 6):  # a "jaw" that drops and swings
        seq[t, low, 1] -= 0.04 * t
        seq[t, low, 0] += 0.02 * (t % 3)
    seq[4] = seq[0]  # a frame back at rest
    f = torch.from_numpy(faces)
    cam = front_camera(seq[0], image_size=64)
    top, _, h, w = changing_window(seq, f, cam)
    assert top > 10 and h < 64 - top + 1 and w <= 64  # the top of the sphere is outside it
    whole = np.concatenate(list(render_frames(seq, f, cam, batch=4, incremental=False)))
    fast = np.concatenate(list(render_frames(seq, f, cam, batch=4)))
    assert np.array_equal(whole, fast)
    assert not np.array_equal(whole[0], whole[3])  # the frames do differ
    still = seq[:1].repeat(3, 1, 1)
    assert changing_window(still, f, cam) is None
    assert np.array_equal(np.concatenate(list(render_frames(still, f, cam, batch=2))),
                          np.concatenate(list(render_frames(still, f, cam, batch=2, incremental=False))))


@pytest.mark.parametrize("cull", [False, True])
def test_compiled_preview_matches_the_pytorch_pass(sphere, cull):
    """The compiled preview (the renderer's own kernels) against its readable reference,
    ``render(..., sigma=0)`` on the PyTorch path: one rasterizer, one tie rule."""
    from talkinghead_cli.render import rasterize_jit
    from talkinghead_cli.video import preview_render

    if not rasterize_jit.available():
        pytest.skip("numba is not installed")
    verts, faces, cam = _scene(sphere, 96)
    ref = preview_render(verts, faces, cam, cull=cull, jit=False)
    fast = preview_render(verts, faces, cam, cull=cull, jit=True)
    assert fast.shape == ref.shape == (2, 96, 96, 3)
    diff = (fast - ref).abs().amax(-1)
    # the same faces win every pixel (identical rasterizer pairs); shading differs by rounding
    assert diff.max() < 1e-5
    assert (ref.amax(-1) > 0).float().mean() > 0.2
    top, left = 20, 30
    part = preview_render(verts, faces, cam, cull=cull, jit=True, window=(top, left, 40, 50))
    assert torch.allclose(part, fast[:, top:top + 40, left:left + 50], atol=1e-5)
