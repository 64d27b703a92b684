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
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CollapselabError, SpecError

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


OPTIONAL_FILES = ("theory.csv", "stages.csv", "snapshots.npz", "distributions.npz", "report.html", "notes.txt")
CHECKPOINTS = ".checkpoints"  # per-cell checkpoints of an unfinished run, removed when it finishes


def write_atomic(path: Path, content: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)


def start_run_dir(out: Path, spec, overrides: dict) -> None:
    """Open a run directory: the spec and cells first (what resume needs), no result of an earlier run."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("summary.csv", *OPTIONAL_FILES):
        (out / name).unlink(missing_ok=True)
    clear_checkpoints(out)
    write_atomic(out / "spec.toml", spec.to_toml())
    write_atomic(out / "cells.json", json.dumps(overrides, indent=2, sort_keys=True) + "\n")


def finish_run_dir(out: Path, files: dict[str, str | bytes]) -> None:
    """Write a finished run's results; summary.csv goes last, so its presence means the rest is there."""
    for name, content in sorted(files.items(), key=lambda kv: kv[0] == "summary.csv"):
        write_atomic(out / name, content)


def is_finished(path: Path) -> bool:
    return (path / "summary.csv").is_file() and not (path / CHECKPOINTS).exists()


def clear_checkpoints(path: Path) -> None:
    import shutil

    shutil.rmtree(path / CHECKPOINTS, ignore_errors=True)


def snapshots_npz(snapshots: dict[str, dict[int, "np.ndarray"]]) -> bytes:
    """Snapshot records as an .npz of plain arrays named ``cell<id>_gen<g>`` (read with allow_pickle=False)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"cell{c}_gen{g}": x for c, by_gen in snapshots.items() for g, x in by_gen.items()})
    return buf.getvalue()


def distributions_npz(dists: dict[str, dict[int, dict[str, "np.ndarray"]]]) -> bytes:
    """Per-record metric values as an .npz of plain arrays named ``cell<id>__gen<g>__<metric>``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"cell{c}__gen{g}__{name}": v for c, by_gen in dists.items()
                                for g, by_name in by_gen.items() for name, v in by_name.items()})
    return buf.getvalue()


def read_distributions(path: Path) -> dict[str, dict[int, dict[str, "np.ndarray"]]]:
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    if not path.is_file():
        return out
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            cell, gen, name = key.removeprefix("cell").split("__", 2)
            out.setdefault(cell, {}).setdefault(int(gen.removeprefix("gen")), {})[name] = npz[key]
    return out


def read_snapshots(path: Path) -> dict[str, dict[int, "np.ndarray"]]:
    out: dict[str, dict[int, np.ndarray]] = {}
    if not path.is_file():
        return out
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            cell, gen = key.removeprefix("cell").rsplit("_gen", 1)
            out.setdefault(cell, {})[int(gen)] = npz[key]
    return out


class Store:
    """The SQLite index of a workspace."""

    def __init__(self, workspace: Path | str = DEFAULT_WORKSPACE):
        self.workspace = Path(workspace)
        self.db = self.workspace / "store.db"

    def connect(self) -> sqlite3.Connection:
        self.workspace.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(_SCHEMA)
        return con

    def new_run_dir(self, name: str) -> tuple[int, Path]:
        """Reserve a run id and its folder; the index row is completed by :meth:`record`."""
        with closing(self.connect()) as con, con:
            cur = con.execute(
                "INSERT INTO runs (name, created, path, cells, generations, replicates, seed, seconds, spec)"
                " VALUES (?, ?, '', 0, 0, 0, 0, -1, '')",
                (name, time.strftime("%Y-%m-%dT%H:%M:%S")),
            )
            run_id = cur.lastrowid
        return run_id, self.workspace / f"{run_id:04d}-{_slug(name)}"

    def record_start(self, run_id: int, path: Path, spec) -> None:
        with closing(self.connect()) as con, con:
            con.execute(
                "UPDATE runs SET path=?, generations=?, replicates=?, seed=?, spec=? WHERE id=?",
                (str(Path(path).resolve()), spec.generations, spec.replicates, spec.seed, spec.to_toml(), run_id),
            )

    def record(self, run_id: int, path: Path, spec, cells: dict, rows: list[tuple], seconds: float) -> None:
        """Index a finished run: one transaction, idempotent (a resumed run replaces its rows)."""
        with closing(self.connect()) as con, con:
            con.execute("DELETE FROM summary WHERE run_id=?", (run_id,))
            con.execute("DELETE FROM cells WHERE run_id=?", (run_id,))
            con.execute(
                "UPDATE runs SET path=?, cells=?, generations=?, replicates=?, seed=?, seconds=?, spec=?"
                " WHERE id=?",
                (str(Path(path).resolve()), len(cells), spec.generations, spec.replicates, spec.seed, seconds,
                 spec.to_toml(), run_id),
            )
            con.executemany(
                "INSERT INTO cells VALUES (?, ?, ?)",
                [(run_id, c, json.dumps(o, sort_keys=True)) for c, o in cells.items()],
            )
            con.executemany(f"INSERT INTO summary VALUES ({', '.join('?' * 11)})", [(run_id, *r) for r in rows])

    def find(self, path: Path) -> int | None:
        """The id of the run indexed with this folder, if any."""
        if not self.db.exists():
            return None
        with closing(self.connect()) as con:
            rows = con.execute("SELECT id, path FROM runs").fetchall()
        target = Path(path).resolve()
        return next((i for i, p in rows if p and Path(p).resolve() == target), None)

    def runs(self) -> pd.DataFrame:
        """Every indexed run; ``status`` is ``finished`` or ``unfinished`` (resume it)."""
        columns = ["id", "name", "created", "status", "cells", "generations", "replicates", "seconds", "path"]
        if not self.db.exists():
            return pd.DataFrame(columns=columns)
        with closing(self.connect()) as con:
            df = pd.read_sql_query(
                "SELECT id, name, created, seconds >= 0 AS done, cells, generations, replicates, seconds, path"
                " FROM runs WHERE path != '' ORDER BY id",
                con,
            )
        df.insert(3, "status", np.where(df.pop("done") == 1, "finished", "unfinished"))
        return df[columns]

    def resolve(self, ref: str, finished: bool = True) -> Path:
        """A run's folder from its id, its name (the latest run of that name) or a directory path.

        With ``finished=False`` an interrupted run (spec.toml, no results yet) is accepted too."""
        def usable(p: Path) -> bool:
            return (p / "summary.csv").is_file() if finished else (p / "spec.toml").is_file()

        p = Path(ref)
        if usable(p):
            return p
        if self.db.exists():
            done = " AND seconds >= 0" if finished else ""
            with closing(self.connect()) as con:
                if ref.isdigit():
                    row = con.execute(f"SELECT path FROM runs WHERE id=?{done}", (int(ref),)).fetchone()
                else:
                    row = con.execute(
                        f"SELECT path FROM runs WHERE name=?{done} ORDER BY id DESC LIMIT 1", (ref,)
                    ).fetchone()
            if row and row[0] and usable(Path(row[0])):
                return Path(row[0])
        raise SpecError(f"no run {ref!r}: give a run id or name from 'collapselab runs', or a run directory")


def _slug(name: str) -> str:
    s = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name).strip("-")
    return s[:60] or "run"


def read_run(path: Path) -> dict:
    """The tables of a run directory."""
    path = Path(path)
    if not (path / "summary.csv").is_file():
        raise CollapselabError(f"{path}: not a collapselab run directory (no summary.csv)")
    out = {
        "summary": pd.read_csv(path / "summary.csv", dtype={"cell": str}),
        "cells": json.loads((path / "cells.json").read_text(encoding="utf-8")),
    }
    for table in ("theory", "stages"):
        if (path / f"{table}.csv").is_file():
            out[table] = pd.read_csv(path / f"{table}.csv", dtype={"cell": str})
    if (path / "spec.toml").is_file():
        out["spec_toml"] = (path / "spec.toml").read_text(encoding="utf-8")
    out["snapshots"] = read_snapshots(path / "snapshots.npz")
    out["distributions"] = read_distributions(path / "distributions.npz")
    return out
