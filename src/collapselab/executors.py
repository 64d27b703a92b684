"""Executors run cells: in-process, on a local process pool, or on a Dask distributed cluster.

An executor is a function ``(cells, seed, workers, scheduler, progress, folders) -> results in cell order``
registered in ``plugins.EXECUTORS``; ``folders`` maps a cell id to its checkpoint folder (or None).

Results never depend on which one ran them, or on how many workers it had: every random draw is addressed by
(seed, cell, stream, generation) (see rng.py), and BLAS runs single-threaded in every executor so the
floating-point operations are the same ones everywhere. Cells come back in cell order.

Progress flows back as ``(cell id, generations done, generations)`` events, throttled in the workers.
"""

from __future__ import annotations

import os
import queue as queue_mod
import shutil
import tempfile
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import suppress
from pathlib import Path

from .engine.blocks import GroupMerge, GroupResult, groups_of, run_group, splittable
from .engine.checkpoints import WriteSchedule
from .engine.loop import Progress, run_cell
from .engine.plan import CellPlan
from .engine.state import CellResult
from .errors import CollapselabError, InputError, RunInterrupted
from .plugins import EXECUTORS
from .rng import replicate_blocks


def run_cells(
    cells: list[CellPlan],
    seed: int,
    *,
    executor: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Progress | None = None,
    checkpoint_root: Path | None = None,
) -> list[CellResult]:
    """Run every cell. ``executor`` defaults to ``dask`` with a scheduler, else to ``processes`` when
    ``workers > 1``, else ``inline``. With ``checkpoint_root``, cell i checkpoints to ``checkpoint_root/cell-i``."""
    check_execution(executor, scheduler)
    if executor is None:
        executor = "dask" if scheduler else ("processes" if workers > 1 else "inline")
    folders = {c.id: (checkpoint_root / f"cell-{c.id}" if checkpoint_root else None) for c in cells}
    return EXECUTORS[executor](cells, seed, max(1, workers), scheduler, progress, folders)


def check_execution(executor: str | None, scheduler: str | None) -> None:
    """Refuse an unknown executor, or a scheduler without Dask, before anything is created."""
    if executor is not None and executor not in EXECUTORS:
        raise InputError(f"--executor {executor!r}: allowed: {', '.join(EXECUTORS.names())}")
    if scheduler and executor not in (None, "dask"):
        raise InputError(f"--scheduler needs --executor dask, not {executor!r}")


def estimated_cost(cell: CellPlan) -> float:
    """A rough relative cost of a cell, to start the longest first (results do not depend on the order)."""
    spec = cell.spec
    per_generation = max(spec.data.n, spec.samples)
    if cell.policy.grows:  # the training set grows by m records each generation
        per_generation = spec.data.n + spec.samples * spec.generations / 2
    return float(spec.replicates * spec.generations * per_generation)


def longest_first(cells: list[CellPlan]) -> list[CellPlan]:
    return sorted(cells, key=lambda c: (-estimated_cost(c), c.index))


def _single_thread() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


class _QueueProgress:
    """A picklable progress callback for workers: puts throttled events on a queue the client drains."""

    def __init__(self, q, every: float = 0.25):
        self.q, self.every, self.last = q, every, 0.0

    def __call__(self, cell_id: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= self.every:
            self.last = now
            self.q.put((cell_id, done, total))


def _cell_task(cell: CellPlan, seed: int, progress, folder) -> CellResult:
    _single_thread()
    return run_cell(cell, seed, progress, folder)


def _group_task(cell: CellPlan, seed: int, blocks: range, folder: Path) -> GroupResult:
    _single_thread()
    return run_group(cell, seed, blocks, folder)


@EXECUTORS.register(name="inline")
def _run_inline(cells, seed, workers, scheduler, progress, folders) -> list[CellResult]:
    from threadpoolctl import threadpool_limits

    # one write schedule across the cells: a cell shorter than the interval leaves its checkpoint to the next one
    schedule = WriteSchedule(shared=True)
    with threadpool_limits(1):
        try:
            return [run_cell(c, seed, progress, folders[c.id], schedule) for c in cells]
        except BaseException:
            with suppress(Exception):
                schedule.flush_held()
            raise


@EXECUTORS.register(name="processes")
def _run_processes(cells, seed, workers, scheduler, progress, folders) -> list[CellResult]:
    import multiprocessing as mp

    results: dict[str, CellResult] = {}
    with mp.Manager() as manager, ProcessPoolExecutor(max_workers=min(workers, len(cells))) as pool:
        q = manager.Queue()
        sink = _QueueProgress(q) if progress else None
        pending = {pool.submit(_cell_task, c, seed, sink, folders[c.id]): c for c in longest_first(cells)}
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(q, progress)
            for fut in done:
                cell = pending.pop(fut)
                results[cell.id] = fut.result()
        _drain(q, progress)
    return [results[c.id] for c in cells]


def _drain(q, progress) -> None:
    if progress is None:
        return
    while True:
        try:
            cell_id, done, total = q.get_nowait()
        except (queue_mod.Empty, EOFError, OSError):
            return
        progress(cell_id, done, total)


class _DaskQueueProgress(_QueueProgress):
    """Worker side of progress on Dask: a named distributed Queue, looked up lazily on the worker."""

    def __init__(self, name: str, every: float = 0.5):
        super().__init__(None, every)
        self.name = name

    def __call__(self, cell_id, done, total):
        if self.q is None:
            from distributed import Queue

            self.q = Queue(self.name)
        super().__call__(cell_id, done, total)

    def __getstate__(self):
        return {"name": self.name, "every": self.every, "last": 0.0, "q": None}


LOOPBACK = "127.0.0.1"
# how long a Dask run waits with no worker alive before it gives up (seconds)
NO_WORKERS_ENV = "COLLAPSELAB_DASK_NO_WORKERS_S"


def local_cluster(workers: int):
    """A Dask LocalCluster of ``workers`` single-threaded processes, every server on loopback: the scheduler,
    the workers and their HTTP servers (no dashboard)."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host=LOOPBACK,
        dashboard_address=None,
        worker_dashboard_address=None,
        silence_logs=40,
    )


@EXECUTORS.register(name="dask")
def _run_dask(cells, seed, workers, scheduler, progress, folders) -> list[CellResult]:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - a dependency of collapselab
        raise InputError("--executor dask needs the 'distributed' package: pip install 'dask[distributed]'") from None
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="10s")
        else:
            # a cell of several replicate blocks can use a worker per block (engine/blocks.py)
            useful = sum(len(replicate_blocks(c.spec.replicates, c.spec.replicate_block)) for c in cells)
            cluster = local_cluster(min(workers, useful))
            client = Client(cluster)
    except (OSError, TimeoutError) as e:
        if cluster is not None:
            cluster.close()
        raise InputError(f"--scheduler {scheduler}: cannot connect ({e})") from None
    quiet = _quiet_distributed_logs()  # a lost scheduler is our one line, not distributed's logged tracebacks
    try:
        return _dask_loop(client, cells, seed, progress, folders)
    except CollapselabError:
        raise
    except Exception as e:
        if not _lost_cluster(e):
            raise  # the cell's own error, from its worker
        where = scheduler or "the local cluster"
        raise RunInterrupted(
            f"lost the Dask scheduler at {where} ({type(e).__name__}); its checkpoints are kept: "
            "resume the run when the cluster is back"
        ) from None
    finally:
        try:
            client.close(timeout=5)
        except Exception:  # noqa: BLE001 - a client of a lost scheduler may fail to close: nothing to keep
            pass
        if cluster is not None:
            cluster.close()
        quiet()


def _lost_cluster(e: BaseException) -> bool:
    """Whether an exception says the connection to the scheduler is gone (not a cell's own failure)."""
    import asyncio

    names = {c.__name__ for c in type(e).__mro__}
    if names & {"CommClosedError", "FutureCancelledError"} or isinstance(e, (asyncio.CancelledError, TimeoutError)):
        return True
    return isinstance(e, OSError) and "connect" in str(e).lower()


def _quiet_distributed_logs():
    """Silence distributed's loggers for the run; returns the function that restores them."""
    import logging

    loggers = [logging.getLogger(n) for n in ("distributed", "distributed.client", "distributed.comm")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)

    def restore() -> None:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)

    return restore


def _dask_loop(client, cells, seed, progress, folders) -> list[CellResult]:
    """Every cell as a task, except cells of several replicate blocks when the cluster has several workers: those
    run as groups of blocks, one task per group, merged here as their chunks come in (engine/blocks.py)."""
    from distributed import Queue, as_completed

    name = f"collapselab-progress-{uuid.uuid4().hex}"
    q = Queue(name, client=client) if progress else None
    sink = _DaskQueueProgress(name) if progress else None
    ordered = longest_first(cells)
    workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    scratch: list[Path] = []
    merges: dict[str, GroupMerge] = {}
    if workers > 1:
        for c in ordered:
            if not splittable(c):
                continue
            folder = folders[c.id]
            if folder is None:  # a run that saves nothing: the local cluster shares this machine's disk
                if not client.cluster:
                    continue
                folder = Path(tempfile.mkdtemp(prefix=f"collapselab-cell-{c.id}-"))
                scratch.append(folder)
            merges[c.id] = GroupMerge(c, seed, groups_of(c, workers), Path(folder))
    futures, by_key, group_results = [], {}, {cid: [] for cid in merges}
    for i, c in enumerate(ordered):
        priority = len(ordered) - i + (len(ordered) if c.id in merges else 0)  # a split cell's groups run together
        if c.id in merges:
            for blocks in merges[c.id].groups:
                key = f"cell-{c.id}-blocks-{blocks.start}-{blocks.stop}-{uuid.uuid4().hex}"
                fut = client.submit(
                    _group_task, c, seed, blocks, merges[c.id].folder, key=key, pure=False, priority=priority
                )
                futures.append(fut)
                by_key[fut.key] = c
            continue
        fut = client.submit(
            _cell_task,
            c,
            seed,
            sink,
            folders[c.id],
            key=f"cell-{c.id}-{uuid.uuid4().hex}",
            pure=False,
            priority=priority,
        )
        futures.append(fut)
        by_key[fut.key] = c
    results: dict[str, CellResult] = {}
    done_iter = as_completed(futures)
    remaining = set(f.key for f in futures)
    shown: dict[str, int] = {}
    no_workers_since = None
    last_check = 0.0
    grace = float(os.environ.get(NO_WORKERS_ENV, "60"))
    try:
        while remaining or len(results) < len(cells):
            for fut in done_iter.next_batch(block=False) if done_iter.has_ready() else []:
                cell = by_key[fut.key]
                remaining.discard(fut.key)
                if cell.id in merges:
                    group_results[cell.id].append(fut.result())
                else:
                    results[cell.id] = fut.result()
            for cid, merge in merges.items():
                if cid in results:
                    continue
                merge.poll()
                if progress is not None and shown.get(cid) != merge.generations_done:
                    shown[cid] = merge.generations_done
                    progress(cid, merge.generations_done, merge.G)
                if len(group_results[cid]) == len(merge.groups):
                    if not merge.done():
                        merge.poll()  # the last chunks were written as the groups ended
                    if not merge.done():
                        raise CollapselabError(
                            f"cell {cid}: its groups finished but chunk {merge.merged} of {merge.chunks} is missing"
                        )
                    results[cid] = merge.result(group_results[cid])
            if q is not None:
                for cell_id, d, total in _dask_drain(q):
                    progress(cell_id, d, total)
            now = time.monotonic()
            if remaining and now - last_check >= 1.0:  # a cluster whose workers all died never finishes: say so
                last_check = now
                alive = len(client.scheduler_info(n_workers=-1).get("workers", {}))
                no_workers_since = None if alive else (no_workers_since or now)
                if no_workers_since is not None and now - no_workers_since > grace:
                    raise RunInterrupted(
                        f"no Dask worker has been alive for {grace:.0f} s; {len(remaining)} task(s) "
                        "unfinished, checkpoints kept: resume the run when workers are back"
                    )
            if remaining or len(results) < len(cells):
                time.sleep(0.02 if merges else 0.1)
    finally:
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)
    return [results[c.id] for c in cells]


def _dask_drain(q):
    out = []
    try:
        n = q.qsize()
        if n:
            out = q.get(batch=n)
    except Exception:  # noqa: BLE001 - progress is best effort; the results carry the truth
        return []
    return out
