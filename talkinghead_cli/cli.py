"""The ``avtalk`` command line: a thin shell over the library.

Each command parses its options, builds a pydantic config, calls one library function
and prints the result. Errors: a :class:`~talkinghead_cli.errors.UserError` (or a bad
option) prints ``error: <what>, <which file>, <what to do>`` and exits 2; anything else
is an internal error and exits 1. ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from talkinghead_cli import __version__
from talkinghead_cli.errors import UserError
from talkinghead_cli.progress import ProgressFn

try:  # typer >= 0.20 vendors its own click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException

app = typer.Typer(
    name="avtalk",
    help="Speech-driven 3D face animation with lip-reading guidance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(stderr=True)
_state = {"prompt_exit": False}  # set by a command whose process may end without Python's teardown (run())
out = Console()


class _State:
    verbose = False
    quiet = False


state = _State()


def _version(value: bool) -> None:
    if value:
        print(f"avtalk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and extra detail."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """avtalk: lip-synced, lip-readable 3D face animation from speech."""
    state.verbose = verbose
    state.quiet = quiet


@contextlib.contextmanager
def progress_bar(description: str, unit: str = "frames") -> Iterator[ProgressFn]:
    """A progress callback shown as a rich bar on a terminal, silent otherwise."""
    if state.quiet or not console.is_terminal:
        yield lambda done, total, stage=None, stage_unit="": None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[unit]}"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None, unit=unit)

        def update(done: float, total: float | None, stage: str | None = None, stage_unit: str = "") -> None:
            """``stage``: another description (and unit) for a step before the main one."""
            bar.update(task, completed=done, total=total, description=stage or description,
                       unit=stage_unit if stage else unit)

        yield update


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point with the single error path of the CLI."""
    warnings.showwarning = _show_warning
    _state["prompt_exit"] = False
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or "-v" in args
    code = 0
    try:
        rc = app(args=args, prog_name="avtalk", standalone_mode=False)
        code = rc if isinstance(rc, int) else 0  # a command's typer.Exit(n) comes back as n
    except UserError as e:
        if verbose:
            console.print_exception()
        console.print(f"[red]error:[/red] {e.line()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except OSError as e:
        from talkinghead_cli.diskspace import FIX, is_disk_full

        if not is_disk_full(e):
            _internal_error(e, verbose)
        if verbose:
            console.print_exception()
        where = f", {e.filename}" if e.filename else ""
        console.print(f"[red]error:[/red] the disk filled up while writing ({e.strerror}){where}, {FIX}; "
                      "nothing half-written was kept", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:  # internal error
        _internal_error(e, verbose)
    sys.exit(code)


def run() -> None:
    """The ``avtalk`` console script: :func:`main`, then a prompt exit after ``animate``.

    Python's own teardown after an animate run (freeing torch, numba's compiled kernels and its
    thread pool) takes about 0.9 s on the 2-core machine, a sixth of the command's wall time on
    10 s of speech (``benchmarks/bench_animate.py``). When ``animate`` has finished, every file
    it wrote is closed and renamed into place, its preview thread and ffmpeg processes have
    ended and its JSON summary is written, so the process flushes the standard streams and
    ends with ``os._exit``. Every other command (training's data-loader workers, caches
    written at exit) ends the normal way, and so does an in-process :func:`main` (the tests).
    """
    try:
        main()
    except SystemExit as e:
        if not _state.get("prompt_exit"):
            raise
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
                pass
        os._exit(code)


def _internal_error(e: BaseException, verbose: bool) -> None:
    if verbose:
        console.print_exception()
    console.print(f"[red]internal error:[/red] {type(e).__name__}: {e} "
                  "(run with --verbose for the traceback)", highlight=False, soft_wrap=True)
    sys.exit(1)


# --- render (owner: preview video) ---


@app.command("render")
def render_cmd(
    sequence: Path = typer.Argument(..., help="Mesh sequence: .npy/.npz of (T, V, 3) or a folder of OBJ/PLY frames."),
    template: Path = typer.Option(..., "--template", "-t", help="Template mesh (OBJ/PLY/GLB) giving the faces."),
    audio: Optional[Path] = typer.Option(None, "--audio", "-a", help="Speech to mux in (any audio avtalk animate accepts: WAV, FLAC, OGG, MP3, M4A/AAC, Opus, ...)."),
    output: Path = typer.Option(..., "--output", "-o", help="The MP4 to write."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate (default: the fps stored in the NPZ, else 30)."),
    size: int = typer.Option(512, "--size", help="Frame width and height in pixels (even)."),
) -> None:
    """Render a mesh sequence to an MP4 preview (front view, H.264, audio as AAC)."""
    from talkinghead_cli.config import build_config
    from talkinghead_cli.video import RenderConfig, render_sequence_file

    config = build_config(RenderConfig, {}, dict(sequence=sequence, template=template, audio=audio, output=output,
                                                 fps=fps, size=size), command="render")
    with progress_bar("rendering") as progress:
        result = render_sequence_file(config, progress=progress)
    audio_note = "" if result.audio_duration is None else f", audio {result.audio_duration:.2f} s"
    out.print(f"{result.path} ({result.frames} frames at {result.fps:g} fps, {result.duration:.2f} s{audio_note})",
              highlight=False, soft_wrap=True)


# --- train, animate (owner: datasets, trainer and animate) ---


@app.command("train")
def train_cmd(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="vocaset, biwi or synthetic."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="The dataset folder (FaceFormer layout)."),
    run_dir: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder [default: runs/DATASET-ANIMATOR]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Total epochs [default: 100]."),
    animator: Optional[str] = typer.Option(None, "--animator", help="faceformer or codetalker."),
    size: Optional[str] = typer.Option(None, "--size", help="tiny, vocaset or biwi."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Audio encoder: mel, whisper-tiny-ct2 (pretrained Whisper tiny.en, frozen), or hf:HUB_ID_OR_FOLDER (wav2vec2, HuBERT, WavLM) [default: mel]."),
    stage: Optional[int] = typer.Option(None, "--stage", help="CodeTalker stage: 1 (motion codebook) or 2."),
    config: Optional[Path] = typer.Option(None, "--config", help="train.json/.yaml whose values the flags override."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/last.pt."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed [default: 0]."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate [default: 1e-4]."),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help="constant (default) or cosine (decays to 0 over the run)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Sequences per optimizer step."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from these weights (e.g. CodeTalker stage 1's best.pt, or a run on other subjects: same-named subjects keep their style, new ones start at the mean)."),
    faces_from: Optional[Path] = typer.Option(None, "--faces-from", help="Mesh file giving the dataset's faces."),
    keep_60fps: Optional[bool] = typer.Option(None, "--keep-60fps", help="VOCASET: keep 60 fps instead of [::2]."),
    av_loss: Optional[bool] = typer.Option(None, "--av-loss", help="Add the lip-reading expert's loss on rendered lips (needs --expert and transcripts)."),
    expert: Optional[Path] = typer.Option(None, "--expert", help="Expert checkpoint from avtalk finetune-expert."),
    lambda_av: Optional[float] = typer.Option(None, "--lambda-av", help="Weight of the AV loss [default: 1e-8, summed CTC/CE]."),
    lambda_rlv: Optional[float] = typer.Option(None, "--lambda-rlv", help="Weight of the lip-vertex MSE [default: 1]."),
    lambda_mse: Optional[float] = typer.Option(None, "--lambda-mse", help="Weight of the vertex MSE [default: 1]; 0 with --lambda-rlv 0: AV loss alone."),
    expert_mode: Optional[str] = typer.Option(None, "--expert-mode", help="frozen (default) or joint (expert trained too, at lr/10)."),
    av_mode: Optional[str] = typer.Option(None, "--av-mode", help="video (lips only, default) or av (lips and speech)."),
    lambda_gap: Optional[float] = typer.Option(None, "--lambda-gap", help="Weight of the mouth-opening curve MSE [default: 0]."),
    lambda_vel: Optional[float] = typer.Option(None, "--lambda-vel", help="Weight of the frame-to-frame motion MSE [default: 0]."),
    gap_closed_weight: Optional[float] = typer.Option(None, "--gap-closed-weight", help="Inside --lambda-gap's term, weight of the frames where the lips are shut [default: 1]."),
    gap_range_weight: Optional[float] = typer.Option(None, "--gap-range-weight", help="Inside --lambda-gap's term, weight of the squared difference of the predicted and true mouth-opening standard deviations per sequence [default: 0]."),
    gap_closed_below: Optional[float] = typer.Option(None, "--gap-closed-below", help="Shut, for --gap-closed-weight: the target's mouth opening within this fraction of its range above its smallest value [default: 0.25]."),
    lambda_lap: Optional[float] = typer.Option(None, "--lambda-lap", help="Weight of the mesh-Laplacian MSE, against creases [default: 0]."),
    av_smooth: Optional[int] = typer.Option(None, "--av-smooth", help="Spread the AV loss's gradient over the mesh by this many Laplacian smoothing steps, against creases [default: 0]."),
    augment: Optional[bool] = typer.Option(None, "--augment", help="Perturb the training audio (speed, pitch, reverb, band limit, noise, level); probabilities in --config's 'augment'."),
) -> None:
    """Train an animator on VOCASET, BIWI or the synthetic corpus."""
    from talkinghead_cli.config import TrainConfig, build_config, read_config_file
    from talkinghead_cli.training.trainer import train

    base = read_config_file(config) if config else {}
    flags = dict(dataset=dataset, data_root=data_root, run_dir=run_dir, epochs=epochs, animator=animator,
                 size=size, encoder=encoder, stage=stage, resume=resume or None, seed=seed, device=device, lr=lr,
                 lr_schedule=lr_schedule, batch_size=batch_size, init_from=init_from, faces_from=faces_from, keep_60fps=keep_60fps,
                 av_loss=av_loss, expert=expert, lambda_av=lambda_av, lip_weight=lambda_rlv, lambda_mse=lambda_mse,
                 expert_mode=expert_mode, av_mode=av_mode, lambda_gap=lambda_gap, lambda_vel=lambda_vel, lambda_lap=lambda_lap,
                 av_smooth=av_smooth,
                 gap_closed_weight=gap_closed_weight, gap_closed_below=gap_closed_below,
                 gap_range_weight=gap_range_weight,
                 augment={} if augment and not base.get("augment") else None)
    cfg = build_config(TrainConfig, base, flags, config, command="train")

    def log(event: dict) -> None:
        if event["event"] == "start":
            how = f"resuming after epoch {event['epoch']}" if event["resumed"] else "starting"
            console.print(f"{how}: {event['train']} training / {event['val']} validation sequences on "
                          f"{event['device']} (x{event['world']})", highlight=False)
        elif event["event"] == "features":
            console.print(f"{event['encoder']} features: {event['cached']} cached, computing {event['compute']}",
                          highlight=False)
        elif event["event"] == "init":
            console.print(f"initialised from {event['path']}", highlight=False)
        elif event["event"] == "init_subjects":
            console.print(f"subject styles: {len(event['kept'])} carried over by name, the others start at "
                          "the mean style", highlight=False)
        elif event["event"] == "expert":
            console.print(f"lip-reading expert {event['path']} ({event['mode']}, reads {event['modalities']})",
                          highlight=False)
        elif event["event"] == "warning":
            console.print(f"[yellow]warning:[/yellow] {event['message']}", highlight=False)
        elif event["event"] == "epoch":
            val = "  ".join(f"{k[4:].upper()} {v:.4g}" for k, v in event.items() if k.startswith("val_"))
            mark = "  [green]best[/green]" if event["best"] else ""
            console.print(f"epoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.4g}  {val}{mark}",
                          highlight=False)

    with progress_bar("training", unit="sequences") as progress:
        result = train(cfg, progress=progress, log=log)
    best = f", best epoch {result.best_epoch}" if result.best_epoch else ""
    out.print(f"{result.run_dir} (last.pt, best.pt{best})", highlight=False, soft_wrap=True)


@app.command("features")
def features_cmd(
    dataset: str = typer.Option(..., "--dataset", help="vocaset, biwi or synthetic."),
    data_root: Path = typer.Option(..., "--data-root", help="The dataset folder (FaceFormer layout)."),
    encoder: str = typer.Option("whisper-tiny-ct2", "--encoder", help="Encoder whose frozen features to cache."),
    augment: bool = typer.Option(False, "--augment", help="Cache the perturbed training audio that `avtalk train --augment` with the same --seed draws in its first --epochs epochs (probabilities in --config's 'augment')."),
    seed: int = typer.Option(0, "--seed", help="With --augment: the training run's --seed."),
    epochs: int = typer.Option(1, "--epochs", help="With --augment: the training run's --epochs."),
    config: Optional[Path] = typer.Option(None, "--config", help="With --augment: the training run's config file (its 'augment' probabilities)."),
) -> None:
    """Compute a corpus's speech features once (resumable; `train` computes missing ones itself)."""
    from talkinghead_cli.training.features import augmented_features, corpus_features

    if not augment and config is not None:
        raise UserError("--config is read only with --augment", config, "add --augment or leave --config out")

    def start(todo: int, cached: int) -> None:
        what = "perturbed copies" if augment else "features"
        console.print(f"{encoder} {what}: {cached} cached, checking {todo}" if augment else
                      f"{encoder} {what}: {cached} cached, computing {todo}", highlight=False)

    with progress_bar("features", unit="utterances") as progress:
        if augment:
            from talkinghead_cli.config import read_config_file
            from talkinghead_cli.data.augment import AugmentConfig

            settings = (read_config_file(config) if config else {}).get("augment") or {}
            try:
                acfg = AugmentConfig(**settings)
            except ValueError as e:
                raise UserError(f"the config's 'augment' is invalid ({str(e).splitlines()[0]})", config,
                                "see `avtalk train --help`") from e
            store = augmented_features(dataset, data_root, encoder, acfg, seed, epochs, progress=progress,
                                       on_start=start)
        else:
            store = corpus_features(dataset, data_root, encoder, progress=progress, on_start=start)
    out.print(f"{store.folder} ({len(store)} utterances)", highlight=False, soft_wrap=True)


def _emit_json(data: dict, path: Optional[Path]) -> None:
    """``--json``: ``-`` prints the JSON on stdout (nothing else goes there), a path is written
    atomically."""
    import json

    text = json.dumps(data, indent=1)
    if path is not None and str(path) == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    elif path is not None:
        from talkinghead_cli.atomic import atomic_file

        with atomic_file(path) as tmp:
            tmp.write_text(text + "\n")


def _files_line(files: list[str], folder: Path) -> str:
    parts = []
    for f in files:
        if f.endswith("/"):
            n = sum(1 for p in (folder / f).iterdir() if p.is_file()) if (folder / f).is_dir() else 0
            parts.append(f"{f} ({n} files)")
        else:
            parts.append(f)
    return ", ".join(parts)


@app.command("animate")
def animate_cmd(
    audio: list[Path] = typer.Argument(..., help="Speech files, folders of them, or quoted globs ('x/*.flac'). "
                                       "Accepted: WAV, FLAC, OGG, MP3, M4A/AAC, Opus, WebM, and the audio of "
                                       "MP4/MOV/MKV (anything the bundled ffmpeg decodes; a folder or glob takes "
                                       "these suffixes and names the files it skips)."),
    template: Optional[Path] = typer.Option(None, "--template", "-t", help="Face mesh of any topology (another one is retargeted) [default: the model's training template]."),
    landmarks: Optional[Path] = typer.Option(None, "--landmarks", help="Retargeting: 'USER_VERTEX TEMPLATE_VERTEX' pairs (text or JSON, >= 4) when automatic alignment fails."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder; may exist (`.` too): only avtalk's own outputs in it are replaced, each atomically; one speech file is written into it, several into OUT/<stem>/ (OUT/<stem>-2/ for a repeated stem)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Animator checkpoint (.pt from avtalk train) or a registered model name [default: the bundled default]."),
    style: Optional[str] = typer.Option(None, "--style", help="SUBJECT or A:0.5,B:0.5 [default: the mean style]."),
    fmt: list[str] = typer.Option(["obj"], "--format", help="Comma list (or repeat the option) of obj, ply, npy, npz, gltf (GLB with morph targets), usd (USD stage), arkit (52 blendshape curves: arkit.csv/json), livelink (Live Link Face CSV)."),
    no_video: bool = typer.Option(False, "--no-video", help="Skip preview.mp4."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    allow_long: bool = typer.Option(False, "--allow-long", help="Accept speech longer than 1 h."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write a JSON summary (inputs, outputs, files written, timings, status per input) to this file, or `-` for stdout (the human summary then goes to stderr)."),
) -> None:
    """Animate a face mesh from speech: vertices.npy, meshes, preview.mp4, animation.json.

    A bad input in a batch is reported in one line and skipped; the others are written, and
    the exit code is 2 at the end if any input failed.
    """
    import time

    from talkinghead_cli.animate import animate, speech_inputs, summary
    from talkinghead_cli.config import AnimateConfig, build_config

    cfg = build_config(AnimateConfig, {}, dict(audio=audio, out=output, checkpoint=checkpoint, template=template,
                                               style=style, format=",".join(fmt), video=not no_video, device=device,
                                               allow_long=allow_long, landmarks=landmarks), command="animate")
    human = console if json_path is not None and str(json_path) == "-" else out
    _, _, skipped = speech_inputs(list(cfg.audio))
    if skipped:
        names = ", ".join(str(p) for p in skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} file(s) that are not speech by their suffix: {names}", stacklevel=1)

    def log(r) -> None:
        if r.ok:
            human.print(f"{r.out_dir} ({r.frames} frames at {r.fps:g} fps, {r.duration:.2f} s): "
                        f"{_files_line(r.files, r.out_dir)}", highlight=False, soft_wrap=True)
            for line in r.notes:
                human.print(f"  {line}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[red]error:[/red] {r.error}", highlight=False, soft_wrap=True)

    start = time.perf_counter()
    with progress_bar("animating", unit="frames") as progress:
        results = animate(cfg, progress=progress, log=log,
                          align_progress=lambda done, total: progress(done, total, "aligning the template", "%"))
    _emit_json(summary(results, cfg, time.perf_counter() - start), json_path)
    failed = [r for r in results if not r.ok]
    if len(results) > 1 or failed:
        console.print(f"{len(results) - len(failed)} of {len(results)} inputs animated"
                      + (f", {len(failed)} failed: " + ", ".join(str(r.audio) for r in failed) if failed else ""),
                      highlight=False, soft_wrap=True)
    _state["prompt_exit"] = True  # everything is written and renamed into place: see run()
    if failed:
        raise typer.Exit(2)


# --- synth (owner: synthetic corpus) ---
@app.command("synth")
def synth_cmd(
    out_dir: Path = typer.Argument(..., help="Corpus folder to write (VOCASET layout, written atomically)."),
    subjects: int = typer.Option(12, "--subjects", help="Number of speakers (about 1 in 6 become test-B speakers)."),
    sentences: int = typer.Option(40, "--sentences", help="Sentences per speaker."),
    rig: Optional[Path] = typer.Option(None, "--rig", help="GLB/glTF face with ARKit morph targets [default: facecap.glb from openfacefx]."),
    tts: Optional[str] = typer.Option(None, "--tts", help="TTS backends, comma-separated: piper, espeak, festival [default: all three; festival where installed]."),
    voices: Optional[str] = typer.Option(None, "--voices", help="Train voices, e.g. piper:joe,espeak:en-us+f3,festival:kal [default: 13 built-in]."),
    fps: float = typer.Option(30.0, "--fps", help="Frame rate of the vertex sequences."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives byte-identical files."),
    sentences_file: Optional[Path] = typer.Option(None, "--sentences-file", help="Own sentence list, one a line."),
    from_recordings: Optional[Path] = typer.Option(None, "--from-recordings", help="Label a folder of NAME.wav + NAME.txt pairs instead of synthesizing."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run with the same options."),
    no_blinks: bool = typer.Option(False, "--no-blinks", help="No procedural blinks."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Processes [default: one per core]; the files do not depend on it."),
) -> None:
    """Build a synthetic talking-face corpus: TTS speech, phoneme timing, an ARKit rig's lips."""
    from talkinghead_cli.config import build_config
    from talkinghead_cli.data.synthetic.corpus import SynthConfig, build_corpus

    cfg = build_config(SynthConfig, {}, dict(
        out=out_dir, subjects=subjects, sentences=sentences, rig=rig,
        tts=[t.strip() for t in tts.split(",") if t.strip()] if tts else None, fps=fps, seed=seed,
        sentences_file=sentences_file, from_recordings=from_recordings, resume=resume, blinks=not no_blinks, jobs=jobs,
        voices=[v.strip() for v in voices.split(",") if v.strip()] if voices else None), command="synth")
    with progress_bar("synthesizing", unit="utterances") as progress:
        result = build_corpus(cfg, progress=progress)
    out.print(f"{result['out']} ({result['utterances']} utterances, {result['subjects']} subjects, "
              f"{result['seconds']:.1f} s of speech)", highlight=False, soft_wrap=True)


# --- score (owner: lip-readability scoring) ---


def _fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


@app.command("score")
def score_cmd(
    path: Optional[Path] = typer.Argument(None, help="An `avtalk animate` folder, or a .npy/.npz vertex file."),
    transcript: Optional[str] = typer.Option(None, "--transcript", help="What is said (normalised as the expert's tokenizer does)."),
    audio: Optional[Path] = typer.Option(None, "--audio", "-a", help="The speech: also read audio-visually."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Ground-truth (T, V, 3) .npy/.npz: adds LVE/FDD/MVE (at another frame rate it is resampled to the animation's)."),
    reference_fps: Optional[float] = typer.Option(None, "--reference-fps", help="Frame rate of the reference [default: stored in its .npz, else guessed from its length, e.g. 60 for raw VOCASET]."),
    expert: Optional[str] = typer.Option(None, "--expert", help="Lip-reading expert checkpoint (avtalk finetune-expert) or registered name."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write all figures to this JSON file, or `-`: the JSON on stdout (the table then goes to stderr)."),
    beam: Optional[int] = typer.Option(None, "--beam", help="Joint CTC/attention beam width [default: greedy CTC]."),
    template: Optional[Path] = typer.Option(None, "--template", "-t", help="Mesh with faces for a bare vertex file."),
    lip_indices: Optional[Path] = typer.Option(None, "--lip-indices", help="Lip vertex indices file (e.g. regions/lve.txt)."),
    checkpoint: Optional[list[str]] = typer.Option(None, "--checkpoint", "-c", help="Animator checkpoint(s): models to score with --dataset; with PATH, where template and lip indices come from."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate of a vertex file that stores none."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Score models on a split: vocaset, biwi or synthetic."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="The dataset folder."),
    split: Optional[str] = typer.Option(None, "--split", help="train, val, test or test_b [default: test]."),
    transcripts: Optional[Path] = typer.Option(None, "--transcripts", help="JSON {utterance id: text} for corpora without their own."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Lip readability (CER, WER, VER) and mesh errors (LVE, FDD, MVE) of animations or models."""
    from rich.table import Table

    from talkinghead_cli.config import ScoreConfig, build_config
    from talkinghead_cli.score import AnimationScore, score

    cfg = build_config(ScoreConfig, {}, dict(
        path=path, transcript=transcript, audio=audio, reference=reference, reference_fps=reference_fps, expert=expert, json_path=json_path,
        beam=beam, template=template, lip_indices=lip_indices, checkpoints=checkpoint or None, fps=fps,
        dataset=dataset, data_root=data_root, split=split, transcripts=transcripts, device=device), command="score")
    human = console if json_path is not None and str(json_path) == "-" else out
    with progress_bar("scoring", unit="steps" if path is not None else "utterances") as progress:
        result = score(cfg, progress=progress)
    if isinstance(result, AnimationScore):
        table = Table(title=f"{result.source}  ({result.frames} frames at {result.fps:g} fps, {result.decoding})")
        for col in ("mode", "hypothesis", "CER", "WER", "VER"):
            table.add_column(col, justify="left" if col in ("mode", "hypothesis") else "right", overflow="fold")
        for r in result.readings:
            table.add_row(r.mode, r.hypothesis or "∅", _fmt(r.cer), _fmt(r.wer), _fmt(r.ver))
        human.print(table)
        human.print(f"reference: {result.transcript}", highlight=False, soft_wrap=True)
        if result.mesh:
            human.print("  ".join(f"{k.upper()} {v:.4g}" for k, v in result.mesh.items()), highlight=False)
    else:
        table = Table(title=f"{result.dataset} {result.split}: {result.utterances} utterances ({result.decoding})")
        for col in ("model", "LVE", "FDD", "MVE", "CER", "WER", "VER"):
            table.add_column(col, justify="left" if col == "model" else "right", overflow="fold")
        for r in result.rows:
            table.add_row(r.name, _fmt(r.lve, ".4g"), _fmt(r.fdd, ".4g"), _fmt(r.mve, ".4g"),
                          _fmt(r.cer), _fmt(r.wer), _fmt(r.ver))
        human.print(table)
    for note in result.notes:
        human.print(f"note: {note}", highlight=False, soft_wrap=True)
    if json_path is not None and str(json_path) == "-":
        _emit_json(result.to_json(), json_path)
    elif json_path is not None:
        human.print(f"{json_path}", highlight=False, soft_wrap=True)


# --- finetune-expert (owner: expert training) ---


@app.command("finetune-expert")
def finetune_expert_cmd(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="vocaset, biwi or synthetic."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="The dataset folder (FaceFormer layout, with transcripts)."),
    run_dir: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder [default: runs/DATASET-expert]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Total epochs [default: 30]."),
    expert_checkpoint: Optional[Path] = typer.Option(None, "--expert-checkpoint", help="Start from an avtalk expert .pt or an Auto-AVSR .pth/.ckpt."),
    size: Optional[str] = typer.Option(None, "--size", help="tiny or base [default: the checkpoint's, else tiny]."),
    modalities: Optional[str] = typer.Option(None, "--modalities", help="av or video [default: the checkpoint's, else av]."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON/YAML file whose values the flags override."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/last.pt."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed [default: 0]."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate of AdamW [default: 1e-3]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Utterances per padded batch [default: 4]."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder of rendered lip windows [default: RUN_DIR/cache]."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep rendered windows in memory only."),
    faces_from: Optional[Path] = typer.Option(None, "--faces-from", help="Mesh file giving the dataset's faces."),
) -> None:
    """Train the lip-reading expert on lip windows rendered from ground-truth meshes (stage 1)."""
    from talkinghead_cli.config import ExpertTrainConfig, build_config, read_config_file
    from talkinghead_cli.training.expert_trainer import finetune_expert

    if cache is not None and no_cache:
        raise UserError("--cache and --no-cache exclude each other", cache, "pass one of them")
    base = read_config_file(config) if config else {}
    flags = dict(dataset=dataset, data_root=data_root, run_dir=run_dir, epochs=epochs,
                 expert_checkpoint=expert_checkpoint, size=size, modalities=modalities, resume=resume or None,
                 seed=seed, device=device, lr=lr, batch_size=batch_size, cache_dir=cache,
                 cache=False if no_cache else None, faces_from=faces_from)
    cfg = build_config(ExpertTrainConfig, base, flags, config, command="finetune-expert")

    def log(event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            how = f"resuming after epoch {event['epoch']}" if event["resumed"] else "starting"
            console.print(f"{how}: {event['size']} {event['modalities']} expert, {event['train']} training / "
                          f"{event['val']} validation utterances on {event['device']}", highlight=False)
        elif kind == "init" and event["kind"] == "autoavsr":
            console.print(f"imported Auto-AVSR weights from {event['path']}: {event['loaded']} tensors, "
                          f"{len(event['missing'])} missing, {len(event['unexpected'])} unexpected", highlight=False)
            for key in event["missing"][:10] + event["unexpected"][:10]:
                console.print(f"  {'missing' if key in event['missing'] else 'unexpected'}: {key}", highlight=False)
        elif kind == "init":
            console.print(f"initialised from {event['path']}", highlight=False)
        elif kind == "rendered":
            where = event["cache"] or "memory"
            console.print(f"lip windows: {event['rendered']} rendered, {event['cached']} from the cache ({where})",
                          highlight=False, soft_wrap=True)
        elif kind == "epoch":
            val = "  ".join(f"{k.split('_')[1].upper()} ({k.split('_')[2]}) {v:.3f}"
                            for k, v in event.items() if k.startswith("val_"))
            mark = "  [green]best[/green]" if event["best"] else ""
            console.print(f"epoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.4g}  {val}{mark}",
                          highlight=False, soft_wrap=True)

    with progress_bar("expert", unit="utterances") as progress:
        result = finetune_expert(cfg, progress=progress, log=log)
    best = f", best epoch {result.best_epoch}" if result.best_epoch else ""
    out.print(f"{result.run_dir} (last.pt, best.pt{best})", highlight=False, soft_wrap=True)
