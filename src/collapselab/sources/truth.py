"""Ground-truth distributions: what a source draws from and what metrics compare against.

A truth knows its own closed-form quantities (moments, quantiles, densities), so families can measure
a fitted model against it without knowing which source produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import optimize, special, stats


@dataclass(frozen=True, eq=False)
class MixtureTruth:
    """A Gaussian mixture in d dimensions; a single Gaussian is the one-component case."""

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    covs: np.ndarray  # (K, d, d)

    kind = "continuous"

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def components(self) -> int:
        return self.weights.shape[0]

    @cached_property
    def mean(self) -> np.ndarray:
        return np.einsum("k,kd->d", self.weights, self.means)

    @cached_property
    def cov(self) -> np.ndarray:
        centred = self.means - self.mean
        within = np.einsum("k,kij->ij", self.weights, self.covs)
        between = np.einsum("k,ki,kj->ij", self.weights, centred, centred)
        return within + between

    @cached_property
    def cov_sqrt(self) -> np.ndarray:
        vals, vecs = np.linalg.eigh(self.cov)
        return np.einsum("ij,kj->ik", vecs * np.sqrt(np.clip(vals, 0, None)), vecs)

    def marginal_quantile(self, q: float) -> np.ndarray:
        """Quantile q of each coordinate's marginal distribution, shape (d,) (computed once per q: metrics ask
        for it every generation)."""
        cache = self.__dict__.setdefault("_quantiles", {})
        if q not in cache:
            cache[q] = self._marginal_quantile(q)
            cache[q].setflags(write=False)
        return cache[q]

    def _marginal_quantile(self, q: float) -> np.ndarray:
        sd = np.sqrt(np.diagonal(self.covs, axis1=1, axis2=2))  # (K, d)
        if self.components == 1:
            return self.means[0] + sd[0] * stats.norm.ppf(q)
        out = np.empty(self.dim)
        for j in range(self.dim):  # a loop over dimensions of the truth, done once per cell
            mu, s = self.means[:, j], sd[:, j]

            def cdf_gap(x, mu=mu, s=s):
                return float(self.weights @ stats.norm.cdf((x - mu) / s)) - q

            lo = float(np.min(mu - 12 * s))
            hi = float(np.max(mu + 12 * s))
            out[j] = optimize.brentq(cdf_gap, lo, hi, xtol=1e-12)
        return out

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Draws of shape ``shape + (d,)``."""
        size = int(np.prod(shape))
        chol = np.linalg.cholesky(self.covs)
        if self.components == 1 and self.dim == 1:  # the same numbers as below, without the gathers
            rng.random(size)  # what choice() draws for the component: keeps the stream the same
            z = rng.standard_normal((size, 1))
            return (self.means[0] + z * chol[0, 0, 0]).reshape(*shape, 1)
        comp = rng.choice(self.components, size=size, p=self.weights)
        z = rng.standard_normal((size, self.dim))
        x = self.means[comp] + np.einsum("nij,nj->ni", chol[comp], z)
        return x.reshape(*shape, self.dim)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at points x of shape (..., d)."""
        parts = np.stack(
            [
                stats.multivariate_normal(self.means[k], self.covs[k]).logpdf(x).reshape(x.shape[:-1])
                for k in range(self.components)
            ],
            axis=-1,
        )
        return special.logsumexp(parts + np.log(self.weights), axis=-1)


@dataclass(frozen=True, eq=False)
class CategoricalTruth:
    probs: np.ndarray  # (K,)

    kind = "categorical"

    @property
    def categories(self) -> int:
        return self.probs.shape[0]

    @cached_property
    def rare_categories(self) -> np.ndarray:
        """Indices of the rarest decile of categories (at least one), the rarest first."""
        k = max(1, int(np.ceil(self.categories / 10)))
        return np.argsort(self.probs, kind="stable")[:k]

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.choice(self.categories, size=shape, p=self.probs).astype(np.int64)


@dataclass(frozen=True, eq=False)
class BernoulliTruth:
    p: float

    kind = "binary"

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return (rng.random(shape) < self.p).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class PoissonTruth:
    rate: float

    kind = "count"

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.poisson(self.rate, size=shape).astype(np.int64)


@dataclass(frozen=True, eq=False)
class LinearTruth:
    """Fixed-design regression y = X w + noise·ε; records are rows [x, y] of length dim + 1.

    The design is one draw shared by every replicate chain (``design_seed`` None: chains then differ only in
    their noise, and a cell's standard errors are conditional on that one design), or one design per chain,
    drawn from ``design_seed`` when the chains are known (chains are then independent in their design too)."""

    design: np.ndarray  # (n, dim): the shared design
    weights: np.ndarray  # (dim,)
    noise: float
    design_seed: int | None = None  # a design per chain, drawn from this seed
    _designs: dict = field(default_factory=dict, repr=False)  # R -> (R, n, dim), drawn once

    kind = "regression"

    @property
    def dim(self) -> int:
        return self.design.shape[1]

    def designs(self, R: int) -> np.ndarray | None:
        """Each chain's design (R, n, dim), or None when the design is shared."""
        if self.design_seed is None:
            return None
        if R not in self._designs:
            shape = (R, *self.design.shape)
            self._designs[R] = np.random.default_rng(self.design_seed).standard_normal(shape)
        return self._designs[R]

    def rows(self, R: int, k: int) -> np.ndarray:
        """The design rows of k records per chain (R, k, dim): the design's rows reused cyclically."""
        rows = np.resize(np.arange(self.design.shape[0]), k)
        per_chain = self.designs(R)
        if per_chain is None:
            return np.broadcast_to(self.design[rows], (R, k, self.dim))
        return per_chain[:, rows]

    def records(self, labels: np.ndarray) -> np.ndarray:
        """Rows [x_i, y_i] for labels of shape (R, k)."""
        R, k = labels.shape
        return np.concatenate([self.rows(R, k), labels[..., None]], axis=-1)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if len(shape) == 1:  # a held-out set: one set of rows (the first chain's design)
            return self.sample((1,) + shape, rng)[0]
        R, k = shape
        if self.design_seed is None:
            rows = np.resize(np.arange(self.design.shape[0]), k)
            mean = np.einsum("kd,d->k", self.design[rows], self.weights)
        else:
            mean = np.einsum("rkd,d->rk", self.rows(R, k), self.weights)
        labels = mean + self.noise * rng.standard_normal((R, k))
        return self.records(labels)
