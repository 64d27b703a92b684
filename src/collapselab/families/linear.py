"""The fixed-design linear regression chain (Dohmatob et al. 2024; Gerstgrasser et al. 2024).

Each generation fits OLS on its training rows [x, y]; its synthetic records keep the design rows and
draw fresh labels X·ŵ + noise·ε at the data's noise level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sources.truth import LinearTruth
from .base import Family, FamilyTags, register_family


@dataclass(eq=False)
class LinearModel:
    weights: np.ndarray  # (R, dim)
    truth: LinearTruth

    def sample(self, m, rng):
        R = self.weights.shape[0]
        if self.truth.design_seed is None:
            rows = np.resize(np.arange(self.truth.design.shape[0]), m)
            labels = np.einsum("rd,md->rm", self.weights, self.truth.design[rows])  # not BLAS: see batched.bmm
        else:
            labels = np.einsum("rd,rmd->rm", self.weights, self.truth.rows(R, m))
        labels = labels + self.truth.noise * rng.standard_normal((R, m))
        return self.truth.records(labels)


@register_family
class LinearFamily(Family):
    name = "linear"
    tags = FamilyTags(accepts=("regression",))

    def fit(self, x, rng):
        X, y = x[..., :-1], x[..., -1]
        gram = np.einsum("rni,rnj->rij", X, X)
        moment = np.einsum("rni,rn->ri", X, y)
        try:
            weights = np.linalg.solve(gram, moment[..., None])[..., 0]
        except np.linalg.LinAlgError:  # a subsample that repeats design rows can be rank-deficient
            weights = np.einsum("rij,rj->ri", np.linalg.pinv(gram), moment)
        return LinearModel(weights, self.reference.truth)

    def metrics(self, model):
        err = model.weights - self.reference.truth.weights
        return {"test_error": np.sum(err * err, axis=1)}
