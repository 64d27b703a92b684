"""Gaussian kernel density estimation with a fixed bandwidth.

Unlike the Gaussian MLE, a KDE *spreads* under replace: each generation adds the kernel's variance
h² to the distribution's (minus the (N-1)/N shrinkage of the sample variance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from .base import Family, FamilyTags, Params, register_family
from .gaussian import fit_moments


@dataclass(eq=False)
class KDEModel:
    points: np.ndarray  # (R, N, d)
    bandwidth: float

    def sample(self, m, rng):
        R, N, d = self.points.shape
        idx = rng.integers(0, N, size=(R, m))
        centres = np.take_along_axis(self.points, idx[:, :, None], axis=1)
        return centres + self.bandwidth * rng.standard_normal((R, m, d))

    def moments(self):
        """Mean and covariance of the KDE distribution (the points' MLE moments plus h² I)."""
        mean, cov = fit_moments(self.points, ddof=0)
        return mean, cov + self.bandwidth**2 * np.eye(self.points.shape[2])


@register_family
class KDEFamily(Family):
    name = "kde"
    tags = FamilyTags(accepts=("continuous",))
    spread_metrics = ("trace_ratio",)

    class Params(Params):
        bandwidth: float = Field(default=0.1, gt=0)

    def fit(self, x, rng):
        return KDEModel(np.array(x, copy=True), self.params.bandwidth)

    def metrics(self, model: KDEModel):
        truth = self.reference.truth
        mean, cov = model.moments()
        drift = mean - truth.mean
        out = {}
        if truth.dim == 1:
            out["var_ratio"] = cov[:, 0, 0] / truth.cov[0, 0]
        out["trace_ratio"] = np.trace(cov, axis1=1, axis2=2) / np.trace(truth.cov)
        out["mean_sq_drift"] = np.sum(drift * drift, axis=1)
        return out
