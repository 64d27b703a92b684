"""One-parameter families of Suresh et al. 2024: Bernoulli and Poisson, fitted by their sample mean.

Both are martingales under replace (the mean is kept in expectation) yet die out: once the fitted
parameter hits zero it stays there, so ``alive`` falls generation after generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Family, register_family


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
class BernoulliFamily(Family):
    name = "bernoulli"
    accepts = ("binary",)
    tail_metrics = ("alive",)
    spread_metrics = ("alive",)

    def fit(self, x, rng):
        return BernoulliModel(x.mean(axis=1))

    def metrics(self, model):
        return {"p": model.p, "alive": (model.p > 0).astype(float)}


@register_family
class PoissonFamily(Family):
    name = "poisson"
    accepts = ("count",)
    tail_metrics = ("alive",)
    spread_metrics = ("alive",)

    def fit(self, x, rng):
        return PoissonModel(x.mean(axis=1))

    def metrics(self, model):
        return {"rate": model.rate, "alive": (model.rate > 0).astype(float)}
