"""One big cell on several workers: its replicate blocks run as groups apart, and their values are merged exactly.

A cell of more chains than ``replicate_block`` runs as blocks with random numbers of their own (rng.py), so any
contiguous range of blocks — a *group* — can run on a worker of its own (:func:`run_group`, a
:class:`~collapselab.engine.loop.CellRun` over those blocks). A group writes, every :func:`chunk_generations`
generations, each metric's values of its chains into a chunk file of its folder under the cell's checkpoint
folder (a shared file system, as resume already needs); the client (:class:`GroupMerge`) joins the groups' rows in
group order as their files appear — the very rows a one-process run hands its sink, chains in block order — and
reduces them as that run does (engine/sink.replicate_stats: exact quantiles from every value, and a row's numbers
depend on the row alone). So the statistics are the same bytes for any number of groups and any placement, and
the same as when the cell runs in one process.

Each group checkpoints its own state (its blocks' pools and the rows not yet in a chunk file) by time, and the
client its merged statistics (``merged.npz``); a group killed mid-way resumes from its checkpoint and writes the
chunks after it again (the same bytes), so a lost worker costs only its group's work since its last checkpoint.
A group waits while :data:`MAX_AHEAD` of its chunk files are not yet merged, so the files on disk stay few: every
group of a cell must run at once, and the executor splits a cell into at most as many groups as it has workers.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CollapselabError
from ..io import atomic_file
from ..metrics.stages import STAGES, stage_codes, stage_shares
from ..rng import replicate_blocks
from .checkpoints import CellCheckpoints, fingerprint
from .plan import CellPlan, keeps_replicates
from .sink import STATS, MetricSink, Signals, replicate_stats
from .state import CellResult, GenerationRecord

CHUNK_VALUES = 1 << 19  # values per metric (all of the cell's chains) per chunk of generations
CHUNK_ENV = "COLLAPSELAB_CHUNK_VALUES"
MAX_AHEAD = 3  # chunk files a group may leave unmerged before it waits
STALL_S = 900.0  # a group that has waited this long for the merge gives up (the client is gone)
MERGED = "merged.npz"


def splittable(plan: CellPlan) -> bool:
    """Whether a cell can run as groups of blocks: several blocks, and no stop rule (which reads every chain)."""
    return len(replicate_blocks(plan.spec.replicates, plan.spec.replicate_block)) > 1 and plan.spec.stop is None


def groups_of(plan: CellPlan, workers: int) -> list[range]:
    """The cell's blocks in ``min(workers, blocks)`` contiguous groups of near-equal size."""
    n = len(replicate_blocks(plan.spec.replicates, plan.spec.replicate_block))
    k = max(1, min(workers, n))
    edges = [round(i * n / k) for i in range(k + 1)]
    return [range(a, b) for a, b in zip(edges, edges[1:])]


def chunk_generations(plan: CellPlan) -> int:
    """Generations per chunk file: about :data:`CHUNK_VALUES` values per metric across the cell's chains
    (``COLLAPSELAB_CHUNK_VALUES`` sets another count, for tests that cut a run between chunks)."""
    values = int(os.environ.get(CHUNK_ENV, CHUNK_VALUES))
    return max(1, values // plan.spec.replicates)


def _chunk_path(folder: Path, c: int) -> Path:
    return folder / f"chunk-{c:06d}.npz"


def _chunk_files(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    out = []
    for p in folder.glob("chunk-*.npz"):
        stem = p.stem.split("-")
        if len(stem) == 2 and stem[1].isdigit():
            out.append(int(stem[1]))
    return sorted(out)


class ChunkWriter(MetricSink):
    """A group's sink: it takes generations as engine/sink.MetricSink does (the same checks, generation 0's base,
    stage codes and first crossings), but each chunk of generations leaves as a file of its rows per metric, the
    stage indicators among them, for the client to reduce; its checkpoints hold the rows not yet in a file."""

    def __init__(self, G: int, R: int, signals: Signals, folder: Path, chunk: int, family_name: str = ""):
        super().__init__(G, R, signals, keep=False, family_name=family_name)
        self.folder = folder
        self._chunk = chunk  # the cell's chunk, so every group's files cover the same generations

    def add(self, g: int, values: dict[str, np.ndarray]) -> None:
        super().add(g, values)
        if self.added == self.G:  # the last chunk may be shorter
            self._submit()

    def _submit(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        start = self.added - len(rows)
        chunk = {name: np.stack([r[name] for r in rows]) for name in self.names}
        jobs = dict(chunk)
        if self.signals.staged:
            codes = self._codes(chunk)
            jobs.update(stage_shares(codes))
            for k, s in enumerate(STAGES[1:], start=1):
                self._first_hit(s, codes >= k, start)
        arrays = {"names": np.array(list(jobs)), "start": np.array(start)}
        arrays.update({f"values:{name}": v for name, v in jobs.items()})
        self._wait_for_merge()
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(_chunk_path(self.folder, start // self._chunk)) as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    def _wait_for_merge(self) -> None:
        waited, before = 0.0, None
        while len(files := _chunk_files(self.folder)) >= MAX_AHEAD:
            if files != before:  # the merge took some: the clock restarts
                before, waited = files, 0.0
            if waited > STALL_S:
                raise CollapselabError(f"{self.folder}: no chunk merged for {STALL_S:.0f} s; is the client gone?")
            time.sleep(0.02)
            waited += 0.02

    # --- checkpoints (CellCheckpoints) and the end ---------------------------------------------------------------
    def arrays(self, first: int, last: int) -> dict[str, np.ndarray]:
        """A checkpoint of generations first..last: the rows among them not yet in a chunk file, and the
        per-chain state (no flush: a file holds whole chunks only)."""
        assert self.added == last + 1, (self.added, last)
        out: dict[str, np.ndarray] = {"rows_from": np.array(self.added - len(self._pending))}
        for name in self.names:
            rows = [r[name] for r in self._pending]
            out[f"row:{name}"] = np.stack(rows) if rows else np.empty((0, self.R))
        out.update({f"base:{k}": v for k, v in self.base.items()})
        out.update({f"first:{k}": v for k, v in self.first.items()})
        return out

    def restore(self, blocks: list[dict[str, np.ndarray]], generations: int) -> ChunkWriter:
        last = blocks[-1]
        names = [k[4:] for k in last if k.startswith("row:")]
        self._start(names)
        boundary = generations - generations % self._chunk
        rows: dict[int, dict[str, np.ndarray]] = {}
        for b in blocks:
            r0 = int(b["rows_from"])
            for i in range(b[f"row:{names[0]}"].shape[0] if names else 0):
                if r0 + i >= boundary:
                    rows[r0 + i] = {name: b[f"row:{name}"][i] for name in names}
        self._pending = [rows[g] for g in range(boundary, generations)]
        self.base = {k[5:]: v for k, v in last.items() if k.startswith("base:")}
        self.first.update({k[6:]: np.array(v) for k, v in last.items() if k.startswith("first:")})
        self.done = self.added = self.added_reduced = generations
        return self

    def result(self) -> tuple[dict, dict, dict]:
        return {}, self.first, {}


@dataclass
class GroupResult:
    """What a group hands back besides its chunk files."""

    blocks: range
    first: dict[str, np.ndarray]
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    distributions: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def group_folder(folder: Path, blocks: range) -> Path:
    return Path(folder) / f"group-{blocks.start}-{blocks.stop}"


def run_group(plan: CellPlan, seed: int, blocks: range, folder: Path, progress=None) -> GroupResult:
    """Run blocks ``blocks`` of a cell, writing their chunk files to ``group_folder(folder, blocks)`` and
    checkpointing there; resumes from its checkpoints."""
    from .loop import CellRun, _small_pages

    where = group_folder(folder, blocks)
    with _small_pages():
        run = CellRun(plan, seed, blocks)
        signals, chunk = run.signals(), chunk_generations(plan)

        def new_sink() -> ChunkWriter:
            return ChunkWriter(run.G, run.R, signals, where, chunk, plan.family.name)

        run.sink = new_sink()
        first = run.kernels[0]
        saver = None
        if not first.population:
            key = fingerprint(plan.resolved, seed, plan.index) + f":blocks {blocks.start}-{blocks.stop}:chunk {chunk}"
            saver = CellCheckpoints(where / "state", key, first.policy.keeps_all_pools, first.family, None, new_sink)
        run.start(saver)
        while run.generation < run.G:
            record: GenerationRecord = run.step()
            if saver is not None:
                saver.save(record, run.sink)
            if progress is not None:
                progress(plan.id, run.generation, run.G)
        if saver is not None:
            saver.flush()
        notes: list[str] = []
        for k in run.kernels:
            if k.pipeline is not None:
                notes += [n for n in k.pipeline.warnings() if n not in notes]
        return GroupResult(blocks, run.sink.first, run.snapshots, run.distributions, notes)


class GroupMerge:
    """The client's side of a split cell: merges the groups' chunk files, in order, as they appear, and keeps its
    merged statistics on disk (``merged.npz``, by time) so a resumed run starts after them."""

    def __init__(self, plan: CellPlan, seed: int, groups: list[range], folder: Path, interval: float = 5.0):
        self.plan, self.seed, self.groups, self.folder = plan, seed, groups, Path(folder)
        self.G, self.R = plan.spec.generations, plan.spec.replicates
        self.chunk = chunk_generations(plan)
        self.chunks = math.ceil(self.G / self.chunk)
        self.keep = keeps_replicates(plan.spec)
        self.interval = interval
        self.key = fingerprint(plan.resolved, seed, plan.index)
        self.names: list[str] = []
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        self.kept: dict[str, np.ndarray] = {}
        self.merged = 0  # chunks merged
        self.saved = 0  # chunks in merged.npz (their files may go)
        self._last_save = time.monotonic()
        self._load()
        if not self.merged:  # nothing merged to build on: the groups start afresh too (their files would not fit)
            for g in groups:
                shutil.rmtree(group_folder(self.folder, g), ignore_errors=True)

    def _load(self) -> None:
        path = self.folder / MERGED
        if not path.is_file():
            return
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != self.key or int(z["chunk"]) != self.chunk:
                    return
                self._start([str(n) for n in z["names"]])
                for name, s in self.stats.items():
                    for k in STATS:
                        s[k][:] = z[f"stat:{k}:{name}"]
                for name in self.kept:
                    self.kept[name][:] = z[f"raw:{name}"]
                self.merged = self.saved = int(z["merged"])
        except (OSError, ValueError, KeyError) as e:
            import warnings

            from ..errors import CheckpointWarning

            warnings.warn(f"checkpoint {path} skipped: unreadable ({e})", CheckpointWarning, stacklevel=2)
            self.names, self.stats, self.kept, self.merged, self.saved = [], {}, {}, 0, 0

    def _start(self, names: list[str]) -> None:
        self.names = names
        self.stats = {n: {k: np.empty(self.G, dtype=np.int64 if k == "count" else float) for k in STATS} for n in names}
        if self.keep:
            family = [n for n in names if not n.startswith("stage_")]
            self.kept = {n: np.empty((self.G, self.R)) for n in family}

    def _save(self) -> None:
        arrays: dict[str, np.ndarray] = {
            "key": np.array(self.key),
            "chunk": np.array(self.chunk),
            "merged": np.array(self.merged),
            "names": np.array(self.names),
        }
        for name, s in self.stats.items():
            for k, v in s.items():
                arrays[f"stat:{k}:{name}"] = v
        for name, v in self.kept.items():
            arrays[f"raw:{name}"] = v
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.folder / MERGED) as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        self.saved, self._last_save = self.merged, time.monotonic()
        for g in self.groups:  # what merged.npz now holds
            where = group_folder(self.folder, g)
            for c in _chunk_files(where):
                if c < self.saved:
                    _chunk_path(where, c).unlink(missing_ok=True)

    def poll(self) -> bool:
        """Merge every chunk all groups have written; whether any was."""
        took = False
        while self.merged < self.chunks:
            paths = [_chunk_path(group_folder(self.folder, g), self.merged) for g in self.groups]
            if not all(p.is_file() for p in paths):
                break
            self._merge(paths)
            self.merged += 1
            took = True
        files = [_chunk_files(group_folder(self.folder, g)) for g in self.groups]
        stale = any(c < self.saved for f in files for c in f)
        # a group waits while MAX_AHEAD of its files are on disk: what is merged is saved then, so they can go
        crowded = any(len(f) >= MAX_AHEAD - 1 for f in files)
        due = self.merged == self.chunks or crowded or time.monotonic() - self._last_save >= self.interval
        if (self.merged > self.saved and due) or stale:
            self._save()
        return took

    def _merge(self, paths: list[Path]) -> None:
        parts = []
        for p in paths:
            with np.load(p, allow_pickle=False) as z:
                parts.append({k: z[k] for k in z.files})
        if not self.names:
            self._start([str(n) for n in parts[0]["names"]])
        a = int(parts[0]["start"])
        for name in self.names:
            # the groups' rows side by side, in group order: chains in block order, as a one-process run has them
            row = np.concatenate([z[f"values:{name}"] for z in parts], axis=-1)
            b = a + row.shape[0]
            for stat, v in replicate_stats(row).items():
                self.stats[name][stat][a:b] = v
            if name in self.kept:
                self.kept[name][a:b] = row

    @property
    def generations_done(self) -> int:
        return min(self.G, self.merged * self.chunk)

    def done(self) -> bool:
        return self.merged == self.chunks

    def result(self, results: list[GroupResult]) -> CellResult:
        """The cell's result from the merged statistics and the groups' per-chain state, in block order."""
        from .loop import CellKernel, finish_cell

        results = sorted(results, key=lambda r: r.blocks.start)
        names = list(results[0].first)
        first = {k: np.concatenate([r.first[k] for r in results]) for k in names}
        notes: list[str] = []
        for r in results:
            notes += [n for n in r.notes if n not in notes]
        head = results[0]
        kernel0 = CellKernel(self.plan, self.seed, 0, replicate_blocks(self.R, self.plan.spec.replicate_block)[0])
        kept = dict(self.kept)
        if kept and any(n.startswith("stage_") for n in self.names):  # the indicators, as a one-process run keeps
            f = kernel0.family
            sig = Signals(f.tail_metrics, f.spread_metrics, f.signal_references(), self.plan.spec.stages, None)
            signal_names = (*sig.tail, *sig.spread)
            if sig.config.reference == "generation0":  # type: ignore[attr-defined]
                base: dict[str, np.ndarray | float] = {k: kept[k][0] for k in signal_names if k in kept}
            else:
                base = {k: sig.references.get(k, 1.0) for k in signal_names}
            kept.update(stage_shares(stage_codes(kept, sig.tail, sig.spread, base, sig.config)))
        stats = {n: dict(s) for n, s in self.stats.items()}
        return finish_cell(self.plan, kernel0, stats, first, kept, head.snapshots, head.distributions, notes, self.G)
