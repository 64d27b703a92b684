"""The planner (planning.py) and the closed forms it stands on: the Gaussian under mix, and the stationary values
under fresh and mix."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import collapselab as cl
from collapselab.engine.plan import expand
from collapselab.spec import load_spec
from collapselab.theory import cell_truth, stationary


def _spec(kind, n, fraction=None, generations=30, replicates=4000, estimator="mle", **policy):
    pol = {"kind": kind, **policy}
    if fraction is not None:
        pol["real_fraction"] = fraction
    return {
        "generations": generations,
        "replicates": replicates,
        "data": {"source": "gaussian", "n": n},
        "model": {"family": "gaussian", "params": {"estimator": estimator}},
        "policy": pol,
    }


@pytest.mark.parametrize(
    "spec",
    [
        _spec("mix", 10, 0.3, generations=60, replicates=10000),
        _spec("mix", 8, None, generations=60, replicates=10000, real_count=3, samples=12),
        _spec("mix", 20, 0.5, generations=60, replicates=10000, estimator="unbiased"),
    ],
)
def test_mix_closed_form_agrees_with_simulation(spec):
    """Mix draws k of the same n real records every generation: the model's mean stays tied to the pool's sum, a
    correlation the fresh recursion has not. Within 4 SE at every generation, variance and mean drift."""
    r = cl.run(spec, save=False)
    for metric in ("var_ratio", "mean_sq_drift"):
        s = r.summary[r.summary.metric == metric]
        expected = r.theory[r.theory.metric == metric]["expected"].to_numpy()
        z = (s["mean"].to_numpy() - expected) / s["se"].to_numpy()
        assert np.all(np.abs(z) < 4), (metric, np.abs(z).max())


def _stationary(spec):
    cell = expand(load_spec(spec))[0]
    return stationary(cell, cell_truth(cell, 0))


@pytest.mark.parametrize("n, fraction, estimator", [(10, 0.2, "mle"), (50, 0.5, "mle"), (20, 0.1, "unbiased")])
def test_fresh_stationary_variance_is_the_fixed_point_formula(n, fraction, estimator):
    """E v* = k(N + s - 1) / ((N + s)(c - s) + s) with c = N (MLE) or N - 1 (unbiased), N = k + s: the fixed point
    of the fresh recursion, derived in theory.py's docstring; the iteration reaches it."""
    k = round(fraction * n)
    s = n - k
    c = n if estimator == "mle" else n - 1
    formula = k * (n + s - 1) / ((n + s) * (c - s) + s)
    limit = _stationary(_spec("fresh", n, fraction, estimator=estimator))
    assert limit["var_ratio"] == pytest.approx(formula, rel=1e-10)
    if fraction == 1:
        assert limit["var_ratio"] == pytest.approx((n - 1) / n if estimator == "mle" else 1.0)


@pytest.mark.parametrize(
    "spec",
    [
        _spec("fresh", 10, 0.2, generations=150),
        _spec("fresh", 30, 0.1, generations=300),
        _spec("mix", 10, 0.3, generations=150),
        _spec("mix", 20, 0.2, generations=200, estimator="unbiased"),
    ],
)
def test_long_chains_settle_at_the_stationary_values(spec):
    r = cl.run({**spec, "keep_replicates": False}, save=False)
    limit = _stationary(spec)
    last = r.summary[r.summary.generation == spec["generations"] - 1].set_index("metric")
    for metric in ("var_ratio", "mean_sq_drift"):
        z = (last.loc[metric, "mean"] - limit[metric]) / last.loc[metric, "se"]
        assert abs(z) < 4, (metric, z)
    assert _stationary(_spec("fresh", 10, 0.0)) == {}  # without real records there is no fixed point but collapse


@pytest.mark.parametrize("kind", ["mix", "fresh"])
@pytest.mark.parametrize(
    "n, needs", [(20, ("var_ratio >= 0.88", "var_ratio >= 0.92")), (50, ("var_ratio >= 0.95", "mean_sq_drift <= 0.05"))]
)
def test_closed_form_and_search_agree_within_the_search_interval(kind, n, needs):
    """16 intervals are checked here, so each is a 99.9% one (3.3 SE, as the suite's 4-SE bars): at 95% one of 16
    would miss by chance (seen: mix, n = 50, mean_sq_drift, where every candidate shares the same real pools and
    their sample mean sat 2.4 SE low at all of them)."""
    spec = _spec(kind, n, 0.5, generations=1)
    for need in needs:
        closed = cl.plan(spec, need, horizon=20, method="closed-form")
        search = cl.plan(spec, need, horizon=20, method="search", confidence=0.999)
        assert closed.method == "closed form" and search.method == "search"
        assert closed.value is not None, closed.sentence
        low, high = search.interval
        assert low is not None and high is not None, search.sentence
        assert low <= closed.value <= high, (need, closed.value, search.interval)
        assert 0 < closed.value < 1


def test_planning_the_sample_size_under_replace():
    """E var_ratio at generation g is ((n-1)/n)^(g+1) for the MLE: the smallest n with it >= 0.9 at g = 10."""
    spec = {**_spec("replace", 30, generations=1), "policy": {"kind": "replace"}}
    closed = cl.plan(spec, "var_ratio >= 0.9", horizon=10, knob="n")
    expected = next(n for n in range(2, 10_000) if ((n - 1) / n) ** 11 >= 0.9)
    assert closed.value == expected
    search = cl.plan(spec, "var_ratio >= 0.9", horizon=10, knob="n", method="search")
    assert search.interval[0] <= expected <= search.interval[1]


def test_a_share_of_chains_holds_when_the_answer_is_rerun():
    """target = "chains": at least `confidence` of the chains meet the tolerance; rerun as a spec with another seed,
    the share stays there within its sampling error."""
    spec = _spec("fresh", 40, 0.5, generations=1)
    answer = cl.plan(spec, "var_ratio >= 0.7", horizon=15, target="chains", confidence=0.8)
    assert answer.method == "search" and answer.value is not None
    rerun = {**spec, "generations": 16, "seed": 7, "keep_replicates": True}
    rerun["policy"] = {"kind": "fresh", "real_fraction": answer.value}
    share = np.mean(cl.run(rerun, save=False).raw[0].metrics["var_ratio"][15] >= 0.7)
    assert share >= 0.8 - 3 * np.sqrt(0.8 * 0.2 / 4000), share
    below = {**rerun, "policy": {"kind": "fresh", "real_fraction": answer.value - 2 / 40}, "seed": 0}
    assert np.mean(cl.run(below, save=False).raw[0].metrics["var_ratio"][15] >= 0.7) < 0.8  # and it is the smallest


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"need": "var_ratio > 0.9"}, "expected 'METRIC >= VALUE'"),
        ({"need": "var_ratio >= 0.9", "knob": "k"}, "knob = 'k'; allowed: real_fraction, n"),
        ({"need": "var_ratio >= 0.9", "horizon": -1}, "horizon = -1"),
        ({"need": "var_ratio >= 0.9", "target": "chains", "method": "closed-form"}, "needs method = 'search'"),
        ({"need": "nope >= 1", "method": "closed-form"}, "no closed form of 'nope'"),
        ({"need": "nope >= 1", "method": "search"}, "no metric 'nope'"),
    ],
)
def test_bad_plans_are_one_line_errors(kwargs, message):
    spec = _spec("fresh", 20, 0.5, generations=1, replicates=50)
    kwargs = {"horizon": 3, **kwargs}
    with pytest.raises(cl.SpecError, match=message) as e:
        cl.plan(spec, **kwargs)
    assert "\n" not in str(e.value)


def _plan_cli(cwd, *args):
    cmd = [sys.executable, "-m", "collapselab", "plan", "preset:plan-gaussian", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_real_fraction_needs_mix_or_fresh_and_the_cli_exits_2(tmp_path):
    with pytest.raises(cl.SpecError, match="needs policy.kind 'mix' or 'fresh'"):
        cl.plan({**_spec("replace", 20), "policy": {"kind": "replace"}}, "var_ratio >= 0.9", horizon=3)
    res = _plan_cli(tmp_path, "--need", "var_ratio >> 1", "--horizon", "3")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "var_ratio >> 1" in res.stderr
    res = _plan_cli(tmp_path, "--need", "var_ratio >= 0.95", "--horizon", "20", "--method", "both", "--json")
    assert res.returncode == 0, res.stderr
    import json

    closed, search = json.loads(res.stdout)
    assert search["interval"][0] <= closed["value"] <= search["interval"][1]


# --- weighted training sets (policy.real_weight) ------------------------------------------------------------------


@pytest.mark.parametrize("n, fraction, weight", [(20, 0.5, 0.618), (10, 0.3, 0.8), (30, 0.2, 0.35), (20, 0.5, 1.0)])
def test_weighted_fresh_closed_form_agrees_with_simulation(n, fraction, weight):
    """The weighted MLE (real records carry ``weight`` of the fit) under fresh: the recursion of theory.py for the
    variance and the mean's squared error, within 4 SE at every generation."""
    spec = _spec("fresh", n, fraction, generations=40, replicates=10000, real_weight=weight)
    r = cl.run({**spec, "keep_replicates": False}, save=False)
    for metric in ("var_ratio", "mean_sq_drift"):
        s = r.summary[r.summary.metric == metric]
        expected = r.theory[r.theory.metric == metric]["expected"].to_numpy()
        z = (s["mean"].to_numpy() - expected) / s["se"].to_numpy()
        assert np.all(np.abs(z) < 4), (metric, np.abs(z).max())


def test_the_weighted_fit_is_the_weighted_likelihood_of_the_parts():
    """One generation of a weighted cell against the weighted mean and covariance computed here from the records
    (Gaussian), and the Bernoulli, Poisson and categorical weighted means, all fitted on records (exact = false)."""
    from collapselab.engine.loop import CellKernel

    for family, data, check in [
        ("gaussian", {"source": "gaussian", "n": 12, "params": {"mean": [0, 0], "cov": [[1, 0.3], [0.3, 2]]}}, "cov"),
        ("bernoulli", {"source": "bernoulli", "n": 12, "params": {"p": 0.3}}, "p"),
        ("poisson", {"source": "poisson", "n": 12, "params": {"rate": 2.0}}, "rate"),
        ("categorical", {"source": "categorical", "n": 12, "params": {"probs": [0.5, 0.3, 0.2]}}, "probs"),
    ]:
        params = {"exact": False}  # on records, so the test can read them
        spec = {
            "generations": 3,
            "replicates": 5,
            "data": data,
            "model": {"family": family, "params": params},
            "policy": {"kind": "fresh", "real_fraction": 0.25, "real_weight": 0.7},
        }
        kernel = CellKernel(expand(load_spec(spec))[0], 3)
        state = kernel.init()
        state, _ = kernel.step(state)
        from collapselab.rng import Stream

        parts = kernel.policy.weighted_parts(
            1, kernel.real, state.pools, kernel._draw_real, kernel._rng(Stream.POLICY, 1)
        )
        (real, w_real), (synth, w_synth) = parts
        assert (w_real, w_synth) == (0.7, pytest.approx(0.3)) and real.size == 3 and synth.size == 9
        model, _, share = kernel._train(state, 1)
        np.testing.assert_allclose(share, 9 / 12)
        xr, xs = real.x.astype(float), synth.x.astype(float)
        if family == "gaussian":
            mean = 0.7 * xr.mean(axis=1) + 0.3 * xs.mean(axis=1)
            dr, ds = xr - mean[:, None], xs - mean[:, None]
            cov = 0.7 * np.einsum("rni,rnj->rij", dr, dr) / 3 + 0.3 * np.einsum("rni,rnj->rij", ds, ds) / 9
            np.testing.assert_allclose(model.mean, mean, atol=1e-12)
            np.testing.assert_allclose(model.cov, cov, atol=1e-12)
        elif family == "categorical":
            freq = lambda x: np.stack([(x == c).mean(axis=1) for c in range(3)], axis=1)  # noqa: E731
            np.testing.assert_allclose(model.probs, 0.7 * freq(xr) + 0.3 * freq(xs), atol=1e-12)
        else:
            np.testing.assert_allclose(getattr(model, check), 0.7 * xr.mean(axis=1) + 0.3 * xs.mean(axis=1))


def _weighted_generation_one(family, data, params=None):
    """Generation 1 of a fresh cell with real_weight 0.7 (a quarter of the records real): the model, and the real and
    synthetic parts' records it was fitted on."""
    from collapselab.engine.loop import CellKernel
    from collapselab.rng import Stream

    spec = {
        "generations": 3,
        "replicates": 4,
        "data": data,
        "model": {"family": family, "params": params or {}},
        "policy": {"kind": "fresh", "real_fraction": 0.25, "real_weight": 0.7},
    }
    kernel = CellKernel(expand(load_spec(spec))[0], 3)
    state, _ = kernel.step(kernel.init())
    parts = kernel.policy.weighted_parts(1, kernel.real, state.pools, kernel._draw_real, kernel._rng(Stream.POLICY, 1))
    model, _, _ = kernel._train(state, 1)
    (real, w_real), (synth, _) = parts
    assert w_real == 0.7
    return model, real.x.astype(float), synth.x.astype(float)


def test_weighted_fits_of_the_linear_kde_and_gmm_families():
    # linear: weighted least squares, each real row weighing 0.7/k and each synthetic row 0.3/s
    model, xr, xs = _weighted_generation_one(
        "linear", {"source": "linear", "n": 40, "params": {"dim": 3}}, {"exact": False}
    )
    for r in range(4):
        X = np.concatenate([xr[r, :, :-1], xs[r, :, :-1]])
        y = np.concatenate([xr[r, :, -1], xs[r, :, -1]])
        w = np.concatenate([np.full(len(xr[r]), 0.7 / len(xr[r])), np.full(len(xs[r]), 0.3 / len(xs[r]))])
        wls = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * y))
        np.testing.assert_allclose(model.weights[r], wls, rtol=1e-10)
    # kde: the real kernels carry 0.7 of the mass, and the moments are the weighted ones plus the kernel's
    model, xr, xs = _weighted_generation_one("kde", {"source": "gaussian", "n": 40, "params": {"std": 2.0}})
    k = xr.shape[1]
    assert model.point_weights[:k].sum() == pytest.approx(0.7) and model.point_weights[k:].sum() == pytest.approx(0.3)
    mean, cov = model.moments()
    expected = 0.7 * xr.mean(axis=1) + 0.3 * xs.mean(axis=1)
    np.testing.assert_allclose(mean, expected, atol=1e-12)
    drawn = model.sample(20000, np.random.default_rng(0))
    np.testing.assert_allclose(drawn.mean(axis=1), expected, atol=0.06)
    # gmm: real records from one cluster, synthetic ones from another (replace's synthetic pool of a GMM fitted on
    # the other cluster is not at hand, so the parts are set here): the fitted weights are the parts' weights
    from collapselab.families.gmm import fit_gmm

    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0, 1, (3, 50, 2)), rng.normal(8, 1, (3, 150, 2))], axis=1)
    weights = np.concatenate([np.full(50, 0.7 * 200 / 50), np.full(150, 0.3 * 200 / 150)])
    fitted, _ = fit_gmm(x, 2, rng, max_iter=200, tol=1e-8, sample_weight=weights)
    np.testing.assert_allclose(np.sort(fitted.weights, axis=1), [[0.3, 0.7]] * 3, atol=1e-6)
    near = np.argmin(np.abs(fitted.means[..., 0]), axis=1)
    np.testing.assert_allclose(fitted.means[np.arange(3), near], x[:, :50].mean(axis=1), atol=1e-6)


def test_weighted_gmm_and_kde_cells_run_end_to_end():
    for model in ({"family": "gmm", "params": {"components": 2}}, {"family": "kde", "params": {"bandwidth": 0.3}}):
        spec = {
            "generations": 4,
            "replicates": 8,
            "data": {"source": "blobs", "n": 60, "params": {"means": [[0.0], [4.0]], "stds": 1.0}},
            "model": model,
            "policy": {"kind": "fresh", "real_fraction": 0.5, "real_weight": 0.618},
        }
        a, b = cl.run(spec, save=False), cl.run(spec, save=False)
        pd.testing.assert_frame_equal(a.summary, b.summary)
        assert a.summary["mean"].notna().all()


def test_the_golden_ratio_weight():
    """He, Xu & Cheng (2025): fresh real data plus the previous generation's synthetic data, as many of each; the
    stationary error of the weighted mean is least at w = (√5 - 1)/2, not at the pooled 1/2, as n grows (the fitted
    variance moves it a little at small n). The simulation agrees: the mean's squared error at w ≈ 0.618 is below
    the pooled one's."""
    from collapselab.theory import best_real_weight

    golden = (np.sqrt(5) - 1) / 2
    spec = lambda n: load_spec(_spec("fresh", n, 0.5, generations=2))  # noqa: E731
    assert abs(best_real_weight(spec(2000)) - golden) < 1e-3
    assert abs(best_real_weight(spec(20)) - golden) < 0.02
    runs = {}
    for w in (0.5, 0.618):
        r = cl.run(
            {**_spec("fresh", 20, 0.5, generations=60, replicates=20000, real_weight=w), "keep_replicates": False},
            save=False,
        )
        last = r.summary[(r.summary.metric == "mean_sq_drift") & (r.summary.generation >= 40)]
        runs[w] = last["mean"].mean()
    assert runs[0.618] < runs[0.5]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({**_spec("replace", 20), "policy": {"kind": "replace", "real_weight": 0.5}}, "has no real records to weigh"),
        (
            {**_spec("fresh", 20, 0.5, real_weight=0.5), "model": {"family": "symmetric-mixture"}},
            "fits no weighted likelihood",
        ),
        (_spec("fresh", 20, 0.5, real_weight=0.5, estimator="unbiased"), "estimator = 'mle'"),
        (_spec("fresh", 20, 0.5, real_weight=1.5), "real_weight"),
    ],
)
def test_bad_weights_are_refused(spec, message):
    with pytest.raises(cl.SpecError, match=message) as e:
        expand(load_spec(spec))
    assert "\n" not in str(e.value)


# --- a run's sweep read against its plan (spec [plan], plan.json, the report) ------------------------------------


def test_a_sweep_is_read_against_its_plan_and_the_report_marks_it(tmp_path):
    spec = {
        **_spec("fresh", 50, 0.2, generations=21, replicates=2000),
        "plan": {"need": "var_ratio >= 0.95", "horizon": 20},
        "sweep": {"policy.real_fraction": [0.1, 0.2, 0.3, 0.4, 0.6, 0.8]},
    }
    r = cl.run(spec, out=tmp_path / "run")
    planned = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert planned == json.loads(json.dumps(r.planned))
    (group,) = planned["groups"]
    closed = cl.plan({**_spec("fresh", 50, 0.2, generations=21, replicates=2000)}, "var_ratio >= 0.95", 20)
    assert group["closed_form"] == closed.value
    means = {row["value"]: row["mean"] for row in group["rows"]}
    # the sweep's answer: the smallest swept fraction from which every larger one meets by the mean
    meeting = [v for v in sorted(means) if all(means[u] >= 0.95 for u in means if u >= v)]
    assert group["sweep_value"] == meeting[0]
    low, high = group["sweep_interval"]
    assert low <= group["sweep_value"] <= high
    # the closed form's plan lies between the swept value below the sweep's answer and it
    below = max(v for v in means if v < group["sweep_value"])
    assert below < closed.value <= group["sweep_value"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'id="plans"' in html and "the closed form plans" in html


def test_a_plan_over_the_sample_size():
    spec = {
        **_spec("replace", 20, generations=11, replicates=500),
        "plan": {"need": "var_ratio >= 0.8", "horizon": 10},
        "sweep": {"data.n": [10, 30, 60, 120]},
    }
    (group,) = cl.run(spec, save=False).planned["groups"]
    # E var_ratio = (1 - 1/n)^11 under replace: 0.8 needs n >= 50; swept: 60
    assert group["sweep_value"] == 60 and group["closed_form"] == 50


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sweep": {}}, "plan: the spec must sweep policy.real_fraction or data.n"),
        ({"plan": {"need": "var_ratio >= 0.9", "horizon": 40}}, "plan.horizon = 40: beyond the run's last generation"),
        ({"plan": {"need": "var_ratio > 0.9", "horizon": 4}}, "expected 'METRIC >= VALUE'"),
        ({"sweep": {"plan.horizon": [1, 2]}}, "that key cannot be swept"),
    ],
)
def test_bad_plans_are_refused(change, message):
    spec = {
        **_spec("fresh", 20, 0.2, generations=21),
        "plan": {"need": "var_ratio >= 0.9", "horizon": 20},
        "sweep": {"policy.real_fraction": [0.1, 0.5]},
        **change,
    }
    with pytest.raises(cl.SpecError, match=message) as e:
        expand(load_spec(spec))
    assert "\n" not in str(e.value)
