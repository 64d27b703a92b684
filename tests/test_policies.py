"""Data policies: what each training set holds, and what that does to collapse."""

import numpy as np
import pytest
from helpers import assert_within_se, metric, simulate

import collapselab as cl
from collapselab.pool import REAL, Pool


def test_pool_provenance_survives_take_and_concat():
    real = Pool.real(np.arange(12.0).reshape(2, 6))
    synth = Pool.synthetic(np.full((2, 3), -1.0), generation=4)
    both = Pool.concat([real, synth])
    assert both.x.shape == (2, 9)
    np.testing.assert_allclose(both.synthetic_share(), [1 / 3, 1 / 3])
    picked = both.take(np.array([[0, 6, 7], [8, 1, 2]]))
    np.testing.assert_array_equal(picked.generation, [[REAL, 4, 4], [4, REAL, REAL]])
    np.testing.assert_array_equal(picked.x, [[0, -1, -1], [-1, 7, 8]])
    vec = Pool.real(np.arange(24.0).reshape(2, 4, 3)).take(np.array([[3], [0]]))
    np.testing.assert_array_equal(vec.x, [[[9, 10, 11]], [[12, 13, 14]]])


def test_synthetic_share_of_every_policy():
    n, m, gens = 20, 10, 6
    g = np.arange(gens)
    accumulated = g * m / (n + g * m)
    cases = {
        "replace": {"kind": "replace", "samples": m},
        "accumulate": {"kind": "accumulate", "samples": m},
        "accumulate-subsample": {"kind": "accumulate-subsample", "samples": m},
        "mix": {"kind": "mix", "real_fraction": 0.25, "samples": 15},
        "fresh": {"kind": "fresh", "real_fraction": 0.25, "samples": 15},
    }
    want = {
        "replace": np.where(g == 0, 0.0, 1.0),
        "accumulate": accumulated,
        "mix": np.where(g == 0, 0.0, 0.75),
        "fresh": np.where(g == 0, 0.0, 0.75),
    }
    for kind, policy in cases.items():
        r = simulate(gens, 400, "gaussian", n, "gaussian", **policy)
        share, se = metric(r, "synthetic_share")
        if kind == "accumulate-subsample":  # hypergeometric: right on average, varying per replicate
            assert_within_se(r, "synthetic_share", accumulated)
            assert se[-1] > 0
        else:
            np.testing.assert_allclose(share, want[kind], err_msg=kind)
            np.testing.assert_allclose(se, 0, atol=1e-12, err_msg=kind)


def test_accumulate_stays_bounded_where_replace_collapses():
    spec = {
        "generations": 60,
        "replicates": 2000,
        "data": {"source": "gaussian", "n": 20},
        "model": {"family": "gaussian"},
        "sweep": {"policy.kind": ["replace", "accumulate", "accumulate-subsample"]},
    }
    r = cl.run(spec, save=False)
    replace, _ = metric(r, "var_ratio", "0")
    accumulate, _ = metric(r, "var_ratio", "1")
    subsample, _ = metric(r, "var_ratio", "2")
    assert replace[-1] < 0.25  # theory: (19/20)^60 = 0.046
    assert accumulate[-1] > 0.85 and abs(accumulate[-1] - accumulate[30]) < 0.02  # a plateau
    assert replace[-1] < subsample[-1] < accumulate[-1]  # compute-matched accumulate sits between
    drift_replace, _ = metric(r, "mean_sq_drift", "0")
    drift_acc, _ = metric(r, "mean_sq_drift", "1")
    assert drift_acc[-1] < 0.2 < drift_replace[-1]


def test_accumulate_bounds_linear_regression_error():
    r = cl.run(
        {
            "generations": 40,
            "replicates": 3000,
            "data": {"source": "linear", "n": 20, "params": {"dim": 5}},
            "model": {"family": "linear"},
            "sweep": {"policy.kind": ["replace", "accumulate"]},
        },
        save=False,
    )
    rep, _ = metric(r, "test_error", "0")
    acc, _ = metric(r, "test_error", "1")
    assert rep[-1] / rep[0] > 30  # grows linearly: 40x
    assert acc[-1] / acc[0] < np.pi**2 / 6 + 0.1  # bounded by π²/6


def test_mix_with_all_real_data_never_moves():
    r = simulate(5, 200, "gaussian", 10, "gaussian", kind="mix", real_fraction=1.0)
    var, se = metric(r, "var_ratio")
    np.testing.assert_array_equal(var, np.full(5, var[0]))


def test_fresh_with_all_real_data_is_always_generation_zero_in_distribution():
    n = 10
    r = simulate(8, 20000, "gaussian", n, "gaussian", kind="fresh", real_fraction=1.0)
    assert_within_se(r, "var_ratio", np.full(8, (n - 1) / n))
    assert_within_se(r, "mean_sq_drift", np.full(8, 1 / n))


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_a_real_anchor_keeps_the_variance_off_zero(fraction):
    r = simulate(80, 1000, "gaussian", 20, "gaussian", kind="mix", real_fraction=fraction)
    var, _ = metric(r, "var_ratio")
    assert var[-1] > 0.5
    assert abs(var[-1] - var[60]) < 0.05


def test_mix_needs_enough_synthetic_samples():
    with pytest.raises(cl.SpecError, match="policy.samples = 5: mix .* at least 8"):
        simulate(3, 10, "gaussian", 10, "gaussian", kind="mix", real_fraction=0.2, samples=5)


def test_real_fraction_is_rejected_where_it_means_nothing():
    with pytest.raises(cl.SpecError, match="only used by kind 'mix' or 'fresh'"):
        simulate(3, 10, "gaussian", 10, "gaussian", kind="accumulate", real_fraction=0.2)
