"""The Gaussian family in any dimension, fitted by maximum likelihood or with the unbiased covariance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import special

from .._numerics.batched import bmm, gaussian_cross_entropy, gaussian_logpdf, psd_factor, psd_sqrt
from ..errors import SpecError
from .base import Family, FamilyTags, Params, register_family


@dataclass(eq=False)
class GaussianModel:
    mean: np.ndarray  # (R, d)
    cov: np.ndarray  # (R, d, d)
    truncation: float = 1.0  # sampling bias ψ: records are drawn at ψ times the fitted spread

    @property
    def sampling_cov(self) -> np.ndarray:
        return self.cov if self.truncation == 1.0 else self.cov * self.truncation**2

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log density of records x (R, N, d) under each replicate's Gaussian: (R, N)."""
        return gaussian_logpdf(x, self.mean, self.cov)

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        R, d = self.mean.shape
        factor = psd_factor(self.cov) * self.truncation
        z = rng.standard_normal((d, R, m))  # coordinate-major: every operation below is on contiguous (R, m)
        out = np.empty((R, m, d))
        for i in range(d):  # elementwise multiply-adds: bit-exact on any process, fast for small d
            x = self.mean[:, i, None] + factor[:, i, 0, None] * z[0]
            for j in range(1, d):
                x += factor[:, i, j, None] * z[j]
            out[..., i] = x
        return out


@dataclass(eq=False)
class GaussianStats:
    """Sufficient statistics of N records: their mean (R, d) and scatter Σ (x - mean)(x - mean)ᵀ (R, d, d)."""

    count: int
    mean: np.ndarray
    scatter: np.ndarray

    @staticmethod
    def merge(parts: list[GaussianStats]) -> GaussianStats:
        out = parts[0]
        for p in parts[1:]:  # Chan et al.'s pairwise update of mean and scatter
            n = out.count + p.count
            delta = p.mean - out.mean
            mean = out.mean + delta * (p.count / n)
            extra = (out.count * p.count / n) * (delta[:, :, None] * delta[:, None, :])
            out = GaussianStats(n, mean, out.scatter + p.scatter + extra)
        return out


def fit_moments(x: np.ndarray, ddof: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean (R, d) and covariance (R, d, d) of records (R, N, d)."""
    mean, scatter = mean_scatter(x)
    return mean, scatter / (x.shape[1] - ddof)


def mean_scatter(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R, N, d = x.shape
    mean = x.mean(axis=1)
    cols = [np.ascontiguousarray(x[..., i]) - mean[:, i, None] for i in range(d)]
    scatter = np.empty((R, d, d))
    for i in range(d):  # one row-wise dot per pair (einsum, not BLAS: see _numerics/batched.bmm)
        for j in range(i, d):
            scatter[:, i, j] = scatter[:, j, i] = np.einsum("rn,rn->r", cols[i], cols[j])
    return mean, scatter


@register_family
class GaussianFamily(Family):
    name = "gaussian"
    tags = FamilyTags(accepts=("continuous",), scores_records=True, exact=True)
    tail_metrics = ("tail_mass",)
    spread_metrics = ("std_ratio",)

    class Params(Params):
        estimator: Literal["mle", "unbiased"] = "mle"
        exact: bool = True
        truncation: float = Field(
            default=1.0, gt=0, le=1, description="sampling bias: draw at this fraction of the fitted spread"
        )

    @classmethod
    def check_spec(cls, spec, params):
        if params.estimator == "unbiased" and min(spec.data.n, spec.samples) < 2:
            raise SpecError("model.params.estimator = 'unbiased' needs at least 2 records per training set")

    def fit(self, x, rng):
        return self._model(*fit_moments(x, ddof=self._ddof))

    def _model(self, mean, cov) -> GaussianModel:
        return GaussianModel(mean, cov, self.params.truncation)

    def fit_population(self, parts, R):
        """Maximum likelihood on a distribution = its mean and covariance (both estimators agree at n = ∞)."""
        mean, second = 0.0, 0.0
        for p in parts:
            mu, cov = (p.truth.mean, p.truth.cov) if p.truth is not None else (p.model.mean, p.model.sampling_cov)
            mu = np.broadcast_to(mu, (R, mu.shape[-1]))
            mean = mean + p.weight * mu
            second = second + p.weight * (cov + mu[:, :, None] * mu[:, None, :])
        return self._model(np.array(mean), second - mean[:, :, None] * mean[:, None, :])

    @property
    def _ddof(self) -> int:
        return 1 if self.params.estimator == "unbiased" else 0

    # --- exact path: the sample mean is Normal and the scatter Wishart, independently ---------------------
    def exact_ok(self, spec, used: int) -> bool:
        d = self.reference.truth.dim
        return super().exact_ok(spec, used) and (used == 0 or used > d)  # a Wishart draw needs more records than d

    def stats_of(self, x):
        return GaussianStats(x.shape[1], *mean_scatter(x))

    def sample_stats(self, model: GaussianModel, m: int, rng) -> GaussianStats:
        R, d = model.mean.shape
        factor = psd_factor(model.cov) * model.truncation  # F Fᵀ = ψ²Σ; a collapsed Σ gives a singular F
        z = rng.standard_normal((R, d))
        mean = model.mean + np.einsum("rij,rj->ri", factor, z) / np.sqrt(m)
        # Bartlett: scatter = F A Aᵀ Fᵀ, A lower triangular, A_ii² ~ χ²(m-1-i), A_ij ~ N(0, 1) below
        a = np.zeros((R, d, d))
        for i in range(d):
            a[:, i, i] = np.sqrt(rng.chisquare(m - 1 - i, size=R))
            if i:
                a[:, i, :i] = rng.standard_normal((R, i))
        fa = bmm(factor, a)
        return GaussianStats(m, mean, bmm(fa, np.swapaxes(fa, 1, 2)))

    def merge_stats(self, parts):
        return GaussianStats.merge(parts)

    def fit_stats(self, stats: GaussianStats) -> GaussianModel:
        return self._model(stats.mean, stats.scatter / (stats.count - self._ddof))

    def stats_arrays(self, stats):
        return {"count": np.array(stats.count), "mean": stats.mean, "scatter": stats.scatter}

    def stats_from_arrays(self, a):
        return GaussianStats(int(a["count"]), a["mean"], a["scatter"])

    def metrics(self, model: GaussianModel) -> dict[str, np.ndarray]:
        truth = self.reference.truth
        d = truth.dim
        cov = model.cov
        det_true = np.linalg.det(truth.cov)
        det_ratio = np.linalg.det(cov) / det_true if d > 1 else cov[:, 0, 0] / det_true
        out = {}
        if d == 1:
            out["var_ratio"] = cov[:, 0, 0] / truth.cov[0, 0]
        out["std_ratio"] = np.clip(det_ratio, 0, None) ** (1 / (2 * d))
        out["det_ratio"] = det_ratio
        out["trace_ratio"] = np.trace(cov, axis1=1, axis2=2) / np.trace(truth.cov)
        drift = model.mean - truth.mean
        out["mean_sq_drift"] = np.sum(drift * drift, axis=1)
        out["w2"] = gaussian_w2(model.mean, cov, truth.mean, truth.cov_sqrt)
        out["nll_real"] = gaussian_cross_entropy(self.reference.heldout, model.mean, cov)
        out["kl"] = out["nll_real"] - self.truth_nll()
        out["tail_mass"] = tail_mass_ratio(model.mean, cov, truth)
        return out


def gaussian_w2(mean, cov, mean_true, cov_true_sqrt) -> np.ndarray:
    """Closed-form 2-Wasserstein distance between N(mean_r, cov_r) and the true Gaussian."""
    drift = mean - mean_true
    cross = psd_sqrt(bmm(bmm(cov_true_sqrt[None], cov), cov_true_sqrt[None]))
    true_cov = bmm(cov_true_sqrt, cov_true_sqrt)
    bures = np.trace(cov, axis1=1, axis2=2) + np.trace(true_cov) - 2 * np.trace(cross, axis1=1, axis2=2)
    return np.sqrt(np.clip(np.sum(drift * drift, axis=1) + bures, 0, None))


def tail_mass_ratio(mean, cov, truth, q: float = 0.01) -> np.ndarray:
    """Mass a Gaussian model puts beyond the truth's q and 1-q marginal quantiles, over the truth's 2q.

    Averaged over coordinates (each coordinate's marginal is Gaussian, so this is closed form).
    A collapsed coordinate (zero variance) puts mass 1 in the tails if its mean left the central band.
    """
    lo, hi = truth.marginal_quantile(q), truth.marginal_quantile(1 - q)
    sd = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))  # (R, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = special.ndtr((lo - mean) / sd)
        above = special.ndtr((mean - hi) / sd)
    mass = np.where(sd > 0, below + above, ((mean < lo) | (mean > hi)).astype(float))
    return mass.mean(axis=1) / (2 * q)
