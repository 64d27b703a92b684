"""Kernel density estimation: a Gaussian or tophat kernel, a fixed bandwidth or Scott's or Silverman's rule.

Unlike the Gaussian MLE, a KDE *spreads* under replace: each generation adds the kernel's variance (h² for the
Gaussian kernel, h²/(d + 2) for the tophat, uniform on the ball of radius h) to the distribution's, minus the
(N-1)/N shrinkage of the sample variance.

The rules follow scikit-learn's ``KernelDensity`` (what the papers' loops call): Scott's h = N^(-1/(d+4)) and
Silverman's h = (N (d + 2) / 4)^(-1/(d+4)), on the records as they are (not scaled by their spread, unlike
SciPy's ``gaussian_kde``), N the training set's size: under ``accumulate`` the bandwidth shrinks as it grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from scipy import special

from .._numerics.batched import categorical_sample
from .base import Family, FamilyTags, Params, register_family
from .gaussian import fit_moments

Rule = Literal["scott", "silverman"]
Kernel = Literal["gaussian", "tophat"]
HELDOUT_CHUNK = 64  # held-out records scored at a time: memory R x this x N


def bandwidth_of(bandwidth: float | Rule, records: int, dim: int) -> float:
    """The bandwidth a KDE fitted on ``records`` records in ``dim`` dimensions uses."""
    if bandwidth == "scott":
        return float(records ** (-1 / (dim + 4)))
    if bandwidth == "silverman":
        return float((records * (dim + 2) / 4) ** (-1 / (dim + 4)))
    return float(bandwidth)


def kernel_variance(kernel: Kernel, h: float, dim: int) -> float:
    """Per-coordinate variance of one kernel: h² (Gaussian), h²/(d + 2) (uniform on the ball of radius h)."""
    return h**2 if kernel == "gaussian" else h**2 / (dim + 2)


@dataclass(eq=False)
class KDEModel:
    points: np.ndarray  # (R, N, d)
    bandwidth: float
    kernel: Kernel = "gaussian"
    point_weights: np.ndarray | None = None  # (N,) summing to 1, the same in every chain; None: 1/N each

    def sample(self, m, rng):
        R, N, d = self.points.shape
        if self.point_weights is None:
            idx = rng.integers(0, N, size=(R, m))
        else:
            idx = categorical_sample(np.broadcast_to(self.point_weights, (R, N)), m, rng)
        centres = np.take_along_axis(self.points, idx[:, :, None], axis=1)
        if self.kernel == "gaussian":
            return centres + self.bandwidth * rng.standard_normal((R, m, d))
        # uniform on the ball: a uniform direction, and a radius h U^(1/d)
        direction = rng.standard_normal((R, m, d))
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        radius = self.bandwidth * rng.random((R, m, 1)) ** (1 / d)
        return centres + radius * direction

    def moments(self):
        """Mean and covariance of the KDE distribution (the points' MLE moments plus the kernel's)."""
        d = self.points.shape[2]
        if self.point_weights is None:
            mean, cov = fit_moments(self.points, ddof=0)
        else:
            mean = np.einsum("n,rnd->rd", self.point_weights, self.points)
            diff = self.points - mean[:, None]
            cov = np.einsum("n,rni,rnj->rij", self.point_weights, diff, diff)
        return mean, cov + kernel_variance(self.kernel, self.bandwidth, d) * np.eye(d)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log density of records x (H, d), shared by every replicate, under each replicate's KDE: (R, H)."""
        R, N, d = self.points.shape
        h = self.bandwidth
        out = np.empty((R, x.shape[0]))
        # tophat: the volume of the d-ball of radius h, π^(d/2) h^d / Γ(d/2 + 1)
        log_volume = 0.5 * d * np.log(np.pi) + d * np.log(h) - special.gammaln(d / 2 + 1)
        for start in range(0, x.shape[0], HELDOUT_CHUNK):
            part = x[start : start + HELDOUT_CHUNK]
            sq = np.zeros((R, part.shape[0], N))
            for j in range(d):  # coordinate by coordinate: no (R, H, N, d) array
                sq += (part[None, :, None, j] - self.points[:, None, :, j]) ** 2
            pw = self.point_weights
            if self.kernel == "gaussian":
                log_k = -sq / (2 * h * h) - 0.5 * d * np.log(2 * np.pi * h * h)
                if pw is None:
                    out[:, start : start + part.shape[0]] = special.logsumexp(log_k, axis=-1) - np.log(N)
                else:
                    out[:, start : start + part.shape[0]] = special.logsumexp(log_k, axis=-1, b=pw)
            else:
                inside = (
                    np.count_nonzero(sq <= h * h, axis=-1) / N
                    if pw is None
                    else np.einsum("rhn,n->rh", sq <= h * h, pw)
                )
                with np.errstate(divide="ignore"):
                    out[:, start : start + part.shape[0]] = np.log(inside) - log_volume
        return out


@register_family
class KDEFamily(Family):
    name = "kde"
    tags = FamilyTags(accepts=("continuous",), weighted=True)
    spread_metrics = ("trace_ratio",)

    class Params(Params):
        bandwidth: float | Rule = Field(
            default=0.1, description="a number > 0, or 'scott' / 'silverman' (scikit-learn's rules, from N and d)"
        )
        kernel: Kernel = "gaussian"
        heldout_nll: int = Field(
            default=0,
            ge=0,
            description="held-out real records scored each generation for nll_real (0: off; costs R x this x N)",
        )

        @model_validator(mode="after")
        def _positive(self):
            if not isinstance(self.bandwidth, str) and not self.bandwidth > 0:
                raise ValueError(f"bandwidth = {self.bandwidth}: must be > 0, or 'scott' or 'silverman'")
            return self

    def fit(self, x, rng):
        h = bandwidth_of(self.params.bandwidth, x.shape[1], x.shape[2])
        return KDEModel(np.array(x, copy=True), h, self.params.kernel)

    def fit_weighted_records(self, x, weights, rng):
        """Each kernel carries its record's weight (the bandwidth rule still counts records, as scikit-learn's)."""
        model = self.fit(x, rng)
        model.point_weights = np.asarray(weights, float) / np.sum(weights)
        return model

    def metrics(self, model: KDEModel):
        truth = self.reference.truth
        mean, cov = model.moments()
        drift = mean - truth.mean
        out = {}
        if truth.dim == 1:
            out["var_ratio"] = cov[:, 0, 0] / truth.cov[0, 0]
        out["trace_ratio"] = np.trace(cov, axis1=1, axis2=2) / np.trace(truth.cov)
        out["mean_sq_drift"] = np.sum(drift * drift, axis=1)
        if self.params.heldout_nll:  # the papers' KDE metric: -mean log density of held-out real records
            heldout = self.reference.heldout[: self.params.heldout_nll]
            out["nll_real"] = -model.log_prob(heldout).mean(axis=1)
        if isinstance(self.params.bandwidth, str):  # a rule: the bandwidth it gave this generation
            out["bandwidth"] = np.full(model.points.shape[0], model.bandwidth)
        return out
