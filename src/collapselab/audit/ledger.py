"""A record-level provenance ledger: an append-only SQLite table of lineage and quality metadata.

Each row says where one training record came from: its ``origin`` (human, synthetic or unknown), the model and
generation that produced it, its source and licence, a quality score, judge verdicts (JSON) and the SHA-256 of
its content (computed from ``content`` when given). Rows are never updated or deleted (triggers refuse it):
a correction is a new row. JSONL in and out; the dataset-level summary exports as Croissant JSON-LD with the
Responsible-AI field ``rai:hasSyntheticData``.

The mix planner builds a training set from a ledger under stated constraints — a minimum real (human) share,
a maximum share per generator, a minimum quality, deduplication by content hash — taking the best-quality
records first, and says which constraint bound the size of the set.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..datasets import jsonl_objects
from ..errors import InputError
from ..io import connect_sqlite, sqlite_error, write_atomic
from ..spec import short_repr

ORIGINS = ("human", "synthetic", "unknown")
FIELDS = ("content_hash", "origin", "model", "generation", "source", "licence", "quality", "verdicts")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('human', 'synthetic', 'unknown')),
    model TEXT,
    generation INTEGER,
    source TEXT,
    licence TEXT,
    quality REAL,
    verdicts TEXT,
    added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS records_hash ON records (content_hash);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: add a new row instead'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: rows cannot be deleted'); END;
"""


def content_hash(content: str | bytes) -> str:
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


class Ledger:
    """The ledger's SQLite file: concurrent writers wait for each other (a 30 s busy timeout, one immediate
    transaction per import), and every SQLite error is a one-line InputError."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--db {self.path}: cannot create its folder ({e.strerror})") from None
        self.db = connect_sqlite(self.path, what="ledger")
        try:
            if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as e:
            self.db.close()
            raise sqlite_error(e, self.path, "ledger") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, rows: list[dict], where: str = "records") -> int:
        """Append rows (validated first: all or nothing); returns how many were added."""
        clean = [_validate(r, f"{where} line {i + 1}") for i, r in enumerate(rows)]
        try:
            self.db.execute("BEGIN IMMEDIATE")  # the write lock first: concurrent importers queue, none fails
            self.db.executemany(
                f"INSERT INTO records ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
                [tuple(r[f] for f in FIELDS) for r in clean],
            )
            self.db.commit()
        except sqlite3.Error as e:
            self.db.rollback()
            raise sqlite_error(e, self.path, "ledger") from None
        return len(clean)

    def import_jsonl(self, path: str | Path) -> int:
        return self.add(read_jsonl(path), str(path))

    def rows(self) -> list[dict]:
        cur = self.db.execute(f"SELECT id, {', '.join(FIELDS)}, added_at FROM records ORDER BY id")
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            r = dict(zip(names, row))
            r["verdicts"] = json.loads(r["verdicts"]) if r["verdicts"] else None
            out.append({k: v for k, v in r.items() if v is not None})
        return out

    def export_jsonl(self, path: str | Path) -> int:
        rows = self.rows()
        write_atomic(Path(path), "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        return len(rows)

    def summary(self) -> dict:
        rows = self.rows()
        by_origin = {o: sum(r["origin"] == o for r in rows) for o in ORIGINS}
        models: dict[str, int] = {}
        for r in rows:
            if r["origin"] == "synthetic":
                models[r.get("model", "unknown model")] = models.get(r.get("model", "unknown model"), 0) + 1
        unique = len({r["content_hash"] for r in rows})
        quality = [r["quality"] for r in rows if "quality" in r]
        return {
            "records": len(rows),
            "unique_contents": unique,
            "by_origin": by_origin,
            "synthetic_share": by_origin["synthetic"] / len(rows) if rows else 0.0,
            "synthetic_by_model": models,
            "licences": sorted({r["licence"] for r in rows if "licence" in r}),
            "sources": sorted({r["source"] for r in rows if "source" in r}),
            "quality_mean": sum(quality) / len(quality) if quality else None,
        }

    def croissant(self, name: str, description: str = "") -> dict:
        """The dataset-level summary as Croissant 1.0 JSON-LD (with the RAI vocabulary)."""
        s = self.summary()
        return {
            "@context": {
                "@vocab": "https://schema.org/",
                "sc": "https://schema.org/",
                "cr": "http://mlcommons.org/croissant/",
                "rai": "http://mlcommons.org/croissant/RAI/",
                "dct": "http://purl.org/dc/terms/",
            },
            "@type": "sc:Dataset",
            "conformsTo": "http://mlcommons.org/croissant/1.0",
            "name": name,
            "description": description or f"{s['records']} records with record-level provenance (collapselab ledger)",
            "license": s["licences"],
            "isBasedOn": s["sources"],
            "rai:hasSyntheticData": s["by_origin"]["synthetic"] > 0,
            "rai:dataCollection": (
                f"{s['by_origin']['human']} human-made, {s['by_origin']['synthetic']} synthetic and "
                f"{s['by_origin']['unknown']} unknown-origin records; synthetic share {s['synthetic_share']:.4f}; "
                f"by model: {json.dumps(s['synthetic_by_model'], sort_keys=True)}"
            ),
            "recordSet": [
                {
                    "@type": "cr:RecordSet",
                    "name": "provenance",
                    "field": [
                        {
                            "@type": "cr:Field",
                            "name": f,
                            "dataType": "sc:Text"
                            if f not in ("generation", "quality")
                            else ("sc:Integer" if f == "generation" else "sc:Float"),
                        }
                        for f in FIELDS
                    ],
                }
            ],
        }


def _validate(row: dict, where: str) -> dict:
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object")
    unknown = set(row) - set(FIELDS) - {"content", "id", "added_at"}
    if unknown:
        raise InputError(f"{where}: unknown field {sorted(unknown)[0]!r}; allowed: content, {', '.join(FIELDS)}")
    out = {f: row.get(f) for f in FIELDS}
    if "content" in row:
        h = content_hash(str(row["content"]))
        if out["content_hash"] and out["content_hash"] != h:
            raise InputError(f"{where}: content_hash does not match the content's SHA-256")
        out["content_hash"] = h
    if not out["content_hash"]:
        raise InputError(f"{where}: needs content or content_hash")
    h = out["content_hash"]
    if not isinstance(h, str) or len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise InputError(f"{where}: content_hash = {short_repr(h)} must be a SHA-256 in hex (64 characters)")
    out["origin"] = out["origin"] or "unknown"
    if not isinstance(out["origin"], str) or out["origin"] not in ORIGINS:
        raise InputError(f"{where}: origin = {short_repr(out['origin'])}; allowed: {', '.join(ORIGINS)}")
    for name in ("model", "source", "licence"):
        if out[name] is not None and not isinstance(out[name], str):
            raise InputError(f"{where}: {name} = {short_repr(out[name])} must be a string")
    q = out["quality"]
    if q is not None and (isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q)):
        raise InputError(f"{where}: quality = {short_repr(q)} must be a finite number")
    gen = out["generation"]
    if gen is not None and (isinstance(gen, bool) or not isinstance(gen, int) or not 0 <= gen <= 2**63 - 1):
        raise InputError(f"{where}: generation = {short_repr(gen)} must be a whole number >= 0")
    out["verdicts"] = json.dumps(out["verdicts"], sort_keys=True) if out["verdicts"] is not None else None
    return out


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)

    rows = [obj for _, obj in jsonl_objects(p, str(path))]
    if not rows:
        raise InputError(f"{path}: no records")
    return rows


@dataclass
class Plan:
    rows: list[dict]
    size: int
    human: int
    by_model: dict[str, int]
    binding: str  # which constraint bound the size, in words
    dropped: dict[str, int]


def _best_first(r: dict) -> tuple:
    q = r.get("quality")
    return (-(q if q is not None else float("-inf")), r.get("id", 0))


def plan_mix(
    rows: list[dict],
    size: int | None = None,
    min_real: float = 0.0,
    max_per_generator: float = 1.0,
    min_quality: float | None = None,
    dedupe: bool = True,
    include_unknown: bool = False,
) -> Plan:
    """The largest training set (at most ``size``) meeting the constraints, best quality first."""
    if not 0 <= min_real <= 1 or not 0 < max_per_generator <= 1:
        raise InputError("--min-real must be in [0, 1] and --max-per-generator in (0, 1]")
    dropped = {"duplicate": 0, "low_quality": 0, "unknown_origin": 0}
    ranked = sorted(rows, key=_best_first)
    seen: set[str] = set()
    human, synth = [], {}
    for r in ranked:
        if dedupe and r["content_hash"] in seen:
            dropped["duplicate"] += 1
            continue
        if min_quality is not None and (r.get("quality") is None or r["quality"] < min_quality):
            dropped["low_quality"] += 1
            continue
        if r["origin"] == "unknown" and not include_unknown:
            dropped["unknown_origin"] += 1
            continue
        seen.add(r["content_hash"])
        if r["origin"] == "human":
            human.append(r)
        else:
            synth.setdefault(r.get("model", "unknown model"), []).append(r)
    H = len(human)
    available = H + sum(len(v) for v in synth.values())
    # the largest N with: human records >= min_real·N and per generator <= max_per_generator·N
    candidates = {"requested size": size if size is not None else available, "records available": available}
    if min_real > 0:
        candidates["minimum real share"] = int(H / min_real)
    best, binding = 0, ""
    for N in range(min(candidates.values()), -1, -1):  # from the tightest bound down: the first feasible N
        cap = int(max_per_generator * N)
        synthetic_room = sum(min(len(v), cap) for v in synth.values())
        h = min(H, N)
        if h >= min_real * N - 1e-9 and h + synthetic_room >= N:
            best = N
            break
    for name, bound in candidates.items():
        if bound == best:
            binding = name
            break
    else:
        binding = "maximum share per generator"
    cap = int(max_per_generator * best)
    # all the human records the size allows, then the best synthetic records within each generator's cap
    h = min(H, best)
    allowed = sorted((r for v in synth.values() for r in v[:cap]), key=_best_first)
    picked_synth = allowed[: best - h]
    chosen = human[:h] + picked_synth
    by_model: dict[str, int] = {}
    for r in picked_synth:
        by_model[r.get("model", "unknown model")] = by_model.get(r.get("model", "unknown model"), 0) + 1
    explain = {
        "requested size": f"the requested size ({best} records)",
        "records available": f"the records left after filtering ({available})",
        "minimum real share": f"the minimum real share: {H} human records allow at most {best} records at "
        f"{min_real:.0%} real",
        "maximum share per generator": f"the maximum share per generator ({max_per_generator:.0%}): the generators "
        f"cannot fill more than {best} records with the human ones",
    }
    return Plan(chosen, best, h, by_model, explain[binding], dropped)
