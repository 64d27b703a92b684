"""Generalised linear models on a fixed design, fitted by maximum likelihood with IRLS batched over chains:
logistic regression (``logistic``) and Poisson regression (``poisson-regression``), the canonical links.

Dey & Donoho (2024, "Universality of the π²/6 pathway in avoiding model collapse") show that for exponential
families, under augmentation (``accumulate``: each generation fits the real records and every synthetic set so
far), the estimator's error stays within π²/6 of generation 0's, while under ``replace`` it grows linearly. To
first order in 1/n the deviation δ_g = β̂_g - β* follows δ_g = δ_{g-1} + u_g/(g+1) under accumulate (u_g the
fresh sampling error of one set, covariance I⁻¹, I the design's Fisher information at β*), and δ_g = δ_{g-1} + u_g
under replace: theory.py draws E[δᵀIδ] = d Σ_{k≤g+1} 1/k² and d(g+1) beside the simulation.

Each chain's synthetic set keeps the design rows and draws fresh labels from its fitted model, as the linear
family does. Newton's method (IRLS with the canonical link) runs on every chain at once and stops each chain
once its step is below ``tol``; a chain whose labels separate the design (logistic, tiny n) has no MLE: its
coefficients then grow until ``max_iter``, and the run's notes say how many chains did not converge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from ..errors import SpecError
from ..sources.truth import GLMTruth
from .base import Family, FamilyTags, Params, register_family

_ETA_MAX = 30.0  # |x·β| beyond this saturates σ and overflows exp: clipped during IRLS


@dataclass(eq=False)
class GLMModel:
    weights: np.ndarray  # (R, dim): β̂
    truth: GLMTruth
    converged: np.ndarray  # (R,) bool

    def sample(self, m, rng):
        R = self.weights.shape[0]
        eta = np.einsum("rmd,rd->rm", self.truth.rows(R, m), self.weights)
        return self.truth.records(self.truth.labels(np.clip(eta, -_ETA_MAX, _ETA_MAX), rng))


def fit_irls(
    x: np.ndarray, truth: GLMTruth, weights: np.ndarray | None, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """β̂ (R, d) maximising Σ_i s_i ℓ(y_i; x_i·β) for records x (R, N, d + 1), s the record weights (N,) or 1, and
    which chains converged. Where the records are whole passes over the design in its order (replace, accumulate,
    fresh: the synthetic sets and the real pool as drawn), the canonical link's likelihood depends on them only
    through each design row's weighted label sum and weight, so Newton runs on the n design rows, not on every
    record (g + 1 times fewer under accumulate)."""
    R, N, d = x.shape[0], x.shape[1], x.shape[2] - 1
    n = truth.design.shape[0]
    y = x[..., d]
    s = np.ones(N) if weights is None else np.asarray(weights, float)
    if N % n == 0 and np.array_equal(x[..., :d], truth.rows(R, N)):
        copies = N // n
        cols = [truth.design[None, :, j] for j in range(d)]  # (1, n): shared by every chain
        sums = (y * s).reshape(R, copies, n).sum(axis=1)
        counts = s.reshape(copies, n).sum(axis=0)[None]
    else:
        cols = [np.ascontiguousarray(x[..., j]) for j in range(d)]
        sums, counts = y * s, s[None]
    return _newton(cols, sums, counts, truth, max_iter, tol)


def _newton(cols, sums, counts, truth: GLMTruth, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method on rows with design columns ``cols`` (each (R or 1, N)), label sums S (R, N) and weights
    C (R or 1, N): the score Σ_i x_i (S_i - C_i μ_i) and the information Σ_i C_i v_i x_i x_iᵀ, coordinate by
    coordinate on contiguous rows; only chains not yet converged take a step."""
    R, d = sums.shape[0], len(cols)
    beta = np.zeros((R, d))
    active = np.arange(R)
    converged = np.zeros(R, dtype=bool)
    for _ in range(max_iter):
        b = beta[active]
        eta = cols[0] * b[:, :1]
        for j in range(1, d):
            eta = eta + cols[j] * b[:, j : j + 1]
        mu = truth.mean(np.clip(eta, -_ETA_MAX, _ETA_MAX))
        v, resid = counts * truth.variance(mu), sums - counts * mu
        grad = np.stack([np.einsum("rn,rn->r", np.broadcast_to(c, resid.shape), resid) for c in cols], axis=1)
        hess = np.empty((active.size, d, d))
        for i in range(d):
            vi = v * cols[i]
            for j in range(i, d):
                hess[:, i, j] = hess[:, j, i] = np.einsum("rn,rn->r", vi, np.broadcast_to(cols[j], vi.shape))
        step = np.linalg.solve(hess + 1e-12 * np.eye(d), grad[..., None])[..., 0]
        beta[active] = b + step
        keep = ~(np.max(np.abs(step), axis=1) < tol)
        converged[active[~keep]] = True
        active = active[keep]
        if active.size == 0:
            break
        sums = sums[keep]
        if cols[0].shape[0] > 1:
            cols = [c[keep] for c in cols]
        if counts.shape[0] > 1:
            counts = counts[keep]
    return beta, converged


class _GLMFamily(Family):
    spread_metrics = ()
    tail_metrics = ()

    class Params(Params):
        max_iter: int = Field(default=50, ge=1, description="Newton (IRLS) steps at most per fit")
        tol: float = Field(default=1e-10, gt=0, description="a chain stops once its largest step is below this")

    @classmethod
    def check_spec(cls, spec, params):
        dim = spec.data.params.get("dim", 0)
        if min(spec.data.n, spec.samples) <= dim:
            raise SpecError(
                f"data.n: {min(spec.data.n, spec.samples)} rows cannot identify {dim} coefficients; allowed: more "
                f"than data.params.dim ({dim}) rows per training set"
            )

    def fit(self, x, rng):
        return self.fit_weighted_records(x, None, rng)

    def fit_weighted_records(self, x, weights, rng):
        p = self.params
        beta, converged = fit_irls(x, self.reference.truth, weights, p.max_iter, p.tol)
        return GLMModel(beta, self.reference.truth, converged)

    def metrics(self, model: GLMModel):
        truth = self.reference.truth
        err = model.weights - truth.weights
        return {
            "param_error": np.sum(err * err, axis=1),
            # the error in the design's own metric, (β̂ - β*)ᵀ I (β̂ - β*): about d at generation 0 (χ²_d)
            "fisher_error": np.einsum("ri,ij,rj->r", err, truth.information, err),
            "not_converged": (~model.converged).astype(float),
        }

    def notes(self, stats):
        worst = np.nanmax(stats["not_converged"]["mean"]) if "not_converged" in stats else 0.0
        if worst > 0:
            return [
                f"{self.name}: up to {worst:.1%} of chains per generation did not converge in "
                f"{self.params.max_iter} Newton steps (labels that separate the design have no maximum-likelihood fit)"
            ]
        return []


@register_family
class LogisticFamily(_GLMFamily):
    name = "logistic"
    tags = FamilyTags(accepts=("binary-regression",), weighted=True)


@register_family
class PoissonRegressionFamily(_GLMFamily):
    name = "poisson-regression"
    tags = FamilyTags(accepts=("count-regression",), weighted=True)
