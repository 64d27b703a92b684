"""Logistic and Poisson regression on a fixed design (families/glm.py): the fits against scikit-learn and SciPy,
record weights, and Dey & Donoho's (2024) first-order closed forms under accumulate and replace on several
settings each (theory._glm)."""

import numpy as np
import pytest
from helpers import assert_within_se, expected

import collapselab as cl
from collapselab.errors import SpecError


def _spec(family, policy, n, dim, generations, replicates=2000, **params):
    return {
        "generations": generations,
        "replicates": replicates,
        "seed": 5,
        "data": {"source": family, "n": n, "params": {"dim": dim, **params}},
        "model": {"family": family},
        "policy": {"kind": policy},
    }


# three settings per family and policy; replace only while d (g + 1) / n stays small (the first-order condition)
SETTINGS = [
    ("logistic", "accumulate", 300, 3, 10, {}),
    ("logistic", "accumulate", 800, 2, 10, {"scale": 1.3}),
    ("logistic", "accumulate", 400, 4, 8, {"weights": [1.0, -0.5, 0.0, 0.25]}),
    ("logistic", "replace", 2000, 2, 5, {}),
    ("logistic", "replace", 3000, 1, 6, {"scale": 1.5}),
    ("logistic", "replace", 2500, 3, 4, {}),
    ("poisson-regression", "accumulate", 300, 3, 10, {}),
    ("poisson-regression", "accumulate", 500, 2, 10, {"scale": 0.5}),
    ("poisson-regression", "accumulate", 200, 1, 12, {"weights": [1.2]}),
    ("poisson-regression", "replace", 600, 3, 6, {}),
    ("poisson-regression", "replace", 1000, 2, 8, {"scale": 0.5}),
    ("poisson-regression", "replace", 800, 1, 6, {"weights": [0.8]}),
]


@pytest.mark.parametrize("family,policy,n,dim,generations,params", SETTINGS)
def test_first_order_closed_forms_hold(family, policy, n, dim, generations, params):
    r = cl.run(_spec(family, policy, n, dim, generations, **params), save=False)
    for name in ("fisher_error", "param_error"):
        assert_within_se(r, name, expected(r, name))


def test_accumulate_stays_within_pi_squared_over_six_of_generation_zero_and_replace_does_not():
    acc = cl.run(_spec("poisson-regression", "accumulate", 200, 2, 30, replicates=1000), save=False)
    rep = cl.run(_spec("poisson-regression", "replace", 200, 2, 30, replicates=1000), save=False)
    a, r = acc.raw[0].stats["fisher_error"]["mean"], rep.raw[0].stats["fisher_error"]["mean"]
    assert a[-1] / a[0] < np.pi**2 / 6 * 1.1  # the closed form at g = 29 is 1.612 of generation 0
    assert a[-1] / a[0] > 1.4
    assert r[-1] / r[0] > 15  # about 30 under replace


def _family_and_records(family, n, dim, chains):
    """A built family on its own truth, and ``chains`` real record sets of one pass over the design."""
    from collapselab.engine.plan import expand
    from collapselab.families import Reference
    from collapselab.spec import load_spec

    cell = expand(load_spec(_spec(family, "replace", n, dim, 1)))[0]
    rng = np.random.default_rng(1)
    truth = cell.source.truth(n, rng)
    return cell.family(cell.family_params, Reference(truth, truth.sample((10,), rng), n)), truth.sample(
        (chains, n), rng
    )


def test_irls_matches_scikit_learn_per_chain():
    from sklearn.linear_model import LogisticRegression, PoissonRegressor

    for family, reference in (
        ("logistic", lambda: LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-12, max_iter=1000)),
        ("poisson-regression", lambda: PoissonRegressor(alpha=0.0, fit_intercept=False, tol=1e-12, max_iter=1000)),
    ):
        fam, x = _family_and_records(family, 150, 3, 4)
        model = fam.fit(x, None)
        assert model.converged.all()
        for chain in range(4):
            theirs = reference().fit(x[chain, :, :-1], x[chain, :, -1]).coef_.ravel()
            np.testing.assert_allclose(model.weights[chain], theirs, atol=1e-5, err_msg=family)


def test_integer_record_weights_equal_repeated_records():
    for family in ("logistic", "poisson-regression"):
        fam, whole = _family_and_records(family, 80, 2, 3)
        x = whole[:, :40]  # not a whole pass over the design: the per-record path
        weights = np.where(np.arange(40) % 2 == 0, 2.0, 1.0)
        repeated = np.concatenate([x, x[:, ::2]], axis=1)
        a = fam.fit_weighted_records(x, weights, None).weights
        np.testing.assert_allclose(a, fam.fit(repeated, None).weights, rtol=1e-9, atol=1e-12)
        # a whole pass in order (the design-row path) agrees with the same records reversed (the per-record path)
        reversed_rows = np.ascontiguousarray(whole[:, ::-1])
        np.testing.assert_allclose(fam.fit(whole, None).weights, fam.fit(reversed_rows, None).weights, atol=1e-9)


def test_real_weight_runs_under_fresh():
    spec = _spec("logistic", "fresh", 200, 2, 4, replicates=200)
    spec["policy"] = {"kind": "fresh", "real_fraction": 0.5, "real_weight": 0.618}
    r = cl.run(spec, save=False)
    assert np.all(np.isfinite(r.raw[0].stats["fisher_error"]["mean"]))


def test_bad_specs_are_refused_in_one_line():
    with pytest.raises(SpecError, match="cannot identify 3 coefficients"):
        cl.run(_spec("logistic", "replace", 3, 3, 2), save=False)
    bad = _spec("logistic", "replace", 50, 2, 2)
    bad["model"] = {"family": "linear"}
    with pytest.raises(SpecError, match="families for binary-regression records: logistic"):
        cl.run(bad, save=False)
    bad = _spec("logistic", "replace", 50, 2, 2)
    bad["data"]["params"]["weights"] = [1.0]
    with pytest.raises(SpecError, match="weights has 1 entries"):
        cl.run(bad, save=False)
