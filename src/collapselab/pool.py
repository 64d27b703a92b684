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

REAL = -1


@dataclass(eq=False)
class Pool:
    x: np.ndarray  # (R, N, ...) records
    generation: np.ndarray  # (R, N) int16: REAL for real records, else the generation that sampled it
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (R, N) float per-record provenance

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
        xi = idx.reshape(idx.shape + (1,) * (self.x.ndim - 2))
        return Pool(
            np.take_along_axis(self.x, xi, axis=1),
            np.take_along_axis(self.generation, idx, axis=1),
            {n: np.take_along_axis(v, idx, axis=1) for n, v in self.extra.items()},
        )

    def column(self, name: str) -> np.ndarray:
        """A provenance column (R, N); records without it read as 0 (``poisoned``) or NaN (scores, sources)."""
        if name in self.extra:
            return self.extra[name]
        return np.full(self.generation.shape, 0.0 if name == "poisoned" else np.nan)

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
        ends = np.cumsum([p.size for p in pools])
        which = np.searchsorted(ends, idx, side="right")  # the pool each index falls in
        start = 0
        for i, pool in enumerate(pools):
            rows, cols = np.nonzero(which == i)
            local = idx[rows, cols] - start
            x[rows, cols] = pool.x[rows, local]
            generation[rows, cols] = pool.generation[rows, local]
            for n in names:
                extra[n][rows, cols] = pool.column(n)[rows, local]
            start = int(ends[i])
        return Pool(x, generation, extra)

    def synthetic_share(self) -> np.ndarray:
        """Share of synthetic records in each replicate's pool, shape (R,)."""
        return (self.generation != REAL).mean(axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "generation": self.generation, **{f"extra:{n}": v for n, v in self.extra.items()}}


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
