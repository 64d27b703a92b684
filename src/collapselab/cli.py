"""The ``collapselab`` command line: a thin layer over :mod:`collapselab.api`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import api
from .errors import CollapselabError, SpecError
from .store import DEFAULT_WORKSPACE

app = typer.Typer(
    help="Simulate, measure and mitigate model collapse in self-consuming training loops.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out_console = Console()
err_console = Console(stderr=True)

WorkspaceOpt = typer.Option(DEFAULT_WORKSPACE, "--workspace", "-w", help="Folder holding indexed runs and store.db.")


def _fail(message: str, code: int = 2) -> None:
    # one line, no traceback: the message names the key, the value and what is allowed
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    spec: str = typer.Argument(..., help="A spec TOML file, or preset:NAME (see 'collapselab presets')."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results to this directory (not indexed)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Cells run in parallel on this many processes."),
    workspace: Path = WorkspaceOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no table."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable result on stdout."),
    generations: Optional[str] = typer.Option(None, "--show", help="Generations to tabulate, e.g. 0,5,19."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the HTML report."),
):
    """Run an experiment: every cell of its sweep, all replicate chains, every generation."""
    try:
        spec_obj = api.load_spec(spec)
        total = api.expand(spec_obj)  # validates every cell before the progress bar appears
        show_progress = not quiet and not as_json and err_console.is_terminal
        with _progress(show_progress) as bar:
            task = bar.add_task(spec_obj.name, total=len(total) * spec_obj.generations)
            done: dict[str, int] = {}

            def tick(cell_id: str, generation: int, generations: int) -> None:
                done[cell_id] = generation
                bar.update(task, completed=sum(done.values()))

            result = api.run(
                spec_obj, out, workers=workers, workspace=workspace, report=not no_report, progress=tick
            )
    except SpecError as e:
        _fail(str(e))
    except CollapselabError as e:
        _fail(str(e), 1)
    if as_json:
        last = result.summary[result.summary["generation"] == result.spec.generations - 1]
        payload = {
            "run_id": result.run_id,
            "path": str(result.path),
            "report": None if no_report else str(result.path / "report.html"),
            "seconds": round(result.seconds, 3),
            "cells": result.cells,
            "final": last[["cell", "metric", "mean", "se"]].to_dict(orient="records"),
        }
        out_console.out(json.dumps(payload, default=_json_default))
        return
    if not quiet:
        _print_summary(result.summary, result.cells, _parse_gens(generations, result.spec.generations), result.theory)
        _print_stages(result.stages, result.cells, result.spec.generations)
        ident = f"run {result.run_id} " if result.run_id is not None else ""
        out_console.print(
            f"{ident}finished in {result.seconds:.1f} s; results in [bold]{result.path}[/]", highlight=False
        )
        if not no_report:
            out_console.print(f"report: [bold]{result.path / 'report.html'}[/]", highlight=False)


@app.command("runs")
def list_runs(workspace: Path = WorkspaceOpt, as_json: bool = typer.Option(False, "--json")):
    """List the runs indexed in the workspace."""
    df = api.runs(workspace)
    if as_json:
        out_console.out(df.to_json(orient="records"))
        return
    if df.empty:
        out_console.print(f"no runs in {workspace} yet: try 'collapselab run preset:quickstart'")
        return
    table = Table("id", "name", "created", "cells", "generations", "replicates", "seconds", "path")
    for r in df.itertuples(index=False):
        table.add_row(str(r.id), r.name, r.created, str(r.cells), str(r.generations), str(r.replicates),
                      f"{r.seconds:.1f}", r.path)
    out_console.print(table)


@app.command()
def show(
    ref: str = typer.Argument(..., help="A run id or name from 'collapselab runs', or a run directory."),
    workspace: Path = WorkspaceOpt,
    generations: Optional[str] = typer.Option(None, "--show", help="Generations to tabulate, e.g. 0,5,19."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", "-m", help="Only these metrics."),
):
    """Print a saved run's summary table."""
    try:
        tables = api.load_run(ref, workspace)
    except SpecError as e:
        _fail(str(e))
    except CollapselabError as e:
        _fail(str(e), 1)
    summary = tables["summary"]
    if metric:
        unknown = sorted(set(metric) - set(summary["metric"]))
        if unknown:
            _fail(f"--metric {unknown[0]!r}: not in this run; allowed: {', '.join(summary['metric'].unique())}")
        summary = summary[summary["metric"].isin(metric)]
    G = int(summary["generation"].max()) + 1
    _print_summary(summary, tables["cells"], _parse_gens(generations, G), tables.get("theory"))
    if "stages" in tables:
        _print_stages(tables["stages"], tables["cells"], G)


@app.command()
def report(
    refs: list[str] = typer.Argument(..., help="Run ids, names or directories; several give a comparison."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report file (default: report.html in the first run)."),
    workspace: Path = WorkspaceOpt,
):
    """Write a self-contained HTML report of one or several runs."""
    try:
        path = api.report(refs, out, workspace)
    except SpecError as e:
        _fail(str(e))
    except CollapselabError as e:
        _fail(str(e), 1)
    out_console.print(f"report: [bold]{path}[/]", highlight=False)


@app.command()
def theory(
    spec: str = typer.Argument(..., help="A spec TOML file, or preset:NAME."),
    generations: Optional[str] = typer.Option(None, "--show", help="Generations to tabulate, e.g. 0,5,19."),
    as_json: bool = typer.Option(False, "--json", help="Print {cell: {metric: [expected per generation]}}."),
):
    """Print the closed-form expectations the literature gives for each cell of a spec (no simulation)."""
    from .theory import for_cell

    try:
        spec_obj = api.load_spec(spec)
        cells = api.expand(spec_obj)
    except SpecError as e:
        _fail(str(e))
    forms = {c.id: for_cell(c, spec_obj.seed) for c in cells}
    if as_json:
        out_console.out(json.dumps({c: {m: v.tolist() for m, v in f.items()} for c, f in forms.items()}))
        return
    gens = _parse_gens(generations, spec_obj.generations)
    for cell in cells:
        title = f"cell {cell.id}" + (": " + _describe(cell.overrides) if cell.overrides else "")
        out_console.print(f"[bold]{escape(title)}[/]", highlight=False)
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
def presets():
    """List the specs that ship with collapselab (run one with 'collapselab run preset:NAME')."""
    from .spec import list_presets, read_toml

    table = Table("preset", "name", "what it shows")
    for p in list_presets():
        raw = read_toml(f"preset:{p}")
        table.add_row(f"preset:{p}", raw.get("name", ""), raw.get("description", ""))
    out_console.print(table)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("generations"),
        TimeElapsedColumn(), console=err_console, disable=not enabled, transient=True,
    )


def _parse_gens(text: str | None, G: int) -> list[int]:
    if text is None:
        picks = {0, 1, G // 4, G // 2, (3 * G) // 4, G - 1}
        return sorted(g for g in picks if 0 <= g < G)
    try:
        gens = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        _fail(f"--show {text!r}: expected generation numbers separated by commas, e.g. 0,5,19")
    bad = [g for g in gens if not 0 <= g < G]
    if bad:
        _fail(f"--show {bad[0]}: allowed generations are 0..{G - 1}")
    return gens


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return str(x)
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _print_summary(summary: pd.DataFrame, cells: dict, gens: list[int], theory: pd.DataFrame | None = None) -> None:
    """One table per cell: a row per metric, a column per chosen generation (mean across replicates),
    and under a metric with a closed form, the closed form's expectation."""
    for cell, df in summary.groupby("cell", sort=False):
        overrides = cells.get(str(cell), {})
        title = f"cell {cell}" + (": " + _describe(overrides) if overrides else "")
        wide = df.pivot_table(index="metric", columns="generation", values="mean", sort=False)
        expected = None
        if theory is not None and not theory.empty:
            t = theory[theory["cell"] == str(cell)]
            if not t.empty:
                expected = t.pivot_table(index="metric", columns="generation", values="expected", sort=False)
        out_console.print(f"[bold]{escape(title)}[/]", highlight=False)
        table = Table("metric", *(f"gen {g}" for g in gens))
        for metric in dict.fromkeys(df["metric"]):
            table.add_row(metric, *(_fmt(wide.loc[metric, g]) for g in gens))
            if expected is not None and metric in expected.index:
                table.add_row("  theory", *(_fmt(expected.loc[metric, g]) for g in gens), style="dim")
        out_console.print(table)
    out_console.print("[dim]values are means across replicate chains; 'theory' rows are closed-form expectations[/]")


def _print_stages(stages: pd.DataFrame, cells: dict, G: int) -> None:
    """Per cell, the generation at which each collapse stage was first reached (median over chains)."""
    if stages is None or stages.empty:
        return
    table = Table("cell", "early", "late", "total", title="first generation reaching each stage",
                  caption=f"median generation over chains [95% CI], then the share of chains that got there within {G} "
                  "generations; stages: collapselab.metrics.stages")
    for cell, df in stages.groupby("cell", sort=False):
        row = df.set_index("stage")
        cols = []
        for stage in ("early", "late", "total"):
            r = row.loc[stage]
            share = f"{100 * r['reached']:.0f}%"
            if np.isfinite(r["first_median"]):
                hi = "" if not np.isfinite(r["ci_high"]) else f"{r['ci_high']:.0f}"
                cols.append(f"{r['first_median']:.0f} [{r['ci_low']:.0f}–{hi or '>' + str(G - 1)}]  {share}")
            else:
                cols.append(f"not reached  {share}")
        table.add_row(escape(str(cell)), *cols)
    out_console.print(table)


def _describe(overrides: dict, prefix: str = "") -> str:
    parts = []
    for k, v in overrides.items():
        if isinstance(v, dict):
            parts.append(_describe(v, f"{prefix}{k}."))
        else:
            parts.append(f"{prefix}{k} = {v}")
    return ", ".join(parts)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing was written")
        sys.exit(130)


if __name__ == "__main__":
    main()
