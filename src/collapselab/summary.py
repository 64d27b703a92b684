"""Statistics across replicate chains, and the tidy tables built from them.

``summary.csv`` rows are ``cell,generation,metric,mean,std,se,median,q05,q95,count``: one per cell,
generation and metric. NaN values (a metric undefined for some replicate) are left out of the
statistics and counted out of ``count``. Floats are written with ``repr`` (shortest round-trip form),
so the same numbers always give the same bytes.
"""

from __future__ import annotations

import csv
import io
import os
import warnings

import numpy as np
import pandas as pd

from .engine.state import CellResult
from .metrics.stages import generation_blocks, median_with_ci

SUMMARY_COLUMNS = ("cell", "generation", "metric", "mean", "std", "se", "median", "q05", "q95", "count")
THEORY_COLUMNS = ("cell", "generation", "metric", "expected")
STAGE_COLUMNS = ("cell", "stage", "reached", "first_median", "ci_low", "ci_high")
BOUND_COLUMNS = ("cell", "generation", "metric", "side", "bound", "source")


def replicate_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics along the last (replicate) axis of ``values``, ignoring NaN."""
    count = np.sum(~np.isnan(values), axis=-1)
    complete = bool(np.all(count == values.shape[-1]))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, which is the answer
        if complete:  # the same numbers as the nan-functions, without their NaN handling
            mean = values.mean(axis=-1)
            std = values.std(axis=-1, ddof=1) if values.shape[-1] > 1 else np.full(values.shape[:-1], np.nan)
            q05, median, q95 = np.quantile(values, [0.05, 0.5, 0.95], axis=-1)
        else:
            mean = np.nanmean(values, axis=-1)
            std = np.where(count > 1, np.nanstd(values, axis=-1, ddof=1), np.nan)
            q05, median, q95 = np.nanquantile(values, [0.05, 0.5, 0.95], axis=-1)
    return {
        "mean": mean,
        "std": std,
        "se": std / np.sqrt(count),
        "median": median,
        "q05": q05,
        "q95": q95,
        "count": count,
    }


def summary_rows(results: list[CellResult]) -> list[tuple]:
    rows = []
    for res in results:
        stats = _all_stats(res.metrics)
        G = next(iter(res.metrics.values())).shape[0]
        for g in range(G):
            for name, s in stats.items():
                rows.append((res.cell_id, g, name, *(float(s[k][g]) for k in SUMMARY_COLUMNS[3:9]), int(s["count"][g])))
    return rows


def _all_stats(metrics: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """replicate_stats of every metric, on blocks of generations (metrics.stages.generation_blocks); large runs
    use threads (NumPy's sorts release the GIL)."""
    blocks = [(name, rows) for name, v in metrics.items() for rows in generation_blocks(*v.shape)]

    def block_stats(job):
        name, rows = job
        return replicate_stats(metrics[name][rows])

    if sum(v.size for v in metrics.values()) < 1_000_000:
        parts = list(map(block_stats, blocks))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            parts = list(pool.map(block_stats, blocks))
    out: dict[str, dict[str, list]] = {name: {} for name in metrics}
    for (name, _), stats in zip(blocks, parts):
        for key, value in stats.items():
            out[name].setdefault(key, []).append(value)
    return {name: {k: np.concatenate(v) for k, v in stats.items()} for name, stats in out.items()}


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
