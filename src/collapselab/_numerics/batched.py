"""Batched numerical helpers shared by families: every function works on a leading replicate axis."""

from __future__ import annotations

import numpy as np

LOG_2PI = np.log(2 * np.pi)


def bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched matrix product (..., i, j) x (..., j, k) without BLAS.

    BLAS kernels may sum in an order that depends on how an array happens to be aligned in memory, which
    differs between processes; numpy's own einsum loops do not. Results must be bit-identical on any
    executor, so every product that feeds a result goes through here.
    """
    return np.einsum("...ij,...jk->...ik", a, b)


def psd_factor(cov: np.ndarray) -> np.ndarray:
    """A factor F with F Fᵀ = cov for (..., d, d) covariances that may be singular (collapsed)."""
    if cov.shape[-1] == 1:
        return np.sqrt(np.clip(cov, 0, None))
    vals, vecs = np.linalg.eigh(cov)
    return vecs * np.sqrt(np.clip(vals, 0, None))[..., None, :]


def psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of (..., d, d) positive semi-definite matrices."""
    if cov.shape[-1] == 1:
        return np.sqrt(np.clip(cov, 0, None))
    vals, vecs = np.linalg.eigh(cov)
    return bmm(vecs * np.sqrt(np.clip(vals, 0, None))[..., None, :], np.swapaxes(vecs, -1, -2))


ROWS_MAX_D = 8  # up to this many coordinates, elementwise work on per-coordinate rows beats einsum's loop (~15x)


def coordinate_rows(x: np.ndarray) -> list[np.ndarray] | np.ndarray:
    """Records (..., N, d) as one contiguous (..., N) row per coordinate when d <= ROWS_MAX_D; else x itself."""
    d = x.shape[-1]
    return [np.ascontiguousarray(x[..., j]) for j in range(d)] if d <= ROWS_MAX_D else x


def dot_rows(f: np.ndarray, zs: list[np.ndarray]) -> np.ndarray:
    """Σ_j f[..., j] z_j for coefficients f (..., k) and rows z_j (..., N), summed in order (fixed bits)."""
    acc = f[..., 0, None] * zs[0]
    for j in range(1, len(zs)):
        acc = acc + f[..., j, None] * zs[j]
    return acc


def gaussian_logpdf(x, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x; mean, cov) for x (..., N, d) or its ``coordinate_rows``, mean (..., d), cov (..., d, d) → (..., N).

    A singular covariance (a fully collapsed model) gives -inf, as it should off a point mass.
    """
    rows = x if isinstance(x, list) else coordinate_rows(x)
    d = len(rows) if isinstance(rows, list) else rows.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        chol, ok = _safe_cholesky(cov)
        inv = np.linalg.inv(chol)
        if isinstance(rows, list):
            diffs = [rows[j] - mean[..., j, None] for j in range(d)]
            maha = 0.0
            for i in range(d):
                zi = dot_rows(inv[..., i, : i + 1], diffs[: i + 1])  # inv is lower triangular
                maha = maha + zi * zi
        else:
            z = np.einsum("...ij,...nj->...ni", inv, rows - mean[..., None, :])
            maha = np.sum(z * z, axis=-1)
        out = -0.5 * (d * LOG_2PI + _logdet(chol)[..., None] + maha)
    return np.where(ok[..., None], out, -np.inf)


def _logdet(chol: np.ndarray) -> np.ndarray:
    return 2 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def _safe_cholesky(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors where they exist; identity and ok=False where a matrix is not positive definite."""
    d = cov.shape[-1]
    if d == 1:
        ok = cov[..., 0, 0] > 0
        return np.sqrt(np.where(ok[..., None, None], cov, 1.0)), ok
    ok = _positive_definite(np.linalg.eigvalsh(cov))
    safe = np.where(ok[..., None, None], cov, np.eye(d))
    return np.linalg.cholesky(safe), ok


def _positive_definite(eigenvalues: np.ndarray) -> np.ndarray:
    """Not numerically singular (collapsed, or fewer records than dimensions): relative to the largest eigenvalue."""
    return eigenvalues[..., 0] > 1e-10 * np.maximum(eigenvalues[..., -1], 1e-300)


def gaussian_cross_entropy(heldout: np.ndarray, mean: np.ndarray, cov: np.ndarray, eigen=None) -> np.ndarray:
    """Mean of -log N(x; mean_r, cov_r) over held-out points x (H, d), for each replicate r.

    Uses the held-out mean and scatter, so the cost is O(R d³) instead of O(R H d²). ``eigen``: cov's
    (eigenvalues, eigenvectors) where the caller has them (d >= 2), which spares a Cholesky factor and an inverse.
    """
    d = heldout.shape[-1]
    m_h = heldout.mean(axis=0)
    c_h = np.cov(heldout, rowvar=False, bias=True).reshape(d, d)
    diff = m_h - mean  # (R, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        if eigen is not None:
            vals, vecs = eigen  # tr(cov⁻¹ T) = Σ_i v_iᵀ T v_i / λ_i, T = c_h + diff diffᵀ
            ok = _positive_definite(vals)
            safe = np.where(ok[:, None], vals, 1.0)
            spread = np.sum(vecs * np.einsum("ij,rjk->rik", c_h, vecs), axis=1)  # v_iᵀ c_h v_i: (R, d)
            along = np.einsum("rj,rjk->rk", diff, vecs)  # v_iᵀ diff
            logdet = np.sum(np.log(safe), axis=-1)
            quad = np.sum((spread + along * along) / safe, axis=-1)
        else:
            target = c_h + diff[:, :, None] * diff[:, None, :]  # (R, d, d)
            chol, ok = _safe_cholesky(cov)
            safe = np.where(ok[:, None, None], cov, np.eye(d))
            inv = 1.0 / safe if d == 1 else np.linalg.inv(safe)  # 1 x 1: skip LAPACK's per-matrix overhead
            logdet = 2 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
            quad = np.einsum("rij,rji->r", inv, target)
    return np.where(ok, 0.5 * (d * LOG_2PI + logdet + quad), np.inf)


def categorical_sample(probs: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """m draws per row from (R, K) probability rows, in one vectorised search: shape (R, m).

    Row r's CDF is shifted by r so that all rows form one increasing sequence; a uniform draw u of
    row r is shifted the same way and located with a single searchsorted.
    """
    R, K = probs.shape
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    offsets = np.arange(R, dtype=float)[:, None]
    flat = (cdf + offsets).ravel()
    u = rng.random((R, m)) + offsets
    idx = np.searchsorted(flat, u.ravel(), side="right").reshape(R, m) - np.arange(R)[:, None] * K
    return np.clip(idx, 0, K - 1)


def bincount_rows(x: np.ndarray, K: int) -> np.ndarray:
    """Counts of each value 0..K-1 in every row of an (R, N) integer array: shape (R, K)."""
    R = x.shape[0]
    flat = (x + K * np.arange(R)[:, None]).ravel()
    return np.bincount(flat, minlength=R * K).reshape(R, K)


def subsample_rows(R: int, N: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct indices in [0, N) per replicate, independently: shape (R, k)."""
    if not 0 < k <= N:
        raise ValueError(f"cannot take {k} of {N} records")
    if k == N:
        return np.broadcast_to(np.arange(N), (R, N))
    return np.argpartition(rng.random((R, N)), k - 1, axis=1)[:, :k]


def sparse_subsample_rows(R: int, N: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct indices in [0, N) per replicate, in increasing order, uniform over k-subsets: O(R k log k)
    where k <= N / 4.

    ``subsample_rows`` draws a key per index, O(R N): quadratic in G under accumulate-subsample, whose N grows by
    n each generation while k stays n. Here k indices are drawn with replacement and every repeat is drawn again
    until none is left; each step treats all indices alike, so every k-subset is equally likely. Where k > N / 4
    repeats would take many rounds, and keys are cheap: ``subsample_rows``.
    """
    if not 0 < k <= N:
        raise ValueError(f"cannot take {k} of {N} records")
    if 4 * k > N:
        return subsample_rows(R, N, k, rng)
    idx = np.sort(rng.integers(0, N, size=(R, k)), axis=1)
    rows = np.arange(R)
    while True:
        sub = idx[rows]
        repeat = sub[:, 1:] == sub[:, :-1]  # sorted: every copy of an index after its first
        left = np.any(repeat, axis=1)
        if not np.any(left):
            return idx
        rows, sub, repeat = rows[left], sub[left], repeat[left]
        sub[:, 1:][repeat] = rng.integers(0, N, size=int(np.count_nonzero(repeat)))
        idx[rows] = np.sort(sub, axis=1)


def take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``np.take_along_axis(a, idx, axis=1)`` for records a (R, N, ...) and indices idx (R, k): (R, k, ...).

    One ``np.take`` over a flat view of the rows (2-3x ``take_along_axis``, whose index arrays are broadcast);
    a may be a view of a wider array (a pool with room, see Pool.extended).
    """
    R, N = a.shape[:2]
    row, item = a.strides[:2]
    trailing_contiguous = a[:1, :1].flags.c_contiguous
    if R == 0 or item <= 0 or row <= 0 or row % item or not trailing_contiguous:
        return np.take_along_axis(a, idx.reshape(idx.shape + (1,) * (a.ndim - 2)), axis=1)
    step = row // item  # records from one replicate's first record to the next one's
    flat = np.lib.stride_tricks.as_strided(a, shape=((R - 1) * step + N, *a.shape[2:]), strides=a.strides[1:])
    return np.take(flat, idx + step * np.arange(R)[:, None], axis=0)


def sq_dist(x, centres):
    """Squared distances (R, N, K) of records (R, N, d) to centres (R, K, d), coordinate by coordinate."""
    return np.stack(sq_dist_cols([x[..., j] for j in range(x.shape[2])], centres), axis=-1)


def sq_dist_cols(cols, centres) -> list[np.ndarray]:
    """Squared distances of records given as coordinate rows (R, N) to centres (R, K, d): one (R, N) per centre."""
    out = []
    for k in range(centres.shape[1]):
        dist = np.zeros(cols[0].shape)
        for j, col in enumerate(cols):
            dist += (col - centres[:, k, j, None]) ** 2
        out.append(dist)
    return out
