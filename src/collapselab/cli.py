"""The ``collapselab`` command line: a thin layer over :mod:`collapselab.api`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from . import api
from .errors import CollapselabError, InputError
from .executors import check_execution
from .spec import allow_plugins as allow_plugins_in
from .spec import describe_overrides
from .store import DEFAULT_WORKSPACE

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
        from . import __version__

        print(f"collapselab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    """Simulate, measure and mitigate model collapse in self-consuming training loops."""

WorkspaceOpt = typer.Option(DEFAULT_WORKSPACE, "--workspace", "-w", help="Folder holding indexed runs and store.db.")
ShowOpt = typer.Option(None, "--show", help="Generations to tabulate, e.g. 0,5,19.")


def _fail(message: str, code: int = 2) -> None:
    # one line, no traceback: the message names the key, the value and what is allowed; user text is never
    # read as Rich markup ("[/x]" in a name stays as written)
    text = " ".join(str(message).split())
    err_console.print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _say(text: str) -> None:
    """A line of plain text on stdout (never markup)."""
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)


def _or_fail(fn, *args, **kwargs):
    """fn's result; an input error is the one-line message and exit status 2, another of collapselab's errors
    (a run that failed) exit status 1."""
    try:
        return fn(*args, **kwargs)
    except InputError as e:
        _fail(str(e))
    except CollapselabError as e:
        _fail(str(e), 1)


ExecutorOpt = typer.Option(
    None, "--executor", "-e", help="inline | processes | dask (default: processes when --workers > 1, else inline)."
)
SchedulerOpt = typer.Option(None, "--scheduler", help="Join the Dask cluster at this address (tcp://HOST:PORT).")
WorkersOpt = typer.Option(1, "--workers", "-j", min=1, help="Cells run in parallel on this many processes.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress and no table.")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable result on stdout.")
NoReportOpt = typer.Option(False, "--no-report", help="Skip the HTML report.")
AllowPluginsOpt = typer.Option(
    False, "--allow-plugins", help="Let the spec import its plugins modules and name any verifier function "
    "(a spec that imports code runs it; also COLLAPSELAB_ALLOW_PLUGINS=1).",
)


@app.command()
def run(
    spec: str = typer.Argument(..., help="A spec TOML file, or preset:NAME (see 'collapselab presets')."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results to this directory (not indexed)."),
    workers: int = WorkersOpt,
    executor: Optional[str] = ExecutorOpt,
    scheduler: Optional[str] = SchedulerOpt,
    workspace: Path = WorkspaceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    generations: Optional[str] = ShowOpt,
    no_report: bool = NoReportOpt,
    allow_plugins: bool = AllowPluginsOpt,
):
    """Run an experiment: every cell of its sweep, all replicate chains, every generation."""
    with allow_plugins_in(allow_plugins):
        spec_obj = _or_fail(api.load_spec, spec)
        cells = _or_fail(api.expand, spec_obj)  # validates every cell before anything starts
    _or_fail(check_execution, executor, scheduler)
    _parse_gens(generations, max(c.spec.generations for c in cells))  # --show checked before the run exists
    started: dict = {}
    execute = lambda progress: api.run(  # noqa: E731
        spec_obj, out, executor=executor, workers=workers, scheduler=scheduler, workspace=workspace,
        report=not no_report, progress=progress, on_start=lambda path, run_id: started.update(path=path, id=run_id),
        allow_plugins=allow_plugins,
    )
    result = _execute(execute, spec_obj, cells, quiet or as_json, started)
    _finish(result, as_json, quiet, generations, no_report)


@app.command()
def resume(
    ref: str = typer.Argument(..., help="An unfinished run: its id or name from 'collapselab runs', or its directory."),
    workers: int = WorkersOpt,
    executor: Optional[str] = ExecutorOpt,
    scheduler: Optional[str] = SchedulerOpt,
    workspace: Path = WorkspaceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    generations: Optional[str] = ShowOpt,
    no_report: bool = NoReportOpt,
    allow_plugins: bool = AllowPluginsOpt,
):
    """Finish an interrupted run from its checkpoints; the results equal an uninterrupted run's."""
    from .store import Store

    path = _or_fail(Store(workspace).resolve, ref, finished=False)
    with allow_plugins_in(allow_plugins):
        spec_obj = _or_fail(api.load_spec, path / "spec.toml")
        cells = _or_fail(api.expand, spec_obj)
    _or_fail(check_execution, executor, scheduler)
    _parse_gens(generations, max(c.spec.generations for c in cells))
    started = {"path": path}
    execute = lambda progress: api.resume(  # noqa: E731
        path, executor=executor, workers=workers, scheduler=scheduler, workspace=workspace,
        report=not no_report, progress=progress, allow_plugins=allow_plugins,
    )
    result = _execute(execute, spec_obj, cells, quiet or as_json, started)
    _finish(result, as_json, quiet, generations, no_report)


def _execute(execute, spec_obj, cells, silent: bool, started: dict):
    try:
        with _Progress(spec_obj.name, {c.id: c.spec.generations for c in cells}, silent) as progress:
            return execute(progress)
    except InputError as e:
        _fail(str(e))
    except CollapselabError as e:
        _fail(str(e), 1)
    except KeyboardInterrupt:
        where = started.get("path")
        hint = f"; finish it with: collapselab resume {where}" if where else ""
        err_console.print(f"interrupted{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(130)


def _finish(result, as_json: bool, quiet: bool, generations: str | None, no_report: bool) -> None:
    if result.report_error:
        err_console.print(f"[bold yellow]warning[/]: {escape(result.report_error)}", markup=True, highlight=False)
    for cell_id, note in result.notes:  # warnings are never quiet: a judge at chance must be seen
        err_console.print(f"[bold yellow]warning[/] (cell {escape(cell_id)}): {escape(note)}", markup=True,
                          highlight=False, soft_wrap=True)
    if as_json:
        summary = result.summary
        last_gen = summary.groupby("cell", sort=False)["generation"].transform("max")
        last = summary[summary["generation"] == last_gen]  # each cell's own last generation
        payload = {
            "run_id": result.run_id,
            "path": str(result.path),
            "report": None if no_report or result.report_error else str(result.path / "report.html"),
            "seconds": round(result.seconds, 3),
            "cells": result.cells,
            "final": last[["cell", "generation", "metric", "mean", "median", "se"]].to_dict(orient="records"),
        }
        _print_json(payload)
        return
    if not quiet:
        _print_summary(result.summary, result.cells, generations, result.theory)
        _print_stages(result.stages, result.cells, result.summary)
        ident = f"run {result.run_id} " if result.run_id is not None else ""
        _say(f"{ident}finished in {result.seconds:.1f} s; results in {result.path}")
        if not no_report and result.report_error is None:
            _say(f"report: {result.path / 'report.html'}")


def _print_json(payload) -> None:
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


class _Progress:
    """Progress of a run: rich bars (cells, generations, ETA) on a terminal, a plain line every
    ``interval`` seconds otherwise, nothing when silent. ``generations``: each cell's own count."""

    def __init__(self, name: str, generations: dict[str, int], silent: bool, interval: float = 10.0):
        self.generations = generations
        self.cells, self.total = len(generations), sum(generations.values())
        self.done: dict[str, int] = {}
        self.silent, self.interval = silent, interval
        self.tty = err_console.is_terminal
        self.bar = None
        if not silent and self.tty:
            self.bar = Progress(
                TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=True,
            )
            self.cell_task = self.bar.add_task("cells", total=self.cells)
            self.gen_task = self.bar.add_task("generations", total=self.total)
        self.start = self.last_line = time.monotonic()

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif not self.silent and not self.tty and exc[0] is None and time.monotonic() - self.start >= self.interval:
            self._line()  # a closing line, for logs of long runs

    def _finished(self) -> int:
        return sum(1 for c, g in self.done.items() if g >= self.generations.get(c, g))

    def __call__(self, cell_id: str, generation: int, generations: int) -> None:
        self.done[cell_id] = generation
        if self.bar is not None:
            self.bar.update(self.cell_task, completed=self._finished())
            self.bar.update(self.gen_task, completed=sum(self.done.values()))
        elif not self.silent and time.monotonic() - self.last_line >= self.interval:
            self._line()

    def _line(self) -> None:
        self.last_line = now = time.monotonic()
        done = sum(self.done.values())
        elapsed = now - self.start
        eta = f", ETA {elapsed * (self.total - done) / done:.0f} s" if done else ""
        err_console.print(
            f"progress: cells {self._finished()}/{self.cells}, generations {done}/{self.total} "
            f"({100 * done / max(self.total, 1):.0f}%), {elapsed:.0f} s elapsed{eta}",
            highlight=False, soft_wrap=True, markup=False,
        )


@app.command("runs")
def list_runs(workspace: Path = WorkspaceOpt, as_json: bool = typer.Option(False, "--json")):
    """List the runs indexed in the workspace."""
    df = _or_fail(api.runs, workspace)
    if as_json:
        print(df.to_json(orient="records"))
        return
    if df.empty:
        _say(f"no runs in {workspace} yet: try 'collapselab run preset:quickstart'")
        return
    table = Table("id", "name", "status", "created", "cells", "generations", "replicates", "seconds", "path")
    for r in df.itertuples(index=False):
        seconds = f"{r.seconds:.1f}" if r.status == "finished" else "-"
        table.add_row(str(r.id), r.name, r.status, r.created, str(r.cells), str(r.generations),
                      str(r.replicates), seconds, r.path)
    out_console.print(table)


@app.command()
def show(
    ref: str = typer.Argument(..., help="A run id or name from 'collapselab runs', or a run directory."),
    workspace: Path = WorkspaceOpt,
    generations: Optional[str] = ShowOpt,
    metric: Optional[list[str]] = typer.Option(None, "--metric", "-m", help="Only these metrics."),
):
    """Print a saved run's summary table."""
    tables = _or_fail(api.load_run, ref, workspace)
    summary = tables["summary"]
    if metric:
        unknown = sorted(set(metric) - set(summary["metric"]))
        if unknown:
            _fail(f"--metric {unknown[0]!r}: not in this run; allowed: {', '.join(summary['metric'].unique())}")
        summary = summary[summary["metric"].isin(metric)]
    _parse_gens(generations, int(summary["generation"].max()) + 1)
    _print_summary(summary, tables["cells"], generations, tables.get("theory"))
    if "stages" in tables:
        _print_stages(tables["stages"], tables["cells"], tables["summary"])


@app.command()
def samples(
    ref: str = typer.Argument(..., help="A run id or name from 'collapselab runs', or a run directory."),
    cell: Optional[str] = typer.Option(None, "--cell", "-c", help="Cell id (default: the first)."),
    generation: Optional[int] = typer.Option(None, "--generation", "-g", help="Generation (default: the last)."),
    limit: int = typer.Option(10, "--limit", "-n", min=1, help="Records to print."),
    workspace: Path = WorkspaceOpt,
    as_json: bool = JsonOpt,
):
    """Print records that chain 0's model generated (text decoded to words, images as characters)."""
    got = _or_fail(api.samples, ref, cell, generation, limit, workspace)
    if as_json:
        _print_json(got)
        return
    _say(f"cell {got['cell']}, generation {got['generation']} ({got['kind']} records; samples kept at generations "
         f"{', '.join(map(str, got['generations']))})")
    for i, rec in enumerate(got["records"]):
        if got["kind"] == "image":
            _say(f"record {i}:\n{_ascii_image(np.asarray(rec, dtype=float))}")
        else:
            _say(f"{i:>3}  {rec if isinstance(rec, str) else json.dumps(rec)}")


def _ascii_image(img: np.ndarray) -> str:
    shades = " .:-=+*#%@"
    img = img / max(float(img.max()), 1e-12)
    rows = img[::2]  # two pixel rows per line: characters are about twice as tall as wide
    return "\n".join("".join(shades[min(int(v * len(shades)), len(shades) - 1)] for v in row) for row in rows)


@app.command()
def report(
    refs: list[str] = typer.Argument(..., help="Run ids, names or directories; several give a comparison."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report file (default: report.html in the first run)."),
    workspace: Path = WorkspaceOpt,
):
    """Write a self-contained HTML report of one or several runs."""
    path = _or_fail(api.report, refs, out, workspace)
    _say(f"report: {path}")


@app.command()
def theory(
    spec: str = typer.Argument(..., help="A spec TOML file, or preset:NAME."),
    generations: Optional[str] = ShowOpt,
    as_json: bool = typer.Option(False, "--json", help="Print {cell: {metric: [expected per generation]}}."),
    allow_plugins: bool = AllowPluginsOpt,
):
    """Print the closed-form expectations the literature gives for each cell of a spec (no simulation)."""
    from .theory import for_cell

    with allow_plugins_in(allow_plugins):
        spec_obj = _or_fail(api.load_spec, spec)
        cells = _or_fail(api.expand, spec_obj)
    forms = {c.id: for_cell(c, spec_obj.seed) for c in cells}
    if as_json:
        _print_json({c: {m: v.tolist() for m, v in f.items()} for c, f in forms.items()})
        return
    gens = _parse_gens(generations, spec_obj.generations)
    for cell in cells:
        title = f"cell {cell.id}" + (": " + describe_overrides(cell.overrides) if cell.overrides else "")
        out_console.print(f"[bold]{escape(title)}[/]", markup=True, highlight=False)
        if not forms[cell.id]:
            out_console.print(f"  no closed form for family {cell.spec.model.family!r} under {cell.spec.policy.kind!r}")
            continue
        table = Table("metric (expected)", *(f"gen {g}" for g in gens))
        for metric, values in forms[cell.id].items():
            table.add_row(metric, *(_fmt(values[g]) for g in gens))
        out_console.print(table)


@app.command()
def families():
    """List the model families (built in and registered by plugins)."""
    from .families import FAMILIES
    from .families.base import _load_entry_points

    _load_entry_points()
    table = Table("family", "fits records", "parameters (default)")
    for name, cls in sorted(FAMILIES.items()):
        params = ", ".join(f"{k}={f.default!r}" for k, f in cls.Params.model_fields.items()) or "-"
        table.add_row(name, ", ".join(cls.accepts), params)
    out_console.print(table)


@app.command()
def decompose(
    spec: str = typer.Argument(..., help="A spec without [sweep]: a TOML path or preset:NAME."),
    out: Path = typer.Option(Path("decomposition"), "--out", "-o", help="Folder for decomposition.csv and .html."),
    converged: Optional[list[str]] = typer.Option(
        None, "--converged", help="model.params KEY=VALUE that run the optimiser to convergence (repeatable)."
    ),
    show: Optional[str] = typer.Option(None, "--show", help="Generations to print, e.g. 0,5,19."),
    allow_plugins: bool = AllowPluginsOpt,
):
    """Split the distance to the truth into statistical, expressivity and approximation error, per generation."""
    from . import decompose as dec

    conv = None
    if converged:
        conv = {}
        for item in converged:
            key, sep, value = item.partition("=")
            if not sep:
                _fail(f"--converged {item!r}: expected KEY=VALUE, e.g. epochs=100")
            try:
                conv[key] = json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
            except json.JSONDecodeError:
                _fail(f"--converged {item!r}: {value!r} is not a number; expected KEY=VALUE, e.g. epochs=100")
    with allow_plugins_in(allow_plugins):
        result = _or_fail(dec.decompose, spec, conv, progress=lambda name: err_console.print(f"variant {name}: done"))
    from .report.decompose import write as write_decomposition

    files = _or_fail(write_decomposition, result, out, Path(spec).stem if not spec.startswith("preset:") else spec[7:])
    wide = result.table.pivot(index="generation", columns="part", values="mean")
    wide = wide[[p for p in dec.PARTS if p in wide.columns]]
    G = len(wide)
    table = Table("generation", *[str(c) for c in wide.columns], title=f"distance to the truth: {result.metric}")
    for g in _parse_gens(show, G):
        table.add_row(str(g), *[_fmt(v) for v in wide.loc[g]])
    out_console.print(table)
    out_console.print(f"total = expressivity + statistical + approximation; written: {files['csv']}, {files['html']}")


@app.command()
def synthesize(
    data: Path = typer.Option(..., "--data", help="Real table: .csv, .tsv or .parquet (numeric and categorical columns)."),
    rows: int = typer.Option(..., "--rows", help="Synthetic rows to write."),
    out: Path = typer.Option(..., "--out", "-o", help="Synthetic table: .csv or .parquet."),
    clusters: str = typer.Option("bic", "--clusters", help="Clusters of the real rows: a number, or 'bic'."),
    max_clusters: int = typer.Option(8, "--max-clusters", min=1, help="Largest k tried with --clusters bic."),
    floor: float = typer.Option(0.01, "--floor", help="Smallest share of the rows per cluster."),
    seed: int = typer.Option(0, "--seed", min=0),
    report: Optional[Path] = typer.Option(None, "--report", help="Fidelity report (default: OUT with .fidelity.json)."),
    as_json: bool = JsonOpt,
):
    """Cluster-mirrored synthetic rows for a real table, and a fidelity report."""
    from pydantic import ValidationError

    from .synthesize import synthesize_file
    from .spec import SynthesisSpec, format_validation_error

    try:
        spec = SynthesisSpec(
            kind="cluster-mirrored", clusters=int(clusters) if clusters.isdigit() else clusters,
            max_clusters=max_clusters, floor=floor,
        )
    except ValidationError as e:
        _fail(format_validation_error(e, "synthesis").replace("synthesis.", "--").replace("_", "-"))
        return
    result = _or_fail(synthesize_file, data, rows, out, spec, seed, report)
    if as_json:
        _print_json(result)
        return
    table = Table("column", "kind", "fidelity (1 - KS / 1 - TV)", "range / category coverage",
                  title=f"{result['rows_synthetic']} synthetic rows from {result['rows_real']} real")
    for col, v in result["columns"].items():
        fid = v.get("ks_complement", v.get("tv_complement"))
        cov = v.get("range_coverage", v.get("category_coverage"))
        table.add_row(col, v["kind"], _fmt(fid), _fmt(cov))
    out_console.print(table)
    c = result["clusters"]
    corr = result["correlation_similarity"]
    out_console.print(
        f"clusters: {c['k']} (real shares {c['real_shares']}), cluster coverage {_fmt(c['coverage'])}; "
        f"correlation similarity {_fmt(corr) if corr is not None else '-'}; "
        f"mean marginal fidelity {_fmt(result['marginal_mean'])}"
    )
    out_console.print(f"written: {result['out']}, {result['report']}")


@app.command()
def audit(
    reference: Path = typer.Option(..., "--reference", help="Real data: .csv/.tsv/.parquet, .txt/.jsonl or .npy."),
    candidate: Path = typer.Option(..., "--candidate", help="The data set to audit, of the same kind."),
    synthetic_examples: Optional[Path] = typer.Option(
        None, "--synthetic-examples", help="Records known to be synthetic: trains and calibrates the detector."
    ),
    provenance: str = typer.Option("origin", "--provenance-column", help="Column (or JSONL field) human/synthetic."),
    policy: str = typer.Option("replace", "--policy", help="Planned retraining policy for the projection."),
    real_fraction: Optional[float] = typer.Option(None, "--real-fraction", help="mix / fresh: real share."),
    generations: int = typer.Option(10, "--generations", min=1, help="Generations to project."),
    replicates: int = typer.Option(8, "--replicates", min=1, help="Replicate chains of the projection."),
    seed: int = typer.Option(0, "--seed", min=0),
    no_projection: bool = typer.Option(False, "--no-projection", help="Skip the simulated projection."),
    out: Path = typer.Option(Path("audit"), "--out", "-o", help="Folder for audit.json and audit.html."),
    scoring_model: str = typer.Option(
        "smollm2", "--scoring-model",
        help="Text: the LM that scores passages (smollm2, a local Hugging Face folder or a .gguf file; "
             "'ngram' for a word trigram on the reference)."),
    as_json: bool = JsonOpt,
):
    """Audit a data set for collapse risk: synthetic share, tails and diversity, a verdict and a projection."""
    from . import audit as audit_mod
    from .plugins import POLICIES

    if policy not in POLICIES:
        _fail(f"--policy {policy!r}; allowed: {', '.join(POLICIES.names())}")
    uses_fraction = POLICIES[policy].uses_real_fraction
    if uses_fraction and real_fraction is None:
        _fail(f"--policy {policy} needs --real-fraction (a number in [0, 1])")
    if real_fraction is not None and not 0 <= real_fraction <= 1:
        _fail(f"--real-fraction {real_fraction}: must be in [0, 1]")
    report = _or_fail(
        audit_mod.audit, reference, candidate, synthetic_examples=synthetic_examples, provenance=provenance,
        policy=policy, real_fraction=real_fraction if uses_fraction else None, generations=generations,
        replicates=replicates, seed=seed, project=not no_projection, out=out,
        scoring_model=None if scoring_model == "ngram" else scoring_model, progress=_ScoringProgress(as_json),
    )
    if as_json:
        _print_json(report)
        return
    s = report["synthetic_share"]
    out_console.print(f"[bold]verdict: {escape(str(report['verdict']))}[/]", markup=True)
    for r in report["reasons"]:
        out_console.print(f"  - {r}", highlight=False)
    _say(_share_line(s))
    m = report["measures"]
    out_console.print(f"median retention: tail {_fmt(m['tail_retention'])}, spread {_fmt(m['spread_retention'])}; "
                      f"MMD {_fmt(m['mmd'])} (permutation p = {_fmt(m['mmd_p_value'])})", highlight=False)
    proj = report.get("projection")
    if proj and "skipped" not in proj:
        parts = []
        for st in ("early", "late"):
            v = proj.get(st)
            if v:
                med = "not within the run" if v["median"] is None else _fmt(v["median"])
                ci = "–".join("∞" if c is None else _fmt(c) for c in v["ci"])
                parts.append(f"{st} collapse at generation {med} [{ci}]")
        out_console.print(f"projection ({json.dumps(proj['policy'])}, {proj['generations']} generations): "
                          + "; ".join(parts), highlight=False)
    elif proj:
        out_console.print(f"projection skipped: {proj['skipped']}")
    out_console.print(f"written: {out / 'audit.json'}, {out / 'audit.html'}")


ledger_app = typer.Typer(help="The record-level provenance ledger (SQLite, append-only).", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
LedgerDb = typer.Option(Path("ledger.db"), "--db", help="The ledger's SQLite file.")


@ledger_app.command("add")
def ledger_add(jsonl: Path = typer.Argument(..., help="JSONL records: content or content_hash, origin, model, "
                                            "generation, source, licence, quality, verdicts."), db: Path = LedgerDb):
    """Append records (all or nothing)."""
    from .audit.ledger import Ledger

    with Ledger(db) as ledger:
        n = _or_fail(ledger.import_jsonl, jsonl)
    out_console.print(f"added {n} records to {db}")


@ledger_app.command("export")
def ledger_export(out: Path = typer.Argument(..., help="JSONL file to write."), db: Path = LedgerDb):
    """Every row as JSONL."""
    from .audit.ledger import Ledger

    with Ledger(db) as ledger:
        n = ledger.export_jsonl(out)
    out_console.print(f"wrote {n} records to {out}")


@ledger_app.command("summary")
def ledger_summary(db: Path = LedgerDb, as_json: bool = JsonOpt):
    """Counts by origin and generator, synthetic share, licences, sources."""
    from .audit.ledger import Ledger

    with Ledger(db) as ledger:
        s = ledger.summary()
    if as_json:
        _print_json(s)
        return
    table = Table("", "value")
    for k, v in s.items():
        table.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else _fmt(v) if isinstance(v, float) else str(v))
    out_console.print(table)


@ledger_app.command("croissant")
def ledger_croissant(out: Path = typer.Argument(..., help="JSON-LD file to write."), db: Path = LedgerDb,
                     name: str = typer.Option("dataset", "--name")):
    """The dataset-level summary as Croissant JSON-LD (with rai:hasSyntheticData)."""
    from .audit.ledger import Ledger
    from .store import write_atomic

    with Ledger(db) as ledger:
        doc = ledger.croissant(name)
    write_atomic(out, json.dumps(doc, indent=2) + "\n")
    out_console.print(f"wrote {out} (rai:hasSyntheticData = {str(doc['rai:hasSyntheticData']).lower()})")


@ledger_app.command("plan")
def ledger_plan(
    out: Path = typer.Argument(..., help="JSONL of the chosen records."),
    db: Path = LedgerDb,
    size: Optional[int] = typer.Option(None, "--size", min=1, help="Records wanted (default: as many as allowed)."),
    min_real: float = typer.Option(0.0, "--min-real", help="Smallest share of human records."),
    max_per_generator: float = typer.Option(1.0, "--max-per-generator", help="Largest share of any one model."),
    min_quality: Optional[float] = typer.Option(None, "--min-quality", help="Drop records scoring below this."),
    keep_duplicates: bool = typer.Option(False, "--keep-duplicates", help="Do not deduplicate by content hash."),
):
    """Build a training set that meets the constraints, and say which one bound its size."""
    from .audit.ledger import Ledger, plan_mix
    from .store import write_atomic

    with Ledger(db) as ledger:
        plan = _or_fail(plan_mix, ledger.rows(), size, min_real, max_per_generator, min_quality, not keep_duplicates)
    write_atomic(out, "".join(json.dumps(r, sort_keys=True) + "\n" for r in plan.rows))
    real = plan.human / plan.size if plan.size else 0.0
    out_console.print(f"planned {plan.size} records: {plan.human} human ({real:.1%}), synthetic by model "
                      f"{json.dumps(plan.by_model)}; dropped {json.dumps(plan.dropped)}", highlight=False)
    out_console.print(f"bound by {plan.binding}", highlight=False)


@app.command()
def data(prepare: bool = typer.Option(True, "--prepare/--status", help="Convert what needs converting (default).")):
    """Real data sets and packaged models: convert them once into the cache folder, and say what is installed."""
    from . import datasets

    table = Table("data", "status")
    for name, status in (datasets.prepare(log=lambda *_: None) if prepare else datasets.status()).items():
        table.add_row(name, status)
    out_console.print(table)
    out_console.print(f"cache folder: {datasets.cache_dir()} (set COLLAPSELAB_DATA to move it)")


@app.command()
def presets():
    """List the specs that ship with collapselab (run one with 'collapselab run preset:NAME')."""
    from .spec import list_presets, read_toml

    table = Table("preset", "name", "what it shows")
    for p in list_presets():
        raw = read_toml(f"preset:{p}")
        table.add_row(f"preset:{p}", raw.get("name", ""), raw.get("description", ""))
    out_console.print(table)


class _ScoringProgress:
    """'scoring texts: 320/800' on stderr while the language model works: rewritten in place on a terminal,
    a line every 10 s in logs."""

    def __init__(self, silent: bool):
        self.silent, self.last, self.start = silent, 0.0, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.silent:
            return
        now = time.monotonic()
        if err_console.is_terminal:
            end = "\n" if done == total else ""
            err_console.file.write(f"\rscoring texts with the language model: {done}/{total}{end}")
            err_console.file.flush()
        elif now - self.last >= 10 or done == total:
            self.last = now
            err_console.print(f"scoring texts with the language model: {done}/{total} "
                              f"({now - self.start:.0f} s)", highlight=False)


def _share_line(s: dict) -> str:
    from .audit import share_sentence

    return share_sentence(s)


def _parse_gens(text: str | None, G: int, clip: bool = False) -> list[int]:
    """The generations to tabulate: ``--show`` (checked against 0..G-1), or six spread over the run. With
    ``clip``, generations past G are left out (a cell shorter than the longest)."""
    if text is None:
        picks = {0, 1, G // 4, G // 2, (3 * G) // 4, G - 1}
        return sorted(g for g in picks if 0 <= g < G)
    try:
        gens = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        _fail(f"--show {text!r}: expected generation numbers separated by commas, e.g. 0,5,19")
    if not gens:
        _fail(f"--show {text!r}: expected generation numbers separated by commas, e.g. 0,5,19")
    if clip:
        return [g for g in gens if 0 <= g < G]
    bad = [g for g in gens if not 0 <= g < G]
    if bad:
        _fail(f"--show {bad[0]}: allowed generations are 0..{G - 1}")
    return gens


def _fmt(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    if not np.isfinite(x):
        return "-" if np.isnan(x) else str(x)
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _print_summary(summary: pd.DataFrame, cells: dict, generations: str | None,
                   theory: pd.DataFrame | None = None) -> None:
    """One table per cell: a row per metric, a column per chosen generation (of that cell: sweep cases may run
    different numbers of generations), the mean across replicate chains and, under it, their median
    (a mean can rise while most chains lose their tails); under a metric with a closed form, the closed form's expectation."""
    for cell, df in summary.groupby("cell", sort=False):
        overrides = cells.get(str(cell), {})
        title = f"cell {cell}" + (": " + describe_overrides(overrides) if overrides else "")
        G = int(df["generation"].max()) + 1
        gens = _parse_gens(generations, G, clip=True)
        mean = df.pivot_table(index="metric", columns="generation", values="mean", sort=False, dropna=False)
        median = df.pivot_table(index="metric", columns="generation", values="median", sort=False, dropna=False)
        expected = None
        if theory is not None and not theory.empty:
            t = theory[theory["cell"] == str(cell)]
            if not t.empty:
                expected = t.pivot_table(index="metric", columns="generation", values="expected", sort=False)
        out_console.print(f"[bold]{escape(title)}[/]", markup=True, highlight=False)
        table = Table("metric", *(f"gen {g}" for g in gens))
        for metric in dict.fromkeys(df["metric"]):
            table.add_row(str(metric), *(_fmt(_at(mean, metric, g)) for g in gens))
            table.add_row("  median", *(_fmt(_at(median, metric, g)) for g in gens), style="dim")
            if expected is not None and metric in expected.index:
                table.add_row("  theory", *(_fmt(_at(expected, metric, g)) for g in gens), style="dim")
        out_console.print(table)
    out_console.print("[dim]rows: the mean across replicate chains, then their median; 'theory': the closed-form "
                      "expectation[/]", markup=True)


def _at(wide: pd.DataFrame, row, col) -> float:
    try:
        return float(wide.loc[row, col])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def _print_stages(stages: pd.DataFrame, cells: dict, summary: pd.DataFrame) -> None:
    """Per cell, the generation at which each collapse stage was first reached (median over chains)."""
    if stages is None or stages.empty:
        return
    last = summary.groupby("cell", sort=False)["generation"].max()  # each cell's own last generation
    table = Table("cell", "early", "late", "total", title="first generation reaching each stage",
                  caption="median generation over chains [95% CI], then the share of chains that got there within "
                  "the cell's generations; stages: collapselab.metrics.stages")
    for cell, df in stages.groupby("cell", sort=False):
        row = df.set_index("stage")
        cols = []
        for stage in ("early", "late", "total"):
            if stage not in row.index:
                cols.append("-")
                continue
            r = row.loc[stage]
            share = f"{100 * r['reached']:.0f}%" if np.isfinite(r["reached"]) else "-"
            if np.isfinite(r["first_median"]):
                lo = f"{r['ci_low']:.0f}" if np.isfinite(r["ci_low"]) else "?"
                hi = f"{r['ci_high']:.0f}" if np.isfinite(r["ci_high"]) else f">{last.get(cell, '?')}"
                cols.append(f"{r['first_median']:.0f} [{lo}–{hi}]  {share}")
            else:
                cols.append(f"not reached  {share}")
        table.add_row(str(cell), *cols)
    out_console.print(table)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


def main() -> None:
    """The entry point: every error collapselab raises on purpose is one line; exit 2 for bad input, 1 for a
    failure, 130 when interrupted (see collapselab.errors)."""
    import os
    import sqlite3
    import warnings

    from .errors import CollapseWarning

    warnings.simplefilter("ignore", CollapseWarning)  # the command prints a run's warnings itself (_finish)
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False, highlight=False)
        sys.exit(130)
    except typer.Exit as e:  # raised by _fail outside click's own handling
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
    try:
        _fail(message, code)
    except typer.Exit:
        pass
    sys.exit(code)


if __name__ == "__main__":
    main()
