"""The command line's application: one Typer app, its shared options, output helpers and the one error handler.

Exit codes (see collapselab.errors): 0 done; 2 bad input (an InputError or SpecError: one line naming the key,
the file or the option and what is allowed); 1 a failure (a run that failed, any other error: one line, the
traceback with COLLAPSELAB_DEBUG=1); 130 interrupted. Verbs raise, :func:`main` reports: no verb prints an error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import sys
import types
import warnings

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import CollapselabError, CollapseWarning, InputError
from ..store import DEFAULT_WORKSPACE


def lazy_module(name: str) -> types.ModuleType:
    """``name`` imported on its first attribute access: the verbs reach the API through this, so ``--help``,
    ``--version`` and a bad option answer without importing SciPy, pandas and every family first."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


app = typer.Typer(
    help="Simulate, measure and mitigate model collapse in self-consuming training loops.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: [bracketed] words in it stay as written
    context_settings={"help_option_names": ["-h", "--help"]},
)
# markup off: names, paths and messages come from users ("[/x]" is a valid run name); styled lines opt in
out_console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def _version(value: bool) -> None:
    if value:
        print(f"collapselab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    """Simulate, measure and mitigate model collapse in self-consuming training loops."""


WorkspaceOpt = typer.Option(DEFAULT_WORKSPACE, "--workspace", "-w", help="Folder holding indexed runs and store.db.")
ShowOpt = typer.Option(None, "--show", help="Generations to tabulate, e.g. 0,5,19.")
ExecutorOpt = typer.Option(
    None, "--executor", "-e", help="inline | processes | dask (default: processes when --workers > 1, else inline)."
)
SchedulerOpt = typer.Option(None, "--scheduler", help="Join the Dask cluster at this address (tcp://HOST:PORT).")
WorkersOpt = typer.Option(1, "--workers", "-j", min=1, help="Cells run in parallel on this many processes.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress and no table.")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable result on stdout.")
NoReportOpt = typer.Option(False, "--no-report", help="Skip the HTML report.")
AllowPluginsOpt = typer.Option(
    False,
    "--allow-plugins",
    help="Let the spec import its plugins modules and name any verifier function "
    "(a spec that imports code runs it; also COLLAPSELAB_ALLOW_PLUGINS=1).",
)


def fail(message: str) -> None:
    """Refuse an option: the one-line error and exit status 2 (raised, reported by :func:`main`)."""
    raise InputError(message)


def say(text: str) -> None:
    """A line of plain text on stdout (never markup)."""
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)


def warn(text: str, where: str = "") -> None:
    """``warning (WHERE): TEXT`` on stderr; user text in it is never read as markup."""
    label = f" ({escape(where)})" if where else ""
    err_console.print(f"[bold yellow]warning[/]{label}: {escape(text)}", markup=True, highlight=False, soft_wrap=True)


def print_json(payload) -> None:
    """Strict JSON on stdout: NaN and infinities become null (bare NaN is not JSON)."""
    print(json.dumps(_finite(payload), default=_json_default, allow_nan=False))


def _finite(o):
    if isinstance(o, float) or isinstance(o, np.floating):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


def parse_gens(text: str | None, G: int, clip: bool = False) -> list[int]:
    """The generations to tabulate: ``--show`` (checked against 0..G-1), or six spread over the run. With
    ``clip``, generations past G are left out (a cell shorter than the longest)."""
    if text is None:
        picks = {0, 1, G // 4, G // 2, (3 * G) // 4, G - 1}
        return sorted(g for g in picks if 0 <= g < G)
    try:
        gens = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        fail(f"--show {text!r}: expected generation numbers separated by commas, e.g. 0,5,19")
    if not gens:
        fail(f"--show {text!r}: expected generation numbers separated by commas, e.g. 0,5,19")
    if clip:
        return [g for g in gens if 0 <= g < G]
    bad = [g for g in gens if not 0 <= g < G]
    if bad:
        fail(f"--show {bad[0]}: allowed generations are 0..{G - 1}")
    return gens


def fmt(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    if not np.isfinite(x):
        return "-" if np.isnan(x) else str(x)
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def main() -> None:
    """The entry point: every error collapselab raises on purpose is one line; exit 2 for bad input, 1 for a
    failure, 130 when interrupted (see collapselab.errors)."""
    warnings.simplefilter("ignore", CollapseWarning)  # a verb prints a run's warnings itself
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False, highlight=False)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except InputError as e:
        _exit_with(str(e), 2)
    except CollapselabError as e:
        _exit_with(str(e), 1)
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, the traceback on request
        if os.environ.get("COLLAPSELAB_DEBUG"):
            raise
        if isinstance(e, OSError):
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            _exit_with(f"{where}{e.strerror or e}", 1)
        if isinstance(e, MemoryError):
            _exit_with("out of memory; lower replicates, generations or data.n", 1)
        if isinstance(e, sqlite3.Error):
            _exit_with(f"database error: {e}", 1)
        _exit_with(f"internal error: {type(e).__name__}: {e} (COLLAPSELAB_DEBUG=1 shows the traceback)", 1)


def _exit_with(message: str, code: int) -> None:
    # one line, no traceback: the message names the key, the value and what is allowed; user text is never
    # read as Rich markup ("[/x]" in a name stays as written)
    text = " ".join(str(message).split())
    err_console.print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(code)
