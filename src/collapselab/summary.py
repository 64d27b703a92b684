"""Statistics across replicate chains, and the tidy tables built from them.

``summary.csv`` rows are ``cell,generation,metric,mean,std,se,median,q05,q95,count``: one per cell,
generation and metric. NaN values (a metric undefined for some replicate) are left out of the
statistics and counted out of ``count``. Floats are written with ``repr`` (shortest round-trip form),
so the same numbers always give the same bytes.
"""

from __future__ import annotations

import csv
import io

import pandas as pd

from .engine.state import CellResult
from .metrics.stages import median_with_ci

SUMMARY_COLUMNS = ("cell", "generation", "metric", "mean", "std", "se", "median", "q05", "q95", "count")
THEORY_COLUMNS = ("cell", "generation", "metric", "expected")
STAGE_COLUMNS = ("cell", "stage", "reached", "first_median", "ci_low", "ci_high")
BOUND_COLUMNS = ("cell", "generation", "metric", "side", "bound", "source")


def summary_rows(results: list[CellResult]) -> list[tuple]:
    rows = []
    for res in results:
        stats = res.stats
        G = len(next(iter(stats.values()))["mean"]) if stats else 0
        for g in range(G):
            for name, s in stats.items():
                rows.append((res.cell_id, g, name, *(float(s[k][g]) for k in SUMMARY_COLUMNS[3:9]), int(s["count"][g])))
    return rows


def theory_rows(results: list[CellResult]) -> list[tuple]:
    return [
        (res.cell_id, g, name, float(v))
        for res in results
        for name, values in res.theory.items()
        for g, v in enumerate(values)
    ]


def bound_rows(results: list[CellResult]) -> list[tuple]:
    """Per cell, generation and metric: a proved bound on the metric's mean across chains (side: lower or upper)."""
    return [
        (res.cell_id, g, name, b.side, float(v), b.source)
        for res in results
        for name, b in res.bounds.items()
        for g, v in enumerate(b.values)
    ]


def stage_rows(results: list[CellResult]) -> list[tuple]:
    """Per cell and stage: the share of chains that reached it, and the median first generation with a
    95% CI across chains (inf: fewer than half the chains reached it within the run)."""
    return [(res.cell_id, stage, *median_with_ci(first)) for res in results for stage, first in res.first_stage.items()]


def to_csv(columns, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows([[repr(v) if isinstance(v, float) else v for v in row] for row in rows])
    return buf.getvalue()


def to_frame(columns, rows) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=list(columns))
    if "cell" in df:
        df["cell"] = df["cell"].astype(str)
    return df
