"""The symmetric mixture ½N(μ, σ²) + ½N(−μ, σ²): its two estimators against brute force and scipy, and its
chains against a plain loop over chains written here."""

import itertools

import numpy as np
import pytest
from scipy import optimize, stats

import collapselab as cl
from collapselab.errors import SpecError
from collapselab.families.symmetric import SymmetricMixtureModel, fit_approx_ml, fit_joint_ml


def _loglik(x, mu, sigma):
    return np.sum(np.log(0.5 * stats.norm.pdf(x, mu, sigma) + 0.5 * stats.norm.pdf(x, -mu, sigma)))


def _draw(rng, mu, n, sigma=1.0):
    return np.where(rng.random(n) < 0.5, -mu, mu) + sigma * rng.standard_normal(n)


def test_joint_ml_is_the_best_of_every_labelling():
    rng = np.random.default_rng(1)
    for mu in (0.0, 0.7, 2.0):
        for _ in range(5):
            x = _draw(rng, mu, 9)
            best = None
            for signs in itertools.product((-1.0, 1.0), repeat=x.size):  # every assignment to a half
                y = np.array(signs) * x  # records of the +μ half as they are, the -μ half's mirrored
                m = y.mean()
                var = np.mean((y - m) ** 2)  # the labelled likelihood's maximum over (μ, σ) for these signs
                if best is None or var < best[1]:
                    best = (abs(m), var)
            got_mu, got_sigma = fit_joint_ml(x[None])
            np.testing.assert_allclose([got_mu[0], got_sigma[0] ** 2], best, rtol=1e-12, atol=1e-12)


def test_approx_ml_reaches_the_mixture_likelihood_maximum():
    rng = np.random.default_rng(2)
    sets = [_draw(rng, mu, n) for mu in (0.0, 0.5, 1.0, 1.5, 3.0) for n in (30, 200) for _ in range(4)]
    for x in sets:
        mu, sigma, _ = fit_approx_ml(x[None], 1e-10, 5000)
        best = -np.inf
        for start in np.linspace(0, 1, 5) * np.sqrt(np.mean(x * x)):  # scipy from several starts: the global one
            res = optimize.minimize(
                lambda p, x=x: -_loglik(x, abs(p[0]), np.exp(p[1])),
                [start, np.log(x.std())],
                method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
            )
            best = max(best, -res.fun)
        ours = _loglik(x, mu[0], sigma[0])
        assert ours >= best - 1e-6, (x.size, ours, best)


def test_samples_follow_the_mixture_and_log_prob_is_its_density():
    model = SymmetricMixtureModel(np.array([0.0, 1.2, 3.0]), np.array([1.0, 0.5, 2.0]))
    x = model.sample(20000, np.random.default_rng(3))
    assert x.shape == (3, 20000, 1)
    for r in range(3):
        mu, s = model.mu[r], model.sigma[r]
        cdf = lambda t, mu=mu, s=s: 0.5 * stats.norm.cdf(t, mu, s) + 0.5 * stats.norm.cdf(t, -mu, s)
        assert stats.kstest(x[r, :, 0], cdf).pvalue > 1e-3
    grid = np.linspace(-6, 6, 13)[None, :, None]
    want = [
        np.log(0.5 * stats.norm.pdf(grid[0, :, 0], m, s) + 0.5 * stats.norm.pdf(grid[0, :, 0], -m, s))
        for m, s in zip(model.mu, model.sigma)
    ]
    np.testing.assert_allclose(model.log_prob(grid), np.array(want), rtol=1e-10)


def _profile_ml(x):
    """(μ, σ) maximising the mixture likelihood along σ² = mean x² − μ² (where every stationary point lies): a
    grid of 400 μ, then a bounded search around the best."""
    top = np.sqrt(np.mean(x * x))

    def profile(m):  # minus the log-likelihood, for one μ or an array of them, written out with two densities
        m = np.atleast_1d(m)[:, None]
        s = np.sqrt(np.maximum(top * top - m * m, 1e-300))
        dens = 0.5 * (np.exp(-0.5 * ((x - m) / s) ** 2) + np.exp(-0.5 * ((x + m) / s) ** 2)) / (s * np.sqrt(2 * np.pi))
        return -np.log(dens).sum(axis=1)

    grid = np.linspace(0, top, 401)[:-1]
    i = int(np.argmin(profile(grid)))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = optimize.minimize_scalar(lambda m: profile(m)[0], bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    m = res.x if res.fun < profile(grid[i])[0] else grid[i]
    return m, np.sqrt(top * top - m * m)


def _plain_loop(estimator, mu, n, G, R, rng):
    """One chain at a time: fit, sample n records from the fit, refit (replace)."""
    sigmas = np.empty((G, R))
    for r in range(R):
        x = _draw(rng, mu, n)
        for g in range(G):
            if estimator == "joint-ml":
                m = np.mean(np.abs(x))
                s = np.sqrt(max(np.mean(x * x) - m * m, 0.0))
            else:  # the likelihood's maximum: every stationary point has σ² = mean x² − μ², so search that curve
                m, s = _profile_ml(x)
            sigmas[g, r] = s
            x = _draw(rng, m, n, s)
    return sigmas


@pytest.mark.parametrize("estimator, R", [("joint-ml", 2000), ("approx-ml", 400)])
def test_chains_agree_with_a_plain_loop(estimator, R):
    mu, n, G = 1.0, 30, 8
    spec = {
        "generations": G,
        "replicates": 4000,
        "seed": 4,
        "data": {"source": "blobs", "n": n, "params": {"means": [[-mu], [mu]], "stds": 1.0}},
        "model": {"family": "symmetric-mixture", "params": {"estimator": estimator}},
    }
    ours = cl.run(spec, save=False).raw[0].metrics["sigma"]
    plain = _plain_loop(estimator, mu, n, G, R, np.random.default_rng(6))
    for g in (0, 3, G - 1):
        se = np.hypot(ours[g].std() / np.sqrt(ours.shape[1]), plain[g].std() / np.sqrt(R))
        assert abs(ours[g].mean() - plain[g].mean()) < 4 * se, (g, ours[g].mean(), plain[g].mean(), se)


def test_joint_ml_loses_spread_faster_than_the_likelihood_maximum_when_the_halves_overlap():
    base = {
        "generations": 30,
        "replicates": 2000,
        "seed": 5,
        "data": {"source": "blobs", "n": 50, "params": {"means": [[-1.0], [1.0]], "stds": 1.0}},
    }
    last = {}
    for estimator in ("joint-ml", "approx-ml"):
        r = cl.run({**base, "model": {"family": "symmetric-mixture", "params": {"estimator": estimator}}}, save=False)
        last[estimator] = r.table(generations=[29])["sigma_ratio"].iloc[0]
    assert last["joint-ml"] < last["approx-ml"] - 0.05, last


@pytest.mark.parametrize(
    "data",
    [
        {"source": "blobs", "n": 20, "params": {"means": [[-1.0], [2.0]], "stds": 1.0}},
        {"source": "gaussian", "n": 20, "params": {"mean": [0.0, 0.0]}},
    ],
)
def test_a_truth_that_is_not_a_symmetric_mixture_is_refused(data):
    spec = {"generations": 2, "replicates": 4, "data": data, "model": {"family": "symmetric-mixture"}}
    with pytest.raises(SpecError, match="symmetric-mixture"):
        cl.run(spec, save=False)
