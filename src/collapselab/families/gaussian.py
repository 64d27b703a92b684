"""The Gaussian family in any dimension, fitted by maximum likelihood or with the unbiased covariance."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # log det cov where the exact path knows it without forming cov (R,); None: read it off cov
    log_det: np.ndarray | None = None
    records: int = 0  # how many records it was fitted on (0: not fitted on records)
    _eigen: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)  # eigen()'s cache

    def eigen(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (R, d), ascending, and eigenvectors (R, d, d) of the fitted covariance (d >= 2).

        Computed once per model: sampling's factor, the held-out likelihood and w2 all read them (at d = 31 one
        eigendecomposition costs as much as the rest of a generation).
        """
        if self._eigen is None:
            self._eigen = np.linalg.eigh(self.cov)
        return self._eigen

    def factor(self) -> np.ndarray:
        """F with F Fᵀ = cov (R, d, d), singular where cov is (collapsed): the same bits as psd_factor(cov)."""
        if self.cov.shape[-1] == 1:
            return psd_factor(self.cov)
        vals, vecs = self.eigen()
        return vecs * np.sqrt(np.clip(vals, 0, None))[..., None, :]

    def log_det_cov(self) -> np.ndarray:
        """log det of the fitted covariance (R,): the exact path's own value, else LU's (-inf where not > 0)."""
        if self.log_det is not None:
            return self.log_det
        return slogdet_or_minus_inf(self.cov)

    @property
    def sampling_cov(self) -> np.ndarray:
        return self.cov if self.truncation == 1.0 else self.cov * self.truncation**2

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log density of records x (R, N, d) under each replicate's Gaussian: (R, N)."""
        return gaussian_logpdf(x, self.mean, self.cov)

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        R, d = self.mean.shape
        factor = self.factor() * self.truncation
        z = rng.standard_normal((d, R, m))  # coordinate-major (the draws of every earlier version)
        if d == 1:
            return (self.mean[:, 0, None] + factor[:, 0, 0, None] * z[0])[..., None]
        # einsum's own loop, not BLAS (bit-exact on any process, see bmm); with z coordinate-major it is 2-4x the
        # elementwise multiply-adds this replaced, at every d
        return self.mean[:, None, :] + np.einsum("rij,jrm->rmi", factor, z)


@dataclass(eq=False)
class GaussianStats:
    """Sufficient statistics of N records: their mean (R, d) and scatter Σ (x - mean)(x - mean)ᵀ (R, d, d)."""

    count: int
    mean: np.ndarray
    scatter: np.ndarray
    # log det of the scatter where a Bartlett draw gave it directly (R,): exact when the scatter's own
    # determinant is lost to rounding (condition number past 1/eps, d = 31 after ~85 generations)
    log_det: np.ndarray | None = None

    @staticmethod
    def merge(parts: list[GaussianStats]) -> GaussianStats:
        out = parts[0]  # one part keeps its log det; a merged scatter's is read off the matrix
        for p in parts[1:]:  # Chan et al.'s pairwise update of mean and scatter
            n = out.count + p.count
            delta = p.mean - out.mean
            mean = out.mean + delta * (p.count / n)
            extra = (out.count * p.count / n) * (delta[:, :, None] * delta[:, None, :])
            out = GaussianStats(n, mean, out.scatter + p.scatter + extra)
        return out


def slogdet_or_minus_inf(cov: np.ndarray) -> np.ndarray:
    """log det of (R, d, d) covariances by LU, -inf where the determinant is not positive (collapsed or lost)."""
    sign, logdet = np.linalg.slogdet(cov)
    return np.where(sign > 0, logdet, -np.inf)


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
    tags = FamilyTags(accepts=("continuous",), scores_records=True, exact=True, weighted=True)
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
        if params.estimator == "unbiased" and spec.policy.real_weight is not None:
            raise SpecError(
                "policy.real_weight: the weighted fit is maximum likelihood; set model.params.estimator = 'mle'"
            )

    def fit(self, x, rng):
        return self._model(*fit_moments(x, ddof=self._ddof), records=x.shape[1])

    def fit_weighted(self, parts):
        """Weighted maximum likelihood: mean Σ w_j m_j, covariance Σ w_j (S_j / c_j + (m_j - μ)(m_j - μ)ᵀ) over parts
        j of c_j records, mean m_j and scatter S_j (``model.params.estimator = "mle"``: checked with the spec)."""
        mean = sum(w * s.mean for s, w in parts)
        cov = 0.0
        for s, w in parts:
            delta = s.mean - mean
            cov = cov + w * (s.scatter / s.count + delta[:, :, None] * delta[:, None, :])
        return self._model(np.asarray(mean), np.asarray(cov), records=sum(s.count for s, _ in parts))

    def _model(self, mean, cov, records: int = 0) -> GaussianModel:
        return GaussianModel(mean, cov, self.params.truncation, records=records)

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
        factor = model.factor() * model.truncation  # F Fᵀ = ψ²Σ; a collapsed Σ gives a singular F
        z = rng.standard_normal((R, d))
        mean = model.mean + np.einsum("rij,rj->ri", factor, z) / np.sqrt(m)
        # Bartlett: scatter = F A Aᵀ Fᵀ, A lower triangular, A_ii² ~ χ²(m-1-i), A_ij ~ N(0, 1) below
        a = np.zeros((R, d, d))
        for i in range(d):
            a[:, i, i] = np.sqrt(rng.chisquare(m - 1 - i, size=R))
            if i:
                a[:, i, :i] = rng.standard_normal((R, i))
        fa = bmm(factor, a)
        # det(F A Aᵀ Fᵀ) = det(ψ²Σ) Π A_ii²: the log det of the draw, exact, whatever the rounding of its matrix
        log_det = None
        if d > 1:
            diag = np.diagonal(a, axis1=1, axis2=2)
            with np.errstate(divide="ignore"):
                log_det = model.log_det_cov() + 2 * d * np.log(model.truncation) + np.sum(np.log(diag**2), axis=1)
        return GaussianStats(m, mean, bmm(fa, np.swapaxes(fa, 1, 2)), log_det)

    def merge_stats(self, parts):
        return GaussianStats.merge(parts)

    def fit_stats(self, stats: GaussianStats) -> GaussianModel:
        denominator = stats.count - self._ddof
        model = self._model(stats.mean, stats.scatter / denominator, records=stats.count)
        if stats.log_det is not None:
            model.log_det = stats.log_det - model.mean.shape[1] * np.log(denominator)
        return model

    def stats_arrays(self, stats):
        arrays = {"count": np.array(stats.count), "mean": stats.mean, "scatter": stats.scatter}
        if stats.log_det is not None:
            arrays["log_det"] = stats.log_det
        return arrays

    def stats_from_arrays(self, a):
        return GaussianStats(int(a["count"]), a["mean"], a["scatter"], a.get("log_det"))

    def metrics(self, model: GaussianModel) -> dict[str, np.ndarray]:
        truth = self.reference.truth
        d = truth.dim
        cov = model.cov
        out = {}
        with np.errstate(divide="ignore"):
            if d == 1:  # the variance itself: no determinant to lose
                det_ratio = cov[:, 0, 0] / truth.cov[0, 0]
                out["var_ratio"] = det_ratio
                out["std_ratio"] = np.clip(det_ratio, 0, None) ** 0.5
                out["det_ratio"] = det_ratio
            else:  # in the log domain: a determinant of 31 shrinking eigenvalues underflows long before its log
                if model.log_det is None:
                    log_det = from_matrix = slogdet_or_minus_inf(cov)
                else:  # the matrix's own log det from the eigenvalues sampling and nll_real read anyway
                    vals = model.eigen()[0]
                    from_matrix = np.where(vals[:, 0] > 0, np.sum(np.log(np.abs(vals)), axis=1), -np.inf)
                    log_det = model.log_det
                log_ratio = log_det - slogdet_or_minus_inf(truth.cov[None])[0]
                out["std_ratio"] = np.exp(log_ratio / (2 * d))
                out["det_ratio"] = np.exp(log_ratio)
                out["log_det_ratio"] = log_ratio
                # the matrix no longer carries its own determinant: metrics read off it rest on rounding. Known
                # where the exact path tracks log det; on records, a fit on more than d of them is positive
                # definite, so a determinant not > 0 is rounding (on d or fewer it is singular in fact)
                if model.log_det is not None:  # (a log det of -inf is a singular matrix in fact, not lost)
                    off = ~np.isfinite(from_matrix) | (np.abs(from_matrix - log_det) > CONDITIONING_TOLERANCE)
                    lost = np.isfinite(log_det) & off
                else:
                    lost = ~np.isfinite(from_matrix) & (model.records > d)
                out["conditioning_lost"] = lost.astype(float)
        out["trace_ratio"] = np.trace(cov, axis1=1, axis2=2) / np.trace(truth.cov)
        drift = model.mean - truth.mean
        out["mean_sq_drift"] = np.sum(drift * drift, axis=1)
        eigen = model.eigen() if d > 1 else None
        out["w2"] = gaussian_w2(model.mean, cov, truth.mean, truth.cov_sqrt, eigen)
        out["nll_real"] = gaussian_cross_entropy(self.reference.heldout, model.mean, cov, eigen)
        out["kl"] = out["nll_real"] - self.truth_nll()
        out["tail_mass"] = tail_mass_ratio(model.mean, cov, truth)
        return out

    def notes(self, stats):
        lost = stats.get("conditioning_lost", {}).get("mean")  # the share of chains, per generation
        if lost is None or not np.any(lost > 0):
            return []
        G = len(lost)
        first = int(np.argmax(lost > 0))
        return [
            f"the fitted covariance lost its conditioning (its determinant is off by more than 1%, or not positive) "
            f"from generation {first}, in {lost[-1]:.0%} of chains at generation {G - 1}: on the exact "
            f"path std_ratio, det_ratio and log_det_ratio stay exact (it knows log det), but w2, kl, nll_real, "
            f"tail_mass and trace_ratio there rest on rounding"
        ]


# |log det from the matrix - log det known exactly| past this (the determinant off by 1%): conditioning is lost
CONDITIONING_TOLERANCE = 0.01


def gaussian_w2(mean, cov, mean_true, cov_true_sqrt, eigen=None) -> np.ndarray:
    """Closed-form 2-Wasserstein distance between N(mean_r, cov_r) and the true Gaussian.

    ``eigen``: cov's (eigenvalues, eigenvectors) where the caller has them; with an isotropic truth (S = s I)
    tr sqrt(S cov S) = s Σ sqrt(λ_i(cov)) needs nothing more.
    """
    drift = mean - mean_true
    d = mean.shape[1]
    scale = cov_true_sqrt[0, 0]
    if eigen is not None and np.array_equal(cov_true_sqrt, scale * np.eye(d)):
        cross = scale * np.sum(np.sqrt(np.clip(eigen[0], 0, None)), axis=-1)
    else:
        inner = bmm(bmm(cov_true_sqrt[None], cov), cov_true_sqrt[None])
        if d == 1:
            cross = np.trace(psd_sqrt(inner), axis1=1, axis2=2)
        else:  # tr sqrt(M) = Σ sqrt(λ_i(M)): eigenvalues alone, not eigenvectors and a product back (~3x at d = 10)
            cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0, None)), axis=-1)
    true_cov = bmm(cov_true_sqrt, cov_true_sqrt)
    bures = np.trace(cov, axis1=1, axis2=2) + np.trace(true_cov) - 2 * cross
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
