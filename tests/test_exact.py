"""The exact sufficient-statistic paths: the same distribution of every metric as sampling records."""

import warnings

import numpy as np
import pytest
from scipy import stats

import collapselab as cl
from collapselab.engine.loop import CellKernel, run_cell
from collapselab.engine.plan import expand
from collapselab.families import FAMILIES
from collapselab.pool import Pool, StatsPool
from collapselab.spec import load_spec

CASES = {
    "gaussian-1d": ("gaussian", {"std": 2.0}, "gaussian", {}),
    "gaussian-3d-unbiased": (
        "gaussian",
        {"mean": [0, 1, 2], "std": [1, 2, 0.5]},
        "gaussian",
        {"estimator": "unbiased"},
    ),
    "categorical": ("zipf", {"categories": 12}, "categorical", {}),
    "poisson": ("poisson", {"rate": 0.4}, "poisson", {}),
    "bernoulli": ("bernoulli", {"p": 0.2}, "bernoulli", {}),
    "linear": ("linear", {"dim": 3, "noise": 0.5}, "linear", {}),
    "linear-per-chain": ("linear", {"dim": 3, "design": "per-chain"}, "linear", {}),
}
POLICIES = [
    {"kind": "replace"},
    {"kind": "accumulate", "samples": 10},
    {"kind": "mix", "real_fraction": 0.3},
    {"kind": "fresh", "real_fraction": 0.2},
]


def _spec(case, policy, exact):
    source, sparams, family, fparams = CASES[case]
    return {
        "generations": 8,
        "replicates": 4000,
        "seed": 1,
        "data": {"source": source, "n": 20, "params": sparams},
        "model": {"family": family, "params": {**fparams, "exact": exact}},
        "policy": policy,
    }


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p["kind"])
@pytest.mark.parametrize("case", list(CASES))
def test_exact_path_has_the_distribution_of_the_sampling_path(case, policy, monkeypatch):
    calls = []
    family = FAMILIES[CASES[case][2]]
    original = family.sample_stats
    monkeypatch.setattr(family, "sample_stats", lambda self, *a: calls.append(1) or original(self, *a))
    exact = cl.run(_spec(case, policy, True), save=False)
    assert len(calls) == 7  # one draw of statistics per generation but the last: the exact path ran
    sampled = cl.run(_spec(case, policy, False), save=False)
    assert len(calls) == 7  # ... and the sampling path did not use it
    worst = 1.0
    for name, a in exact.raw[0].metrics.items():
        b = sampled.raw[0].metrics[name]
        for g in (1, 4, 7):
            x, y = a[g], b[g]
            if np.ptp(np.concatenate([x, y])) == 0:
                assert np.array_equal(x, y), (name, g)
                continue
            worst = min(worst, stats.ks_2samp(x, y).pvalue)
    # ~40 comparisons per case: a Bonferroni-corrected 1% level
    assert worst > 0.01 / 40, f"{case} {policy}: smallest KS p-value {worst:.2g}"


def test_exact_path_is_off_where_it_would_not_be_exact(monkeypatch):
    from collapselab.families.gaussian import GaussianFamily

    monkeypatch.setattr(GaussianFamily, "sample_stats", lambda *a: pytest.fail("exact path used"))
    base = _spec("gaussian-3d-unbiased", {"kind": "accumulate-subsample"}, True)
    cl.run(base, save=False)  # a random subset of records is not a function of the statistics
    cl.run({**base, "policy": {"kind": "replace", "samples": 3}}, save=False)  # 3 records of 3-D: no Wishart
    cl.run(_spec("gaussian-1d", {"kind": "replace"}, False), save=False)  # switched off


@pytest.mark.parametrize("case", ["gaussian-3d-unbiased", "linear"])
@pytest.mark.parametrize("policy", [{"kind": "replace"}, {"kind": "accumulate"}], ids=lambda p: p["kind"])
def test_exact_path_resumes_from_checkpoints_bit_for_bit(tmp_path, policy, case):
    cell = expand(load_spec(_spec(case, policy, True)))[0]
    whole = run_cell(cell, 1)

    class Crash(Exception):
        pass

    def crash_after_generation_5(cell_id, done, total):
        if done == 5:
            raise Crash

    with pytest.raises(Crash):
        run_cell(cell, 1, crash_after_generation_5, checkpoints=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checkpoints of a crash are all good: no fallback
        resumed = run_cell(cell, 1, checkpoints=tmp_path)
    for name, values in whole.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values)


def test_accumulate_on_the_exact_path_keeps_one_running_statistic():
    """Accumulate merged real + every pool again each generation (quadratic in G, every pool held: 3.5 GB at
    d = 31); it keeps one running merge, the same left fold, so its numbers are those of merging all pools."""
    cell = expand(load_spec({**_spec("gaussian-3d-unbiased", {"kind": "accumulate"}, True), "replicates": 50}))[0]
    kernel = CellKernel(cell, 1)
    state = kernel.init()
    pools = []
    for _ in range(6):
        state, record = kernel.step(state)
        pools.append(record.pool)
    assert len(state.pools) == 1 and isinstance(state.pools[0], StatsPool)
    merged = StatsPool.merge([kernel.real, *pools])  # what accumulate built before: everything, merged again
    for a, b in zip(
        (state.pools[0].stats.mean, state.pools[0].stats.scatter), (merged.stats.mean, merged.stats.scatter)
    ):
        np.testing.assert_array_equal(a, b)
    assert (state.pools[0].real, state.pools[0].synthetic) == (merged.real, merged.synthetic)
    assert isinstance(kernel.real, Pool)
