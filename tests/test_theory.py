"""The simulator against the closed forms of the literature, to within 4 Monte-Carlo standard errors.

Where REFERENCES.md states a formula, the test writes it out itself rather than trusting theory.py;
the other cases check the simulation against theory.py and theory.py's special cases against each other.
"""

import numpy as np
import pytest
from helpers import assert_within_se, expected, metric, simulate
from scipy import special, stats

import collapselab as cl

G = np.arange


# --- Gaussian, maximum likelihood (Shumailov et al. 2024) -------------------------------------------


# The fitted variance is a product of independent χ² factors: its log-variance grows by ψ'((n-1)/2) per
# generation, and a mean over chains is only trustworthy while that stays moderate. Small n gets fewer
# generations and more chains (cheap on the exact path); the sampling path is checked too.
@pytest.mark.parametrize(
    "n, std, gens, chains, exact",
    [(5, 1.0, 8, 200_000, True), (10, 2.5, 25, 20000, True), (50, 0.3, 25, 20000, True), (10, 1.0, 20, 20000, False)],
)
def test_gaussian_mle_variance_and_mean_drift(n, std, gens, chains, exact):
    r = simulate(
        gens, chains, "gaussian", n, "gaussian", {"mean": 1.5, "std": std}, {"estimator": "mle", "exact": exact}
    )
    g = G(gens)
    var_ratio = ((n - 1) / n) ** (g + 1)  # REFERENCES.md, written out here
    drift = std**2 * (1 - (1 - 1 / n) ** (g + 1))
    assert_within_se(r, "var_ratio", var_ratio)
    assert_within_se(r, "mean_sq_drift", drift)
    np.testing.assert_allclose(expected(r, "var_ratio"), var_ratio)
    np.testing.assert_allclose(expected(r, "mean_sq_drift"), drift)


def test_gaussian_mle_with_more_synthetic_samples_than_real():
    # n real, m synthetic: E σ²_g/σ² = a_n a_m^g; the drift accumulates E σ²_k / m
    n, m, gens = 8, 40, 20
    r = simulate(gens, 20000, "gaussian", n, "gaussian", {"std": 1.0}, kind="replace", samples=m)
    g = G(gens)
    var = (n - 1) / n * ((m - 1) / m) ** g
    drift = 1 / n + np.concatenate([[0], np.cumsum(var[:-1])]) / m
    assert_within_se(r, "var_ratio", var)
    assert_within_se(r, "mean_sq_drift", drift)


def test_gaussian_unbiased_is_a_martingale_in_variance():
    n, gens = 10, 20
    r = simulate(gens, 40000, "gaussian", n, "gaussian", {"std": 1.0}, {"estimator": "unbiased"})
    assert_within_se(r, "var_ratio", np.ones(gens))
    assert_within_se(r, "mean_sq_drift", (1 + G(gens)) / n)


@pytest.mark.parametrize("estimator", ["mle", "unbiased"])
def test_multivariate_gaussian_trace_determinant_and_drift(estimator):
    n, d, gens = 15, 3, 15
    cov = [[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]]
    r = simulate(gens, 20000, "gaussian", n, "gaussian", {"mean": [0, 1, -1], "cov": cov}, {"estimator": estimator})
    g = G(gens)
    denom = n if estimator == "mle" else n - 1
    c = np.prod([(n - i) / denom for i in range(1, d + 1)])  # Wishart: E det S = det Σ Π (n-i)/denom
    assert_within_se(r, "det_ratio", c ** (g + 1))
    # E log det: Σ_i (digamma((k - i)/2) + log 2) - d log denominator, per fit on k records
    lc = np.sum([special.digamma((n - i) / 2) + np.log(2) for i in range(1, d + 1)]) - d * np.log(denom)
    assert_within_se(r, "log_det_ratio", lc * (g + 1))
    trace = np.trace(np.array(cov))
    if estimator == "mle":
        assert_within_se(r, "trace_ratio", ((n - 1) / n) ** (g + 1))
        assert_within_se(r, "mean_sq_drift", trace * (1 - (1 - 1 / n) ** (g + 1)))
    else:
        assert_within_se(r, "trace_ratio", np.ones(gens))
        assert_within_se(r, "mean_sq_drift", trace * (g + 1) / n)


def test_high_dimensional_determinants_stay_numbers_in_the_log_domain():
    """d = 31, n = 100, replace, 120 generations (the parity check): the covariance's condition number passes
    1/eps near generation 85 and np.linalg.det of it stopped being a number (det <= 0 in 48% of chains at
    generation 100). The exact path's log det is exact: every determinant metric stays finite and log_det_ratio
    keeps its closed form within 4 SE at every generation; the run says where conditioning was lost."""
    d, n, gens = 31, 100, 121
    r = simulate(gens, 300, "gaussian", n, "gaussian", {"mean": [0.0] * d})
    m = r.raw[0].metrics
    for name in ("det_ratio", "log_det_ratio", "std_ratio"):
        assert np.all(np.isfinite(m[name])), name
    assert np.all(m["std_ratio"][-1] > 0)
    lc = np.sum([special.digamma((n - i) / 2) + np.log(2) for i in range(1, d + 1)]) - d * np.log(n)
    np.testing.assert_allclose(expected(r, "log_det_ratio"), lc * (G(gens) + 1), rtol=1e-12)
    assert_within_se(r, "log_det_ratio", lc * (G(gens) + 1))
    assert m["conditioning_lost"][0].mean() == 0 and m["conditioning_lost"][-1].mean() > 0.5
    assert any("lost its conditioning" in note for _, note in r.notes)


def test_gaussian_variance_law_holds_for_non_gaussian_real_data():
    # E[S²] = a_n σ² for any distribution: a two-blob truth fitted by one Gaussian follows the same law
    n, gens = 12, 15
    r = simulate(gens, 20000, "blobs", n, "gaussian", {"means": [-2.0, 2.0], "stds": 1.0}, {})
    assert_within_se(r, "var_ratio", ((n - 1) / n) ** (G(gens) + 1))
    assert "det_ratio" not in set(r.theory.metric)  # the Wishart moments need Gaussian real data


# --- Categorical: Wright-Fisher drift ---------------------------------------------------------------


@pytest.mark.parametrize(
    "source, params, n",
    [
        ("categorical", {"probs": [0.5, 0.3, 0.15, 0.05]}, 20),
        ("zipf", {"categories": 50, "exponent": 1.1}, 100),
        ("categorical", {"probs": [0.25, 0.25, 0.25, 0.25]}, 4),
        ("zipf", {"categories": 50, "exponent": 1.3, "shift": 2.7}, 60),  # Zipf–Mandelbrot
    ],
)
def test_categorical_gini_simpson_decay(source, params, n):
    gens = 30
    r = simulate(gens, 20000, source, n, "categorical", params)
    if "probs" in params:
        probs = np.asarray(params["probs"])
    else:  # p_k ∝ (k + b)^-a, k = 1 … K
        probs = (np.arange(1, 51) + params.get("shift", 0.0)) ** -params["exponent"]
    probs = probs / probs.sum()
    H = 1 - np.sum(probs**2)
    assert_within_se(r, "gini_simpson", (1 - 1 / n) ** (G(gens) + 1) * H)  # REFERENCES.md


def test_categorical_expected_support_from_exact_chain():
    r = simulate(30, 20000, "categorical", 20, "categorical", {"probs": [0.6, 0.3, 0.08, 0.02]})
    assert_within_se(r, "support", expected(r, "support"))
    # generation 0: category k is seen with probability 1 - (1-p_k)^n
    p = np.array([0.6, 0.3, 0.08, 0.02])
    assert expected(r, "support")[0] == pytest.approx(np.sum(1 - (1 - p) ** 20))


def test_categorical_with_unequal_sample_sizes():
    n, m, gens = 10, 30, 20
    r = simulate(gens, 20000, "categorical", n, "categorical", {"probs": [0.4, 0.4, 0.2]}, kind="replace", samples=m)
    H = 1 - (0.16 + 0.16 + 0.04)
    assert_within_se(r, "gini_simpson", (1 - 1 / n) * (1 - 1 / m) ** G(gens) * H)


# --- Bernoulli and Poisson (Suresh et al. 2024) -------------------------------------------------------


@pytest.mark.parametrize("n, samples", [(20, None), (10, 25)])
def test_bernoulli_mean_preserved_and_survival(n, samples):
    policy = {"kind": "replace", **({"samples": samples} if samples else {})}
    r = simulate(30, 20000, "bernoulli", n, "bernoulli", {"p": 0.08}, **policy)
    assert_within_se(r, "p", np.full(30, 0.08))
    assert_within_se(r, "alive", expected(r, "alive"))
    assert expected(r, "alive")[0] == pytest.approx(1 - 0.92**n)


@pytest.mark.parametrize("n, samples, p", [(10, None, 0.5), (20, None, 0.3), (10, 25, 0.8), (30, 8, 0.2)])
def test_bernoulli_variance_and_fixation_at_either_end(n, samples, p):
    """Fixation at 1 is as final as extinction at 0: P(0 < p_g < 1) from the exact chains of the ones and of the
    zeros, and E[p_g(1 - p_g)] = p(1 - p)(1 - 1/n)(1 - 1/m)^g, both against the simulation."""
    policy = {"kind": "replace", **({"samples": samples} if samples else {})}
    gens = 40
    r = simulate(gens, 20000, "bernoulli", n, "bernoulli", {"p": p}, **policy)
    m = samples or n
    assert_within_se(r, "variance", p * (1 - p) * (1 - 1 / n) * (1 - 1 / m) ** G(gens))
    unfixed = expected(r, "unfixed")
    assert unfixed[0] == pytest.approx(1 - p**n - (1 - p) ** n)
    assert_within_se(r, "unfixed", unfixed)


def test_bernoulli_chains_fixed_at_one_are_total_collapse():
    """p0 = 0.5, n = 10 (the parity check): by generation 199 every chain sits at 0 or 1, and every one of them
    is in the total stage, whichever end it fixed at. (A chain already fixed at generation 0, 2 in 1,000 here,
    has nothing to lose against its own generation 0: its stage is undefined and counts as healthy.)"""
    r = simulate(200, 2000, "bernoulli", 10, "bernoulli", {"p": 0.5})
    p = r.raw[0].metrics["p"]
    assert np.all((p[-1] == 0) | (p[-1] == 1)) and 0.3 < np.mean(p[-1] == 1) < 0.7
    moving = (p[0] > 0) & (p[0] < 1)
    total = r.raw[0].metrics["stage_total"][-1]
    assert np.all(total[moving & (p[-1] == 1)] == 1) and np.all(total[moving & (p[-1] == 0)] == 1)
    assert metric(r, "stage_healthy")[0][-1] == pytest.approx(np.mean(~moving))
    assert metric(r, "unfixed")[0][-1] == 0.0


@pytest.mark.parametrize("n, samples", [(10, None), (10, 30), (40, 10)])
def test_poisson_branching_survival(n, samples):
    policy = {"kind": "replace", **({"samples": samples} if samples else {})}
    r = simulate(40, 20000, "poisson", n, "poisson", {"rate": 0.15}, **policy)
    assert_within_se(r, "rate", np.full(40, 0.15))
    alive = expected(r, "alive")
    assert_within_se(r, "alive", alive)
    assert alive[0] == pytest.approx(1 - np.exp(-n * 0.15))
    assert np.all(np.diff(alive) <= 0)


# --- Linear regression chain (Dohmatob et al. 2024; Gerstgrasser et al. 2024) -----------------------


@pytest.mark.parametrize("kind", ["replace", "accumulate"])
def test_linear_regression_chain(kind):
    gens, dim, n, noise = 12, 4, 16, 0.7
    r = simulate(gens, 20000, "linear", n, "linear", {"dim": dim, "noise": noise}, kind=kind)
    base = expected(r, "test_error")[0]  # σ² tr((XᵀX)⁻¹) for the cell's design
    assert base > 0
    k = np.arange(1, gens + 1)
    shape = k if kind == "replace" else np.cumsum(1 / k**2)
    np.testing.assert_allclose(expected(r, "test_error"), base * shape)
    assert_within_se(r, "test_error", base * shape)


@pytest.mark.parametrize(
    "kind, dim, n", [("replace", 4, 16), ("accumulate", 4, 16), ("replace", 10, 30), ("accumulate", 2, 8)]
)
def test_linear_regression_chain_with_a_design_per_chain(kind, dim, n):
    """Each chain draws its own Gaussian design: the expectation is over designs too, E tr((XᵀX)⁻¹) =
    dim / (n - dim - 1) (the inverse-Wishart mean), written out here."""
    gens, noise = 10, 0.7
    params = {"dim": dim, "noise": noise, "design": "per-chain"}
    r = simulate(gens, 20000, "linear", n, "linear", params, kind=kind)
    k = np.arange(1, gens + 1)
    shape = k if kind == "replace" else np.cumsum(1 / k**2)
    truth = noise**2 * dim / (n - dim - 1) * shape
    np.testing.assert_allclose(expected(r, "test_error"), truth)
    assert_within_se(r, "test_error", truth)


@pytest.mark.parametrize("kind, dim, n, fit", [("replace", 12, 8, "min-norm"), ("accumulate", 3, 10, "ols")])
def test_linear_chains_with_w_star_per_chain_and_min_norm_fits_agree_with_a_plain_loop(kind, dim, n, fit):
    """A design and a w* per chain, against the papers' loop chain by chain (np.linalg.lstsq: the minimum-norm
    least-squares fit, over-parameterised at n < dim)."""
    R, gens, noise = 3000, 6, 0.5
    params = {"dim": dim, "noise": noise, "design": "per-chain", "weights": "per-chain"}
    r = simulate(gens, R, "linear", n, "linear", params, {"fit": fit}, kind=kind)
    ours = r.raw[0].metrics["test_error"]
    rng = np.random.default_rng(5)
    plain = np.empty((gens, R))
    for c in range(R):
        X, w = rng.standard_normal((n, dim)), rng.standard_normal(dim) / np.sqrt(dim)
        xs, ys = [X], [X @ w + noise * rng.standard_normal(n)]
        for g in range(gens):
            fit_w = np.linalg.lstsq(np.concatenate(xs), np.concatenate(ys), rcond=None)[0]
            plain[g, c] = np.sum((fit_w - w) ** 2)
            labels = X @ fit_w + noise * rng.standard_normal(n)
            xs, ys = ([*xs, X], [*ys, labels]) if kind == "accumulate" else ([X], [labels])
    for g in range(gens):
        gap = ours[g].mean() - plain[g].mean()
        assert abs(gap) < 4 * np.sqrt(ours[g].var() / R + plain[g].var() / R), (g, ours[g].mean(), plain[g].mean())


def test_linear_test_mse_on_a_finite_test_set_by_hand():
    spec = {"generations": 1, "replicates": 4, "seed": 0, "data": {"source": "linear", "n": 9}}
    spec["data"]["params"] = {"dim": 3, "noise": 0.3, "weights": "per-chain", "test": 50}
    spec["model"] = {"family": "linear"}
    cell = cl.api.prepare(spec).cells[0]
    truth = cell.source.truth(9, np.random.default_rng(0))
    from collapselab.families.base import Reference
    from collapselab.families.linear import LinearModel

    family = cell.family(cell.family_params, Reference(truth, truth.sample((5,), np.random.default_rng(1)), 9))
    fitted = np.random.default_rng(2).standard_normal((4, 3))
    m = family.metrics(LinearModel(fitted, truth))
    w_star = truth.chain_weights(4)
    assert not np.allclose(w_star[0], w_star[1])
    for c in range(4):
        y = truth.test_rows @ w_star[c] + 0.3 * truth.test_noise
        assert m["test_mse"][c] == pytest.approx(np.mean((truth.test_rows @ fitted[c] - y) ** 2))
        assert m["test_error"][c] == pytest.approx(np.sum((fitted[c] - w_star[c]) ** 2))
    with pytest.raises(cl.SpecError, match="model.params.fit = 'min-norm'"):
        cl.api.prepare({**spec, "data": {"source": "linear", "n": 3, "params": {"dim": 3}}})


def test_a_design_per_chain_differs_between_chains_and_a_shared_one_does_not():
    spec = {"generations": 1, "replicates": 3, "seed": 0, "data": {"source": "linear", "n": 6}}
    spec["model"] = {"family": "linear"}
    for design, differ in (("shared", False), ("per-chain", True)):
        spec["data"]["params"] = {"dim": 2, "design": design}
        cell = cl.api.prepare(spec).cells[0]
        truth = cell.source.truth(6, np.random.default_rng(0))
        x = truth.sample((3, 6), np.random.default_rng(1))[..., :2]
        assert (not np.array_equal(x[0], x[1])) == differ


def test_threshold_share_of_chains_against_products_of_chi_squares():
    """Pr(var_ratio_g > ε) under replace (d = 1, MLE): var_ratio_g is a product of g + 1 independent χ²(n-1)/n
    draws; the probability from 400,000 such products here, against the run's var_ratio_above_ε."""
    n, gens, eps = 10, 12, 0.5
    spec = {"generations": gens, "replicates": 20000, "seed": 4, "data": {"source": "gaussian", "n": n}}
    r = cl.run({**spec, "model": {"family": "gaussian"}, "thresholds": {"var_ratio": eps}}, save=False)
    share = r.raw[0].metrics["var_ratio_above_0.5"]
    rng = np.random.default_rng(9)
    products = np.cumprod(rng.chisquare(n - 1, size=(400_000, gens)) / n, axis=1)
    truth = (products > eps).mean(axis=0)
    se = np.sqrt(truth * (1 - truth) / share.shape[1])
    assert np.all(np.abs(share.mean(axis=1) - truth) < 4 * se + 0.003), (share.mean(axis=1), truth)
    assert truth[0] > 0.8 and truth[-1] < 0.3  # the threshold is crossed inside the run
    with pytest.raises(cl.SpecError, match="thresholds.sigma: the run has no metric 'sigma'"):
        cl.run({**spec, "replicates": 4, "model": {"family": "gaussian"}, "thresholds": {"sigma": 0.5}}, save=False)


# --- rate-of-collapse bounds (Suresh et al. 2024) -----------------------------------------------------


def _bound(result, name):
    b = result.bounds[result.bounds.metric == name].sort_values("generation")
    return b["side"].iloc[0], b["bound"].to_numpy()


@pytest.mark.parametrize(
    "source, params, n, name",
    [
        ("bernoulli", {"p": 0.05}, 20, "alive"),
        ("bernoulli", {"p": 0.3}, 8, "alive"),
        ("poisson", {"rate": 0.1}, 15, "alive"),
        ("poisson", {"rate": 0.5}, 4, "alive"),
        ("zipf", {"categories": 12}, 30, "support"),
        ("categorical", {"probs": [0.9, 0.06, 0.04]}, 25, "support"),
    ],
)
def test_survival_lower_bounds_hold_for_the_exact_chain_and_the_simulation(source, params, n, name):
    """A symbol seen c times survives g more fits with P >= 1 - exp(-c/g) (the paper's time-to-forget, linear
    in c); averaged over c here. The exact chain's value (theory.py) and the simulated share both sit above it,
    and the bound is not trivial (it stays above 0 for the whole run)."""
    family = {"zipf": "categorical"}.get(source, source)
    r = simulate(200, 20000, source, n, family, params, seed=2)
    side, low = _bound(r, name)
    assert side == "lower"
    exact = expected(r, name)
    assert np.all(exact >= low - 1e-12), np.max(low - exact)
    mean, se = metric(r, name)
    assert np.all(mean + 4 * se + 1e-12 >= low), (mean, low)
    assert low[-1] > 0 and low[0] == pytest.approx(exact[0])  # generation 0: P(seen at all), exactly


def test_the_lower_bound_is_the_exact_chain_from_each_count_bounded_by_hand():
    """The conditional statement, from every count c of every n tried: P(survive g fits | c) >= 1 - exp(-c/g)
    for the Wright-Fisher chain (binomial steps, written out here) and the Poisson(1) branching process."""
    for n in (5, 12, 40):
        k = np.arange(n + 1)
        step = stats.binom.pmf(k[None, :], n, (k / n)[:, None])
        dead = np.zeros(n + 1)
        dead[0] = 1.0
        for g in range(1, 400):
            dead = step @ dead
            assert np.all(1.0 - dead[1:] >= 1.0 - np.exp(-k[1:] / g) - 1e-12), (n, g)
    q = 0.0
    for g in range(1, 5000):
        q = np.exp(q - 1.0)  # extinction by g of one individual's line
        for c in (1, 3, 10):
            assert 1.0 - q**c >= 1.0 - np.exp(-c / g) - 1e-12


@pytest.mark.parametrize("n, eps", [(5, 0.5), (20, 0.8), (50, 0.9)])
def test_gaussian_std_upper_bound_holds_and_the_bound_needs_the_papers_setting(n, eps):
    """P(σ_g > εσ) <= exp(-g/(4n)) / ε (Markov's inequality on E σ_g; c_n = E sqrt(χ²(n-1)/n) <= e^(-1/(4n)))."""
    spec = {
        "generations": 80,
        "replicates": 20000,
        "seed": 6,
        "data": {"source": "gaussian", "n": n},
        "model": {"family": "gaussian"},
        "thresholds": {"std_ratio": eps},
    }
    r = cl.run(spec, save=False)
    name = f"std_ratio_above_{eps:g}"
    side, high = _bound(r, name)
    assert side == "upper"
    mean, se = metric(r, name)
    assert np.all(mean - 4 * se <= high + 1e-12)
    g = np.arange(80)
    cn = np.exp(0.5 * np.log(2 / n) + special.gammaln(n / 2) - special.gammaln((n - 1) / 2))
    assert cn <= np.exp(-1 / (4 * n))
    np.testing.assert_allclose(high, np.minimum(np.exp(-g / (4 * n)) / eps, 1.0))
    for other in (
        {"policy": {"kind": "replace", "samples": n + 1}},
        {"model": {"family": "gaussian", "params": {"estimator": "unbiased"}}},
        {"policy": {"kind": "accumulate"}},
    ):
        r = cl.run({**spec, "replicates": 10, "generations": 3, **other}, save=False)
        assert r.bounds.empty, other  # the bound is proved for MLE under replace with m = n only


# --- KDE spreads --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bandwidth, n", [(0.3, 10), (1.0, 30)])
def test_kde_variance_recursion(bandwidth, n):
    gens = 20
    r = simulate(gens, 20000, "gaussian", n, "kde", {"std": 1.0}, {"bandwidth": bandwidth})
    v = np.empty(gens)
    v[0] = (n - 1) / n + bandwidth**2
    for g in range(1, gens):
        v[g] = (n - 1) / n * v[g - 1] + bandwidth**2
    assert_within_se(r, "var_ratio", v)
    if bandwidth**2 * n > 1:  # the fixed point h² n / 1 exceeds the truth's variance: the KDE spreads
        assert v[-1] > v[0] > 1


@pytest.mark.parametrize(
    "params, n",
    [({"kernel": "tophat", "bandwidth": 0.8}, 12), ({"bandwidth": "scott"}, 25), ({"bandwidth": "silverman"}, 8)],
)
def test_kde_variance_recursion_with_a_tophat_kernel_and_estimated_bandwidths(params, n):
    """The kernel's variance per generation written out here (not read from the package): tophat h²/3 in one
    dimension, Scott's h = n^(-1/5), Silverman's h = (3n/4)^(-1/5) (scikit-learn's rules at d = 1)."""
    gens = 20
    r = simulate(gens, 20000, "gaussian", n, "kde", {"std": 1.0}, params)
    h = {"scott": n ** (-1 / 5), "silverman": (3 * n / 4) ** (-1 / 5)}.get(params["bandwidth"], params["bandwidth"])
    added = h**2 / 3 if params.get("kernel") == "tophat" else h**2
    v = np.empty(gens)
    v[0] = (n - 1) / n + added
    for g in range(1, gens):
        v[g] = (n - 1) / n * v[g - 1] + added
    assert_within_se(r, "var_ratio", v)
    assert_within_se(r, "var_ratio", expected(r, "var_ratio"))  # theory.py's closed form
    if isinstance(params["bandwidth"], str):
        np.testing.assert_allclose(metric(r, "bandwidth")[0], h)


def test_kde_heldout_likelihood_matches_scipy_and_scikit_learn_conventions():
    """nll_real against an independent computation: SciPy's normal density summed over the points (Gaussian
    kernel), and a count of points within h over the ball's volume (tophat), on the same held-out records."""
    from scipy import stats

    from collapselab.families.kde import KDEModel

    rng = np.random.default_rng(0)
    points, heldout = rng.standard_normal((3, 40, 2)), rng.standard_normal((150, 2))
    for kernel in ("gaussian", "tophat"):
        ours = KDEModel(points, 0.6, kernel).log_prob(heldout)
        for r in range(3):
            diff = heldout[:, None, :] - points[r][None]
            if kernel == "gaussian":
                dens = stats.multivariate_normal(np.zeros(2), 0.36 * np.eye(2)).pdf(diff).mean(axis=1)
            else:
                dens = (np.linalg.norm(diff, axis=-1) <= 0.6).mean(axis=1) / (np.pi * 0.36)
            with np.errstate(divide="ignore"):
                np.testing.assert_allclose(ours[r], np.log(dens), rtol=1e-10)
    # and in a run: the metric is the mean over the first heldout_nll held-out records
    r = simulate(3, 8, "gaussian", 30, "kde", {"std": 1.0}, {"bandwidth": 0.5, "heldout_nll": 100})
    assert np.all(np.isfinite(metric(r, "nll_real")[0]))
    assert metric(r, "nll_real")[0][0] > stats.norm.entropy()  # a KDE of 30 points is worse than the truth


def test_tophat_kde_samples_are_uniform_on_the_ball():
    from collapselab.families.kde import KDEModel

    rng = np.random.default_rng(1)
    x = KDEModel(np.zeros((1, 1, 3)), 2.0, "tophat").sample(200_000, rng)[0]
    radius = np.linalg.norm(x, axis=1)
    assert radius.max() <= 2.0
    # uniform on the ball of radius 2 in 3-d: P(|x| <= r) = (r/2)^3; covariance h²/(d + 2) I
    np.testing.assert_allclose(np.mean(radius <= 1.0), 1 / 8, atol=0.003)
    np.testing.assert_allclose(np.cov(x, rowvar=False), 4 / 5 * np.eye(3), atol=0.01)


# --- Gaussian under accumulate and fresh: exact moment recursions (theory.py) -------------------------


@pytest.mark.parametrize("estimator", ["mle", "unbiased"])
@pytest.mark.parametrize(
    "policy",
    [
        {"kind": "accumulate"},
        {"kind": "accumulate", "samples": 5},
        {"kind": "fresh", "real_fraction": 0.3},
        {"kind": "fresh", "real_fraction": 0.0, "samples": 12},
    ],
)
def test_gaussian_accumulate_and_fresh_moment_recursions(estimator, policy):
    r = simulate(15, 20000, "gaussian", 10, "gaussian", {"mean": -3.0, "std": 2.0}, {"estimator": estimator}, **policy)
    for name in ("var_ratio", "mean_sq_drift"):
        assert_within_se(r, name, expected(r, name))


@pytest.mark.parametrize("real_count, samples", [(4, 30), (25, 3), (0, 6)])
def test_fresh_with_fixed_real_and_synthetic_counts(real_count, samples):
    """k fresh real records beside m synthetic ones (the total k + m set by the design, not n): the closed form
    (theory.py's recursion with N = k + m) and a plain NumPy loop over chains written here, within 4 SE."""
    R, gens, n = 20000, 12, 10
    policy = {"kind": "fresh", "real_count": real_count, "samples": samples}
    r = simulate(gens, R, "gaussian", n, "gaussian", {"std": 1.0}, **policy)
    ours = r.raw[0].metrics["var_ratio"]
    np.testing.assert_allclose(r.raw[0].metrics["synthetic_share"][1:], samples / (real_count + samples))
    assert_within_se(r, "var_ratio", expected(r, "var_ratio"))
    rng = np.random.default_rng(8)
    x = rng.standard_normal((R, n))
    plain = np.empty((gens, R))
    for g in range(gens):
        mu, var = x.mean(axis=1), x.var(axis=1)
        plain[g] = var
        synthetic = mu[:, None] + np.sqrt(var)[:, None] * rng.standard_normal((R, samples))
        x = np.concatenate([rng.standard_normal((R, real_count)), synthetic], axis=1)
    gap = np.abs(ours.mean(axis=1) - plain.mean(axis=1))
    assert np.all(gap < 4 * np.sqrt(ours.var(axis=1) / R + plain.var(axis=1) / R)), (ours.mean(1), plain.mean(1))


def test_fixed_counts_are_checked_before_anything_runs():
    base = {"generations": 2, "replicates": 2, "data": {"source": "gaussian", "n": 10}, "model": {"family": "gaussian"}}
    for policy, message in (
        ({"kind": "mix", "real_count": 11}, "allowed: 0 .. 10"),
        ({"kind": "fresh", "real_count": 3, "real_fraction": 0.2}, "not both"),
        ({"kind": "replace", "real_count": 3}, "policy.real_count = 3: only used by kind"),
    ):
        with pytest.raises(cl.SpecError, match=message):
            cl.run({**base, "policy": policy}, save=False)
    mixed = cl.run({**base, "generations": 3, "policy": {"kind": "mix", "real_count": 10, "samples": 5}}, save=False)
    np.testing.assert_allclose(mixed.raw[0].metrics["synthetic_share"][1:], 5 / 15)


def test_moment_recursion_reduces_to_the_replace_closed_form():
    # fresh with no real data and m = n is replace: the recursion must give ((n-1)/n)^(g+1) exactly
    from collapselab.engine.plan import expand
    from collapselab.spec import load_spec
    from collapselab.theory import for_cell

    spec = {"generations": 12, "data": {"source": "gaussian", "n": 7}, "model": {"family": "gaussian"}}
    fresh = for_cell(expand(load_spec({**spec, "policy": {"kind": "fresh", "real_fraction": 0.0}}))[0], 0)
    g = np.arange(12)
    np.testing.assert_allclose(fresh["var_ratio"], (6 / 7) ** (g + 1))
    np.testing.assert_allclose(fresh["mean_sq_drift"], 1 - (6 / 7) ** (g + 1))
    # accumulate keeps the variance bounded away from zero
    acc = for_cell(expand(load_spec({**spec, "generations": 500, "policy": {"kind": "accumulate"}}))[0], 0)
    assert acc["var_ratio"][-1] > 0.75


# --- every closed form the theory module carries, every metric it names ------------------------------

EVERY_CLOSED_FORM = {
    ("gaussian", "replace"): (
        {"source": "gaussian", "n": 12, "params": {"mean": [1, 2], "cov": [[1, 0.4], [0.4, 2]]}},
        {"family": "gaussian"},
        {"kind": "replace", "samples": 9},
    ),
    ("gaussian", "accumulate"): (
        {"source": "gaussian", "n": 6, "params": {"std": 0.5}},
        {"family": "gaussian", "params": {"estimator": "unbiased"}},
        {"kind": "accumulate"},
    ),
    ("gaussian", "fresh"): (
        {"source": "blobs", "n": 10, "params": {"means": [0.0, 3.0], "stds": 1.0}},
        {"family": "gaussian"},
        {"kind": "fresh", "real_fraction": 0.5},
    ),
    ("gaussian", "mix"): (
        {"source": "gaussian", "n": 12, "params": {"mean": [1.0, -1.0], "cov": [[2.0, 0.5], [0.5, 1.0]]}},
        {"family": "gaussian"},
        {"kind": "mix", "real_fraction": 0.25},
    ),
    ("kde", "replace"): (
        {"source": "gaussian", "n": 8, "params": {"std": 1.5}},
        {"family": "kde", "params": {"bandwidth": 0.4}},
        {"kind": "replace", "samples": 16},
    ),
    ("categorical", "replace"): (
        {"source": "zipf", "n": 30, "params": {"categories": 8}},
        {"family": "categorical"},
        {"kind": "replace"},
    ),
    ("bernoulli", "replace"): (
        {"source": "bernoulli", "n": 15, "params": {"p": 0.1}},
        {"family": "bernoulli"},
        {"kind": "replace", "samples": 20},
    ),
    ("poisson", "replace"): (
        {"source": "poisson", "n": 20, "params": {"rate": 0.1}},
        {"family": "poisson"},
        {"kind": "replace"},
    ),
    ("linear", "replace"): (
        {"source": "linear", "n": 12, "params": {"dim": 2, "noise": 2.0}},
        {"family": "linear"},
        {"kind": "replace"},
    ),
    ("linear", "accumulate"): (
        {"source": "linear", "n": 12, "params": {"dim": 6}},
        {"family": "linear"},
        {"kind": "accumulate"},
    ),
    # first order in 1/n: a large design, fewer generations and chains (tests/test_glm.py has more settings)
    ("logistic", "replace"): (
        {"source": "logistic", "n": 1500, "params": {"dim": 2}},
        {"family": "logistic"},
        {"kind": "replace"},
        {"generations": 5, "replicates": 3000},
    ),
    ("logistic", "accumulate"): (
        {"source": "logistic", "n": 500, "params": {"dim": 2}},
        {"family": "logistic"},
        {"kind": "accumulate"},
        {"generations": 12, "replicates": 3000},
    ),
    ("poisson-regression", "replace"): (
        {"source": "poisson-regression", "n": 800, "params": {"dim": 2, "scale": 0.7}},
        {"family": "poisson-regression"},
        {"kind": "replace"},
        {"generations": 6, "replicates": 3000},
    ),
    ("poisson-regression", "accumulate"): (
        {"source": "poisson-regression", "n": 400, "params": {"dim": 3}},
        {"family": "poisson-regression"},
        {"kind": "accumulate"},
        {"generations": 12, "replicates": 3000},
    ),
}


def test_the_list_covers_every_closed_form_of_the_theory_module():
    from collapselab.theory import _HANDLERS

    assert set(EVERY_CLOSED_FORM) == set(_HANDLERS)


@pytest.mark.parametrize("case", list(EVERY_CLOSED_FORM), ids=lambda c: "-".join(c))
def test_every_closed_form_matches_the_simulation(case):
    import collapselab as cl

    data, model, policy, *run = EVERY_CLOSED_FORM[case]
    sizes = {"generations": 12, "replicates": 20000, **(run[0] if run else {})}
    r = cl.run({**sizes, "seed": 3, "data": data, "model": model, "policy": policy}, save=False)
    names = sorted(set(r.theory.metric))
    assert names, "the case must have closed forms"
    for name in names:
        assert_within_se(r, name, expected(r, name))
