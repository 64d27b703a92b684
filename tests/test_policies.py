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


def test_a_pool_extended_generation_by_generation_holds_every_record_once():
    rng = np.random.default_rng(0)
    parts = [Pool.synthetic(rng.standard_normal((3, 4, 2)), generation=g) for g in range(5)]
    parts[2].extra["poisoned"] = np.ones((3, 4))
    grown = parts[0]
    for p in parts[1:]:
        grown = grown.extended(p, capacity=16)
    plain = Pool.concat(parts)
    np.testing.assert_array_equal(grown.x, plain.x)
    np.testing.assert_array_equal(grown.generation, plain.generation)
    np.testing.assert_array_equal(grown.column("poisoned"), plain.column("poisoned"))
    # extending a pool that is no longer the newest copies it instead of writing over its successor
    shorter = parts[0].extended(parts[1], capacity=16)
    longer = shorter.extended(parts[2], capacity=16)
    other = shorter.extended(parts[3], capacity=16)
    np.testing.assert_array_equal(longer.x, Pool.concat(parts[:3]).x)
    np.testing.assert_array_equal(other.x, Pool.concat([parts[0], parts[1], parts[3]]).x)
    idx = rng.integers(0, 20, (3, 7))
    np.testing.assert_array_equal(grown.take(idx).x, plain.take(idx).x)
    np.testing.assert_array_equal(Pool.take_concat(parts, idx).x, plain.take(idx).x)
    np.testing.assert_array_equal(Pool.take_concat(parts, idx).column("poisoned"), plain.take(idx).column("poisoned"))


def test_sparse_subsamples_are_distinct_and_every_subset_equally_likely():
    import itertools

    from scipy import stats

    from collapselab._numerics.batched import sparse_subsample_rows

    idx = sparse_subsample_rows(100_000, 16, 3, np.random.default_rng(1))  # k <= N / 4: draws and redraws
    assert np.all(np.diff(idx, axis=1) > 0)
    codes = (idx * np.array([256, 16, 1])).sum(axis=1)
    counts = np.bincount(codes, minlength=4096)
    observed = [counts[a * 256 + b * 16 + c] for a, b, c in itertools.combinations(range(16), 3)]
    assert sum(observed) == 100_000
    assert stats.chisquare(observed).pvalue > 1e-3


@pytest.mark.parametrize("dim", [1, 3])
def test_accumulate_subsample_agrees_with_a_plain_loop_over_chains(dim):
    """The vectorised chains (one pool with room, sparse distinct draws) against the papers' loop, chain by chain:
    keep every record, refit on n of them drawn without replacement, add n more."""
    R, n, G = 600, 12, 25
    result = simulate(G, R, "gaussian", n, "gaussian", {"mean": [0.0] * dim}, kind="accumulate-subsample")
    ours = result.raw[0].metrics["trace_ratio"]
    rng = np.random.default_rng(11)
    plain = np.empty((G, R))
    for r in range(R):
        data = rng.standard_normal((n, dim))
        train = data
        for g in range(G):
            mean, cov = train.mean(axis=0), np.atleast_2d(np.cov(train, rowvar=False, bias=True))
            plain[g, r] = np.trace(cov) / dim
            data = np.concatenate([data, rng.multivariate_normal(mean, cov, size=n)])
            train = data[rng.choice(len(data), n, replace=False)]
    for g in (1, 5, 12, G - 1):
        gap = ours[g].mean() - plain[g].mean()
        se = np.sqrt(ours[g].var() / R + plain[g].var() / R)
        assert abs(gap) < 4 * se, (g, ours[g].mean(), plain[g].mean(), se)


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
