"""The Python API. The CLI is a thin layer over :func:`run`, :func:`runs` and :func:`load_run`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .executors import run_cells
from .loop import CellResult, Progress
from .spec import Spec, expand, load_spec
from .store import DEFAULT_WORKSPACE, Store, read_run, snapshots_npz, write_run_dir
from .summary import (
    STAGE_COLUMNS,
    SUMMARY_COLUMNS,
    THEORY_COLUMNS,
    stage_rows,
    summary_rows,
    theory_rows,
    to_csv,
    to_frame,
)


@dataclass(eq=False)
class RunResult:
    """A finished run: tidy summary across replicates, closed-form theory, and the raw per-replicate values."""

    spec: Spec
    cells: dict[str, dict]  # cell id -> the dotted-key overrides that define it
    summary: pd.DataFrame  # cell, generation, metric, mean, std, se, median, q05, q95, count
    theory: pd.DataFrame  # cell, generation, metric, expected
    stages: pd.DataFrame  # cell, stage, reached, first_median, ci_low, ci_high
    raw: list[CellResult]  # per replicate values: raw[i].metrics[name] has shape (G, R)
    path: Path | None = None
    run_id: int | None = None
    seconds: float = 0.0

    def table(self, generations: list[int] | None = None, stat: str = "mean") -> pd.DataFrame:
        """A wide table: one row per cell and generation, one column per metric."""
        df = self.summary
        if generations is not None:
            df = df[df["generation"].isin(generations)]
        return df.pivot_table(index=["cell", "generation"], columns="metric", values=stat, sort=False)


def run(
    spec: "str | Path | dict | Spec",
    out: "str | Path | None" = None,
    *,
    workers: int = 1,
    workspace: "str | Path" = DEFAULT_WORKSPACE,
    save: bool = True,
    report: bool = True,
    progress: Progress | None = None,
) -> RunResult:
    """Run a spec (a TOML path, ``"preset:NAME"``, a dict or a :class:`Spec`) and return its results.

    With ``out``, results are written to that directory; otherwise, unless ``save=False``, to a new
    folder of ``workspace`` indexed in its SQLite store, with an HTML report (``report.html``) unless
    ``report=False``. Every cell is validated before anything runs, and nothing is written unless the
    run finishes.

    >>> result = run({"generations": 3, "replicates": 200, "data": {"source": "gaussian", "n": 10},
    ...               "model": {"family": "gaussian"}}, save=False)
    >>> round(float(result.table().loc[("0", 2), "var_ratio"]), 1)  # theory: 0.9 ** 3 = 0.729
    0.7
    """
    spec = load_spec(spec)
    cells = expand(spec)
    started = time.perf_counter()
    results = run_cells(cells, spec.seed, workers=workers, progress=progress)
    seconds = time.perf_counter() - started

    rows, trows, srows = summary_rows(results), theory_rows(results), stage_rows(results)
    overrides = {c.id: c.overrides for c in cells}
    result = RunResult(
        spec,
        overrides,
        to_frame(SUMMARY_COLUMNS, rows),
        to_frame(THEORY_COLUMNS, trows),
        to_frame(STAGE_COLUMNS, srows),
        results,
        seconds=seconds,
    )
    if not save and out is None:
        return result

    files = {
        "summary.csv": to_csv(SUMMARY_COLUMNS, rows),
        "cells.json": json.dumps(overrides, indent=2, sort_keys=True) + "\n",
        "spec.toml": spec.to_toml(),
    }
    if trows:
        files["theory.csv"] = to_csv(THEORY_COLUMNS, trows)
    if srows:
        files["stages.csv"] = to_csv(STAGE_COLUMNS, srows)
    snaps = {r.cell_id: r.snapshots for r in results if r.snapshots}
    if snaps:
        files["snapshots.npz"] = snapshots_npz(snaps)
    if report:
        files["report.html"] = _report_html(files, spec)
    if out is not None:
        result.path = Path(out)
        write_run_dir(result.path, files)
        return result
    store = Store(workspace)
    run_id, path = store.new_run_dir(spec.name)
    try:
        write_run_dir(path, files)
        store.record(run_id, path, spec, overrides, rows, seconds)
    except BaseException:
        store.discard(run_id)
        raise
    result.path, result.run_id = path, run_id
    return result


def _report_html(files: dict, spec: Spec) -> str:
    """The report is built from the run's own files, exactly as ``collapselab report DIR`` builds it."""
    import tempfile

    from .report.build import build_html
    from .store import write_run_dir as _write

    with tempfile.TemporaryDirectory(prefix="collapselab-report-") as tmp:
        _write(Path(tmp), files)
        return build_html([Path(tmp)], title=spec.name).replace(tmp, "(this run)")


def report(run_dirs: "list[str | Path]", out: "str | Path | None" = None, workspace=DEFAULT_WORKSPACE) -> Path:
    """Write the HTML report of one or several runs (ids, names or directories); returns its path."""
    from .report import write_report

    store = Store(workspace)
    return write_report([store.resolve(str(r)) for r in run_dirs], out)


def runs(workspace: "str | Path" = DEFAULT_WORKSPACE) -> pd.DataFrame:
    """The runs indexed in a workspace."""
    return Store(workspace).runs()


def load_run(ref: "str | Path", workspace: "str | Path" = DEFAULT_WORKSPACE) -> dict:
    """A saved run's tables (``summary``, ``cells``, ``theory`` when present) by id, name or directory."""
    return read_run(Store(workspace).resolve(str(ref)))
