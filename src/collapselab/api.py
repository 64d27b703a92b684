"""The Python API. The CLI is a thin layer over :func:`run`, :func:`runs` and :func:`load_run`."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import CollapseWarning, SpecError
from .executors import run_cells
from .loop import CellResult, Progress
from .spec import Spec, expand, load_spec
from .store import (
    CHECKPOINTS,
    DEFAULT_WORKSPACE,
    Store,
    clear_checkpoints,
    finish_run_dir,
    is_finished,
    read_run,
    distributions_npz,
    snapshots_npz,
    start_run_dir,
)
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

    @property
    def notes(self) -> list[tuple[str, str]]:
        """(cell id, warning) pairs the run raised, e.g. a curation judge measured no better than chance."""
        return [(r.cell_id, n) for r in self.raw for n in r.notes]

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
    executor: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    workspace: "str | Path" = DEFAULT_WORKSPACE,
    save: bool = True,
    report: bool = True,
    progress: Progress | None = None,
    on_start=None,
) -> RunResult:
    """Run a spec (a TOML path, ``"preset:NAME"``, a dict or a :class:`Spec`) and return its results.

    With ``out``, results are written to that directory; otherwise, unless ``save=False``, to a new
    folder of ``workspace`` indexed in its SQLite store, with an HTML report (``report.html``) unless
    ``report=False``. Every cell is validated before anything runs. A saved run checkpoints every cell
    after every generation; if it is interrupted, :func:`resume` finishes it with the same numbers.
    ``executor`` is ``inline``, ``processes`` (``workers`` processes) or ``dask`` (a LocalCluster of
    ``workers`` processes, or the cluster at ``scheduler``); results do not depend on it.
    ``on_start(path, run_id)`` is called once the run's folder exists.

    >>> result = run({"generations": 3, "replicates": 4000, "data": {"source": "gaussian", "n": 10},
    ...               "model": {"family": "gaussian"}}, save=False)
    >>> round(float(result.table().loc[("0", 2), "var_ratio"]), 1)  # theory: 0.9 ** 3 = 0.729
    0.7
    """
    spec = load_spec(spec)
    cells = expand(spec)
    execution = dict(executor=executor, workers=workers, scheduler=scheduler, progress=progress)
    if not save and out is None:
        started = time.perf_counter()
        results = run_cells(cells, spec.seed, **execution)
        return _result(spec, cells, results, _Tables.of(results), time.perf_counter() - started)
    store, run_id = None, None
    if out is not None:
        path = Path(out)
    else:
        store = Store(workspace)
        run_id, path = store.new_run_dir(spec.name)
    start_run_dir(path, spec, {c.id: c.overrides for c in cells})
    if store is not None:
        store.record_start(run_id, path, spec)
    if on_start is not None:
        on_start(path, run_id)
    return _execute(spec, cells, path, store, run_id, report, execution)


def resume(
    ref: "str | Path",
    *,
    executor: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    workspace: "str | Path" = DEFAULT_WORKSPACE,
    report: bool = True,
    progress: Progress | None = None,
) -> RunResult:
    """Finish an interrupted run (an id, a name or its directory) from its checkpoints.

    Every cell continues from its last complete generation (a cell whose latest checkpoint is corrupt
    falls back to the one before, with a warning); the results are byte-identical to an uninterrupted run.
    """
    store = Store(workspace)
    path = store.resolve(str(ref), finished=False)
    if is_finished(path):
        raise SpecError(f"{path}: this run already finished; nothing to resume")
    spec = load_spec(path / "spec.toml")
    cells = expand(spec)
    run_id = store.find(path)
    execution = dict(executor=executor, workers=workers, scheduler=scheduler, progress=progress)
    return _execute(spec, cells, path, store if run_id is not None else None, run_id, report, execution)


def _execute(spec, cells, path: Path, store, run_id, report: bool, execution: dict) -> RunResult:
    started = time.perf_counter()
    results = run_cells(cells, spec.seed, checkpoint_root=path / CHECKPOINTS, **execution)
    tables = _Tables.of(results)
    result = _result(spec, cells, results, tables, time.perf_counter() - started)
    finish_run_dir(path, _files(results, tables))
    if report:
        from .report import write_report

        write_report([path])
    if store is not None:
        store.record(run_id, path, spec, result.cells, tables.summary, result.seconds)
    clear_checkpoints(path)
    result.path, result.run_id = path, run_id
    return result


@dataclass(frozen=True)
class _Tables:
    """The rows of a run's tables, computed once and shared by the result, the files and the store."""

    summary: list[tuple]
    theory: list[tuple]
    stages: list[tuple]

    @classmethod
    def of(cls, results: list[CellResult]) -> "_Tables":
        return cls(summary_rows(results), theory_rows(results), stage_rows(results))


def _result(spec: Spec, cells, results: list[CellResult], tables: _Tables, seconds: float) -> RunResult:
    for res in results:
        for note in res.notes:
            warnings.warn(f"cell {res.cell_id}: {note}", CollapseWarning, stacklevel=3)
    return RunResult(
        spec,
        {c.id: c.overrides for c in cells},
        to_frame(SUMMARY_COLUMNS, tables.summary),
        to_frame(THEORY_COLUMNS, tables.theory),
        to_frame(STAGE_COLUMNS, tables.stages),
        results,
        seconds=seconds,
    )


def _files(results: list[CellResult], tables: _Tables) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {"summary.csv": to_csv(SUMMARY_COLUMNS, tables.summary)}
    if tables.theory:
        files["theory.csv"] = to_csv(THEORY_COLUMNS, tables.theory)
    if tables.stages:
        files["stages.csv"] = to_csv(STAGE_COLUMNS, tables.stages)
    snaps = {r.cell_id: r.snapshots for r in results if r.snapshots}
    if snaps:
        files["snapshots.npz"] = snapshots_npz(snaps)
    notes = [f"cell {r.cell_id}: {n}" for r in results for n in r.notes]
    if notes:
        files["notes.txt"] = "\n".join(notes) + "\n"
    dists = {r.cell_id: r.distributions for r in results if r.distributions}
    if dists:
        files["distributions.npz"] = distributions_npz(dists)
    return files


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
