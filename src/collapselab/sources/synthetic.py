"""Known ground truths: the sources whose exact distribution is known, so theory applies."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .base import Source, register_source
from .truth import BernoulliTruth, CategoricalTruth, GLMTruth, LinearTruth, MixtureTruth, PoissonTruth, ShapeTruth

Vector = float | list[float]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_probs(v: list[float]) -> list[float]:
    a = np.asarray(v, dtype=float)
    if a.size < 2:
        raise ValueError("needs at least 2 entries")
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError("entries must be finite and >= 0")
    if abs(a.sum() - 1.0) > 1e-6:
        raise ValueError(f"must sum to 1 (sums to {a.sum():.6g})")
    return v


def _check_cov(cov: np.ndarray, what: str) -> None:
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{what} must be a square matrix")
    if not np.allclose(cov, cov.T):
        raise ValueError(f"{what} must be symmetric")
    if np.linalg.eigvalsh(cov).min() <= 0:
        raise ValueError(f"{what} must be positive definite")


@register_source
class GaussianSource(Source):
    """A Gaussian in any dimension: scalar or vector ``mean``; ``std`` (per coordinate) or ``cov``."""

    name = "gaussian"
    kind = "continuous"

    class Params(_Params):
        mean: Vector = 0.0
        std: Vector | None = None
        cov: list[list[float]] | None = None

        @model_validator(mode="after")
        def _shape(self):
            mean = np.atleast_1d(np.asarray(self.mean, dtype=float))
            if self.std is not None and self.cov is not None:
                raise ValueError("give std or cov, not both")
            if self.cov is not None:
                cov = np.asarray(self.cov, dtype=float)
                _check_cov(cov, "cov")
                d = cov.shape[0]
            else:
                std = np.atleast_1d(np.asarray(1.0 if self.std is None else self.std, dtype=float))
                if np.any(~(std > 0)) or np.any(~np.isfinite(std)):
                    raise ValueError("std must be finite and > 0")
                d = max(mean.size, std.size)
                if std.size not in (1, d):
                    raise ValueError(f"std has {std.size} entries, mean has {mean.size}")
            if mean.size not in (1, d):
                raise ValueError(f"mean has {mean.size} entries, the covariance is {d}x{d}")
            return self

    def truth(self, n, rng):
        p = self.params
        mean = np.atleast_1d(np.asarray(p.mean, dtype=float))
        if p.cov is not None:
            cov = np.asarray(p.cov, dtype=float)
        else:
            std = np.atleast_1d(np.asarray(1.0 if p.std is None else p.std, dtype=float))
            d = max(mean.size, std.size)
            cov = np.diag(np.broadcast_to(std, (d,)) ** 2)
        mean = np.broadcast_to(mean, (cov.shape[0],)).copy()
        return MixtureTruth(np.ones(1), mean[None], cov[None])


@register_source
class BlobsSource(Source):
    """A Gaussian mixture of isotropic blobs: ``means`` (one per blob), ``stds``, ``weights``; ``split = "equal"``
    draws every data set with the same count from each blob, as scikit-learn's ``make_blobs`` does."""

    name = "blobs"
    kind = "continuous"

    class Params(_Params):
        means: list[list[float]] | list[float]
        stds: Vector = 1.0
        weights: list[float] | None = None
        split: Literal["random", "equal"] = Field(
            default="random", description="'equal': n / K records from each blob (no weights), not a draw per record"
        )

        @model_validator(mode="after")
        def _shape(self):
            means = np.asarray(self.means, dtype=float)
            k = means.shape[0]
            stds = np.atleast_1d(np.asarray(self.stds, dtype=float))
            if stds.size not in (1, k):
                raise ValueError(f"stds has {stds.size} entries for {k} blobs")
            if np.any(~(stds > 0)):
                raise ValueError("stds must be > 0")
            if self.weights is not None:
                if len(self.weights) != k:
                    raise ValueError(f"weights has {len(self.weights)} entries for {k} blobs")
                if k > 1:
                    _check_probs(self.weights)
                if self.split == "equal":
                    raise ValueError("split = 'equal' takes the same count from every blob: give no weights")
            return self

    def truth(self, n, rng):
        p = self.params
        means = np.asarray(p.means, dtype=float)
        if means.ndim == 1:
            means = means[:, None]
        k, d = means.shape
        stds = np.broadcast_to(np.atleast_1d(np.asarray(p.stds, dtype=float)), (k,))
        weights = np.full(k, 1.0 / k) if p.weights is None else np.asarray(p.weights, dtype=float)
        covs = stds[:, None, None] ** 2 * np.eye(d)
        return MixtureTruth(weights / weights.sum(), means, covs, equal_split=p.split == "equal")


@register_source
class MixtureSource(Source):
    """A Gaussian mixture with full covariances: ``weights``, ``means`` (k × d), ``covs`` (k × d × d). The audit
    fits one to a candidate table and projects its collapse on it."""

    name = "mixture"
    kind = "continuous"

    class Params(_Params):
        weights: list[float]
        means: list[list[float]]
        covs: list[list[list[float]]]

        @model_validator(mode="after")
        def _shape(self):
            k = len(self.weights)
            means, covs = np.asarray(self.means, float), np.asarray(self.covs, float)
            if means.ndim != 2 or means.shape[0] != k or covs.shape != (k, means.shape[1], means.shape[1]):
                raise ValueError(f"need {k} means of one dimension d and {k} covariances d × d")
            if k > 1:
                _check_probs(self.weights)
            if np.any(np.linalg.eigvalsh(covs) <= 0):
                raise ValueError("covs must be positive definite")
            return self

    def truth(self, n, rng):
        p = self.params
        w = np.asarray(p.weights, float)
        return MixtureTruth(w / w.sum(), np.asarray(p.means, float), np.asarray(p.covs, float))


class _ShapeSource(Source):
    kind = "continuous"
    mixture = False  # not a Gaussian mixture: families that compare with one (gmm) refuse it

    class Params(_Params):
        noise: float = Field(default=0.1, ge=0, description="std of the Gaussian noise added to every point")

    def truth(self, n, rng):
        return ShapeTruth(self.name, self.params.noise, getattr(self.params, "factor", ShapeTruth.factor))


@register_source
class MoonsSource(_ShapeSource):
    """scikit-learn's two moons: half circles (cos t, sin t) and (1 - cos t, 0.5 - sin t), t ~ U(0, π), plus
    ``noise``."""

    name = "moons"


@register_source
class CirclesSource(_ShapeSource):
    """scikit-learn's two circles: radius 1 and ``factor``, plus ``noise``."""

    name = "circles"

    class Params(_ShapeSource.Params):
        factor: float = Field(default=0.8, gt=0, lt=1, description="the inner circle's radius")


@register_source
class SwissRollSource(_ShapeSource):
    """scikit-learn's swiss roll in 3-d: (t cos t, 21 v, t sin t), t = 1.5π(1 + 2u), u, v ~ U(0, 1), plus
    ``noise``."""

    name = "swiss-roll"


@register_source
class CategoricalSource(Source):
    name = "categorical"
    kind = "categorical"

    class Params(_Params):
        probs: list[float]

        _probs = field_validator("probs")(_check_probs)

    def truth(self, n, rng):
        return CategoricalTruth(np.asarray(self.params.probs, dtype=float))


@register_source
class ZipfSource(Source):
    """Zipf's law over ``categories`` ranks k = 1 … K: p_k ∝ k^-exponent; with ``shift`` b, Zipf–Mandelbrot's
    p_k ∝ (k + b)^-exponent (a flatter head: the b most frequent ranks are no longer far apart)."""

    name = "zipf"
    kind = "categorical"

    class Params(_Params):
        categories: int = Field(ge=2, le=1_000_000, description="ranks (at most a million: the model holds R x K)")
        exponent: float = Field(default=1.1, gt=0)
        shift: float = Field(default=0.0, gt=-1, description="Zipf–Mandelbrot's b: p_k ∝ (k + shift)^-exponent")

    def truth(self, n, rng):
        ranks = np.arange(1, self.params.categories + 1, dtype=float) + self.params.shift
        w = ranks**-self.params.exponent
        return CategoricalTruth(w / w.sum())


@register_source
class BernoulliSource(Source):
    name = "bernoulli"
    kind = "binary"

    class Params(_Params):
        p: float = Field(ge=0, le=1)

    def truth(self, n, rng):
        return BernoulliTruth(float(self.params.p))


@register_source
class PoissonSource(Source):
    name = "poisson"
    kind = "count"

    class Params(_Params):
        rate: float = Field(gt=0)

    def truth(self, n, rng):
        return PoissonTruth(float(self.params.rate))


@register_source
class LinearSource(Source):
    """Fixed-design linear regression: X (n × dim, standard normal rows), y = X w* + noise·ε. ``weights``
    defaults to w* = 1/sqrt(dim) in each coordinate; ``"per-chain"`` draws w* ~ N(0, I / dim) for each chain.
    ``test = k`` draws a fresh test set of k rows (shared by the chains) for the family's ``test_mse``. With
    n <= dim the fit must be the minimum-norm one (``model.params.fit = "min-norm"``). ``design = "shared"`` (the default) draws X once per cell
    for every replicate chain: the chains are then independent given X only, and a cell's standard errors
    say how far its mean is from the expectation *for that X*, not over designs. ``design = "per-chain"``
    draws an X for each chain, so the chains are independent draws of the whole experiment."""

    name = "linear"
    kind = "regression"

    class Params(_Params):
        dim: int = Field(ge=1)
        noise: float = Field(default=1.0, gt=0)
        weights: list[float] | Literal["per-chain"] | None = Field(
            default=None, description="w*; 'per-chain': w* ~ N(0, I / dim) drawn for each chain"
        )
        design: Literal["shared", "per-chain"] = Field(
            default="shared", description="one design for every chain, or a design per chain"
        )
        test: int = Field(default=0, ge=0, le=1_000_000, description="rows of a fresh test set for test_mse (0: none)")

        @model_validator(mode="after")
        def _shape(self):
            if isinstance(self.weights, list) and len(self.weights) != self.dim:
                raise ValueError(f"weights has {len(self.weights)} entries, dim is {self.dim}")
            return self

    def truth(self, n, rng):
        p = self.params
        w = np.asarray(p.weights, float) if isinstance(p.weights, list) else np.full(p.dim, 1 / np.sqrt(p.dim))
        design = rng.standard_normal((n, p.dim))
        seed = int(rng.integers(2**63)) if p.design == "per-chain" else None  # shared: the stream as before
        weights_seed = int(rng.integers(2**63)) if p.weights == "per-chain" else None
        test_rows = rng.standard_normal((p.test, p.dim)) if p.test else None
        test_noise = rng.standard_normal(p.test) if p.test else None
        return LinearTruth(
            design, w, float(p.noise), seed, weights_seed=weights_seed, test_rows=test_rows, test_noise=test_noise
        )


class _GLMSource(Source):
    """Fixed-design regression with a canonical link (Dey & Donoho 2024's exponential-family setting): X (n × dim,
    standard normal rows scaled by ``scale``), one draw shared by every chain, and labels from β* (``weights``,
    default 1/sqrt(dim) in each coordinate, so x·β* ~ N(0, scale²))."""

    link = "logit"

    class Params(_Params):
        dim: int = Field(ge=1)
        weights: list[float] | None = Field(default=None, description="β*; default 1/sqrt(dim) in each coordinate")
        scale: float = Field(default=1.0, gt=0, description="the design's standard deviation per coordinate")

        @model_validator(mode="after")
        def _shape(self):
            if self.weights is not None and len(self.weights) != self.dim:
                raise ValueError(f"weights has {len(self.weights)} entries, dim is {self.dim}")
            return self

    def truth(self, n, rng):
        p = self.params
        w = np.asarray(p.weights, float) if p.weights is not None else np.full(p.dim, 1 / np.sqrt(p.dim))
        return GLMTruth(p.scale * rng.standard_normal((n, p.dim)), w, self.link)


@register_source
class LogisticSource(_GLMSource):
    """Logistic regression: y_i ~ Bernoulli(σ(x_i·β*)) on a fixed design."""

    name = "logistic"
    kind = "binary-regression"
    link = "logit"


@register_source
class PoissonRegressionSource(_GLMSource):
    """Poisson regression: y_i ~ Poisson(exp(x_i·β*)) on a fixed design."""

    name = "poisson-regression"
    kind = "count-regression"
    link = "log"
