"""Executors run cells. Results never depend on which one ran them, or on how many workers it had:
every random draw is addressed by (seed, cell, stream, generation), see :mod:`collapselab.rng`."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed

from .loop import CellResult, Progress, run_cell
from .spec import Cell


def run_cells(cells: list[Cell], seed: int, workers: int = 1, progress: Progress | None = None) -> list[CellResult]:
    """Run every cell; results come back in cell order whatever order they finished in."""
    workers = max(1, min(workers, len(cells)))
    if workers == 1:
        return [run_cell(cell, seed, progress) for cell in cells]
    results: dict[str, CellResult] = {}
    with ProcessPoolExecutor(max_workers=workers, initializer=_single_thread) as pool:
        futures = {pool.submit(run_cell, cell, seed): cell for cell in cells}
        for fut in as_completed(futures):
            cell = futures[fut]
            results[cell.id] = fut.result()
            if progress is not None:
                progress(cell.id, cell.spec.generations, cell.spec.generations)
    return [results[cell.id] for cell in cells]


def _single_thread() -> None:
    # BLAS threads inside each worker would fight the other workers for the same cores
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
