"""The Python API: every verb of the command line is one function here (the CLI only parses and prints).

run, resume, runs, load_run, samples, report      experiments and their results
theory, decompose                                 closed forms, and where a collapse comes from
synthesize, audit, ledger, plan_mix               products for real data sets
families, presets, prepare_data                   what is installed
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import ValidationError

from . import datasets
from .audit import audit
from .audit.ledger import Ledger, plan_mix
from .decompose import Decomposition
from .decompose import decompose as _decompose
from .engine.checkpoints import checkpoint_interval
from .engine.loop import Progress, run_cell
from .engine.plan import CellPlan, RunPlan, expand, keeps_replicates
from .engine.state import CellResult
from .errors import (
    CollapselabError,
    CollapseWarning,
    InputError,
    RunFailed,
    RunInterrupted,
)
from .executors import check_execution, run_cells
from .planning import Answer, Requirement, plan, read_sweep
from .plugins import FAMILIES
from .report import write_report
from .report.decompose import write as write_decomposition
from .rng import data_generator
from .spec import Spec, SynthesisSpec, format_validation_error, list_presets, load_spec, read_toml
from .spec import allow_plugins as allow_plugins_in
from .store import (
    CHECKPOINTS,
    DEFAULT_WORKSPACE,
    Store,
    clear_checkpoints,
    distributions_npz,
    finish_run_dir,
    is_finished,
    read_run,
    remove_run_files,
    snapshots_npz,
    start_run_dir,
    write_cells,
    write_replicates,
)
from .summary import (
    BOUND_COLUMNS,
    STAGE_COLUMNS,
    SUMMARY_COLUMNS,
    THEORY_COLUMNS,
    bound_rows,
    stage_rows,
    summary_rows,
    theory_rows,
    to_csv,
    to_frame,
)
from .synthesize import synthesize_file
from .theory import for_cell


@dataclass(eq=False)
class RunResult:
    """A finished run: tidy summary across replicates, closed-form theory, and the raw per-replicate values."""

    spec: Spec
    cells: dict[str, dict]  # cell id -> the dotted-key overrides that define it
    summary: pd.DataFrame  # cell, generation, metric, mean, std, se, median, q05, q95, count
    theory: pd.DataFrame  # cell, generation, metric, expected
    stages: pd.DataFrame  # cell, stage, reached, first_median, ci_low, ci_high
    # per cell: raw[i].stats[name][stat] (G,), and, where the cell kept them (spec keep_replicates), the per-chain
    # values raw[i].metrics[name] (G, R), memory-mapped from replicates/ in the run folder when asked for
    raw: list[CellResult]
    path: Path | None = None
    run_id: int | None = None
    seconds: float = 0.0
    report_error: str | None = None  # why report.html is missing, when writing it failed
    bounds: pd.DataFrame | None = None  # cell, generation, metric, side, bound, source (proved bounds on a mean)
    # the sweep read against the spec's plan (planning.read_sweep; plan.json in the run folder), when it has one
    planned: dict | None = None

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


def prepare(
    spec: str | Path | dict | Spec,
    executor: str | None = None,
    scheduler: str | None = None,
    *,
    allow_plugins: bool = False,
) -> RunPlan:
    """A spec loaded, expanded into its cells and checked together with its execution settings: every error a
    run can find before it starts. :func:`run` takes the plan in place of the spec (nothing is planned twice)."""
    with allow_plugins_in(allow_plugins):
        spec = load_spec(spec)
        cells = expand(spec)
    check_execution(executor, scheduler)
    return RunPlan(spec, cells)


ESTIMATE_COLUMNS = ("cell", "replicates", "blocks", "generations", "keeps_replicates", "memory_bytes", "seconds")


def estimate(
    spec: str | Path | dict | Spec | RunPlan, *, calibrate: bool = True, allow_plugins: bool = False
) -> pd.DataFrame:
    """Per cell, before running it: its chains, replicate blocks and generations, whether it keeps every chain's
    values, a lower bound of its peak memory (the one validation refuses a cell by), and, with ``calibrate``, its
    time in one process, extrapolated from the cell itself run here at up to 1,000 chains for 1 and 3 generations
    (a rough guide: per-chain costs are taken as linear, and a growing training set as growing linearly).
    ``collapselab run SPEC --dry-run`` prints it. Nothing is written."""
    with allow_plugins_in(allow_plugins):
        planned = spec if isinstance(spec, RunPlan) else prepare(spec)
        rows = []
        for cell in planned.cells:
            s = cell.spec
            blocks = -(-s.replicates // s.replicate_block)
            seconds = _calibrated_seconds(cell) if calibrate else float("nan")
            rows.append(
                (cell.id, s.replicates, blocks, s.generations, keeps_replicates(s), cell.estimated_bytes(), seconds)
            )
    return pd.DataFrame(rows, columns=list(ESTIMATE_COLUMNS))


def _calibrated_seconds(cell: CellPlan) -> float:
    s = cell.spec
    chains = min(s.replicates, 1000)

    def timed(generations: int) -> float:
        raw = s.model_dump(exclude_none=True)
        raw.update(replicates=chains, generations=generations, stop=None, keep_replicates=False)
        small = expand(load_spec(raw))[0]
        started = time.perf_counter()
        run_cell(small, s.seed)
        return time.perf_counter() - started

    if s.generations == 1:
        timed(1)  # imports and first calls: not the cell's own cost
        return timed(1) * s.replicates / chains
    timed(1)
    one, three = timed(1), timed(3)
    per_generation = max(three - one, 0.0) / 2
    setup = max(one - per_generation, 0.0)
    growth = 1.0
    if cell.policy.grows:  # generations 1 and 2 trained on n + m and n + 2m records; the run on n + m g / 2 on average
        n, m = s.data.n, s.samples
        growth = (n + m * s.generations / 2) / (n + 1.5 * m)
    return (setup + per_generation * s.generations * growth) * s.replicates / chains


def unfinished(ref: str | Path, workspace: str | Path = DEFAULT_WORKSPACE) -> Path:
    """The folder of a run that has not finished (an id, a name or a directory), for :func:`resume`."""
    return Store(workspace).resolve(str(ref), finished=False)


cache_dir = datasets.cache_dir


def run(
    spec: str | Path | dict | Spec | RunPlan,
    out: str | Path | None = None,
    *,
    executor: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    workspace: str | Path = DEFAULT_WORKSPACE,
    save: bool = True,
    report: bool = True,
    progress: Progress | None = None,
    on_start=None,
    allow_plugins: bool = False,
) -> RunResult:
    """Run a spec (a TOML path, ``"preset:NAME"``, a dict or a :class:`Spec`) and return its results.

    With ``out``, results are written to that directory; otherwise, unless ``save=False``, to a new
    folder of ``workspace`` indexed in its SQLite store, with an HTML report (``report.html``) unless
    ``report=False``. Every cell is validated before anything runs or is written. A saved run checkpoints its
    cells as it goes; if it is interrupted, :func:`resume` finishes it with the same numbers. A run that fails
    after it started leaves nothing behind (its folder and index row are removed) and raises :class:`RunFailed`.
    ``executor`` is ``inline``, ``processes`` (``workers`` processes) or ``dask`` (a LocalCluster of
    ``workers`` processes, or the cluster at ``scheduler``); results do not depend on it.
    ``allow_plugins``: let the spec import its ``plugins`` modules and name any verifier function (a spec
    that imports code runs it). ``on_start(path, run_id)`` is called once the run's folder exists.

    >>> result = run({"generations": 3, "replicates": 4000, "data": {"source": "gaussian", "n": 10},
    ...               "model": {"family": "gaussian"}}, save=False)
    >>> round(float(result.table().loc[("0", 2), "var_ratio"]), 1)  # theory: 0.9 ** 3 = 0.729
    0.7
    """
    with allow_plugins_in(allow_plugins):
        planned = spec if isinstance(spec, RunPlan) else prepare(spec, executor, scheduler)
        spec, cells = planned.spec, planned.cells
        check_execution(executor, scheduler)
        execution = dict(executor=executor, workers=workers, scheduler=scheduler, progress=progress)
        if not save and out is None:
            started = time.perf_counter()
            results = _run_or_fail(cells, spec.seed, execution, None)
            return _result(spec, cells, results, _Tables.of(results), time.perf_counter() - started)
        store, run_id = None, None
        checkpoint_interval()  # a bad COLLAPSELAB_CHECKPOINT_SECONDS is refused before anything is written
        if out is not None:
            path = Path(out)
            created = not path.exists()
        else:
            store = Store(workspace)
            run_id, path = store.new_run_dir(spec.name)
            created = True
        try:
            start_run_dir(path, spec, {c.id: c.overrides for c in cells})
            if store is not None and run_id is not None:
                store.record_start(run_id, path, spec)
        except BaseException:
            _discard(path, created, store, run_id)
            raise
        if on_start is not None:
            on_start(path, run_id)
        try:
            return _execute(spec, cells, path, store, run_id, report, execution)
        except (KeyboardInterrupt, SystemExit, RunInterrupted):
            raise  # an interrupted run keeps its checkpoints: resume finishes it
        except BaseException:
            _discard(path, created, store, run_id)
            raise


def _discard(path: Path, created: bool, store, run_id) -> None:
    remove_run_files(path, created)
    if store is not None and run_id is not None:
        store.forget(run_id)


def resume(
    ref: str | Path,
    *,
    executor: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    workspace: str | Path = DEFAULT_WORKSPACE,
    report: bool = True,
    progress: Progress | None = None,
    allow_plugins: bool = False,
) -> RunResult:
    """Finish an interrupted run (an id, a name or its directory) from its checkpoints.

    Every cell continues from its last complete generation (a cell whose latest checkpoint is corrupt
    falls back to the one before, with a warning); the results are byte-identical to an uninterrupted run.
    """
    with allow_plugins_in(allow_plugins):
        store = Store(workspace)
        path = store.resolve(str(ref), finished=False)
        if is_finished(path):
            raise InputError(f"{path}: this run already finished; nothing to resume")
        spec = load_spec(path / "spec.toml")
        cells = expand(spec)
        check_execution(executor, scheduler)
        write_cells(path, {c.id: c.overrides for c in cells})  # rewritten: resume needs no cells.json
        run_id = store.find(path)
        execution = dict(executor=executor, workers=workers, scheduler=scheduler, progress=progress)
        return _execute(spec, cells, path, store if run_id is not None else None, run_id, report, execution)


def _run_or_fail(cells, seed: int, execution: dict, checkpoint_root: Path | None):
    """The cells' results; an error that is not collapselab's own becomes one :class:`RunFailed` line."""
    try:
        return run_cells(cells, seed, checkpoint_root=checkpoint_root, **execution)
    except CollapselabError:
        raise
    except MemoryError:
        raise RunFailed("the run ran out of memory; lower replicates, generations or data.n") from None
    except Exception as e:  # noqa: BLE001 - the message names it; COLLAPSELAB_DEBUG=1 keeps the traceback
        if os.environ.get("COLLAPSELAB_DEBUG"):
            raise
        raise RunFailed(f"the run failed: {type(e).__name__}: {e} (COLLAPSELAB_DEBUG=1 shows the traceback)") from e


def _execute(spec, cells, path: Path, store, run_id, report: bool, execution: dict) -> RunResult:
    started = time.perf_counter()
    # absolute: a Dask worker elsewhere (another working directory) must write into this run's folder
    results = _run_or_fail(cells, spec.seed, execution, (path / CHECKPOINTS).resolve())
    tables = _Tables.of(results)
    result = _result(spec, cells, results, tables, time.perf_counter() - started)
    try:
        for cell, res in zip(cells, results):  # asked for: on disk, and read back lazily from there
            if res.metrics and cell.spec.keep_replicates is True:
                res.metrics = write_replicates(path, res.cell_id, res.metrics)
        files = _files(results, tables)
        if result.planned is not None:
            files["plan.json"] = json.dumps(result.planned, indent=1) + "\n"
        finish_run_dir(path, files)
    except OSError as e:
        raise InputError(f"{path}: cannot write the results there ({e.strerror or e})") from None
    if store is not None:
        store.record(run_id, path, spec, result.cells, tables.summary, result.seconds)
    clear_checkpoints(path)
    result.path, result.run_id = path, run_id
    if report:  # the results are complete and kept whatever happens to their report
        try:
            write_report([path])
        except Exception as e:  # noqa: BLE001 - said as a warning: `collapselab report` can retry it
            note = f"the HTML report could not be written ({type(e).__name__}: {e}); the results are complete"
            warnings.warn(note, CollapseWarning, stacklevel=2)
            result.report_error = note
    return result


@dataclass(frozen=True)
class _Tables:
    """The rows of a run's tables, computed once and shared by the result, the files and the store."""

    summary: list[tuple]
    theory: list[tuple]
    stages: list[tuple]
    bounds: list[tuple]

    @classmethod
    def of(cls, results: list[CellResult]) -> _Tables:
        return cls(summary_rows(results), theory_rows(results), stage_rows(results), bound_rows(results))


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
        bounds=to_frame(BOUND_COLUMNS, tables.bounds),
        planned=read_sweep(spec, cells, results) if spec.plan is not None else None,
    )


def _files(results: list[CellResult], tables: _Tables) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {"summary.csv": to_csv(SUMMARY_COLUMNS, tables.summary)}
    if tables.theory:
        files["theory.csv"] = to_csv(THEORY_COLUMNS, tables.theory)
    if tables.stages:
        files["stages.csv"] = to_csv(STAGE_COLUMNS, tables.stages)
    if tables.bounds:
        files["bounds.csv"] = to_csv(BOUND_COLUMNS, tables.bounds)
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


def report(run_dirs: list[str | Path], out: str | Path | None = None, workspace=DEFAULT_WORKSPACE) -> Path:
    """Write the HTML report of one or several runs (ids, names or directories); returns its path."""
    store = Store(workspace)
    return write_report([store.resolve(str(r)) for r in run_dirs], out)


def runs(workspace: str | Path = DEFAULT_WORKSPACE) -> pd.DataFrame:
    """The runs indexed in a workspace."""
    return Store(workspace).runs()


def load_run(ref: str | Path, workspace: str | Path = DEFAULT_WORKSPACE) -> dict:
    """A saved run's tables (``summary``, ``cells``, ``theory`` when present) by id, name or directory."""
    return read_run(Store(workspace).resolve(str(ref)))


def samples(
    ref: str | Path,
    cell: str | None = None,
    generation: int | None = None,
    limit: int = 10,
    workspace: str | Path = DEFAULT_WORKSPACE,
) -> dict:
    """Records sampled by chain 0's model in a saved run (the report's snapshots: the first, the last and three
    generations between), decoded where the source has a vocabulary: ``{"cell", "generation", "generations"
    (all with samples), "kind", "records"}``. ``cell`` defaults to the first, ``generation`` to the last."""
    import numpy as np

    path = Store(workspace).resolve(str(ref))
    tables = read_run(path)
    snaps = tables["snapshots"]
    if not snaps:
        raise InputError(f"{path}: this run saved no samples (snapshots.npz)")
    cells = list(snaps)
    cell = cells[0] if cell is None else str(cell)
    if cell not in snaps:
        raise InputError(f"--cell {cell!r}: no samples of that cell; allowed: {', '.join(cells)}")
    gens = sorted(snaps[cell])
    generation = gens[-1] if generation is None else generation
    if generation not in snaps[cell]:
        raise InputError(f"--generation {generation}: samples were kept at generations {', '.join(map(str, gens))}")
    if limit < 1:
        raise InputError(f"--limit {limit}: must be at least 1")
    records = snaps[cell][generation][:limit]
    spec = load_spec(path / "spec.toml")
    kind, decoded = _decode_records(spec, cell, records)
    return {
        "cell": cell,
        "generation": generation,
        "generations": gens,
        "kind": kind,
        "records": decoded if decoded is not None else np.asarray(records).tolist(),
    }


def _decode_records(spec: Spec, cell: str, records):
    """(record kind, texts or None): text records back to words through their source's vocabulary."""
    plan = {c.id: c for c in expand(spec)}.get(cell)
    if plan is None:
        return "unknown", None
    source = plan.source
    if source.kind != "text":
        return source.kind, None
    truth = source.truth(plan.spec.data.n, data_generator(plan.spec, spec.seed, plan.index))
    return "text", [truth.vocab.decode(r) for r in records]


# --- analysis ---------------------------------------------------------------------------------------------------


def theory(spec, *, allow_plugins: bool = False) -> list[tuple[CellPlan, dict]]:
    """The closed-form expectations the literature gives for each cell of a spec (no simulation): a list of
    (cell plan, {metric: (G,) expected values}); the dict is empty where no closed form is known."""
    with allow_plugins_in(allow_plugins):
        spec = load_spec(spec)
        cells = expand(spec)
    return [(c, for_cell(c, spec.seed)) for c in cells]


def decompose(
    spec,
    converged: dict | None = None,
    *,
    out: str | Path | None = None,
    title: str | None = None,
    progress=None,
    allow_plugins: bool = False,
) -> tuple[Decomposition, dict[str, str]]:
    """Split a single-cell spec's distance to the truth into its error sources (see collapselab.decompose);
    with ``out``, also write decomposition.csv and decomposition.html there. Returns (decomposition, files)."""
    with allow_plugins_in(allow_plugins):
        dec = _decompose(spec, converged, progress=progress)
    files = write_decomposition(dec, out, title or "decomposition") if out is not None else {}
    return dec, files


# --- products -----------------------------------------------------------------------------------------------------


def synthesize(
    data: str | Path,
    rows: int,
    out: str | Path,
    *,
    clusters: int | Literal["bic"] = "bic",
    max_clusters: int = 8,
    floor: float = 0.01,
    seed: int = 0,
    report: str | Path | None = None,
) -> dict:
    """Cluster-mirrored synthetic rows of a real table written to ``out`` (.csv or .parquet), and its fidelity
    report (JSON, default: OUT with .fidelity.json); returns the report as a dict."""
    try:
        spec = SynthesisSpec(kind="cluster-mirrored", clusters=clusters, max_clusters=max_clusters, floor=floor)
    except ValidationError as e:
        raise InputError(format_validation_error(e, "synthesis")) from None
    return synthesize_file(data, rows, out, spec, seed, report)


def ledger(db: str | Path) -> Ledger:
    """The record-level provenance ledger in SQLite file ``db`` (a context manager)."""
    return Ledger(db)


# --- what is installed ------------------------------------------------------------------------------------------


def families() -> list[tuple[str, type]]:
    """The registered model families (built in, from plugins and entry points), by name."""
    return sorted(FAMILIES.items())


def presets() -> list[dict[str, str]]:
    """The specs that ship with collapselab: {"preset": "preset:NAME", "name": ..., "description": ...}."""
    out = []
    for p in list_presets():
        raw = read_toml(f"preset:{p}")
        out.append({"preset": f"preset:{p}", "name": raw.get("name", ""), "description": raw.get("description", "")})
    return out


def prepare_data(prepare: bool = True) -> dict[str, str]:
    """Convert the real data sets and packaged models once into the cache folder (``prepare``), or only say
    what is installed; returns {data set: status}."""
    return datasets.prepare(log=lambda *_: None) if prepare else datasets.status()


__all__ = [
    "Answer",
    "Decomposition",
    "Ledger",
    "Requirement",
    "RunPlan",
    "RunResult",
    "audit",
    "cache_dir",
    "estimate",
    "plan",
    "prepare",
    "unfinished",
    "decompose",
    "families",
    "ledger",
    "load_run",
    "plan_mix",
    "prepare_data",
    "presets",
    "report",
    "resume",
    "run",
    "runs",
    "samples",
    "synthesize",
    "theory",
]
