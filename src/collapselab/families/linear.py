"""The fixed-design linear regression chain (Dohmatob et al. 2024; Gerstgrasser et al. 2024).

Each generation fits OLS on its training rows [x, y]; its synthetic records keep the design rows and
draw fresh labels X·ŵ + noise·ε at the data's noise level.

OLS depends on its rows only through XᵀX and Xᵀy, which add across pools: the exact path keeps those. For m
synthetic rows X_m, XᵀX is fixed by the design and Xᵀy = X_mᵀX_m ŵ + noise·X_mᵀε with X_mᵀε ~ N(0, X_mᵀX_m):
one d-dimensional Gaussian draw per chain instead of m labels, exact in distribution. Under accumulate that is
one running d × d sum instead of every generation's rows (R·n·G·(d+1) floats: 3.5 GB at 4,000 × 100 × 100 × 11).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from .._numerics.batched import bmm
from ..errors import SpecError
from ..sources.truth import LinearTruth
from .base import Family, FamilyTags, Params, register_family


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


@dataclass(eq=False)
class LinearStats:
    """XᵀX (R, d, d) and Xᵀy (R, d) of ``count`` rows: all OLS needs, and additive across pools."""

    count: int
    gram: np.ndarray
    moment: np.ndarray

    @staticmethod
    def merge(parts: list[LinearStats]) -> LinearStats:
        out = parts[0]
        for p in parts[1:]:
            out = LinearStats(out.count + p.count, out.gram + p.gram, out.moment + p.moment)
        return out


@register_family
class LinearFamily(Family):
    name = "linear"
    tags = FamilyTags(accepts=("regression",), exact=True, weighted=True)

    class Params(Params):
        exact: bool = True
        fit: Literal["ols", "min-norm"] = Field(
            default="ols", description="'min-norm': ŵ = X⁺y, the least-norm least-squares fit (any n, also n <= dim)"
        )

    @classmethod
    def check_spec(cls, spec, params):
        dim = spec.data.params.get("dim", 0)
        if params.fit == "ols" and min(spec.data.n, spec.samples) <= dim:
            raise SpecError(
                f"data.n: {min(spec.data.n, spec.samples)} rows cannot identify {dim} weights by OLS; allowed: "
                f"more than data.params.dim ({dim}) rows per training set, or model.params.fit = 'min-norm'"
            )

    def fit(self, x, rng):
        return self.fit_stats(self.stats_of(x))

    def _solve(self, gram, moment) -> LinearModel:
        if self.params.fit == "min-norm":  # pinv(XᵀX) Xᵀy = X⁺y: the minimum-norm solution when XᵀX is singular
            return LinearModel(
                np.einsum("rij,rj->ri", np.linalg.pinv(gram, hermitian=True), moment), self.reference.truth
            )
        try:
            weights = np.linalg.solve(gram, moment[..., None])[..., 0]
        except np.linalg.LinAlgError:  # a subsample that repeats design rows can be rank-deficient
            weights = np.einsum("rij,rj->ri", np.linalg.pinv(gram), moment)
        return LinearModel(weights, self.reference.truth)

    # --- exact path ---------------------------------------------------------------------------------------
    def exact_ok(self, spec, used: int) -> bool:
        d = self.reference.truth.dim
        return super().exact_ok(spec, used) and (used == 0 or used >= d)  # X_mᵀX_m needs full rank

    def stats_of(self, x):
        X, y = x[..., :-1], x[..., -1]
        return LinearStats(x.shape[1], np.einsum("rni,rnj->rij", X, X), np.einsum("rni,rn->ri", X, y))

    def _design_gram(self, R: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        """X_mᵀX_m of the m synthetic rows and its Cholesky factor, (R, d, d) each (computed once per size)."""
        key = (R, m)
        cache = self.__dict__.setdefault("_grams", {})
        if key not in cache:
            X = self.reference.truth.rows(R, m)
            gram = np.einsum("rni,rnj->rij", X, X)
            cache[key] = (gram, np.linalg.cholesky(gram))
        return cache[key]

    def sample_stats(self, model: LinearModel, m: int, rng):
        R, d = model.weights.shape
        gram, chol = self._design_gram(R, m)
        noise = bmm(chol, rng.standard_normal((R, d, 1)))[..., 0]  # X_mᵀε ~ N(0, X_mᵀX_m)
        moment = np.einsum("rij,rj->ri", gram, model.weights) + self.reference.truth.noise * noise
        return LinearStats(m, gram, moment)

    def merge_stats(self, parts):
        return LinearStats.merge(parts)

    def fit_weighted(self, parts):
        """Weighted least squares: part p's rows each weigh w_p / n_p (XᵀWX and XᵀWy from the parts' sums)."""
        gram = sum(w / st.count * st.gram for st, w in parts)
        moment = sum(w / st.count * st.moment for st, w in parts)
        return self._solve(gram, moment)

    def fit_stats(self, stats: LinearStats) -> LinearModel:
        return self._solve(stats.gram, stats.moment)

    def stats_arrays(self, stats):
        return {"count": np.array(stats.count), "gram": stats.gram, "moment": stats.moment}

    def stats_from_arrays(self, a):
        return LinearStats(int(a["count"]), a["gram"], a["moment"])

    def metrics(self, model):
        truth = self.reference.truth
        R = model.weights.shape[0]
        w_star = truth.chain_weights(R)
        err = model.weights - w_star
        out = {"test_error": np.sum(err * err, axis=1)}
        if truth.test_rows is not None:  # a finite test set: mean (x·ŵ - y)², y = x·w* + noise·ε
            X = truth.test_rows
            y = np.einsum("kd,rd->rk", X, w_star) + truth.noise * truth.test_noise
            residual = np.einsum("kd,rd->rk", X, model.weights) - y  # not BLAS: see batched.bmm
            out["test_mse"] = np.mean(residual * residual, axis=1)
        return out
