"""One-parameter families of Suresh et al. 2024: Bernoulli and Poisson, fitted by their sample mean.

Both are martingales under replace (the mean is kept in expectation) yet die out: once the fitted
parameter hits zero it stays there, so ``alive`` falls generation after generation. A Bernoulli chain fixes
at either end: at p = 1 it is as dead as at p = 0 (one outcome only, no spread), so its stage signals are the
minority outcome's share min(p, 1 - p) (tail) and the variance p(1 - p) (spread), and ``unfixed`` is the
indicator of 0 < p < 1 (its mean across chains: the share not yet fixed; ``fixated`` is its complement, the
collapse metric). A Poisson chain collapses at rate 0 (``extinct``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Family, FamilyTags, Params, SumStats, register_family


class _SumFamily(Family):
    """Bernoulli and Poisson fitted by the sample mean: the sufficient statistic is the sum of the records."""

    class Params(Params):
        exact: bool = True

    def stats_of(self, x):
        return SumStats(x.shape[1], x.sum(axis=1).astype(np.int64))

    def fit_population(self, parts, R):
        """The sample mean of infinitely many records: the mixture's mean."""
        mean = sum(
            p.weight * (getattr(p.truth, self.parameter) if p.truth is not None else getattr(p.model, self.parameter))
            for p in parts
        )
        return self.Model(np.array(np.broadcast_to(mean, (R,)), dtype=float))

    def merge_stats(self, parts):
        return SumStats.merge(parts)

    def fit_weighted(self, parts):
        """The weighted sample mean: each part's mean times its weight."""
        return self.Model(np.asarray(sum(w * s.sums / s.count for s, w in parts), dtype=float))

    def stats_arrays(self, stats):
        return stats.arrays()

    def stats_from_arrays(self, arrays):
        return SumStats.from_arrays(arrays)


@dataclass(eq=False)
class BernoulliModel:
    p: np.ndarray  # (R,)

    def sample(self, m, rng):
        return (rng.random((self.p.shape[0], m)) < self.p[:, None]).astype(np.uint8)


@dataclass(eq=False)
class PoissonModel:
    rate: np.ndarray  # (R,)

    def sample(self, m, rng):
        return rng.poisson(np.broadcast_to(self.rate[:, None], (self.rate.shape[0], m)))


@register_family
class BernoulliFamily(_SumFamily):
    name = "bernoulli"
    parameter = "p"
    Model = BernoulliModel
    tags = FamilyTags(accepts=("binary",), exact=True, weighted=True)
    tail_metrics = ("minority",)
    spread_metrics = ("variance",)
    collapse_metric = "fixated"

    def fit(self, x, rng):
        return BernoulliModel(x.mean(axis=1))

    def sample_stats(self, model, m, rng):
        return SumStats(m, rng.binomial(m, model.p))  # the number of ones among m draws

    def fit_stats(self, stats):
        return BernoulliModel(stats.sums / stats.count)

    def metrics(self, model):
        p = model.p
        return {
            "p": p,
            "alive": (p > 0).astype(float),
            "unfixed": ((p > 0) & (p < 1)).astype(float),
            "fixated": ((p <= 0) | (p >= 1)).astype(float),
            "minority": np.minimum(p, 1.0 - p),
            "variance": p * (1.0 - p),
        }


@register_family
class PoissonFamily(_SumFamily):
    name = "poisson"
    parameter = "rate"
    Model = PoissonModel
    tags = FamilyTags(accepts=("count",), exact=True, weighted=True)
    tail_metrics = ("alive",)
    spread_metrics = ("alive",)
    collapse_metric = "extinct"

    def fit(self, x, rng):
        return PoissonModel(x.mean(axis=1))

    def sample_stats(self, model, m, rng):
        return SumStats(m, rng.poisson(m * model.rate))  # a sum of m Poisson(λ) is Poisson(mλ)

    def fit_stats(self, stats):
        return PoissonModel(stats.sums / stats.count)

    def metrics(self, model):
        alive = (model.rate > 0).astype(float)
        return {"rate": model.rate, "alive": alive, "extinct": 1.0 - alive}
