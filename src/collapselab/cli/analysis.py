"""Verbs of analysis: theory (closed forms, no simulation) and decompose (where a collapse comes from)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..spec import describe_overrides
from .app import AllowPluginsOpt, ShowOpt, app, err_console, fail, fmt, lazy_module, out_console, parse_gens, print_json

api = lazy_module("collapselab.api")


@app.command()
def theory(
    spec: str = typer.Argument(..., help="A spec TOML file, or preset:NAME."),
    generations: str | None = ShowOpt,
    as_json: bool = typer.Option(False, "--json", help="Print {cell: {metric: [expected per generation]}}."),
    allow_plugins: bool = AllowPluginsOpt,
):
    """Print the closed-form expectations the literature gives for each cell of a spec (no simulation)."""
    planned = api.theory(spec, allow_plugins=allow_plugins)
    forms = {c.id: f for c, f in planned}
    if as_json:
        print_json({c: {m: v.tolist() for m, v in f.items()} for c, f in forms.items()})
        return
    gens = parse_gens(generations, planned[0][0].spec.generations)
    for cell, _ in planned:
        title = f"cell {cell.id}" + (": " + describe_overrides(cell.overrides) if cell.overrides else "")
        out_console.print(f"[bold]{escape(title)}[/]", markup=True, highlight=False)
        if not forms[cell.id]:
            out_console.print(f"  no closed form for family {cell.family.name!r} under {cell.policy.kind!r}")
            continue
        table = Table("metric (expected)", *(f"gen {g}" for g in gens))
        for metric, values in forms[cell.id].items():
            table.add_row(metric, *(fmt(values[g]) for g in gens))
        out_console.print(table)


@app.command()
def decompose(
    spec: str = typer.Argument(..., help="A spec without [sweep]: a TOML path or preset:NAME."),
    out: Path = typer.Option(Path("decomposition"), "--out", "-o", help="Folder for decomposition.csv and .html."),
    converged: list[str] | None = typer.Option(
        None, "--converged", help="model.params KEY=VALUE that run the optimiser to convergence (repeatable)."
    ),
    show: str | None = typer.Option(None, "--show", help="Generations to print, e.g. 0,5,19."),
    allow_plugins: bool = AllowPluginsOpt,
):
    """Split the distance to the truth into statistical, expressivity and approximation error, per generation."""
    conv = None
    if converged:
        conv = {}
        for item in converged:
            key, sep, value = item.partition("=")
            if not sep:
                fail(f"--converged {item!r}: expected KEY=VALUE, e.g. epochs=100")
            try:
                conv[key] = json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
            except json.JSONDecodeError:
                fail(f"--converged {item!r}: {value!r} is not a number; expected KEY=VALUE, e.g. epochs=100")
    title = Path(spec).stem if not spec.startswith("preset:") else spec[7:]
    result, files = api.decompose(
        spec,
        conv,
        out=out,
        title=title,
        allow_plugins=allow_plugins,
        progress=lambda name: err_console.print(f"variant {name}: done"),
    )
    wide = result.table.pivot(index="generation", columns="part", values="mean")
    from ..decompose import PARTS

    wide = wide[[p for p in PARTS if p in wide.columns]]
    G = len(wide)
    table = Table("generation", *[str(c) for c in wide.columns], title=f"distance to the truth: {result.metric}")
    for g in parse_gens(show, G):
        table.add_row(str(g), *[fmt(v) for v in wide.loc[g]])
    out_console.print(table)
    out_console.print(f"total = expressivity + statistical + approximation; written: {files['csv']}, {files['html']}")
