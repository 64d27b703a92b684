"""Per-cell checkpoints, written every few seconds and at the end of a cell, so an interrupted run resumes where
it stopped.

A checkpoint is what the next generations need and nothing else: what the results keep of the generations since
the last one (the sink's arrays: statistics, not per-chain values, unless the cell keeps those), their snapshots,
and the synthetic pools they sampled. No RNG state is needed: every draw comes from a
generator addressed by (seed, cell, stream, generation) (see rng.py), and the real pool is redrawn from its
address. Models are not needed either: generation g+1 trains on pools, not on model g.

Generations are buffered and written together once ``COLLAPSELAB_CHECKPOINT_SECONDS`` (default 10) have passed
since the last write, and when the cell ends; 0 writes after every generation. Writing after every generation
cost a fast cell more than its computation (10⁴ chains × 10³ generations: 3.1 of 7 s), and resume from the last
block is exactly as byte-identical. Files, per cell folder (plain arrays, read with ``allow_pickle=False``: never
a pickle), for a block of generations a..b::

    block-000012.npz      generations a..12's statistics across chains (and per-chain values where the cell keeps
                          them), the per-chain stage state after 12 (engine/sink.py), snapshots, distributions
    pool-000012.npz       a pool generation 12 sampled: every generation's under policies that keep every pool,
                          else the block's last only (the one the next generation trains on)
    manifest-000012.json  {"first": a, "generation": 12, "sha256": {...every file...}, "fingerprint": ...}, last

Files are written atomically (io.write_atomic: temporary name, then rename), so a killed process leaves
either the old file or the new one; there is no fsync, and the checksums catch what a lost disk write would
leave behind. A block counts only if its manifest exists, continues the blocks before it, its fingerprint
matches the cell (spec, seed, collapselab's code) and every file hashes to the manifest's sha256; a corrupt or
truncated one is skipped with a :class:`CheckpointWarning`, and the cell restarts from its last good block.
Policies that train on the last pool keep the last two blocks' pools; accumulating policies keep every pool.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointWarning, InputError
from ..io import atomic_file, is_regular_file, remove_stale_tmp, write_atomic
from ..pool import Pool, StatsPool, pool_from_arrays
from .state import Checkpointed, GenerationRecord

MAX_CHECKPOINT_BYTES = 8 << 30


FORMAT_VERSION = 4  # the layout of checkpoint files; bump it when it changes
INTERVAL_ENV = "COLLAPSELAB_CHECKPOINT_SECONDS"
DEFAULT_INTERVAL_S = 10.0


def checkpoint_interval() -> float:
    """Seconds between checkpoint writes: ``COLLAPSELAB_CHECKPOINT_SECONDS`` (0: after every generation)."""
    raw = os.environ.get(INTERVAL_ENV, "")
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise InputError(f"{INTERVAL_ENV} = {raw!r}: expected a number of seconds >= 0")
    return value


@functools.cache
def code_version() -> str:
    """A digest of collapselab's own source files: a checkpoint written by other code is never reused, since
    the same spec can give other numbers there."""
    root = Path(__file__).resolve().parent.parent  # the package, not this folder
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def fingerprint(resolved_spec: dict, seed: int, cell_index: int) -> str:
    text = json.dumps(
        {"spec": resolved_spec, "seed": seed, "cell": cell_index, "format": FORMAT_VERSION, "code": code_version()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


class WriteSchedule:
    """When checkpoints are written: once ``interval`` seconds of work have gone unwritten. Cells that run one
    after another in one process (the inline executor) share one schedule, so the clock runs across them: a cell
    that ends sooner hands its unwritten generations to the schedule (``hold``), which writes them with the next
    checkpoint or when the cells are interrupted, and drops them once the run's own results are written. A cell
    with a schedule of its own (``shared = False``: a worker process) writes them when it ends."""

    def __init__(self, interval: float | None = None, shared: bool = False):
        self.interval = checkpoint_interval() if interval is None else interval
        self.shared = shared
        self.last = time.monotonic()
        self.held: list[CellCheckpoints] = []

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.interval

    def hold(self, saver: CellCheckpoints) -> None:
        self.held.append(saver)

    def wrote(self) -> None:
        """A checkpoint was just written: the clock restarts, and what earlier cells left unwritten goes with it."""
        self.last = time.monotonic()
        self.flush_held()

    def flush_held(self) -> None:
        held, self.held = self.held, []
        for saver in held:
            saver.flush()


class CellCheckpoints:
    def __init__(
        self, folder: Path | str, fingerprint: str, keeps_all_pools: bool, family=None, schedule=None, new_sink=None
    ):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.keeps_all_pools = keeps_all_pools
        self.family = family  # decodes stats pools of the exact path
        self.schedule: WriteSchedule = schedule if schedule is not None else WriteSchedule()
        self.new_sink = new_sink  # an empty engine.sink.MetricSink of the cell, to restore into
        self._pending: list[GenerationRecord] = []
        self._sink: Any = None
        self._written_pools: list[int] = []  # generations whose pool files this run wrote (for pruning)

    def _path(self, kind: str, g: int) -> Path:
        return self.folder / f"{kind}-{g:06d}.{'json' if kind == 'manifest' else 'npz'}"

    def save(self, record: GenerationRecord, sink) -> None:
        """Take one generation's record; write the pending ones once the interval has passed since the last
        write (every generation with an interval of 0). ``sink``, the cell's results with this generation
        handed in, gives what the block keeps of them."""
        self._pending.append(record)
        self._sink = sink
        if self.schedule.due():
            self.flush()

    def close(self) -> None:
        """The cell has ended: write what is pending, or, when the schedule is shared and not due, hand it over."""
        if not self._pending:
            return
        if self.schedule.shared and not self.schedule.due():
            self.schedule.hold(self)
        else:
            self.flush()

    def flush(self) -> None:
        """Write the pending generations as one block: the sink's arrays for them, snapshots, distributions and
        the pools later generations need, then the manifest."""
        if not self._pending:
            return
        records, self._pending = self._pending, []
        first, last = records[0].generation, records[-1].generation
        self.folder.mkdir(parents=True, exist_ok=True)
        assert self._sink is not None  # save() gave the cell's sink with the records
        arrays = self._sink.arrays(first, last)
        for r in records:
            arrays.update({f"dist:{r.generation}:{k}": v for k, v in (r.distribution or {}).items()})
            if r.snapshot is not None:
                arrays[f"snapshot:{r.generation}"] = r.snapshot
        digests = {"block": _write_npz(self._path("block", last), arrays)}
        keep = records if self.keeps_all_pools else records[-1:]
        for r in keep:
            if r.pool is not None:  # one pool per replicate block, under the block's number
                blocks = {f"{b}/{k}": v for b, pool in enumerate(r.pool) for k, v in pool.to_arrays().items()}
                digests[f"pool-{r.generation}"] = _write_npz(self._path("pool", r.generation), blocks)
                self._written_pools.append(r.generation)
        manifest = {"first": first, "generation": last, "sha256": digests, "fingerprint": self.fingerprint}
        write_atomic(self._path("manifest", last), json.dumps(manifest).encode())
        if not self.keeps_all_pools:  # this block's last pool is needed, and the one before to fall back on
            for g in self._written_pools[:-2]:
                self._path("pool", g).unlink(missing_ok=True)
            self._written_pools = self._written_pools[-2:]
        self.schedule.wrote()

    def _read(self, path: Path, meta: dict, key: str) -> dict[str, np.ndarray] | None:
        """The arrays of one checkpoint file listed as ``key`` in a manifest already read (``meta``), or None (with
        a warning) when it cannot be trusted."""
        if not is_regular_file(path):  # a FIFO or a link to a device would block or never end
            return self._bad(path, "missing, or not a regular file")
        if path.stat().st_size > MAX_CHECKPOINT_BYTES:
            return self._bad(path, "larger than any checkpoint")
        try:
            data = path.read_bytes()
        except OSError as e:
            return self._bad(path, f"unreadable ({e.__class__.__name__})")
        if hashlib.sha256(data).hexdigest() != meta["sha256"].get(key):
            return self._bad(path, "checksum mismatch (corrupt or truncated)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            return self._bad(path, f"unreadable ({e})")

    def _manifest(self, manifest: Path) -> dict | None:
        """A block's manifest, or None (with a warning) when it is not one of this cell's."""
        if not is_regular_file(manifest):
            return self._bad(manifest, "missing, or not a regular file")
        if manifest.stat().st_size > MAX_CHECKPOINT_BYTES:
            return self._bad(manifest, "larger than any checkpoint")
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, ValueError) as e:
            return self._bad(manifest, f"unreadable ({e.__class__.__name__})")
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), dict):
            return self._bad(manifest, "not a checkpoint manifest")
        if not isinstance(meta.get("first"), int) or not isinstance(meta.get("generation"), int):
            return self._bad(manifest, "not a checkpoint manifest")
        if meta.get("fingerprint") != self.fingerprint:
            return self._bad(manifest, "written for another spec, seed or collapselab version")
        return meta

    def _bad(self, path: Path, why: str) -> Any:
        """Warn that a checkpoint file is skipped; None, for the reader to return."""
        warnings.warn(f"checkpoint {path} skipped: {why}", CheckpointWarning, stacklevel=3)
        return None

    def load(self, last_generation: int, replicate_blocks: int = 1) -> Checkpointed | None:
        """The cell after the last good block of generations (its ``replicate_blocks`` blocks of chains), or None
        to start from scratch."""
        if not self.folder.is_dir() or self.folder.is_symlink():
            return None
        remove_stale_tmp(self.folder)  # what a killed writer left behind
        blocks: list[tuple[int, dict, dict]] = []  # (last, manifest, arrays): the longest good run of blocks from 0
        ends = sorted(int(p.stem.split("-")[1]) for p in self.folder.glob("manifest-*.json") if _numbered(p))
        expected = 0
        for end in ends:
            if end < expected:
                continue
            meta = self._manifest(self._path("manifest", end))
            if meta is None or meta["first"] != expected or meta["generation"] != end or end > last_generation:
                break
            arrays = self._read(self._path("block", end), meta, "block")
            if arrays is None:
                break
            blocks.append((end, meta, arrays))
            self._written_pools.extend(int(k[5:]) for k in meta["sha256"] if k.startswith("pool-"))
            expected = end + 1
        while blocks:
            last = blocks[-1][0]
            if last == last_generation:  # the cell had finished: no pool needed
                return self._state(blocks, [[] for _ in range(replicate_blocks)])
            pools = self._pools(blocks, replicate_blocks)
            if pools is not None:
                return self._state(blocks, pools)
            if self.keeps_all_pools:
                return None  # a lost pool of an accumulating policy: every later block needs it
            blocks.pop()  # fall back on the block before, whose last pool is kept too
        return None

    def _state(self, blocks: list[tuple[int, dict, dict]], pools: list[list[Pool | StatsPool]]) -> Checkpointed:
        """The cell after the checkpointed blocks (``generation``: the next one to run)."""
        snapshots: dict[int, np.ndarray] = {}
        distributions: dict[int, dict[str, np.ndarray]] = {}
        for _, _, a in blocks:
            for k, v in a.items():
                if k.startswith("snapshot:"):
                    snapshots[int(k.split(":")[1])] = v
                elif k.startswith("dist:"):
                    _, g, name = k.split(":", 2)
                    distributions.setdefault(int(g), {})[name] = v
        generation = blocks[-1][0] + 1
        sink = self.new_sink().restore([a for _, _, a in blocks], generation)
        return Checkpointed(generation, sink, pools, snapshots, distributions)

    def _pools(self, blocks, replicate_blocks: int) -> list[list[Pool | StatsPool]] | None:
        """Per replicate block, the pools the blocks' last generation needs: all of them (oldest first), or the
        last one."""
        last = blocks[-1][0]
        gens = range(last + 1) if self.keeps_all_pools else [last]
        out: list[list[Pool | StatsPool]] = [[] for _ in range(replicate_blocks)]
        for g in gens:
            meta = next(m for end, m, _ in blocks if end >= g)  # the block that holds generation g
            p = self._read(self._path("pool", g), meta, f"pool-{g}")
            if p is None:
                return None
            for b in range(replicate_blocks):
                prefix = f"{b}/"
                part = {k.removeprefix(prefix): v for k, v in p.items() if k.startswith(prefix)}
                if not part:
                    return self._bad(self._path("pool", g), f"no pool of replicate block {b}")
                out[b].append(pool_from_arrays(part, self.family))
        return out


def _numbered(path: Path) -> bool:
    parts = path.stem.split("-")
    return len(parts) == 2 and parts[1].isdigit()


class _HashingWriter:
    """A write-only, unseekable stream that hashes what passes through it into a file: the archive is written once,
    with no copy in memory (zipfile writes data descriptors to a stream it cannot seek back in)."""

    def __init__(self, fh):
        self.fh, self.sha = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def read(self, *args):  # numpy takes an object without ``read`` for a file name
        raise io.UnsupportedOperation("write-only")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` as an .npz atomically (io.atomic_file); its SHA-256."""
    with atomic_file(path) as fh:
        out = _HashingWriter(fh)
        np.savez(out, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first keyword as allow_pickle
    return out.sha.hexdigest()
