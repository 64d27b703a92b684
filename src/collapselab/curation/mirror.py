"""Cluster-mirrored synthesis: generate records that mirror the real data's clusters instead of flattening them.

The real pool is clustered once (a Gaussian mixture per replicate, k chosen by BIC up to ``max_clusters`` or
given); each cluster keeps its real share. Every generation, the training records are assigned to the clusters
(a few Lloyd steps from the previous centres, so a cluster keeps its identity as it drifts), a Gaussian with
full covariance is fitted per cluster, and the synthetic pool is drawn with per-cluster quotas that follow the
real shares with a ``floor``, so a minority cluster cannot drift out of the data. After sampling, the records
are assigned back to the real clusters and ``cluster_coverage`` = min over clusters of (share drawn / real
share), capped at 1, is recorded: below 1, a cluster's generator has wandered off its cluster.

Everything is batched over replicates; clusters a replicate does not use are masked, not looped over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._numerics.batched import psd_factor, sq_dist
from ..errors import SpecError
from ..families.gmm import fit_gmm

LLOYD_STEPS = 5


def bic_choice(x: np.ndarray, max_k: int, rng: np.random.Generator, reg: float) -> tuple[np.ndarray, list]:
    """Per replicate, the number of mixture components with the lowest BIC, and the fitted mixtures."""
    R, N, d = x.shape
    bics, fits = [], []
    for k in range(1, max_k + 1):  # a loop over candidate k, batched over replicates
        model, _ = fit_gmm(x, k, rng, max_iter=200, tol=1e-4, reg=reg)
        ll = model.log_prob(x).sum(axis=1)
        params = (k - 1) + k * d + k * d * (d + 1) / 2
        bics.append(-2 * ll + params * np.log(N))
        fits.append(model)
    return np.argmin(np.stack(bics), axis=0) + 1, fits


@dataclass(eq=False)
class ClusterGenerator:
    """Per replicate and cluster a Gaussian, and the quota of records each cluster gets."""

    means: np.ndarray  # (R, K, d)
    covs: np.ndarray  # (R, K, d, d)
    quotas: np.ndarray  # (R, K) shares, 0 for clusters a replicate does not use

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        R, K, d = self.means.shape
        counts = largest_remainder(self.quotas, m)  # (R, K), rows sum to m
        ends = np.cumsum(counts, axis=1)
        comp = (np.arange(m)[None, None, :] >= ends[:, :, None]).sum(axis=1)  # (R, m) cluster of each slot
        order = np.argsort(rng.random((R, m)), axis=1)  # shuffle: records of a pool stay exchangeable
        comp = np.take_along_axis(comp, order, axis=1)
        z = rng.standard_normal((R, m, d))
        centre = np.take_along_axis(self.means, comp[:, :, None], axis=1)
        factor = np.take_along_axis(psd_factor(self.covs), comp[:, :, None, None], axis=1)
        return centre + np.einsum("rmij,rmj->rmi", factor, z)


def largest_remainder(shares: np.ndarray, m: int) -> np.ndarray:
    """Integer counts (R, K) summing to m per row, as close to m·shares as rounding allows."""
    raw = shares * m
    counts = np.floor(raw).astype(int)
    short = m - counts.sum(axis=1)
    rank = np.argsort(np.argsort(-(raw - counts), axis=1, kind="stable"), axis=1)
    return counts + (rank < short[:, None])


class ClusterMirror:
    """Clusters of the real pool, followed across generations."""

    def __init__(self, spec, real: np.ndarray, rng: np.random.Generator):
        if real.ndim != 3:
            raise SpecError("synthesis.kind = 'cluster-mirrored' needs vector records (continuous sources)")
        self.spec = spec
        R, n, d = real.shape
        if spec.clusters == "bic":
            chosen, fits = bic_choice(real, spec.max_clusters, rng, spec.reg_covar)
        else:  # only the given k is fitted: fits[k - 1]
            chosen = np.full(R, spec.clusters)
            fits = [None] * (spec.clusters - 1) + [fit_gmm(real, spec.clusters, rng)[0]]
        K = int(chosen.max())
        self.active = np.arange(K)[None, :] < chosen[:, None]  # (R, K)
        centres = np.zeros((R, K, d))
        for k in np.unique(chosen):  # replicates that chose k take their centres from the k-component fit
            rows = chosen == k
            centres[rows, :k] = fits[k - 1].means[rows]
        self.real_centres = centres
        self.real_shares = np.zeros((R, K))
        self.real_covs = np.broadcast_to(np.eye(d), (R, K, d, d))
        generator = self.fit(real)  # the real clusters' own Gaussians: the fallback of an emptied cluster
        onehot = self.assign(real, generator.means)[..., None] == np.arange(K)
        self.real_shares = onehot.mean(axis=1)
        self.real_centres, self.real_covs = generator.means, generator.covs
        self.clusters = chosen

    def assign(self, x: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Index of the nearest of a replicate's clusters for every record (R, N, d) → (R, N)."""
        dist = sq_dist(x, centres)
        dist[~np.broadcast_to(self.active[:, None, :], dist.shape)] = np.inf
        return np.argmin(dist, axis=2)

    def fit(self, x: np.ndarray) -> ClusterGenerator:
        """Per-cluster Gaussians of training records x (R, N, d), clustered by Lloyd steps from the real centres
        (no state carried between generations: a resumed run refits exactly what an uninterrupted one did)."""
        R, N, d = x.shape
        K = self.active.shape[1]
        centres = self.real_centres
        for _ in range(LLOYD_STEPS):
            onehot = (self.assign(x, centres)[..., None] == np.arange(K)).astype(float)  # (R, N, K)
            count = onehot.sum(axis=1)
            sums = np.einsum("rnk,rnd->rkd", onehot, x)
            centres = np.where(count[..., None] > 0, sums / np.maximum(count, 1)[..., None], centres)
        onehot = (self.assign(x, centres)[..., None] == np.arange(K)).astype(float)
        count = onehot.sum(axis=1)
        diff = x[:, None] - centres[:, :, None]  # (R, K, N, d)
        w = np.swapaxes(onehot, 1, 2)[..., None]
        covs = np.einsum("rkni,rknj->rkij", diff * w, diff) / np.maximum(count - 1, 1)[..., None, None]
        covs = covs + self.spec.reg_covar * np.eye(d)
        # a cluster left with fewer than two training records takes the real cluster's spread
        covs = np.where((count < 2)[..., None, None], self.real_covs, covs)
        return ClusterGenerator(centres, covs, self.quotas())

    def quotas(self) -> np.ndarray:
        """Each cluster's share of a synthetic pool (R, K): its real share, at least ``floor``, renormalised."""
        quotas = np.where(self.active, np.maximum(self.real_shares, self.spec.floor), 0.0)
        return quotas / quotas.sum(axis=1, keepdims=True)

    def coverage(self, samples: np.ndarray) -> np.ndarray:
        """min over real clusters of (share of samples nearest its real centre / its real share), capped at 1."""
        K = self.active.shape[1]
        share = (self.assign(samples, self.real_centres)[..., None] == np.arange(K)).mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(self.active & (self.real_shares > 0), share / self.real_shares, np.inf)
        return np.minimum(ratio.min(axis=1), 1.0)
