"""Categorical frequencies by maximum likelihood: under replace this is the Wright–Fisher model of drift."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from .._numerics.batched import bincount_rows, categorical_sample
from .base import Family, FamilyTags, Params, SumStats, register_family


@dataclass(eq=False)
class CategoricalModel:
    probs: np.ndarray  # (R, K)
    temperature: float = 1.0  # sampling bias T: records are drawn from p^(1/T), renormalised

    @property
    def sampling_probs(self) -> np.ndarray:
        if self.temperature == 1.0:
            return self.probs
        with np.errstate(divide="ignore"):
            logits = np.where(self.probs > 0, np.log(self.probs), -np.inf) / self.temperature
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        return w / w.sum(axis=1, keepdims=True)

    def sample(self, m, rng):
        return categorical_sample(self.sampling_probs, m, rng)


@register_family
class CategoricalFamily(Family):
    name = "categorical"
    tags = FamilyTags(accepts=("categorical",), exact=True, weighted=True)
    tail_metrics = ("rare_mass", "support")
    spread_metrics = ("entropy",)
    collapse_metric = "fixated"  # one category left: the Wright-Fisher chain has fixed

    def signal_references(self):
        p = self.reference.truth.probs
        nz = p[p > 0]
        return {"rare_mass": 1.0, "support": float(nz.size), "entropy": float(-(nz * np.log(nz)).sum())}

    class Params(Params):
        exact: bool = True
        temperature: float = Field(default=1.0, gt=0, description="sampling bias: < 1 favours common categories")

    def fit(self, x, rng):
        K = self.reference.truth.categories
        return CategoricalModel(bincount_rows(x, K) / x.shape[1], self.params.temperature)

    def fit_population(self, parts, R):
        probs = sum(p.weight * (p.truth.probs if p.truth is not None else p.model.sampling_probs) for p in parts)
        return CategoricalModel(
            np.array(np.broadcast_to(probs, (R, self.reference.truth.categories))), self.params.temperature
        )

    # exact path: the category counts are multinomial
    def stats_of(self, x):
        return SumStats(x.shape[1], bincount_rows(x, self.reference.truth.categories))

    def sample_stats(self, model, m, rng):
        probs = model.sampling_probs
        probs = probs / probs.sum(axis=1, keepdims=True)  # exact sums for numpy's check
        return SumStats(m, rng.multinomial(m, probs))

    def merge_stats(self, parts):
        return SumStats.merge(parts)

    def fit_stats(self, stats):
        return CategoricalModel(stats.sums / stats.count, self.params.temperature)

    def fit_weighted(self, parts):
        """Each part's category frequencies times its weight."""
        return CategoricalModel(sum(w * s.sums / s.count for s, w in parts), self.params.temperature)

    def stats_arrays(self, stats):
        return stats.arrays()

    def stats_from_arrays(self, arrays):
        return SumStats.from_arrays(arrays)

    def metrics(self, model: CategoricalModel):
        truth = self.reference.truth
        p = model.probs
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(p > 0, p * np.log(p), 0.0)
        rare = truth.rare_categories
        return {
            "support": np.count_nonzero(p, axis=1).astype(float),
            "gini_simpson": 1.0 - np.sum(p * p, axis=1),
            "entropy": -plogp.sum(axis=1),
            "tv": 0.5 * np.abs(p - truth.probs).sum(axis=1),
            "rare_mass": p[:, rare].sum(axis=1) / truth.probs[rare].sum(),
            "fixated": (p.max(axis=1) >= 1.0).astype(float),
        }
