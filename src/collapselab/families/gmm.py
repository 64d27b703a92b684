"""Gaussian mixtures with full covariances, fitted by EM batched over replicates.

All replicates run in one set of array operations; each stops updating once its mean log-likelihood
changes by less than ``tol`` (per-replicate convergence). Initialisation is k-means++ seeding followed
by a few Lloyd steps (as scikit-learn's default ``init_params="kmeans"``); ``reg_covar`` is added to
every covariance so that a component collapsing onto few points stays invertible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from .._numerics.batched import (
    LOG_2PI,
    ROWS_MAX_D,
    bmm,
    categorical_sample,
    coordinate_rows,
    dot_rows,
    gaussian_logpdf,
    psd_factor,
    sq_dist_cols,
)
from ..errors import SpecError
from .base import Family, FamilyTags, Params, register_family


@dataclass(eq=False)
class GMMModel:
    weights: np.ndarray  # (R, K)
    means: np.ndarray  # (R, K, d)
    covs: np.ndarray  # (R, K, d, d)

    def sample(self, m, rng):
        comp = categorical_sample(self.weights, m, rng)  # (R, m)
        R, K, d = self.means.shape
        z = rng.standard_normal((R, m, d))
        factor = psd_factor(self.covs)
        if d > ROWS_MAX_D:
            centre = np.take_along_axis(self.means, comp[:, :, None], axis=1)
            picked = np.take_along_axis(factor, comp[:, :, None, None], axis=1)
            return centre + np.einsum("rmij,rmj->rmi", picked, z)
        zs = [z[..., j] for j in range(d)]
        out = np.empty((R, m, d))
        for i in range(d):  # centre + F z, coordinate by coordinate, each component's then the drawn one's
            out[..., i] = np.choose(comp, [self.means[:, k, i, None] + dot_rows(factor[:, k, i], zs) for k in range(K)])
        return out

    def component_logpdf(self, records) -> list[np.ndarray]:
        """log w_k + log N(x; μ_k, Σ_k) for records (R or 1, N, d) or their coordinate_rows: one (R, N) array
        per component."""
        with np.errstate(divide="ignore"):
            logw = np.log(self.weights)
        return [
            gaussian_logpdf(records, self.means[:, k], self.covs[:, k]) + logw[:, k, None] for k in range(logw.shape[1])
        ]

    def log_prob(self, x):
        return logsumexp_parts(self.component_logpdf(coordinate_rows(x)))


def logsumexp_last(a: np.ndarray) -> np.ndarray:
    """log Σ exp over the last (component) axis."""
    return logsumexp_parts([a[..., k] for k in range(a.shape[-1])])


def logsumexp_parts(parts: list[np.ndarray]) -> np.ndarray:
    """log Σ_k exp(parts[k]), elementwise over the few components: faster than scipy's for small K."""
    top = parts[0]
    for p in parts[1:]:
        top = np.maximum(top, p)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        total = np.exp(parts[0] - top)
        for p in parts[1:]:
            total += np.exp(p - top)
        return top + np.log(total)


def _kmeans_pp(x, cols, K, rng, w=None):
    """k-means++ seeding; with record weights w (N,), each pick is proportional to weight too (scikit-learn's)."""
    R, N, _ = x.shape
    rows = np.arange(R)
    centres = np.empty((R, K, x.shape[2]))
    first = rng.integers(0, N, size=R) if w is None else categorical_sample(np.broadcast_to(w, (R, N)), 1, rng)[:, 0]
    centres[:, 0] = x[rows, first]
    d2 = sq_dist_cols(cols, centres[:, :1])[0]
    for k in range(1, K):  # a loop over components, never over replicates
        dw = d2 if w is None else d2 * w
        total = dw.sum(axis=1, keepdims=True)
        probs = np.where(total > 0, dw / np.where(total > 0, total, 1), 1.0 / N)
        pick = categorical_sample(probs, 1, rng)[:, 0]
        centres[:, k] = x[rows, pick]
        d2 = np.minimum(d2, sq_dist_cols(cols, centres[:, k : k + 1])[0])
    return centres


def _nearest(cols, centres):
    """Index of the nearest centre for every record, (R, N): elementwise over the few centres."""
    dist = sq_dist_cols(cols, centres)
    if len(dist) == 2:  # the common case, in one comparison
        return (dist[1] < dist[0]).astype(np.intp)
    labels = np.zeros(dist[0].shape, dtype=np.intp)
    best = dist[0]
    for k in range(1, len(dist)):
        closer = dist[k] < best  # ties keep the lower index, as argmin does
        labels = np.where(closer, k, labels)
        best = np.where(closer, dist[k], best)
    return labels


def _lloyd_resp(cols, centres, steps, w=None) -> list[np.ndarray]:
    """Hard responsibilities after Lloyd steps from ``centres``: one (R, N) indicator per centre (centres are
    weighted means with record weights w)."""
    K, d = centres.shape[1], len(cols)
    previous = None
    for _ in range(steps):
        labels = _nearest(cols, centres)
        if previous is not None and np.array_equal(labels, previous):
            # no record moved in any replicate: the centres, and so every later step, are what they were
            return [(labels == k).astype(float) for k in range(K)]
        previous = labels
        new = np.empty_like(centres)
        for k in range(K):
            member = (labels == k).astype(float)
            if w is not None:
                member *= w
            count = member.sum(axis=1)  # (R,)
            for j in range(d):
                total = np.einsum("rn,rn->r", member, cols[j])
                new[:, k, j] = np.where(count > 0, total / np.maximum(count, 1), centres[:, k, j])
        centres = new
    labels = _nearest(cols, centres)
    return [(labels == k).astype(float) for k in range(K)]


def _m_step(x, resp, reg):
    """Weights, means and covariances from responsibilities, one (R, N) array per component. ``x`` is the
    records' coordinate_rows (contiguous (R, N) work) or, for many dimensions, the (R, N, d) array."""
    if isinstance(x, list):
        return _m_step_small(x, resp, reg)
    N, d = x.shape[1], x.shape[2]
    resp = np.stack(resp, axis=-1)
    nk = resp.sum(axis=1) + 10 * np.finfo(float).eps  # (R, K)
    means = np.einsum("rnk,rnd->rkd", resp, x) / nk[..., None]
    diff = x[:, None] - means[:, :, None]  # (R, K, N, d)
    weighted = diff * np.swapaxes(resp, 1, 2)[..., None]
    scatter = bmm(np.swapaxes(weighted, -1, -2), diff)
    covs = scatter / nk[..., None, None] + reg * np.eye(d)
    return nk / N, means, covs


def _m_step_small(cols, rs, reg):
    """The M-step coordinate by coordinate on contiguous (R, N) rows: for the few dimensions of most studies."""
    (R, N), d, K = cols[0].shape, len(cols), len(rs)
    nk = np.stack([r.sum(axis=1) for r in rs], axis=1) + 10 * np.finfo(float).eps  # (R, K), contiguous sums
    means = np.empty((R, K, d))
    covs = np.empty((R, K, d, d))
    for k in range(K):
        r = rs[k]
        for j in range(d):
            means[:, k, j] = np.einsum("rn,rn->r", r, cols[j]) / nk[:, k]
        diffs = [cols[j] - means[:, k, j, None] for j in range(d)]
        for i in range(d):
            weighted = r * diffs[i]
            for j in range(i, d):
                covs[:, k, i, j] = covs[:, k, j, i] = np.einsum("rn,rn->r", weighted, diffs[j]) / nk[:, k]
    covs += reg * np.eye(d)
    return nk / N, means, covs


def fit_gmm(
    x, K, rng, max_iter=100, tol=1e-3, reg=1e-6, lloyd_steps=10, sample_weight=None
) -> tuple[GMMModel, np.ndarray]:
    """Batched EM; returns the model and the number of EM iterations each replicate ran. ``sample_weight`` (N,),
    mean 1: record i counts sample_weight[i] times in the likelihood (its responsibilities are scaled by it)."""
    R, _, d = x.shape
    w = None if sample_weight is None else np.asarray(sample_weight, float)
    scaled = (lambda rs: rs) if w is None else (lambda rs: [r * w for r in rs])  # noqa: E731
    # every step reads the records coordinate by coordinate: contiguous (R, N) rows, made once
    cols = [np.ascontiguousarray(x[..., j]) for j in range(d)]
    data = cols if d <= ROWS_MAX_D else x
    resp = _lloyd_resp(cols, _kmeans_pp(x, cols, K, rng, w), lloyd_steps, w)
    weights, means, covs = _m_step(data, scaled(resp), reg)
    prev = np.full(R, -np.inf)
    iters = np.zeros(R, dtype=int)
    active = np.arange(R)
    for _ in range(max_iter):
        if active.size == R:  # no copies until a replicate has converged
            xa, model = data, GMMModel(weights, means, covs)
        else:
            xa = [c[active] for c in data] if isinstance(data, list) else data[active]
            model = GMMModel(weights[active], means[active], covs[active])
        parts = model.component_logpdf(xa)
        lse = logsumexp_parts(parts)
        ll = lse.mean(axis=1) if w is None else (lse * w).mean(axis=1)
        pi, m, c = _m_step(xa, scaled([np.exp(p - lse) for p in parts]), reg)
        weights[active], means[active], covs[active] = pi, m, c
        iters[active] += 1
        done = np.abs(ll - prev[active]) < tol
        prev[active] = ll
        active = active[~done]
        if active.size == 0:
            break
    return GMMModel(weights, means, covs), iters


def mixture_overlap(wa, ma, ca, wb, mb, cb) -> np.ndarray:
    """∫ f g for Gaussian mixtures f = (wa, ma, ca) and g = (wb, mb, cb), batched over a leading axis."""
    d = ma.shape[-1]
    s = ca[..., :, None, :, :] + cb[..., None, :, :, :]
    diff = ma[..., :, None, :] - mb[..., None, :, :]
    _, logdet = np.linalg.slogdet(s)
    quad = np.einsum("...i,...i->...", diff, np.linalg.solve(s, diff[..., None])[..., 0])
    dens = np.exp(-0.5 * (d * LOG_2PI + logdet + quad))
    return np.einsum("...i,...j,...ij->...", wa, wb, dens)


RARE_POINTS = 256


@register_family
class GMMFamily(Family):
    name = "gmm"
    tags = FamilyTags(accepts=("continuous",), scores_records=True, uses_anchor=True, needs_mixture=True, weighted=True)
    spread_metrics = ("component_std_max",)

    def __init__(self, params, reference):
        super().__init__(params, reference)
        truth = reference.truth
        # a truth with several clusters has a rarest one: its mass under the model is the tail signal
        self.rare = int(np.argmin(truth.weights)) if truth.components > 1 else None
        self.tail_metrics = ("rare_cluster_mass",) if self.rare is not None else ()
        self.anchor: GMMModel | None = None  # generation 0's fit (set_anchor), before generation 0 is measured

    def set_anchor(self, model, real):
        """Generation 0's fit: ``l2_gen0`` measures how far each later fit has moved from it."""
        self.anchor = model

    def signal_references(self):
        refs = {"component_std_max": float(np.sqrt(np.linalg.eigvalsh(self.reference.truth.covs).max()))}
        if self.rare is not None:
            refs["rare_cluster_mass"] = float(self.reference.truth.weights[self.rare])
        return refs

    def rare_cluster_mass(self, model: GMMModel) -> np.ndarray:
        """The model's probability mass in the truth's rarest cluster, shape (R,): ∫ p_model(x) P_truth(rare | x) dx,
        the truth's posterior of the rare cluster averaged over the model (0 once the minority is forgotten).
        Integrated per component on fixed standard-normal points (the same in every run), so a broad component
        that straddles both clusters counts for the part of it that lies in the minority's region."""
        t = self.reference.truth
        z = np.random.default_rng(20240724).standard_normal((RARE_POINTS, t.dim))
        x = model.means[:, :, None, :] + np.einsum("rkij,sj->rksi", psd_factor(model.covs), z)  # (R, K, S, d)
        R, K = model.weights.shape
        flat = x.reshape(1, R * K * RARE_POINTS, t.dim)
        logp = np.stack(
            [gaussian_logpdf(flat, t.means[k], t.covs[k])[0] + np.log(t.weights[k]) for k in range(t.components)]
        )  # (K_truth, points)
        post = np.exp(logp[self.rare] - logsumexp_last(logp.T)).reshape(R, K, RARE_POINTS)
        return np.sum(model.weights * post.mean(axis=2), axis=1)

    class Params(Params):
        components: int = Field(default=2, ge=1)
        max_iter: int = Field(default=100, ge=1)
        tol: float = Field(default=1e-3, gt=0)
        reg_covar: float = Field(default=1e-6, ge=0)

    @classmethod
    def check_spec(cls, spec, params):
        if min(spec.data.n, spec.samples) < params.components:
            raise SpecError(
                f"model.params.components = {params.components}: more components than records per training set"
            )

    def fit(self, x, rng):
        p = self.params
        model, _ = fit_gmm(x, p.components, rng, p.max_iter, p.tol, p.reg_covar)
        return model

    def fit_weighted_records(self, x, weights, rng):
        p = self.params
        model, _ = fit_gmm(x, p.components, rng, p.max_iter, p.tol, p.reg_covar, sample_weight=weights)
        return model

    def metrics(self, model: GMMModel):
        t = self.reference.truth
        ff = mixture_overlap(model.weights, model.means, model.covs, model.weights, model.means, model.covs)
        fg = mixture_overlap(model.weights, model.means, model.covs, t.weights, t.means, t.covs)
        gg = mixture_overlap(t.weights, t.means, t.covs, t.weights, t.means, t.covs)
        eig = np.linalg.eigvalsh(model.covs)  # (R, K, d)
        heldout = self.reference.heldout[None]
        nll = -model.log_prob(heldout).mean(axis=1)
        out = {
            "l2": np.sqrt(np.clip(ff - 2 * fg + gg, 0, None)),
            "component_std_max": np.sqrt(eig.max(axis=(1, 2))),
            "nll_real": nll,
            "kl": nll - self.truth_nll(),
        }
        a = self.anchor
        if a is not None:
            fa = mixture_overlap(model.weights, model.means, model.covs, a.weights, a.means, a.covs)
            aa = mixture_overlap(a.weights, a.means, a.covs, a.weights, a.means, a.covs)
            out["l2_gen0"] = np.sqrt(np.clip(ff - 2 * fa + aa, 0, None))
        # each component's spread as one std, sqrt(tr Σ_k / d) (the papers' per-component std), largest first:
        # components have no identity across generations, their ranks do
        spread = np.sqrt(np.trace(model.covs, axis1=2, axis2=3) / model.means.shape[-1])
        for k, values in enumerate(-np.sort(-spread, axis=1).T, start=1):
            out[f"component_std_{k}"] = values
        if self.rare is not None:
            out["rare_cluster_mass"] = self.rare_cluster_mass(model)
        return out
