"""Each family's metrics against independent computations, every family under every policy, and user families."""

from importlib.resources import files

import numpy as np
import pytest
from helpers import metric, simulate
from scipy import stats

import collapselab as cl
from collapselab.families import FAMILIES, Reference
from collapselab.families.gaussian import GaussianFamily, GaussianModel
from collapselab.families.gmm import GMMFamily, fit_gmm
from collapselab.policies import POLICIES
from collapselab.sources import get_source

FAMILY_CASES = {
    "gaussian": ("gaussian", {"mean": [0.0, 1.0], "std": [1.0, 2.0]}, {}),
    "categorical": ("zipf", {"categories": 20}, {}),
    "bernoulli": ("bernoulli", {"p": 0.3}, {}),
    "poisson": ("poisson", {"rate": 2.0}, {}),
    "gmm": ("blobs", {"means": [-3.0, 3.0], "stds": 1.0}, {"components": 2}),
    "kde": ("gaussian", {"std": 1.0}, {"bandwidth": 0.2}),
    "linear": ("linear", {"dim": 3}, {}),
    "ngram": ("kjv", {"max_tokens": 20000, "block": 16}, {"order": 2}),
}


@pytest.mark.parametrize("kind", list(POLICIES))
@pytest.mark.parametrize("family", list(FAMILY_CASES))
def test_every_family_runs_under_every_policy(family, kind):
    source, sparams, fparams = FAMILY_CASES[family]
    policy = {"kind": kind, **({"real_fraction": 0.3} if kind in ("mix", "fresh") else {})}
    r = simulate(4, 30, source, 30, family, sparams, fparams, **policy)
    s = r.summary
    assert set(s.generation) == {0, 1, 2, 3}
    assert (s["count"] == 30).all(), s[s["count"] != 30]
    assert np.isfinite(s["mean"]).all()
    assert "synthetic_share" in set(s.metric)


def _gaussian_family(mean, cov, heldout_n=50_000):
    source = get_source("gaussian", {"mean": mean, "cov": cov})
    truth = source.truth(10, np.random.default_rng(0))
    heldout = truth.sample((heldout_n,), np.random.default_rng(1))
    return GaussianFamily(GaussianFamily.Params(), Reference(truth, heldout, 10)), truth


def test_gaussian_metrics_against_independent_formulas():
    fam, truth = _gaussian_family([0.0], [[4.0]])
    model = GaussianModel(np.array([[1.0], [0.0]]), np.array([[[1.0]], [[4.0]]]))
    m = fam.metrics(model)
    np.testing.assert_allclose(m["var_ratio"], [0.25, 1.0])
    np.testing.assert_allclose(m["std_ratio"], [0.5, 1.0])
    # 1-D W2 between N(a, s²) and N(b, t²) is sqrt((a-b)² + (s-t)²)
    np.testing.assert_allclose(m["w2"], [np.sqrt(1 + 1), 0.0], atol=1e-7)
    # the true model puts exactly the truth's 2% beyond its 1%/99% quantiles
    np.testing.assert_allclose(m["tail_mass"][1], 1.0, atol=1e-9)
    tail = stats.norm(1, 1).cdf(-2 * 2.3263478740408408) + stats.norm(1, 1).sf(2 * 2.3263478740408408)
    np.testing.assert_allclose(m["tail_mass"][0], tail / 0.02, rtol=1e-6)
    nll = -stats.norm(1, 1).logpdf(fam.reference.heldout[:, 0]).mean()
    np.testing.assert_allclose(m["nll_real"][0], nll, rtol=1e-10)


def test_multivariate_gaussian_w2_and_nll():
    cov = np.array([[2.0, 0.6], [0.6, 1.0]])
    fam, truth = _gaussian_family([1.0, -1.0], cov.tolist())
    other = np.array([[0.5, 0.1], [0.1, 0.3]])
    model = GaussianModel(np.array([[1.0, -1.0], [0.0, 0.0]]), np.stack([cov, other]))
    m = fam.metrics(model)
    assert m["w2"][0] == pytest.approx(0.0, abs=1e-6)
    # W2² = |Δμ|² + tr(A + B - 2 (A^½ B A^½)^½)
    from scipy.linalg import sqrtm

    root = sqrtm(cov)
    w2 = np.sqrt(2 + np.trace(cov + other - 2 * np.real(sqrtm(root @ other @ root))))
    assert m["w2"][1] == pytest.approx(w2, rel=1e-8)
    assert m["det_ratio"][1] == pytest.approx(np.linalg.det(other) / np.linalg.det(cov))
    nll = -stats.multivariate_normal([0, 0], other).logpdf(fam.reference.heldout).mean()
    assert m["nll_real"][1] == pytest.approx(nll, rel=1e-10)


def test_gmm_recovers_two_separated_blobs():
    truth = get_source("blobs", {"means": [[-4, 0], [4, 0]], "stds": [1.0, 0.5], "weights": [0.3, 0.7]}).truth(
        1, np.random.default_rng(0)
    )
    x = truth.sample((8, 4000), np.random.default_rng(1))
    model, iters = fit_gmm(x, 2, np.random.default_rng(2))
    order = np.argsort(model.means[:, :, 0], axis=1)
    means = np.take_along_axis(model.means[:, :, 0], order, axis=1)
    weights = np.take_along_axis(model.weights, order, axis=1)
    np.testing.assert_allclose(means, np.broadcast_to([-4, 4], (8, 2)), atol=0.1)
    np.testing.assert_allclose(weights, np.broadcast_to([0.3, 0.7], (8, 2)), atol=0.03)
    fam = GMMFamily(GMMFamily.Params(), Reference(truth, truth.sample((2000,), np.random.default_rng(3)), 4000))
    m = fam.metrics(model)
    assert (m["l2"] < 0.02).all()
    # component_std_max: the larger blob std is 1
    np.testing.assert_allclose(m["component_std_max"], 1.0, atol=0.05)


def test_gmm_distance_to_generation_0_and_per_component_stds_against_a_grid():
    """l2_gen0 = (∫ (f - f0)²)^½ summed on a grid, and component_std_k = sqrt(tr Σ / d), ranked, by hand."""
    truth = get_source("blobs", {"means": [[-2, 0], [2, 1]], "stds": [1.0, 0.6]}).truth(1, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    first, _ = fit_gmm(truth.sample((3, 60), rng), 2, rng)
    later, _ = fit_gmm(truth.sample((3, 25), rng), 2, rng)
    fam = GMMFamily(GMMFamily.Params(), Reference(truth, truth.sample((500,), rng), 60))
    fam.set_anchor(first, None)
    m = fam.metrics(later)
    axis = np.linspace(-9, 9, 361)
    xy = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(1, -1, 2)
    for r in range(3):
        f = [np.exp(model.log_prob(np.broadcast_to(xy, (3, *xy.shape[1:])))[r]) for model in (later, first)]
        grid_l2 = np.sqrt(np.sum((f[0] - f[1]) ** 2) * (axis[1] - axis[0]) ** 2)
        assert m["l2_gen0"][r] == pytest.approx(grid_l2, rel=1e-3)
        stds = sorted((np.sqrt(np.trace(c) / 2) for c in later.covs[r]), reverse=True)
        assert [m["component_std_1"][r], m["component_std_2"][r]] == pytest.approx(stds)
    assert np.all(fam.metrics(first)["l2_gen0"] < 1e-6)  # generation 0 against itself


def test_gmm_on_one_blob_loses_spread_under_replace():
    # Shumailov et al.: a GMM refitted on its own samples drifts away; its largest std falls
    r = simulate(40, 40, "blobs", 100, "gmm", {"means": [[0.0, 0.0]], "stds": 1.0}, {"components": 2})
    spread, _ = metric(r, "component_std_max")
    l2, _ = metric(r, "l2")
    assert spread[-1] < 0.8 * spread[0]
    assert l2[-1] > 2 * l2[0]


def test_batched_gmm_chains_match_the_scikit_learn_refit_loop_in_distribution():
    # the loop of Shumailov et al.'s notebook (GaussianMixture(2).fit, then .sample), independent of our EM:
    # after 40 generations our 256 chains' largest component std must be distributed like its 24 chains'
    from sklearn.mixture import GaussianMixture

    n, generations, chains = 200, 40, 24
    rng = np.random.default_rng(1)
    theirs = np.empty(chains)
    for c in range(chains):
        x = rng.standard_normal((n, 2))
        for g in range(generations):
            gmm = GaussianMixture(2, covariance_type="full", random_state=int(rng.integers(2**31))).fit(x)
            if g < generations - 1:
                x, _ = gmm.sample(n)
        theirs[c] = np.sqrt(np.linalg.eigvalsh(gmm.covariances_).max())
    r = simulate(generations, 256, "blobs", n, "gmm", {"means": [[0.0, 0.0]], "stds": 1.0}, {"components": 2})
    ours = r.raw[0].metrics["component_std_max"][-1]
    assert ours.mean() < 0.9  # both have drifted well away from the true 1 (a test that can tell them apart)
    assert stats.ks_2samp(ours, theirs).pvalue > 0.01
    se = np.sqrt(ours.var(ddof=1) / ours.size + theirs.var(ddof=1) / chains)
    assert abs(ours.mean() - theirs.mean()) < 3 * se


def test_shumailov_gmm_preset_fits_em_with_the_papers_settings():
    """The paper's scikit-learn fits used tol = 1e-5, max_iter = 2000; with the defaults (1e-3, 100) EM stops
    early and the largest component std falls measurably faster than in their figure."""
    spec = cl.load_spec("preset:shumailov-gmm")
    assert spec.model.params["tol"] == 1e-5 and spec.model.params["max_iter"] == 2000
    text = files("collapselab").joinpath("presets/shumailov-gmm.toml").read_text(encoding="utf-8")
    assert "tol = 1e-5, max_iter = 2000" in text  # the preset's own docs say so


def test_categorical_forgets_the_tail_long_before_it_loses_diversity():
    r = simulate(11, 2000, "zipf", 200, "categorical", {"categories": 10, "exponent": 1.5})
    summary = r.summary.set_index(["metric", "generation"])
    # rare_mass is a martingale (its mean stays ~1), but in the typical chain the tail is gone
    assert summary.loc[("rare_mass", 0), "median"] > 0.5
    assert summary.loc[("rare_mass", 10), "median"] == 0
    assert summary.loc[("gini_simpson", 10), "mean"] > 0.9 * summary.loc[("gini_simpson", 0), "mean"]


def test_categorical_chains_fixate_and_never_regain_a_category():
    r = simulate(200, 1000, "zipf", 20, "categorical", {"categories": 10, "exponent": 1.5})
    fixated, _ = metric(r, "fixated")
    support, _ = metric(r, "support")
    assert fixated[0] == 0 and fixated[-1] > 0.9
    assert np.all(np.diff(support) <= 1e-12)


def test_kde_spreads_under_replace_where_the_gaussian_shrinks():
    r = cl.run(
        {
            "generations": 30,
            "replicates": 500,
            "data": {"source": "gaussian", "n": 50},
            "model": {"family": "kde", "params": {"bandwidth": 0.5}},
        },
        save=False,
    )
    var, _ = metric(r, "var_ratio")
    assert var[-1] > 2 * var[0]


def test_user_family_registered_with_the_decorator_runs_through_the_loop():
    @cl.register_family
    class Median(cl.Family):
        """A degenerate model that puts all its mass on the sample median (total collapse at once)."""

        name = "test-median"
        accepts = ("continuous",)

        def fit(self, x, rng):
            med = np.median(x, axis=1)

            class Point:
                def sample(self, m, rng):
                    return np.repeat(med[:, None, :], m, axis=1)

            Point.med = med
            return Point()

        def metrics(self, model):
            return {"abs_median": np.abs(model.med[:, 0])}

    try:
        r = simulate(5, 100, "gaussian", 9, "test-median", {"std": 1.0})
        med, se = metric(r, "abs_median")
        np.testing.assert_allclose(med[1:], med[0])  # a point mass refits to itself
        assert med[0] > 0
    finally:
        FAMILIES.pop("test-median")


def test_family_metric_with_the_wrong_shape_is_reported():
    @cl.register_family("test-bad-shape")
    class Bad(cl.Family):
        accepts = ("continuous",)

        def fit(self, x, rng):
            return GaussianModel(x.mean(axis=1), np.ones((x.shape[0], 1, 1)))

        def metrics(self, model):
            return {"oops": np.zeros(3)}

    try:
        with pytest.raises(cl.CollapselabError, match="metric 'oops' has shape \\(3,\\), expected \\(20,\\)"):
            simulate(2, 20, "gaussian", 5, "test-bad-shape")
    finally:
        FAMILIES.pop("test-bad-shape")


# --- the papers' toy sources (scikit-learn's generators) -----------------------------------------------------


@pytest.mark.parametrize("shape", ["moons", "circles", "swiss-roll"])
def test_shapes_draw_what_scikit_learn_draws(shape):
    """Moments, marginal quantiles and (moons, circles) the density against scikit-learn's own generators."""
    from sklearn import datasets

    n = 300_000
    make = {
        "moons": lambda: datasets.make_moons(n, noise=0.1, random_state=0)[0],
        "circles": lambda: datasets.make_circles(n, noise=0.1, factor=0.8, random_state=0)[0],
        "swiss-roll": lambda: datasets.make_swiss_roll(n, noise=0.1, random_state=0)[0],
    }
    theirs = make[shape]()
    truth = get_source(shape, {"noise": 0.1}).truth(10, np.random.default_rng(0))
    ours = truth.sample((n,), np.random.default_rng(1))
    scale = np.sqrt(np.diag(np.cov(theirs, rowvar=False)))
    for x in (ours, theirs):  # the truth's moments and both samples agree to Monte-Carlo error
        np.testing.assert_allclose(x.mean(axis=0), truth.mean, atol=0.01 * scale.max())
        np.testing.assert_allclose(np.cov(x, rowvar=False), truth.cov, atol=0.02 * scale.max() ** 2)
    assert np.all(np.abs(truth.marginal_quantile(0.05) - np.quantile(theirs, 0.05, axis=0)) < 0.02 * scale)
    if shape != "swiss-roll":  # a normalised density: its mean log density on draws is minus the entropy, and
        # matches a histogram of scikit-learn's points
        grid = np.linspace(-2.5, 3.5, 121)
        cell = (grid[1] - grid[0]) ** 2
        hist, *_ = np.histogram2d(theirs[:, 0], theirs[:, 1], bins=[grid, grid])
        centres = (grid[:-1] + grid[1:]) / 2
        xy = np.stack(np.meshgrid(centres, centres, indexing="ij"), axis=-1)
        dens = np.exp(truth.logpdf(xy))
        assert dens.sum() * cell == pytest.approx(1.0, abs=0.01)
        busy = hist > 200
        np.testing.assert_allclose(hist[busy] / (n * cell), dens[busy], rtol=0.25)


def test_shapes_run_with_kde_and_gaussian_and_gmm_is_refused():
    r = cl.run({"generations": 4, "replicates": 50, "data": {"source": "moons", "n": 60}, "model": {"family": "kde"}})
    assert np.all(np.isfinite(metric(r, "trace_ratio")[0]))
    with pytest.raises(cl.SpecError, match="not one; families for it: gaussian, kde"):
        cl.run({"generations": 2, "replicates": 2, "data": {"source": "circles", "n": 20}, "model": {"family": "gmm"}})


def test_blobs_split_equally_draw_the_same_count_from_every_blob():
    params = {"means": [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], "stds": 0.5, "split": "equal"}
    truth = get_source("blobs", params).truth(10, np.random.default_rng(0))
    x = truth.sample((200, 31), np.random.default_rng(2))
    nearest = np.argmin(((x[:, :, None, :] - truth.means[None, None]) ** 2).sum(-1), axis=-1)
    counts = np.stack([(nearest == k).sum(axis=1) for k in range(3)], axis=1)
    np.testing.assert_array_equal(counts, np.broadcast_to([11, 10, 10], (200, 3)))  # make_blobs: first gets 31 % 3
    assert not np.all(nearest == nearest[0])  # in a random order per data set
    with pytest.raises(cl.SpecError, match="give no weights"):
        get_source("blobs", {**params, "weights": [0.2, 0.3, 0.5]})
