"""Verbs of experiments: run, resume, runs, show, samples, report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer
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

from ..spec import describe_overrides
from .app import (
    AllowPluginsOpt,
    ExecutorOpt,
    JsonOpt,
    NoReportOpt,
    QuietOpt,
    SchedulerOpt,
    ShowOpt,
    WorkersOpt,
    WorkspaceOpt,
    app,
    err_console,
    fail,
    fmt,
    lazy_module,
    out_console,
    parse_gens,
    print_json,
    say,
    warn,
)

if TYPE_CHECKING:
    import pandas as pd

api = lazy_module("collapselab.api")


@app.command()
def run(
    spec: str = typer.Argument(..., help="A spec TOML file, or preset:NAME (see 'collapselab presets')."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write results to this directory (not indexed)."),
    workers: int = WorkersOpt,
    executor: str | None = ExecutorOpt,
    scheduler: str | None = SchedulerOpt,
    workspace: Path = WorkspaceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    generations: str | None = ShowOpt,
    no_report: bool = NoReportOpt,
    allow_plugins: bool = AllowPluginsOpt,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the spec and print each cell's memory and time estimate; run nothing."
    ),
):
    """Run an experiment: every cell of its sweep, all replicate chains, every generation."""
    planned = api.prepare(spec, executor, scheduler, allow_plugins=allow_plugins)  # every check before a run exists
    if dry_run:
        _print_estimate(api.estimate(planned, allow_plugins=allow_plugins), as_json)
        return
    spec_obj, cells = planned.spec, planned.cells
    parse_gens(generations, max(c.spec.generations for c in cells))  # --show checked before the run exists
    started: dict = {}
    execute = lambda progress: api.run(  # noqa: E731
        planned,
        out,
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        workspace=workspace,
        report=not no_report,
        progress=progress,
        on_start=lambda path, run_id: started.update(path=path, id=run_id),
        allow_plugins=allow_plugins,
    )
    result = _execute(execute, spec_obj, cells, quiet or as_json, started)
    _finish(result, as_json, quiet, generations, no_report)


def _print_estimate(table, as_json: bool) -> None:
    if as_json:
        typer.echo(table.to_json(orient="records"))
        return
    from rich.console import Console
    from rich.table import Table

    out = Table("cell", "chains", "blocks", "generations", "keeps chains' values", "memory ≥", "time ≈")
    for row in table.itertuples(index=False):
        out.add_row(
            str(row.cell),
            f"{row.replicates:,}",
            str(row.blocks),
            f"{row.generations:,}",
            "yes" if row.keeps_replicates else "no",
            f"{row.memory_bytes / 2**20:,.0f} MiB",
            _duration(row.seconds),
        )
    console = Console()
    console.print(out)
    console.print(
        f"total ≈ {_duration(float(table.seconds.sum()))} in one process; time measured on this machine from each "
        "cell run at up to 1,000 chains for 1 and 3 generations. Nothing was run or written."
    )


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: not measured
        return "-"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@app.command()
def resume(
    ref: str = typer.Argument(..., help="An unfinished run: its id or name from 'collapselab runs', or its directory."),
    workers: int = WorkersOpt,
    executor: str | None = ExecutorOpt,
    scheduler: str | None = SchedulerOpt,
    workspace: Path = WorkspaceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    generations: str | None = ShowOpt,
    no_report: bool = NoReportOpt,
    allow_plugins: bool = AllowPluginsOpt,
):
    """Finish an interrupted run from its checkpoints; the results equal an uninterrupted run's."""
    path = api.unfinished(ref, workspace)
    planned = api.prepare(path / "spec.toml", executor, scheduler, allow_plugins=allow_plugins)
    spec_obj, cells = planned.spec, planned.cells
    parse_gens(generations, max(c.spec.generations for c in cells))
    started = {"path": path}
    execute = lambda progress: api.resume(  # noqa: E731
        path,
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        workspace=workspace,
        report=not no_report,
        progress=progress,
        allow_plugins=allow_plugins,
    )
    result = _execute(execute, spec_obj, cells, quiet or as_json, started)
    _finish(result, as_json, quiet, generations, no_report)


def _execute(execute, spec_obj, cells, silent: bool, started: dict):
    try:
        with _Progress(spec_obj.name, {c.id: c.spec.generations for c in cells}, silent) as progress:
            return execute(progress)
    except KeyboardInterrupt:  # said here, not by main: the hint names the run to resume
        where = started.get("path")
        hint = f"; finish it with: collapselab resume {where}" if where else ""
        err_console.print(f"interrupted{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def _finish(result, as_json: bool, quiet: bool, generations: str | None, no_report: bool) -> None:
    if result.report_error:
        warn(result.report_error)
    for cell_id, note in result.notes:  # warnings are never quiet: a judge at chance must be seen
        warn(note, f"cell {cell_id}")
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
        print_json(payload)
        return
    if not quiet:
        _print_summary(result.summary, result.cells, generations, result.theory, result.bounds)
        _print_stages(result.stages, result.cells, result.summary)
        if result.planned is not None:
            for group in result.planned["groups"]:
                say(f"plan: {group['sentence']}")
        ident = f"run {result.run_id} " if result.run_id is not None else ""
        say(f"{ident}finished in {result.seconds:.1f} s; results in {result.path}")
        if not no_report and result.report_error is None:
            say(f"report: {result.path / 'report.html'}")


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
                TextColumn("{task.description:<12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
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
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


@app.command("runs")
def list_runs(workspace: Path = WorkspaceOpt, as_json: bool = typer.Option(False, "--json")):
    """List the runs indexed in the workspace."""
    df = api.runs(workspace)
    if as_json:
        print(df.to_json(orient="records"))
        return
    if df.empty:
        say(f"no runs in {workspace} yet: try 'collapselab run preset:quickstart'")
        return
    table = Table("id", "name", "status", "created", "cells", "generations", "replicates", "seconds", "path")
    for r in df.itertuples(index=False):
        seconds = f"{r.seconds:.1f}" if r.status == "finished" else "-"
        table.add_row(
            str(r.id), r.name, r.status, r.created, str(r.cells), str(r.generations), str(r.replicates), seconds, r.path
        )
    out_console.print(table)


@app.command()
def show(
    ref: str = typer.Argument(..., help="A run id or name from 'collapselab runs', or a run directory."),
    workspace: Path = WorkspaceOpt,
    generations: str | None = ShowOpt,
    metric: list[str] | None = typer.Option(None, "--metric", "-m", help="Only these metrics."),
):
    """Print a saved run's summary table."""
    tables = api.load_run(ref, workspace)
    summary = tables["summary"]
    if metric:
        unknown = sorted(set(metric) - set(summary["metric"]))
        if unknown:
            fail(f"--metric {unknown[0]!r}: not in this run; allowed: {', '.join(summary['metric'].unique())}")
        summary = summary[summary["metric"].isin(metric)]
    parse_gens(generations, int(summary["generation"].max()) + 1)
    _print_summary(summary, tables["cells"], generations, tables.get("theory"), tables.get("bounds"))
    if "stages" in tables:
        _print_stages(tables["stages"], tables["cells"], tables["summary"])


@app.command()
def samples(
    ref: str = typer.Argument(..., help="A run id or name from 'collapselab runs', or a run directory."),
    cell: str | None = typer.Option(None, "--cell", "-c", help="Cell id (default: the first)."),
    generation: int | None = typer.Option(None, "--generation", "-g", help="Generation (default: the last)."),
    limit: int = typer.Option(10, "--limit", "-n", min=1, help="Records to print."),
    workspace: Path = WorkspaceOpt,
    as_json: bool = JsonOpt,
):
    """Print records that chain 0's model generated (text decoded to words, images as characters)."""
    got = api.samples(ref, cell, generation, limit, workspace)
    if as_json:
        print_json(got)
        return
    say(
        f"cell {got['cell']}, generation {got['generation']} ({got['kind']} records; samples kept at generations "
        f"{', '.join(map(str, got['generations']))})"
    )
    for i, rec in enumerate(got["records"]):
        if got["kind"] == "image":
            say(f"record {i}:\n{_ascii_image(np.asarray(rec, dtype=float))}")
        else:
            say(f"{i:>3}  {rec if isinstance(rec, str) else json.dumps(rec)}")


def _ascii_image(img: np.ndarray) -> str:
    shades = " .:-=+*#%@"
    img = img / max(float(img.max()), 1e-12)
    rows = img[::2]  # two pixel rows per line: characters are about twice as tall as wide
    return "\n".join("".join(shades[min(int(v * len(shades)), len(shades) - 1)] for v in row) for row in rows)


@app.command()
def report(
    refs: list[str] = typer.Argument(..., help="Run ids, names or directories; several give a comparison."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report file (default: report.html in the first run)."),
    workspace: Path = WorkspaceOpt,
):
    """Write a self-contained HTML report of one or several runs."""
    path = api.report(refs, out, workspace)
    say(f"report: {path}")


def _print_summary(
    summary: pd.DataFrame,
    cells: dict,
    generations: str | None,
    theory: pd.DataFrame | None = None,
    bounds: pd.DataFrame | None = None,
) -> None:
    """One table per cell: a row per metric, a column per chosen generation (of that cell: sweep cases may run
    different numbers of generations), the mean across replicate chains and, under it, their median
    (a mean can rise while most chains lose their tails); under a metric with a closed form, the closed form's expectation."""
    for cell, df in summary.groupby("cell", sort=False):
        overrides = cells.get(str(cell), {})
        title = f"cell {cell}" + (": " + describe_overrides(overrides) if overrides else "")
        G = int(df["generation"].max()) + 1
        gens = parse_gens(generations, G, clip=True)
        mean = df.pivot_table(index="metric", columns="generation", values="mean", sort=False, dropna=False)
        median = df.pivot_table(index="metric", columns="generation", values="median", sort=False, dropna=False)
        expected = _cell_wide(theory, cell, "expected")
        proved = _cell_wide(bounds, cell, "bound")
        sides = {}
        if proved is not None:
            mine = bounds[bounds["cell"] == str(cell)]
            sides = dict(zip(mine["metric"], mine["side"]))
        out_console.print(f"[bold]{escape(title)}[/]", markup=True, highlight=False)
        table = Table("metric", *(f"gen {g}" for g in gens))
        for metric in dict.fromkeys(df["metric"]):
            table.add_row(str(metric), *(fmt(_at(mean, metric, g)) for g in gens))
            table.add_row("  median", *(fmt(_at(median, metric, g)) for g in gens), style="dim")
            if expected is not None and metric in expected.index:
                table.add_row("  theory", *(fmt(_at(expected, metric, g)) for g in gens), style="dim")
            if proved is not None and metric in proved.index:
                word = {"lower": "bound ≥", "upper": "bound ≤", "limit": "limit →"}[sides[metric]]
                table.add_row(f"  {word}", *(fmt(_at(proved, metric, g)) for g in gens), style="dim")
        out_console.print(table)
    out_console.print(
        "[dim]rows: the mean across replicate chains, then their median; 'theory': the closed-form expectation; "
        "'bound': a proved bound on the mean, 'limit': where it converges (bounds.csv)[/]",
        markup=True,
    )


def _cell_wide(table: pd.DataFrame | None, cell, values: str) -> pd.DataFrame | None:
    """One cell's rows of a (cell, generation, metric, ...) table as metric x generation, or None if it has none."""
    if table is None or table.empty:
        return None
    rows = table[table["cell"] == str(cell)]
    return None if rows.empty else rows.pivot_table(index="metric", columns="generation", values=values, sort=False)


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
    # early, late, total, then a family's collapse metric (fixated, extinct: the generations to collapse)
    names = list(dict.fromkeys(["early", "late", "total", *stages["stage"]]))
    table = Table(
        "cell",
        *names,
        title="first generation reaching each stage",
        caption="median generation over chains [95% CI], then the share of chains that got there within "
        "the cell's generations; stages: collapselab.metrics.stages"
        + ("; after total: the family's collapse to a point mass" if len(names) > 3 else ""),
    )
    for cell, df in stages.groupby("cell", sort=False):
        row = df.set_index("stage")
        cols = []
        for stage in names:
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
