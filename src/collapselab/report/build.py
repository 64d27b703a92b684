"""Build the HTML report of one or several run directories.

Everything the page needs is inside the file: figures are PNGs drawn with matplotlib and inlined as data
URIs, the stylesheet is in the template, and no script or font is fetched. All text that comes from specs
(names, descriptions, overrides) goes through Jinja2's autoescaping.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CollapselabError
from ..metrics.stages import STAGES
from ..sources import SOURCES
from ..spec import describe_overrides
from ..store import read_run, write_atomic
from .phase import FRACTION_KEY, HEALTHY_SHARE, frontier, grids, quantities

STAGE_COLOURS = {"healthy": "#4c9a2a", "early": "#e3b505", "late": "#e07020", "total": "#b3001b"}


@dataclass
class Series:
    """One cell of one run: what every figure draws a line for."""

    key: str  # unique within the report
    label: str
    summary: pd.DataFrame
    theory: pd.DataFrame
    stages: pd.DataFrame
    snapshots: dict[int, np.ndarray]
    distributions: dict[int, dict[str, np.ndarray]]
    kind: str  # record kind of the cell's source: continuous, categorical, binary, count, regression
    overrides: dict = field(default_factory=dict)
    bounds: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["cell"]))


def _source_kind(spec: dict, overrides: dict) -> str:
    source = spec.get("data", {}).get("source")
    for k, v in overrides.items():  # a sweep may change the source
        if k == "data.source":
            source = v
        elif k == "data" and isinstance(v, dict) and "source" in v:
            source = v["source"]
    cls = SOURCES.get(source)
    return cls.kind if cls else "continuous"


def load_series(run_dirs: list[Path]) -> tuple[list[Series], list[dict]]:
    series, runs = [], []
    for i, d in enumerate(run_dirs):
        d = Path(d)
        tables = read_run(d)
        spec = tomllib.loads(tables.get("spec_toml", "")) if tables.get("spec_toml") else {}
        name = spec.get("name", d.name)
        notes = (d / "notes.txt").read_text(encoding="utf-8").splitlines() if (d / "notes.txt").is_file() else []
        runs.append(
            {
                "name": name,
                "path": str(d),
                "description": spec.get("description", ""),
                "spec": tables.get("spec_toml", ""),
                "cells": len(tables["cells"]) or 1,
                "notes": notes,
            }
        )
        empty = pd.DataFrame(columns=["cell"])
        for cell, df in tables["summary"].groupby("cell", sort=False):
            overrides = tables["cells"].get(str(cell), {})
            label = f"cell {cell}" + (f": {describe_overrides(overrides)}" if overrides else "")
            if len(run_dirs) > 1:
                label = f"{name} · {label}"
            pick = lambda t, cell=cell, empty=empty: (
                t[t["cell"] == str(cell)] if t is not None and not t.empty else empty
            )  # noqa: E731
            series.append(
                Series(
                    key=f"r{i}c{cell}",
                    label=label,
                    summary=df,
                    theory=pick(tables.get("theory")),
                    stages=pick(tables.get("stages")),
                    snapshots=tables["snapshots"].get(str(cell), {}),
                    distributions=tables["distributions"].get(str(cell), {}),
                    kind=_source_kind(spec, overrides),
                    overrides=overrides,
                    bounds=pick(tables.get("bounds")),
                )
            )
    return series, runs


def figure_data_url(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _colours(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def metric_figure(metric: str, series: list[Series]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    many = len(series) > MAX_DETAILED_SERIES  # a big sweep: thin lines, no bands, no legend
    for s, colour in zip(series, _colours(len(series))):
        df = s.summary[s.summary["metric"] == metric].sort_values("generation")
        if df.empty:
            continue
        g = df["generation"].to_numpy()
        ax.plot(g, df["mean"], color=colour, lw=0.8 if many else 1.8, label=s.label)
        if not many:
            ax.fill_between(g, df["q05"], df["q95"], color=colour, alpha=0.15, lw=0)
        th = s.theory[s.theory["metric"] == metric].sort_values("generation") if not s.theory.empty else s.theory
        if len(th):
            ax.plot(th["generation"], th["expected"], color=colour, lw=1.2, ls="--", label=f"{s.label} (theory)")
        bd = s.bounds[s.bounds["metric"] == metric].sort_values("generation") if not s.bounds.empty else s.bounds
        if len(bd):
            side, source = bd["side"].iloc[0], bd["source"].iloc[0]
            label = f"{s.label} (limit, {source})" if side == "limit" else f"{s.label} ({side} bound, {source})"
            ax.plot(bd["generation"], bd["bound"], color=colour, lw=1.0, ls=":", label=label)
    ax.set_xlabel("generation")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if not many:
        ax.legend(fontsize=7, loc="best", frameon=False)
    ax.set_title(
        f"{metric}: mean across chains"
        + ("" if many else ", 5–95% band")
        + (
            "; dashed: closed form"
            if any(len(s.theory) and (s.theory["metric"] == metric).any() for s in series)
            else ""
        )
        + (
            "; dotted: a proved bound or a limit"
            if any(len(s.bounds) and (s.bounds["metric"] == metric).any() for s in series)
            else ""
        ),
        fontsize=9,
    )
    return figure_data_url(fig)


def stage_figure(s: Series) -> str | None:
    import matplotlib.pyplot as plt

    df = s.summary[s.summary["metric"].str.startswith("stage_")]
    if df.empty:
        return None
    wide = df.pivot_table(index="generation", columns="metric", values="mean")
    fig, ax = plt.subplots(figsize=(7.2, 2.2))
    g = wide.index.to_numpy()
    ax.stackplot(
        g,
        *[wide[f"stage_{k}"].to_numpy() for k in STAGES],
        labels=STAGES,
        colors=[STAGE_COLOURS[k] for k in STAGES],
        alpha=0.85,
    )
    share = s.summary[s.summary["metric"] == "synthetic_share"].sort_values("generation")
    if len(share):
        ax.plot(share["generation"], share["mean"], color="black", lw=1.5, ls=":", label="synthetic share")
    ax.set_ylim(0, 1)
    ax.set_xlim(g.min(), max(g.max(), g.min() + 1))
    ax.set_xlabel("generation")
    ax.set_ylabel("share of chains")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return figure_data_url(fig)


def snapshot_figure(s: Series) -> str | None:
    """Samples from one chain's model at a few generations, as in the figures of Shumailov et al."""
    import matplotlib.pyplot as plt

    if not s.snapshots:
        return None
    gens = sorted(s.snapshots)
    fig, axes = plt.subplots(1, len(gens), figsize=(2.3 * len(gens), 2.2), squeeze=False)
    first = s.snapshots[gens[0]]
    for ax, g in zip(axes[0], gens):
        x = s.snapshots[g]
        if s.kind == "text":  # Zipf plot of the words generated: the tail (right end) is what collapse eats
            counts = np.sort(np.bincount(x.ravel()[x.ravel() > 0]))[::-1]
            counts = counts[counts > 0]
            ref = np.sort(np.bincount(first.ravel()[first.ravel() > 0]))[::-1]
            ax.loglog(np.arange(1, ref[ref > 0].size + 1), ref[ref > 0], color="#999999", lw=1)
            ax.loglog(np.arange(1, counts.size + 1), counts, color="#3465a4", lw=1.5)
            ax.set_xlabel(f"word rank ({counts.size} distinct)", fontsize=7)
        elif s.kind == "image":
            k = int(min(4, np.sqrt(len(x))))
            tiles = x[: k * k].reshape(k, k, *x.shape[1:]).transpose(0, 2, 1, 3).reshape(k * x.shape[1], -1)
            ax.imshow(tiles, cmap="gray_r", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        elif s.kind in ("categorical", "binary", "count"):
            top = int(max(first.max(initial=0), x.max(initial=0))) + 1
            freq = np.bincount(x.astype(int).ravel(), minlength=top) / max(x.size, 1)
            if top <= MAX_BARS:
                ax.bar(np.arange(top), freq, color="#3465a4")
                ax.set_xlabel("category" if s.kind == "categorical" else "value")
            else:  # a bar per category would be a million rectangles: frequency by rank instead, as for words
                ranked = np.sort(freq[freq > 0])[::-1]
                ax.loglog(np.arange(1, ranked.size + 1), ranked, color="#3465a4", lw=1.5)
                ax.set_xlabel(
                    f"{'category' if s.kind == 'categorical' else 'value'} rank ({ranked.size} seen)", fontsize=7
                )
        elif s.kind == "regression" or x.ndim == 1 or x.shape[1] == 1:
            v = x[:, -1] if x.ndim == 2 else x
            lo, hi = np.percentile(first[:, -1] if first.ndim == 2 else first, [0.5, 99.5])
            pad = 0.25 * (hi - lo + 1e-9)
            ax.hist(v, bins=40, range=(lo - pad, hi + pad), color="#3465a4", density=True)
            ax.set_xlabel("label y" if s.kind == "regression" else "x")
        else:
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color="#3465a4")
            lo, hi = first[:, :2].min(axis=0), first[:, :2].max(axis=0)
            pad = 0.25 * (hi - lo + 1e-9)
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(f"generation {g}", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{first.shape[0]} samples from the model of chain 0", fontsize=8, y=1.04)
    return figure_data_url(fig)


def distribution_figure(s: Series) -> str | None:
    """Histograms of per-record values over generations (Shumailov et al. Fig. 4: perplexity of generated text
    under the generation-0 model: later generations pile up on what generation 0 found likely, with a long tail)."""
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    if not s.distributions:
        return None
    gens = sorted(s.distributions)
    names = sorted({n for d in s.distributions.values() for n in d})
    fig, axes = plt.subplots(1, len(names), figsize=(5.0 * len(names), 2.8), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(gens)))
    for ax, name in zip(axes[0], names):
        values = [s.distributions[g][name] for g in gens if name in s.distributions[g]]
        pooled = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values])
        if pooled.size == 0:
            continue
        bins = np.geomspace(pooled.min(), pooled.max() * 1.0001, 40) if pooled.min() > 0 else 40
        for g, colour in zip(gens, colours):
            v = s.distributions[g].get(name)
            if v is not None:
                ax.hist(
                    v[np.isfinite(v)],
                    bins=bins,
                    density=True,
                    histtype="step",
                    color=colour,
                    lw=1.4,
                    label=f"generation {g}",
                )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(f"{name} of each synthetic record (chain 0)", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.legend(fontsize=7, frameon=False)
        ax.tick_params(labelsize=7)
    return figure_data_url(fig)


def final_table(series: list[Series], metrics: list[str]) -> list[dict]:
    rows = []
    for s in series:
        last = s.summary[s.summary["generation"] == s.summary["generation"].max()].set_index("metric")
        cells = []
        for m in metrics:
            if m in last.index:
                r = last.loc[m]
                cells.append(f"{r['mean']:.4g} ± {r['se']:.2g}" if np.isfinite(r["se"]) else f"{r['mean']:.4g}")
            else:
                cells.append("–")
        rows.append({"label": s.label, "generation": int(s.summary["generation"].max()), "values": cells})
    return rows


def stage_names(series: list[Series]) -> list[str]:
    """The stage table's columns: early, late, total, then any per-family ones (a collapse metric such as
    fixated: the generations to total collapse)."""
    extra = {k: None for s in series if not s.stages.empty for k in s.stages["stage"] if k not in STAGES}
    return [*STAGES[1:], *extra]


def stage_rows(series: list[Series]) -> list[dict]:
    names = stage_names(series)
    rows = []
    for s in series:
        if s.stages.empty:
            continue
        st = s.stages.set_index("stage")
        out = []
        for k in names:
            if k not in st.index:
                out.append("–")
                continue
            r = st.loc[k]
            share = f"{100 * r['reached']:.0f}% of chains"
            if np.isfinite(r["first_median"]):
                hi = f"{r['ci_high']:.0f}" if np.isfinite(r["ci_high"]) else "∞"
                out.append(f"generation {r['first_median']:.0f} [{r['ci_low']:.0f}–{hi}], {share}")
            else:
                out.append(f"not reached by most chains ({share})")
        rows.append({"label": s.label, "values": out})
    return rows


def phase_figure(grid, label: str, values: np.ndarray, front: dict) -> str:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(1.0 + 0.85 * len(grid.x), 0.9 + 0.5 * len(grid.y)))
    never = ~np.isfinite(values)
    finite = values[np.isfinite(values)]
    top = finite.max() if finite.size else 1.0
    shown = np.where(never & ~np.isnan(values), top, values)  # "never" drawn as the best colour
    cmap = "viridis_r" if "generations" not in label else "viridis"
    im = ax.imshow(shown, cmap=cmap, aspect="auto", origin="lower")
    for i in range(len(grid.y)):
        for j in range(len(grid.x)):
            v = values[i, j]
            text = "–" if np.isnan(v) else ("never" if np.isinf(v) else f"{v:.3g}")
            r, g, b, _ = im.cmap(im.norm(shown[i, j])) if not np.isnan(v) else (1, 1, 1, 1)
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # readable text on any cell colour
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    for i, yv in enumerate(grid.y):
        xv = front.get(yv)
        if xv is not None:
            ax.add_patch(Rectangle((grid.x.index(xv) - 0.5, i - 0.5), 1, 1, fill=False, lw=2.2, ec="red"))
    ax.set_xticks(range(len(grid.x)), [str(v) for v in grid.x], fontsize=7)
    ax.set_yticks(range(len(grid.y)), [str(v) for v in grid.y], fontsize=7)
    ax.set_xlabel(grid.x_key, fontsize=8)
    ax.set_ylabel(grid.y_key, fontsize=8)
    ax.set_title(label, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    return figure_data_url(fig)


def phase_sections(run_dirs: list[Path]) -> list[dict]:
    sections = []
    for d in run_dirs:
        tables = read_run(d)
        summary = tables["summary"]
        G = int(summary["generation"].max()) + 1
        for grid in grids(tables["cells"], G):
            front = frontier(grid, summary)
            sentences = []
            for yv, xv in front.items():
                if xv is None:
                    sentences.append(
                        f"{grid.y_key} = {yv}: no real fraction in the sweep keeps half of the chains "
                        f"healthy at each of the {G} generations"
                    )
                else:
                    sentences.append(
                        f"{grid.y_key} = {yv}: from {FRACTION_KEY} = {xv} up, at least half of the "
                        f"chains are healthy at each of the {G} generations"
                    )
            sections.append(
                {
                    "title": grid.title(),
                    "run": str(d),
                    "figures": [
                        phase_figure(grid, label, values, front)
                        for label, values in quantities(grid, summary, tables.get("stages"))
                    ],
                    "frontier": sentences,
                    "rule": f"healthy throughout: at least {HEALTHY_SHARE:.0%} of chains healthy at every generation "
                    "(a chain may dip into a stage and recover; the stage table counts the dip)",
                }
            )
    return sections


def plan_sections(run_dirs: list[Path]) -> list[dict]:
    """The sweep read against the spec's plan (plan.json, planning.read_sweep): per group of cells, the metric's
    mean at the horizon against the swept value with its 95% interval, the need drawn across, the sweep's answer
    ringed and the closed form's answer as a dashed line."""
    import matplotlib.pyplot as plt

    sections = []
    for d in run_dirs:
        path = Path(d) / "plan.json"
        if not path.is_file():
            continue
        planned = json.loads(path.read_text(encoding="utf-8"))
        metric, op, value = planned["need"].split(" ")
        knob = planned["knob"]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        colours = _colours(len(planned["groups"]))
        for colour, group in zip(colours, planned["groups"]):
            rows = group["rows"]
            x = np.array([r["value"] for r in rows], dtype=float)
            y = np.array([r["mean"] for r in rows], dtype=float)
            err = np.array([[r["mean"] - r["low"] for r in rows], [r["high"] - r["mean"] for r in rows]])
            label = ", ".join(f"{k} = {v}" for k, v in group["fixed"].items()) or "mean"
            ax.errorbar(x, y, yerr=err, color=colour, marker="o", ms=3, lw=1.2, capsize=2, label=label)
            found = group["sweep_value"]
            if found is not None:
                at = next(r["mean"] for r in rows if r["value"] == found)
                ax.plot([found], [at], "o", ms=11, mfc="none", mec="red", mew=1.8)
            if group["closed_form"] is not None:
                ax.axvline(group["closed_form"], color=colour, ls="--", lw=1.0)
        ax.axhline(float(value), color="black", lw=0.8, ls=":")
        ax.set_xlabel(knob)
        ax.set_ylabel(f"{metric} at generation {planned['horizon']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
        ax.set_title(
            f"need {planned['need']}: mean across chains, 95% interval; ringed: the sweep's answer; "
            "dashed: the closed form's",
            fontsize=8,
        )
        sections.append(
            {
                "title": f"{planned['need']} at generation {planned['horizon']}, over {knob}",
                "run": str(d),
                "sentences": [g["sentence"] for g in planned["groups"]],
                "figure": figure_data_url(fig),
            }
        )
    return sections


MAX_DETAILED_SERIES = 12
MAX_BARS = 100  # categories drawn as bars; more are drawn by rank


@functools.cache
def templates():
    """The Jinja environment of every page (report/templates/), HTML autoescaped: user text is never markup."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("collapselab.report", "templates"), autoescape=select_autoescape(["html"]))


def build_html(run_dirs: list[Path], title: str | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    series, runs = load_series(run_dirs)
    if not series:
        raise CollapselabError("nothing to report: the runs hold no cells")
    env = templates()
    # labels are users' text: "$\\nope$" is a case name, not TeX for matplotlib to parse
    with matplotlib.rc_context({"text.parse_math": False}):
        return _render(env, series, runs, run_dirs, title)


def _render(env, series, runs, run_dirs, title) -> str:
    metrics = list(
        dict.fromkeys(
            m for s in series for m in s.summary["metric"] if not m.startswith("stage_") and m != "synthetic_share"
        )
    )
    page = env.get_template("report.html").render(
        title=title or (runs[0]["name"] if len(runs) == 1 else "comparison of " + ", ".join(r["name"] for r in runs)),
        runs=runs,
        series=[
            {
                "key": s.key,
                "label": s.label,
                "stages": stage_figure(s),
                "snapshots": snapshot_figure(s),
                "distributions": distribution_figure(s),
            }
            for s in series[:MAX_DETAILED_SERIES]
        ],
        more_series=max(0, len(series) - MAX_DETAILED_SERIES),
        phases=phase_sections(run_dirs),
        plans=plan_sections(run_dirs),
        metrics=[{"name": m, "figure": metric_figure(m, series)} for m in metrics],
        share=metric_figure("synthetic_share", series),
        final_metrics=metrics,
        final=final_table(series, metrics),
        stage_table=stage_rows(series),
        stage_columns=stage_names(series),
        comparison=len(series) > 1,
    )
    return page


def write_report(run_dirs: list[Path | str], out: Path | str | None = None, title: str | None = None) -> Path:
    """Write the report of one or more run directories (default: ``report.html`` in the first one)."""
    dirs = [Path(d) for d in run_dirs]
    out = Path(out) if out is not None else dirs[0] / "report.html"
    html = build_html(dirs, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, html)
    return out
