"""Verbs of analysis: theory (closed forms, no simulation), plan (how much real data to keep) and decompose (where a
collapse comes from)."""

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
def plan(
    spec: str = typer.Argument(..., help="A spec without [sweep] (mix or fresh for --knob real_fraction)."),
    need: str = typer.Option(..., "--need", help="The requirement, e.g. 'var_ratio >= 0.99' or 'kl <= 0.05'."),
    horizon: int = typer.Option(..., "--horizon", min=0, help="The generation it must hold at (retrainings)."),
    knob: str = typer.Option("real_fraction", "--knob", help="real_fraction (mix, fresh) or n (the sample size)."),
    target: str = typer.Option("mean", "--target", help="mean: the mean across chains; chains: a share of them."),
    confidence: float = typer.Option(0.95, "--confidence", help="Share of chains (--target chains); interval level."),
    method: str = typer.Option("auto", "--method", help="auto, closed-form, search, or both."),
    as_json: bool = typer.Option(False, "--json", help="Print the answers as JSON."),
    allow_plugins: bool = AllowPluginsOpt,
):
    """The smallest real fraction (or sample size) that keeps a metric within a tolerance at a planned generation:
    in closed form where theory has one, and by searching with the loop itself."""
    if method not in ("auto", "closed-form", "search", "both"):
        fail(f"--method {method!r}: allowed: auto, closed-form, search, both")
    methods = ["closed-form", "search"] if method == "both" else [method]
    answers = []
    for m in methods:
        progress = lambda what: err_console.print(f"search: running {what}", highlight=False)  # noqa: E731
        answers.append(
            api.plan(spec, need, horizon, knob=knob, target=target, confidence=confidence, method=m, progress=progress)
        )
    if as_json:
        print_json(
            [
                {
                    "knob": a.knob,
                    "value": a.value,
                    "interval": list(a.interval),
                    "method": a.method,
                    "sentence": a.sentence,
                    "stationary": a.stationary,
                    "candidates": a.table.to_dict(orient="records"),
                }
                for a in answers
            ]
        )
        return
    for a in answers:
        out_console.print(a.sentence, highlight=False)
        table = Table(*a.table.columns, title=f"{a.method}: candidates evaluated")
        for row in a.table.itertuples(index=False):
            table.add_row(*(("yes" if v else "no") if isinstance(v, bool) else fmt(v) for v in row))
        out_console.print(table)
        if a.stationary:
            limits = ", ".join(f"{k} -> {fmt(v)}" for k, v in a.stationary.items())
            out_console.print(f"as generations grow, at {a.knob} = {fmt(a.value)}: {limits}", highlight=False)


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
