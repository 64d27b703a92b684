"""The page of a decomposition (``collapselab decompose``): its parts over generations, as CSV and HTML."""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from ..decompose import Decomposition
from ..io import write_atomic
from .build import figure_data_url, templates


def figure(dec: Decomposition, title: str = "") -> str:
    """The parts over generations with their intervals, as an inline PNG data URL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "total": "black",
        "expressivity": "#c4a000",
        "statistical": "#3465a4",
        "approximation": "#cc0000",
        "well_specified": "#888888",
    }
    with matplotlib.rc_context({"text.parse_math": False}):  # the title is a user's file name, not TeX
        fig, ax = plt.subplots(figsize=(7, 3.6))
        _draw(ax, dec, colours, title)
        return figure_data_url(fig)


def _draw(ax, dec: Decomposition, colours: dict, title: str) -> None:
    for part, df in dec.table.groupby("part", sort=False):
        style = "--" if part == "well_specified" else "-"
        label = "statistical alone (well-specified family)" if part == "well_specified" else part
        ax.plot(df["generation"], df["mean"], style, color=colours[part], lw=1.8, label=label)
        ax.fill_between(df["generation"], df["ci_low"], df["ci_high"], color=colours[part], alpha=0.15, lw=0)
    ax.set_xlabel("generation")
    ax.set_ylabel(f"distance to the truth ({dec.metric})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left")


def write(dec: Decomposition, out, title: str) -> dict[str, str]:
    """decomposition.csv and decomposition.html (one self-contained page) in folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "decomposition.csv"
    write_atomic(csv, dec.table.to_csv(index=False, float_format=lambda v: repr(float(v))).encode())
    wide = dec.table.pivot(index="generation", columns="part", values="mean")
    page = (
        templates()
        .get_template("decomposition.html")
        .render(
            title=title,
            metric=dec.metric,
            figure=figure(dec, title),
            variants=[(k, str(v) or "the spec as given") for k, v in dec.variants.items()],
            table=Markup(wide.to_html(float_format="%.4g")),  # pandas escapes the cells
        )
    )
    page_path = out / "decomposition.html"
    write_atomic(page_path, page.encode())
    return {"csv": str(csv), "html": str(page_path)}
