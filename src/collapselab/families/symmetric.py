"""The symmetric two-component mixture ½N(μ, σ²) + ½N(−μ, σ²) in one dimension (Suresh et al. 2024, §mixtures).

Two parameters per chain, (μ ≥ 0, σ), and two estimators:

- ``joint-ml``: the maximum of the *joint* likelihood over (μ, σ) and every record's hidden sign. For any μ ≥ 0
  the best sign of a record x is sign(x), and then μ̂ = mean |x|, σ̂² = mean x² − μ̂²: closed form, no iterations.
  It treats the overlap of the two halves as if it were not there, so it overstates μ and understates σ when
  μ/σ is small (at μ = 0 it reads a half-normal: μ̂ → σ√(2/π)).
- ``approx-ml``: the maximum of the mixture's own (marginal) likelihood, approximated by EM from the joint-ML
  start until no parameter moves by more than ``tol`` × σ̂ (or ``max_iter``): μ ← mean(x tanh(μx/σ²)),
  σ² ← mean x² − μ² (the E and M steps of the symmetric model in one line each), and μ = 0 where that is a
  local maximum of higher likelihood (see ``fit_approx_ml``): the two halves merged into one bump.

Under replace both lose σ generation after generation as a Gaussian does; the joint-ML chain faster, since it
also sheds the overlap. Chains are batched; EM runs on the chains that have not converged yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from .._numerics.batched import LOG_2PI
from ..errors import SpecError
from .base import Family, FamilyTags, Params, register_family


@dataclass(eq=False)
class SymmetricMixtureModel:
    mu: np.ndarray  # (R,), >= 0
    sigma: np.ndarray  # (R,)

    def sample(self, m, rng):
        R = self.mu.shape[0]
        z = rng.standard_normal((R, m))
        sign = np.where(rng.random((R, m)) < 0.5, -1.0, 1.0)
        return (sign * self.mu[:, None] + self.sigma[:, None] * z)[..., None]

    def log_prob(self, x):
        """log(½N(x; μ, σ²) + ½N(x; −μ, σ²)) for records (R or 1, N, 1): (R, N). With u = |x|, the nearer half's
        term times 1 + exp(−2μu/σ²), the farther half's share: one exp and one log1p per record, a block of chains
        at a time so the temporaries stay in cache."""
        u = np.abs(x[..., 0])
        R = self.mu.shape[0]
        out = np.empty((R, u.shape[1]))
        step = max(1, (1 << 16) // u.shape[1])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for lo in range(0, R, step):
                rows = slice(lo, min(lo + step, R))
                mu, s = self.mu[rows, None], self.sigma[rows, None]
                ur = u if u.shape[0] == 1 else u[rows]
                z = (ur - mu) / s
                block = np.log1p(np.exp(-2.0 * mu * ur / (s * s))) - 0.5 * z * z - np.log(2.0 * s) - 0.5 * LOG_2PI
                out[rows] = np.where(s > 0, block, -np.inf)
        return out


def fit_joint_ml(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ̂, σ̂) per chain of the joint maximum likelihood over the parameters and the records' signs; x (R, N)."""
    mu = np.abs(x).mean(axis=1)
    var = np.clip((x * x).mean(axis=1) - mu * mu, 0.0, None)
    return mu, np.sqrt(var)


def fit_approx_ml(x: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(μ̂, σ̂, EM iterations) per chain: the mixture likelihood's maximum, approximated by EM from the joint-ML
    start. Every EM fixed point has σ² = mean x² − μ², and along that curve the likelihood near μ = 0 goes as
    μ⁴ (1 − kurtosis / 3) / 12σ⁴ (up to a positive factor): where the sample's kurtosis m4 / m2² is at least 3,
    μ = 0 is a local maximum EM only creeps towards (each step moves μ by O(μ³)), so those chains take whichever
    of EM's end and μ = 0 has the higher likelihood."""
    R = x.shape[0]
    mu, sigma = fit_joint_ml(x)
    x2 = x * x
    second = x2.mean(axis=1)
    iters = np.zeros(R, dtype=int)
    active = np.flatnonzero(sigma > 0)  # σ̂ = 0: every |x| is the same, the joint fit is the likelihood's maximum
    for _ in range(max_iter):
        if active.size == 0:
            break
        xa, m, s = x[active], mu[active], sigma[active]
        new_mu = np.mean(xa * np.tanh(m[:, None] * xa / (s * s)[:, None]), axis=1)
        new_sigma = np.sqrt(np.clip(second[active] - new_mu * new_mu, 0.0, None))
        moved = np.maximum(np.abs(new_mu - m), np.abs(new_sigma - s))
        mu[active], sigma[active] = new_mu, new_sigma
        iters[active] += 1
        active = active[(moved > tol * s) & (new_sigma > 0)]
    with np.errstate(divide="ignore", invalid="ignore"):
        peaked = np.flatnonzero((x2 * x2).mean(axis=1) >= 3.0 * second * second)
    if peaked.size:
        centred = SymmetricMixtureModel(np.zeros(peaked.size), np.sqrt(second[peaked]))
        found = SymmetricMixtureModel(mu[peaked], sigma[peaked])
        records = x[peaked, :, None]
        at_zero = centred.log_prob(records).sum(axis=1) >= found.log_prob(records).sum(axis=1)
        mu[peaked[at_zero]], sigma[peaked[at_zero]] = 0.0, np.sqrt(second[peaked[at_zero]])
    return mu, sigma, iters


@register_family
class SymmetricMixtureFamily(Family):
    name = "symmetric-mixture"
    tags = FamilyTags(accepts=("continuous",), scores_records=True)
    spread_metrics = ("sigma_ratio",)

    class Params(Params):
        estimator: Literal["joint-ml", "approx-ml"] = Field(
            default="approx-ml", description="joint-ml: closed form over parameters and signs; approx-ml: EM"
        )
        tol: float = Field(default=1e-6, gt=0, description="approx-ml: stop once no parameter moves by tol x sigma")
        max_iter: int = Field(default=200, ge=1)

    def __init__(self, params, reference):
        super().__init__(params, reference)
        self.mu_true, self.sigma_true = symmetric_parameters(reference.truth)

    def fit(self, x, rng):
        x = x[..., 0]
        if self.params.estimator == "joint-ml":
            return SymmetricMixtureModel(*fit_joint_ml(x))
        mu, sigma, _ = fit_approx_ml(x, self.params.tol, self.params.max_iter)
        return SymmetricMixtureModel(mu, sigma)

    def metrics(self, model: SymmetricMixtureModel):
        nll = -model.log_prob(self.reference.heldout[None]).mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            separation = np.where(model.sigma > 0, model.mu / model.sigma, np.inf)
        return {
            "mu": model.mu,
            "sigma": model.sigma,
            "sigma_ratio": model.sigma / self.sigma_true,
            "mu_error": np.abs(model.mu - self.mu_true),
            "separation": separation,
            "nll_real": nll,
            "kl": nll - self.truth_nll(),
        }


def symmetric_parameters(truth) -> tuple[float, float]:
    """(μ, σ) of a truth that is ½N(μ, σ²) + ½N(−μ, σ²) in 1-D (one Gaussian at 0 is the case μ = 0)."""
    means, covs, weights = (getattr(truth, k, None) for k in ("means", "covs", "weights"))
    if means is None or means.shape[-1] != 1:
        raise SpecError(
            "model.family = 'symmetric-mixture' needs 1-D records from ½N(μ, σ²) + ½N(−μ, σ²): data.source = "
            "'blobs' with means = [[-μ], [μ]] and one std, or 'gaussian' with mean 0"
        )
    m, s = means[:, 0], np.sqrt(covs[:, 0, 0])
    if len(m) == 1 and m[0] == 0:
        return 0.0, float(s[0])
    if len(m) == 2 and np.isclose(m[0], -m[1]) and np.isclose(s[0], s[1]) and np.allclose(weights, 0.5):
        return float(abs(m[0])), float(s[0])
    raise SpecError(
        "model.family = 'symmetric-mixture': data.source must be ½N(μ, σ²) + ½N(−μ, σ²) (two blobs at -μ and μ, "
        f"equal weights, one std); got means {m.tolist()}, stds {s.tolist()}, weights {np.asarray(weights).tolist()}"
    )
