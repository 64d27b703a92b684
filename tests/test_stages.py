"""Collapse stages on cases where the answer is known."""

import numpy as np
import pytest
from helpers import metric, simulate

import collapselab as cl
from collapselab.metrics.stages import EARLY, HEALTHY, LATE, TOTAL, classify, median_with_ci


def _codes(result, cell=0):
    raw = result.raw[cell].metrics
    return np.argmax(np.stack([raw[f"stage_{s}"] for s in ("healthy", "early", "late", "total")]), axis=0)


@pytest.mark.parametrize(
    "source, params, family, n",
    [("gaussian", {"std": 1.0}, "gaussian", 20), ("zipf", {"categories": 20}, "categorical", 50)],
)
def test_a_replace_chain_passes_through_early_before_late(source, params, family, n):
    r = simulate(60, 1000, source, n, family, params)
    codes = _codes(r)  # (G, R)
    reached_late = (codes >= LATE).any(axis=0)
    assert reached_late.mean() > 0.5
    first_late = np.argmax(codes >= LATE, axis=0)
    # in nearly every chain that reached late, the chain was seen in exactly the early stage before
    was_early_before = np.array([(codes[: first_late[i], i] == EARLY).any() for i in np.flatnonzero(reached_late)])
    assert was_early_before.mean() > 0.85  # the rest drift their mean into one tail while they shrink
    stages = r.stages.set_index("stage")
    assert stages.loc["early", "first_median"] < stages.loc["late", "first_median"]


def test_a_healthy_mix_stays_healthy_where_replace_does_not():
    r = cl.run(
        {
            "generations": 40,
            "replicates": 2000,
            "data": {"source": "gaussian", "n": 100},
            "model": {"family": "gaussian"},
            "sweep": {"policy": [{"kind": "mix", "real_fraction": 0.5}, {"kind": "replace"}]},
        },
        save=False,
    )
    healthy, _ = metric(r, "stage_healthy", "0")
    late, _ = metric(r, "stage_late", "0")
    total, _ = metric(r, "stage_total", "0")
    assert healthy.min() > 0.85
    assert late.max() + total.max() < 0.01
    replace_healthy, _ = metric(r, "stage_healthy", "1")
    assert replace_healthy[-1] < 0.5


def test_fixation_and_extinction_are_total_collapse():
    cat = simulate(150, 500, "categorical", 10, "categorical", {"probs": [0.4, 0.3, 0.2, 0.1]})
    fixated, _ = metric(cat, "fixated")
    total, _ = metric(cat, "stage_total")
    np.testing.assert_allclose(total, fixated)  # entropy 0 <=> one category holds all the mass
    assert total[-1] > 0.9
    poi = simulate(40, 500, "poisson", 10, "poisson", {"rate": 0.2})
    alive, _ = metric(poi, "alive")
    total, _ = metric(poi, "stage_total")
    dead_at_start = 1 - alive[0]  # a chain dead at generation 0 has nothing to lose: never classified
    np.testing.assert_allclose(total, 1 - alive - dead_at_start)


def test_shares_sum_to_one_and_stage_metrics_only_where_signals_exist():
    r = simulate(10, 200, "gaussian", 10, "gaussian")
    s = sum(metric(r, f"stage_{k}")[0] for k in ("healthy", "early", "late", "total"))
    np.testing.assert_allclose(s, 1.0)
    assert metric(r, "stage_healthy")[0][0] == 1.0  # generation 0 is the reference
    lin = simulate(3, 20, "linear", 10, "linear", {"dim": 2})
    assert not lin.summary.metric.str.startswith("stage_").any() and lin.stages.empty


def test_thresholds_and_reference_come_from_the_spec():
    base = {
        "generations": 20,
        "replicates": 500,
        "data": {"source": "gaussian", "n": 10},
        "model": {"family": "gaussian"},
    }
    never = cl.run({**base, "stages": {"early": 0.0, "late": 0.0, "total": 0.0}}, save=False)
    assert metric(never, "stage_healthy")[0].min() == 1.0
    truth = cl.run({**base, "stages": {"reference": "truth"}}, save=False)
    assert metric(truth, "stage_healthy")[0][0] < 1.0  # finite-sample loss at generation 0 counts
    with pytest.raises(cl.SpecError, match="stages.total = 0.6 must not exceed stages.late = 0.5"):
        cl.run({**base, "stages": {"total": 0.6}}, save=False)
    with pytest.raises(cl.SpecError, match="unknown key 'stages.erly'"):
        cl.run({**base, "stages": {"erly": 0.3}}, save=False)


def test_classify_rules():
    tail = np.array([1.0, 0.4, 0.4, 0.9, np.nan])
    spread = np.array([1.0, 0.9, 0.3, 0.01, np.nan])
    np.testing.assert_array_equal(classify(tail, spread, 0.5, 0.5, 0.05), [HEALTHY, EARLY, LATE, TOTAL, HEALTHY])


def test_median_first_generation_and_its_interval():
    first = np.array([3.0] * 40 + [5.0] * 40 + [np.nan] * 20)
    reached, median, lo, hi = median_with_ci(first)
    assert reached == 0.8 and median == 5.0 and lo == 3.0 and hi == 5.0
    reached, median, lo, hi = median_with_ci(np.array([np.nan] * 60 + [2.0] * 40))
    assert reached == 0.4 and median == np.inf  # most chains never got there
