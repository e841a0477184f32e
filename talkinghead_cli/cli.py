"""The ``avtalk`` command line: a thin shell over the library.

Each command parses its options, builds a pydantic config, calls one library function
and prints the result. Errors: a :class:`~talkinghead_cli.errors.UserError` (or a bad
option) prints ``error: <what>, <which file>, <what to do>`` and exits 2; anything else
is an internal error and exits 1. ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import contextlib
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
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(stderr=True)
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
        yield lambda done, total: None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn(unit), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: float, total: float | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point with the single error path of the CLI."""
    warnings.showwarning = _show_warning
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or "-v" in args
    try:
        app(args=args, prog_name="avtalk", standalone_mode=False)
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
    except Exception as e:  # internal error
        if verbose:
            console.print_exception()
        console.print(f"[red]internal error:[/red] {type(e).__name__}: {e} "
                      "(run with --verbose for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(0)


def existing_path(path: Path, what: str) -> Path:
    """Raise a UserError if ``path`` does not exist."""
    if not path.exists():
        raise UserError(f"{what} not found", path, "check the path")
    return path


# --- render (owner: preview video) ---


@app.command("render")
def render_cmd(
    sequence: Path = typer.Argument(..., help="Mesh sequence: .npy/.npz of (T, V, 3) or a folder of OBJ/PLY frames."),
    template: Path = typer.Option(..., "--template", "-t", help="Template mesh (OBJ/PLY/GLB) giving the faces."),
    audio: Optional[Path] = typer.Option(None, "--audio", "-a", help="Speech to mux in (WAV/FLAC/OGG)."),
    output: Path = typer.Option(..., "--output", "-o", help="The MP4 to write."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate (default: the fps stored in the NPZ, else 30)."),
    size: int = typer.Option(512, "--size", help="Frame width and height in pixels (even)."),
) -> None:
    """Render a mesh sequence to an MP4 preview (front view, H.264, audio as AAC)."""
    import pydantic

    from talkinghead_cli.video import RenderConfig, render_sequence_file

    try:
        config = RenderConfig(sequence=sequence, template=template, audio=audio, output=output,
                              fps=fps, size=size)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        raise UserError(f"bad value for --{err['loc'][0]}: {err['msg']}", None, "see avtalk render --help") from e
    with progress_bar("rendering") as progress:
        result = render_sequence_file(config, progress=progress)
    audio_note = "" if result.audio_duration is None else f", audio {result.audio_duration:.2f} s"
    out.print(f"{result.path} ({result.frames} frames at {result.fps:g} fps, {result.duration:.2f} s{audio_note})",
              highlight=False, soft_wrap=True)
