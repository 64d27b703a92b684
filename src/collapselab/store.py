"""Where results live: a run directory (the output contract) and an embedded SQLite index of runs.

A run directory holds ``summary.csv``, ``cells.json``, ``spec.toml`` and, where closed forms exist,
``theory.csv``. Files are written to temporary names and renamed into place, so a run that fails
leaves no half-written file behind.

Runs made without ``--out`` go to a workspace (``./collapselab-runs`` by default) and are indexed in
``store.db`` there: an SQLite database in WAL mode, so concurrent writers do not block readers.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import CollapselabError, InputError

if TYPE_CHECKING:
    import pandas as pd

from .io import atomic_file, connect_sqlite, is_regular_file, remove_stale_tmp, sqlite_error, write_atomic

DEFAULT_WORKSPACE = Path("collapselab-runs")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    path TEXT NOT NULL,
    cells INTEGER NOT NULL,
    generations INTEGER NOT NULL,
    replicates INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    seconds REAL NOT NULL,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    cell TEXT NOT NULL,
    overrides TEXT NOT NULL,
    PRIMARY KEY (run_id, cell)
);
CREATE TABLE IF NOT EXISTS summary (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    cell TEXT NOT NULL,
    generation INTEGER NOT NULL,
    metric TEXT NOT NULL,
    mean REAL, std REAL, se REAL, median REAL, q05 REAL, q95 REAL, count INTEGER,
    PRIMARY KEY (run_id, cell, generation, metric)
);
"""


OPTIONAL_FILES = (
    "theory.csv",
    "stages.csv",
    "bounds.csv",
    "snapshots.npz",
    "distributions.npz",
    "report.html",
    "notes.txt",
)
CHECKPOINTS = ".checkpoints"  # per-cell checkpoints of an unfinished run, removed when it finishes


def start_run_dir(out: Path, spec, overrides: dict) -> None:
    """Open a run directory: the spec and cells first (what resume needs), no result of an earlier run."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("summary.csv", *OPTIONAL_FILES):
            (out / name).unlink(missing_ok=True)
        clear_checkpoints(out)
        remove_stale_tmp(out)
        write_atomic(out / "spec.toml", spec.to_toml())
        write_cells(out, overrides)
    except OSError as e:
        raise InputError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def write_cells(out: Path, overrides: dict) -> None:
    write_atomic(out / "cells.json", json.dumps(overrides, indent=2, sort_keys=True) + "\n")


def remove_run_files(out: Path, created: bool) -> None:
    """Undo :func:`start_run_dir` after a run failed: nothing half-written, nothing that looks resumable."""
    import shutil

    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for name in ("spec.toml", "cells.json", "summary.csv", *OPTIONAL_FILES):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / REPLICATES, ignore_errors=True)
    clear_checkpoints(out)
    remove_stale_tmp(out)


def finish_run_dir(out: Path, files: dict[str, str | bytes]) -> None:
    """Write a finished run's results; summary.csv goes last, so its presence means the rest is there."""
    for name, content in sorted(files.items(), key=lambda kv: kv[0] == "summary.csv"):
        write_atomic(out / name, content)
    remove_stale_tmp(out)


REPLICATES = "replicates"  # per-chain values of the cells that keep them: replicates/cell-<id>/<metric>.npy
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def write_replicates(out: Path, cell_id: str, metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Write a cell's per-chain values, one (G, R) ``.npy`` per metric (each atomically), before the results that
    mark the run finished; returns them memory-mapped from there, so the caller can let its copies go."""
    folder = out / REPLICATES / f"cell-{cell_id}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in metrics.items():
        if not _SAFE_NAME.fullmatch(name):
            raise CollapselabError(f"metric {name!r}: not a file name; its per-chain values cannot be written")
        with atomic_file(folder / f"{name}.npy") as fh:
            np.save(fh, np.ascontiguousarray(values), allow_pickle=False)
    return read_replicates(out, cell_id)


def read_replicates(path: Path, cell_id: str) -> dict[str, np.ndarray]:
    """A saved cell's per-chain values, metric -> (G, R), memory-mapped (read lazily); empty where the cell did not
    keep them."""
    folder = Path(path) / REPLICATES / f"cell-{cell_id}"
    if not folder.is_dir():
        return {}
    return {
        f.stem: np.load(f, mmap_mode="r", allow_pickle=False)
        for f in sorted(folder.glob("*.npy"))
        if is_regular_file(f)
    }


def is_finished(path: Path) -> bool:
    return (path / "summary.csv").is_file() and not (path / CHECKPOINTS).exists()


def clear_checkpoints(path: Path) -> None:
    import shutil

    shutil.rmtree(path / CHECKPOINTS, ignore_errors=True)


def snapshots_npz(snapshots: dict[str, dict[int, np.ndarray]]) -> bytes:
    """Snapshot records as an .npz of plain arrays named ``cell<id>_gen<g>`` (read with allow_pickle=False)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"cell{c}_gen{g}": x for c, by_gen in snapshots.items() for g, x in by_gen.items()})
    return buf.getvalue()


def distributions_npz(dists: dict[str, dict[int, dict[str, np.ndarray]]]) -> bytes:
    """Per-record metric values as an .npz of plain arrays named ``cell<id>__gen<g>__<metric>``."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        **{
            f"cell{c}__gen{g}__{name}": v
            for c, by_gen in dists.items()
            for g, by_name in by_gen.items()
            for name, v in by_name.items()
        },
    )
    return buf.getvalue()


def read_distributions(path: Path) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    if not path.is_file():
        return out
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            cell, gen, name = key.removeprefix("cell").split("__", 2)
            out.setdefault(cell, {}).setdefault(int(gen.removeprefix("gen")), {})[name] = npz[key]
    return out


def read_snapshots(path: Path) -> dict[str, dict[int, np.ndarray]]:
    out: dict[str, dict[int, np.ndarray]] = {}
    if not path.is_file():
        return out
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            cell, gen = key.removeprefix("cell").rsplit("_gen", 1)
            out.setdefault(cell, {})[int(gen)] = npz[key]
    return out


class Store:
    """The SQLite index of a workspace.

    The index is a convenience, the run folders are the truth: a run id is never handed out twice while its
    folder exists, even after ``store.db`` was deleted, truncated or lost its tables (the next id is past the
    highest folder number), and a folder is created with ``exist_ok=False`` inside the transaction that reserves
    its id, so no run can ever write into another's folder."""

    def __init__(self, workspace: Path | str = DEFAULT_WORKSPACE):
        self.workspace = Path(workspace)
        self.db = self.workspace / "store.db"

    def connect(self) -> sqlite3.Connection:
        """A writable connection, the workspace and the tables created if needed."""
        try:
            self.workspace.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--workspace {self.workspace}: cannot create it ({e.strerror})") from None
        con = connect_sqlite(self.db, what="workspace index")
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        except sqlite3.Error as e:
            con.close()
            raise sqlite_error(e, self.db, "workspace index") from None
        return con

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of a query on a read-only connection (nothing created; works in a read-only workspace)."""
        if not self.db.is_file():
            return []
        con = connect_sqlite(self.db, readonly=True, what="workspace index")
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # an index that lost its tables lists nothing
                return []
            raise sqlite_error(e, self.db, "workspace index") from None
        except sqlite3.Error as e:
            raise sqlite_error(e, self.db, "workspace index") from None
        finally:
            con.close()

    def new_run_dir(self, name: str) -> tuple[int, Path]:
        """Reserve a run id and create its (new, empty) folder; the index row holds the path from the start."""
        slug = _slug(name)
        con = self.connect()
        con.isolation_level = None  # explicit transactions: BEGIN IMMEDIATE takes the write lock first
        try:
            for _ in range(1000):
                con.execute("BEGIN IMMEDIATE")
                try:
                    highest = con.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()[0]
                    run_id = max(highest, _highest_folder_id(self.workspace)) + 1
                    path = self.workspace / f"{run_id:04d}-{slug}"
                    con.execute(
                        "INSERT INTO runs (id, name, created, path, cells, generations, replicates, seed, seconds,"
                        " spec) VALUES (?, ?, ?, ?, 0, 0, 0, 0, -1, '')",
                        (run_id, name, time.strftime("%Y-%m-%dT%H:%M:%S"), str(path.resolve())),
                    )
                    path.mkdir(parents=False, exist_ok=False)
                except FileExistsError:  # another process made a folder of that number: try the next one
                    con.execute("ROLLBACK")
                    continue
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
                return run_id, path
            raise InputError(f"--workspace {self.workspace}: could not reserve a new run folder")
        except sqlite3.Error as e:
            raise sqlite_error(e, self.db, "workspace index") from None
        except OSError as e:
            raise InputError(f"--workspace {self.workspace}: cannot create a run folder ({e.strerror})") from None
        finally:
            con.close()

    def forget(self, run_id: int) -> None:
        """Drop a run's index rows (a run that failed before it computed anything)."""
        try:
            with closing(self.connect()) as con, con:
                for table, key in (("summary", "run_id"), ("cells", "run_id"), ("runs", "id")):
                    con.execute(f"DELETE FROM {table} WHERE {key}=?", (run_id,))
        except (sqlite3.Error, CollapselabError):
            pass  # best effort: the error that made the run fail is the one to report

    def record_start(self, run_id: int, path: Path, spec) -> None:
        self._write(
            "UPDATE runs SET path=?, generations=?, replicates=?, seed=?, spec=? WHERE id=?",
            (str(Path(path).resolve()), spec.generations, spec.replicates, spec.seed, spec.to_toml(), run_id),
        )

    def _write(self, sql: str, args: tuple) -> None:
        try:
            with closing(self.connect()) as con, con:
                con.execute(sql, args)
        except sqlite3.Error as e:
            raise sqlite_error(e, self.db, "workspace index") from None

    def record(self, run_id: int, path: Path, spec, cells: dict, rows: list[tuple], seconds: float) -> None:
        """Index a finished run: one transaction, idempotent (a resumed run replaces its rows)."""
        try:
            with closing(self.connect()) as con, con:
                con.execute("DELETE FROM summary WHERE run_id=?", (run_id,))
                con.execute("DELETE FROM cells WHERE run_id=?", (run_id,))
                generations = max((int(r[1]) for r in rows), default=spec.generations - 1) + 1
                con.execute(
                    "INSERT OR REPLACE INTO runs (id, name, created, path, cells, generations, replicates, seed,"
                    " seconds, spec) VALUES (?, ?, COALESCE((SELECT created FROM runs WHERE id=?), ?), ?, ?, ?, ?,"
                    " ?, ?, ?)",
                    (
                        run_id,
                        spec.name,
                        run_id,
                        time.strftime("%Y-%m-%dT%H:%M:%S"),
                        str(Path(path).resolve()),
                        len(cells),
                        generations,
                        spec.replicates,
                        spec.seed,
                        seconds,
                        spec.to_toml(),
                    ),
                )
                con.executemany(
                    "INSERT INTO cells VALUES (?, ?, ?)",
                    [(run_id, c, json.dumps(o, sort_keys=True)) for c, o in cells.items()],
                )
                con.executemany(f"INSERT INTO summary VALUES ({', '.join('?' * 11)})", [(run_id, *r) for r in rows])
        except sqlite3.Error as e:
            raise sqlite_error(e, self.db, "workspace index") from None

    def find(self, path: Path) -> int | None:
        """The id of the run indexed with this folder, if any."""
        target = Path(path).resolve()
        rows = self._read("SELECT id, path FROM runs")
        return next((i for i, p in rows if p and Path(p).resolve() == target), None)

    def runs(self) -> pd.DataFrame:
        """Every indexed run; ``status`` is ``finished``, ``unfinished`` (resume it) or ``missing`` (no folder)."""
        import pandas as pd  # here, not at the top: the command line starts without pandas

        columns = ["id", "name", "created", "status", "cells", "generations", "replicates", "seconds", "path"]
        rows = self._read(
            "SELECT id, name, created, seconds >= 0, cells, generations, replicates, seconds, path"
            " FROM runs WHERE path != '' ORDER BY id"
        )
        df = pd.DataFrame(rows, columns=["id", "name", "created", "done", *columns[4:]])
        status = [
            "missing" if not Path(p).is_dir() else "finished" if done == 1 else "unfinished"
            for done, p in zip(df["done"], df["path"])
        ]
        df.insert(3, "status", pd.Series(status, dtype=object, index=df.index))
        return df[columns]

    def resolve(self, ref: str, finished: bool = True) -> Path:
        """A run's folder from its id, its name (the latest run of that name) or a directory path.

        With ``finished=False`` an interrupted run (spec.toml, no results yet) is accepted too."""

        def usable(p: Path) -> bool:
            return is_finished(p) if finished else (p / "spec.toml").is_file()

        p = Path(ref)
        if usable(p):
            return p
        if p.is_dir() and finished and (p / "spec.toml").is_file():
            raise InputError(f"{ref}: this run has not finished; finish it with: collapselab resume {ref}")
        if ref.isdigit():
            rows = self._read("SELECT path, seconds >= 0 FROM runs WHERE id=?", (int(ref),))
        else:
            rows = self._read("SELECT path, seconds >= 0 FROM runs WHERE name=? ORDER BY id DESC", (ref,))
        for path, _done in rows:
            if path and usable(Path(path)):
                return Path(path)
        if rows and rows[0][0] and finished and (Path(rows[0][0]) / "spec.toml").is_file():
            raise InputError(f"run {ref!r} has not finished; finish it with: collapselab resume {ref}")
        if rows and rows[0][0] and not Path(rows[0][0]).is_dir():
            raise InputError(f"run {ref!r}: its folder {rows[0][0]} no longer exists")
        raise InputError(f"no run {ref!r}: give a run id or name from 'collapselab runs', or a run directory")


def _highest_folder_id(workspace: Path) -> int:
    """The highest ``NNNN-`` number among the workspace's run folders (0 when none)."""
    best = 0
    try:
        for p in workspace.iterdir():
            m = re.match(r"(\d+)-", p.name)
            if m:
                best = max(best, int(m.group(1)))
    except OSError:
        pass
    return best


def _slug(name: str) -> str:
    s = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name).strip("-")
    return s[:60] or "run"


def read_run(path: Path) -> dict:
    """The tables of a run directory."""
    import pandas as pd

    path = Path(path)
    if not (path / "summary.csv").is_file():
        raise CollapselabError(f"{path}: not a collapselab run directory (no summary.csv)")
    out = {
        "summary": pd.read_csv(path / "summary.csv", dtype={"cell": str}),
        "cells": json.loads((path / "cells.json").read_text(encoding="utf-8")),
    }
    for table in ("theory", "stages", "bounds"):
        if (path / f"{table}.csv").is_file():
            out[table] = pd.read_csv(path / f"{table}.csv", dtype={"cell": str})
    if (path / "spec.toml").is_file():
        out["spec_toml"] = (path / "spec.toml").read_text(encoding="utf-8")
    cells = out["cells"]
    out["replicates"] = {c: r for c in cells if (r := read_replicates(path, c))}  # memory-mapped
    out["snapshots"] = read_snapshots(path / "snapshots.npz")
    out["distributions"] = read_distributions(path / "distributions.npz")
    return out
