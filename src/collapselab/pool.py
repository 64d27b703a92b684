"""Pools of training records with per-record provenance.

A pool holds records for all R replicate chains at once, ``x`` of shape ``(R, N, ...)``, and for every
record the generation that produced it (``REAL`` = -1 for real data). Training sets are pools too,
so the synthetic share of every training set is read off its provenance, never inferred.

Further provenance travels in ``extra``, named per-record columns (R, N): ``poisoned`` (1 for records an
attack injected), ``source`` (which source a record came from, for leave-one-source-out screens) and
``score:STAGE`` (the score each curation stage gave a synthetic record).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._numerics.batched import take_rows

REAL = -1


def column_default(name: str) -> float:
    """What a record without provenance column ``name`` reads: 0 for ``poisoned``, NaN for scores and sources."""
    return 0.0 if name == "poisoned" else np.nan


@dataclass(eq=False)
class Pool:
    x: np.ndarray  # (R, N, ...) records
    generation: np.ndarray  # (R, N) int16: REAL for real records, else the generation that sampled it
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (R, N) float per-record provenance
    # arrays with room after this pool's records, and how much of them is filled (see extended)
    _room: _Room | None = field(default=None, repr=False)

    @classmethod
    def real(cls, x: np.ndarray) -> Pool:
        return cls(x, np.full(x.shape[:2], REAL, dtype=np.int16))

    @classmethod
    def synthetic(cls, x: np.ndarray, generation: int) -> Pool:
        return cls(x, np.full(x.shape[:2], generation, dtype=np.int16))

    @property
    def size(self) -> int:
        return self.x.shape[1]

    def head(self, k: int) -> Pool:
        """The first k records of every replicate (records of a pool are exchangeable draws)."""
        return Pool(self.x[:, :k], self.generation[:, :k], {n: v[:, :k] for n, v in self.extra.items()})

    def take(self, idx: np.ndarray) -> Pool:
        """Records ``idx`` (R, k) of each replicate."""
        return Pool(
            take_rows(self.x, idx),
            take_rows(self.generation, idx),
            {n: take_rows(v, idx) for n, v in self.extra.items()},
        )

    def column(self, name: str) -> np.ndarray:
        """A provenance column (R, N); records without it read as 0 (``poisoned``) or NaN (scores, sources)."""
        if name in self.extra:
            return self.extra[name]
        return np.full(self.generation.shape, column_default(name))

    @staticmethod
    def concat(pools: Sequence[Pool | StatsPool]) -> Pool | StatsPool:
        if len(pools) == 1:
            return pools[0]
        if any(isinstance(p, StatsPool) for p in pools):
            return StatsPool.merge(pools)
        names = sorted({n for p in pools for n in p.extra})
        return Pool(
            np.concatenate([p.x for p in pools], axis=1),
            np.concatenate([p.generation for p in pools], axis=1),
            {n: np.concatenate([p.column(n) for p in pools], axis=1) for n in names},
        )

    @staticmethod
    def take_concat(pools: Sequence[Pool], idx: np.ndarray) -> Pool:
        """``Pool.concat(pools).take(idx)`` without the concatenation: only the k records of each replicate are
        copied, not all N (at d = 31 copying every accumulated record was most of a subsampled generation)."""
        if len(pools) == 1:
            return pools[0].take(idx)
        R, k = idx.shape
        x = np.empty((R, k, *pools[0].x.shape[2:]), dtype=np.result_type(*(p.x for p in pools)))
        generation = np.empty((R, k), dtype=np.result_type(*(p.generation for p in pools)))
        names = sorted({n for p in pools for n in p.extra})
        # provenance columns are float; a pool without one reads it as its default (Pool.column), also float
        extra = {
            n: np.empty((R, k), dtype=np.result_type(*(p.extra[n] for p in pools if n in p.extra), float))
            for n in names
        }
        start = 0
        for pool in pools:  # each pool's records gathered where the indices fall in it: O(R k) per pool
            inside = (idx >= start) & (idx < start + pool.size)
            part = pool.take(np.clip(idx - start, 0, pool.size - 1))
            np.copyto(x, part.x, where=inside.reshape(inside.shape + (1,) * (x.ndim - 2)))
            np.copyto(generation, part.generation, where=inside)
            for n in names:
                np.copyto(extra[n], part.extra.get(n, column_default(n)), where=inside)
            start += pool.size
        return Pool(x, generation, extra)

    def extended(self, other: Pool, capacity: int) -> Pool:
        """This pool followed by ``other``, written into room after this pool's records, allocated once for
        ``capacity`` records: a pool that grows by one generation's records at a time then costs each generation
        only its new records, not a copy of everything it holds (accumulate-subsample keeps every record)."""
        n, total = self.size, self.size + other.size
        names = sorted({*self.extra, *other.extra})
        room = self._room
        if room is None or not room.fits(self, other, names, total):  # (also when extended before: room is taken)
            room = _Room.around(self, other, names, max(capacity, total, 2 * n))
        room.x[:, n:total] = other.x
        room.generation[:, n:total] = other.generation
        for name in names:
            room.extra[name][:, n:total] = other.column(name)
        room.filled = total
        return Pool(
            room.x[:, :total], room.generation[:, :total], {k: v[:, :total] for k, v in room.extra.items()}, room
        )

    def synthetic_share(self) -> np.ndarray:
        """Share of synthetic records in each replicate's pool, shape (R,)."""
        return (self.generation != REAL).mean(axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "generation": self.generation, **{f"extra:{n}": v for n, v in self.extra.items()}}


@dataclass(eq=False)
class _Room:
    """Arrays (R, capacity, ...) whose first ``filled`` records are a pool's: Pool.extended writes after them."""

    x: np.ndarray
    generation: np.ndarray
    extra: dict[str, np.ndarray]
    filled: int

    @classmethod
    def around(cls, pool: Pool, other: Pool, names: list[str], capacity: int) -> _Room:
        R, n = pool.generation.shape
        x = np.empty((R, capacity, *pool.x.shape[2:]), dtype=np.result_type(pool.x, other.x))
        generation = np.empty((R, capacity), dtype=np.result_type(pool.generation, other.generation))
        extra = {k: np.empty((R, capacity), dtype=np.result_type(pool.column(k), other.column(k))) for k in names}
        x[:, :n], generation[:, :n] = pool.x, pool.generation
        for k in names:
            extra[k][:, :n] = pool.column(k)
        return cls(x, generation, extra, n)

    def fits(self, pool: Pool, other: Pool, names: list[str], total: int) -> bool:
        """Whether ``other`` can be written after ``pool`` here: the pool is this room's newest, there is space,
        and the records and columns are of the kinds the room holds."""
        return (
            self.filled == pool.size
            and self.x.shape[1] >= total
            and sorted(self.extra) == names
            and np.result_type(self.x, other.x) == self.x.dtype
            and np.result_type(self.generation, other.generation) == self.generation.dtype
            and all(np.result_type(v, other.column(k)) == v.dtype for k, v in self.extra.items())
        )


@dataclass(eq=False)
class StatsPool:
    """A pool kept as the sufficient statistics of its records (the exact fast path, see families/base.py).

    Records of a pool are exchangeable, so the statistics of "the first k records of m" are drawn directly as
    the statistics of k records: policies take whole stats pools. Counts by origin are the same in every
    replicate, which is all the synthetic share needs.
    """

    stats: object  # the family's batched sufficient statistics
    real: int
    synthetic: int
    replicates: int
    family: object  # the family that reads, merges and serialises its statistics

    @property
    def size(self) -> int:
        return self.real + self.synthetic

    def head(self, k: int) -> StatsPool:
        if k != self.size:
            raise ValueError(f"a stats pool of {self.size} records cannot give {k}: draw exactly what is used")
        return self

    def synthetic_share(self) -> np.ndarray:
        return np.full(self.replicates, self.synthetic / self.size)

    @staticmethod
    def merge(pools: list[Pool | StatsPool]) -> StatsPool:
        family = next(p.family for p in pools if isinstance(p, StatsPool))
        parts = [p if isinstance(p, StatsPool) else StatsPool.of_records(p, family) for p in pools]
        return StatsPool(
            family.merge_stats([p.stats for p in parts]),
            sum(p.real for p in parts),
            sum(p.synthetic for p in parts),
            parts[0].replicates,
            family,
        )

    @staticmethod
    def of_records(pool: Pool, family) -> StatsPool:
        real = int(np.count_nonzero(pool.generation[0] == REAL))  # the same in every replicate
        return StatsPool(family.stats_of(pool.x), real, pool.size - real, pool.x.shape[0], family)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"stats:{k}": v for k, v in self.family.stats_arrays(self.stats).items()}
        arrays["counts"] = np.array([self.real, self.synthetic, self.replicates])
        return arrays


def pool_from_arrays(arrays: dict[str, np.ndarray], family) -> Pool | StatsPool:
    if "counts" in arrays:
        real, synthetic, replicates = (int(v) for v in arrays["counts"])
        stats = family.stats_from_arrays({k[6:]: v for k, v in arrays.items() if k.startswith("stats:")})
        return StatsPool(stats, real, synthetic, replicates, family)
    extra = {k[6:]: v for k, v in arrays.items() if k.startswith("extra:")}
    return Pool(arrays["x"], arrays["generation"], extra)
