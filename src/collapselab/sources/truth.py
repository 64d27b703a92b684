"""Ground-truth distributions: what a source draws from and what metrics compare against.

A truth knows its own closed-form quantities (moments, quantiles, densities), so families can measure
a fitted model against it without knowing which source produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import optimize, special, stats


def symmetric_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of one positive semi-definite matrix (a truth's, computed once)."""
    vals, vecs = np.linalg.eigh(cov)
    return np.einsum("ij,kj->ik", vecs * np.sqrt(np.clip(vals, 0, None)), vecs)


@dataclass(frozen=True, eq=False)
class MixtureTruth:
    """A Gaussian mixture in d dimensions; a single Gaussian is the one-component case."""

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    covs: np.ndarray  # (K, d, d)
    # every draw of n records takes n·w_k of them from component k (scikit-learn's make_blobs: counts split
    # evenly, the first n mod K components one more), in a random order; else each record's component is drawn
    equal_split: bool = False

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
        return symmetric_sqrt(self.cov)

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
        if self.equal_split and shape:
            n, K = shape[-1], self.components
            counts = np.full(K, n // K)
            counts[: n % K] += 1
            comp = rng.permuted(np.broadcast_to(np.repeat(np.arange(K), counts), shape), axis=-1).reshape(-1)
        else:
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
    weights: np.ndarray  # (dim,): w*, or the scale of per-chain draws (weights_seed)
    noise: float
    design_seed: int | None = None  # a design per chain, drawn from this seed
    # per-chain draws, made once: R -> designs (R, n, dim), ("weights", R) -> w* (R, dim)
    _per_chain: dict = field(default_factory=dict, repr=False)
    weights_seed: int | None = None  # a w* per chain, w* ~ N(0, I / dim), drawn from this seed
    # a finite test set shared by every chain: fresh rows X (k, dim) and their noise draws ε (k,): y = X w* + noise·ε
    test_rows: np.ndarray | None = None
    test_noise: np.ndarray | None = None

    kind = "regression"

    @property
    def dim(self) -> int:
        return self.design.shape[1]

    def designs(self, R: int) -> np.ndarray | None:
        """Each chain's design (R, n, dim), or None when the design is shared."""
        if self.design_seed is None:
            return None
        if R not in self._per_chain:
            shape = (R, *self.design.shape)
            self._per_chain[R] = np.random.default_rng(self.design_seed).standard_normal(shape)
        return self._per_chain[R]

    def chain_weights(self, R: int) -> np.ndarray:
        """Each chain's w* (R, dim): one draw per chain (weights_seed), else the one w* for all."""
        if self.weights_seed is None:
            return np.broadcast_to(self.weights, (R, self.dim))
        key = ("weights", R)
        if key not in self._per_chain:
            draw = np.random.default_rng(self.weights_seed).standard_normal((R, self.dim))
            self._per_chain[key] = draw / np.sqrt(self.dim)
        return self._per_chain[key]

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
        if self.weights_seed is not None:
            mean = np.einsum("rkd,rd->rk", self.rows(R, k), self.chain_weights(R))
        elif self.design_seed is None:
            rows = np.resize(np.arange(self.design.shape[0]), k)
            mean = np.einsum("kd,d->k", self.design[rows], self.weights)
        else:
            mean = np.einsum("rkd,d->rk", self.rows(R, k), self.weights)
        labels = mean + self.noise * rng.standard_normal((R, k))
        return self.records(labels)


SHAPE_GRID = 2000  # curve points per branch for a shape's moments and density (spacing ~ π/2000 on a moon)
SHAPE_SAMPLE = 200_000  # draws (fixed seed) for a shape's marginal quantiles


@dataclass(frozen=True, eq=False)
class ShapeTruth:
    """scikit-learn's toy shapes as distributions: a point c(t) on the shape plus ``noise`` · N(0, I).

    ``moons``: two interleaved half circles; ``circles``: two concentric circles (the inner of radius
    ``factor``); ``swiss-roll``: the 3-d roll (t cos t, 21 v, t sin t), t = 1.5π(1 + 2u). Every record draws its
    branch and its t independently and uniformly (make_moons and make_circles space t evenly and split n
    between the branches: the same distribution, drawn as a grid). Moments and the density come from an even
    grid over t (closed-form accuracy: moments to ~1e-6); the density needs noise > 0 and is not computed for
    the swiss roll (a surface: kl and nll_real read NaN there)."""

    shape: str  # moons | circles | swiss-roll
    noise: float
    factor: float = 0.8

    kind = "continuous"

    @property
    def dim(self) -> int:
        return 3 if self.shape == "swiss-roll" else 2

    def _curve(self, u: np.ndarray, branch: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Points on the shape for u, v in [0, 1) and a branch 0 / 1: (..., d)."""
        if self.shape == "moons":
            t = np.pi * u
            outer = np.stack([np.cos(t), np.sin(t)], axis=-1)
            inner = np.stack([1 - np.cos(t), 1 - np.sin(t) - 0.5], axis=-1)
            return np.where(branch[..., None] == 0, outer, inner)
        if self.shape == "circles":
            t = 2 * np.pi * u
            ring = np.stack([np.cos(t), np.sin(t)], axis=-1)
            return np.where(branch[..., None] == 0, ring, self.factor * ring)
        t = 1.5 * np.pi * (1 + 2 * u)
        return np.stack([t * np.cos(t), 21 * v, t * np.sin(t)], axis=-1)

    @cached_property
    def _grid(self) -> np.ndarray:
        """Points on the shape at even t (midpoints), both branches: (2 · SHAPE_GRID, d) (the roll's height at ½)."""
        u = (np.arange(SHAPE_GRID) + 0.5) / SHAPE_GRID
        u2, branch = np.concatenate([u, u]), np.repeat([0, 1], SHAPE_GRID)
        return self._curve(u2, branch, np.full(u2.shape, 0.5))

    @cached_property
    def mean(self) -> np.ndarray:
        return self._grid.mean(axis=0)

    @cached_property
    def cov(self) -> np.ndarray:
        centred = self._grid - self.mean
        cov = centred.T @ centred / len(centred) + self.noise**2 * np.eye(self.dim)
        if self.shape == "swiss-roll":  # the height 21 v, v uniform and independent of t
            cov[1, 1] += 21**2 / 12
        return cov

    @cached_property
    def cov_sqrt(self) -> np.ndarray:
        return symmetric_sqrt(self.cov)

    def marginal_quantile(self, q: float) -> np.ndarray:
        cache = self.__dict__.setdefault("_quantiles", {})
        if q not in cache:
            cache[q] = np.quantile(self.sample((SHAPE_SAMPLE,), np.random.default_rng(0)), q, axis=0)
        return cache[q]

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        u = rng.random(shape)
        branch = rng.integers(0, 2, size=shape)
        v = rng.random(shape)
        return self._curve(u, branch, v) + self.noise * rng.standard_normal((*shape, self.dim))

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at x (..., d): the noise kernel averaged over the grid (moons and circles, noise > 0)."""
        if self.shape == "swiss-roll" or self.noise <= 0:
            return np.full(x.shape[:-1], np.nan)
        flat = x.reshape(-1, self.dim)
        out = np.empty(len(flat))
        s2 = self.noise**2
        for start in range(0, len(flat), 256):
            part = flat[start : start + 256]
            sq = ((part[:, None, :] - self._grid[None]) ** 2).sum(axis=-1)
            out[start : start + 256] = special.logsumexp(-sq / (2 * s2), axis=1) - np.log(len(self._grid))
        return (out - 0.5 * self.dim * np.log(2 * np.pi * s2)).reshape(x.shape[:-1])


@dataclass(frozen=True, eq=False)
class GLMTruth:
    """A fixed-design generalised linear model with its canonical link: labels y_i ~ Bernoulli(σ(x_i·β*))
    (``link = "logit"``, logistic regression) or Poisson(exp(x_i·β*)) (``"log"``, Poisson regression). The design
    X (n, dim) is one draw shared by every chain; records are rows [x, y], the design's rows reused cyclically."""

    design: np.ndarray  # (n, dim)
    weights: np.ndarray  # (dim,): β*
    link: str  # "logit" | "log"

    @property
    def kind(self) -> str:
        return "binary-regression" if self.link == "logit" else "count-regression"

    @property
    def dim(self) -> int:
        return self.design.shape[1]

    def mean(self, eta: np.ndarray) -> np.ndarray:
        """The mean response at linear predictor eta: σ(eta) or exp(eta)."""
        return special.expit(eta) if self.link == "logit" else np.exp(eta)

    def variance(self, mu: np.ndarray) -> np.ndarray:
        """The response's variance at mean mu (the canonical link's IRLS weight): mu(1 - mu) or mu."""
        return mu * (1 - mu) if self.link == "logit" else mu

    def labels(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mu = self.mean(eta)
        if self.link == "logit":
            return (rng.random(mu.shape) < mu).astype(float)
        return rng.poisson(mu).astype(float)

    def rows(self, R: int, k: int) -> np.ndarray:
        """The design rows of k records per chain (R, k, dim), reused cyclically."""
        return np.broadcast_to(self.design[np.resize(np.arange(self.design.shape[0]), k)], (R, k, self.dim))

    def records(self, labels: np.ndarray) -> np.ndarray:
        R, k = labels.shape
        return np.concatenate([self.rows(R, k), labels[..., None]], axis=-1)

    @cached_property
    def information(self) -> np.ndarray:
        """Fisher's information of one pass over the design at β*, Σ_i v_i x_i x_iᵀ (dim, dim)."""
        v = self.variance(self.mean(self.design @ self.weights))
        return np.einsum("n,ni,nj->ij", v, self.design, self.design)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if len(shape) == 1:  # a held-out set: one set of rows
            return self.sample((1,) + shape, rng)[0]
        R, k = shape
        eta = np.einsum("kd,d->k", self.rows(1, k)[0], self.weights)
        return self.records(self.labels(np.broadcast_to(eta, (R, k)), rng))
