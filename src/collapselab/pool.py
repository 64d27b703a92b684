"""Pools of training records with per-record provenance.

A pool holds records for all R replicate chains at once, ``x`` of shape ``(R, N, ...)``, and for every
record the generation that produced it (``REAL`` = -1 for real data). Training sets are pools too,
so the synthetic share of every training set is read off its provenance, never inferred.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REAL = -1


@dataclass(eq=False)
class Pool:
    x: np.ndarray  # (R, N, ...) records
    generation: np.ndarray  # (R, N) int16: REAL for real records, else the generation that sampled it

    @classmethod
    def real(cls, x: np.ndarray) -> "Pool":
        return cls(x, np.full(x.shape[:2], REAL, dtype=np.int16))

    @classmethod
    def synthetic(cls, x: np.ndarray, generation: int) -> "Pool":
        return cls(x, np.full(x.shape[:2], generation, dtype=np.int16))

    @property
    def size(self) -> int:
        return self.x.shape[1]

    def head(self, k: int) -> "Pool":
        """The first k records of every replicate (records of a pool are exchangeable draws)."""
        return Pool(self.x[:, :k], self.generation[:, :k])

    def take(self, idx: np.ndarray) -> "Pool":
        """Records ``idx`` (R, k) of each replicate."""
        xi = idx.reshape(idx.shape + (1,) * (self.x.ndim - 2))
        return Pool(np.take_along_axis(self.x, xi, axis=1), np.take_along_axis(self.generation, idx, axis=1))

    @staticmethod
    def concat(pools: "list[Pool]") -> "Pool":
        if len(pools) == 1:
            return pools[0]
        return Pool(
            np.concatenate([p.x for p in pools], axis=1),
            np.concatenate([p.generation for p in pools], axis=1),
        )

    def synthetic_share(self) -> np.ndarray:
        """Share of synthetic records in each replicate's pool, shape (R,)."""
        return (self.generation != REAL).mean(axis=1)
