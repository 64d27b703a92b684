"""Generations to total collapse, and ``stop = "collapsed"`` (run until every chain is a point mass).

The expected collapse times are computed here from the exact chains (a binomial transition matrix, the Poisson
branching process's generating function) or from a plain loop over chains, not from collapselab.theory.
"""

import warnings

import numpy as np
import pytest
from scipy import stats

import collapselab as cl
from collapselab.engine.loop import run_cell
from collapselab.engine.plan import expand
from collapselab.errors import SpecError
from collapselab.spec import load_spec


def _spec(source, params, n, family=None, generations=4000, replicates=4000, **extra):
    spec = {
        "generations": generations,
        "replicates": replicates,
        "seed": 11,
        "data": {"source": source, "n": n, "params": params},
        "model": {"family": family or source},
        "stop": "collapsed",
    }
    spec.update(extra)
    return spec


def _first(result, name):
    """Per chain, the first generation at which the 0/1 metric ``name`` is 1 (inf: never), as the run counted it
    while the generations streamed in (4,000 x 4,000 cells keep no per-chain values)."""
    first = result.raw[0].first_stage[name]
    if result.raw[0].metrics:  # where the chains' values are kept, the count agrees with them
        hit = result.raw[0].metrics[name] == 1.0
        np.testing.assert_array_equal(np.where(hit.any(axis=0), np.argmax(hit, axis=0), np.nan), first)
    return np.where(np.isnan(first), np.inf, first)


def _wright_fisher_fixation_cdf(n, p, G):
    """P(fixed at 0 or n by generation g), g = 0..G-1: generation 0 is Binomial(n, p), then a binomial step."""
    k = np.arange(n + 1)
    step = stats.binom.pmf(k[None, :], n, (k / n)[:, None])
    dist = stats.binom.pmf(k, n, p)
    out = np.empty(G)
    for g in range(G):
        out[g] = dist[0] + dist[-1]
        dist = dist @ step
    return out


@pytest.mark.parametrize("n, p", [(10, 0.3), (25, 0.5)])
def test_bernoulli_generations_to_fixation_match_the_exact_chain(n, p):
    r = cl.run(_spec("bernoulli", {"p": p}, n), save=False)
    first = _first(r, "fixated")
    assert np.isfinite(first).all(), "stop = 'collapsed' runs until every chain has fixed"
    ran = int(r.summary.generation.max()) + 1
    assert ran == first.max() + 1 < 4000, "the cell ends at the generation its last chain fixed"
    cdf = _wright_fisher_fixation_cdf(n, p, 20 * ran)
    mean = float(np.sum(1.0 - cdf))  # E[T] = Σ_g P(T > g) for a time T counted in generations from 0
    se = first.std(ddof=1) / np.sqrt(first.size)
    assert abs(first.mean() - mean) < 4 * se, (first.mean(), mean, se)
    median = float(np.argmax(cdf >= 0.5))
    row = r.stages.set_index("stage").loc["fixated"]
    assert row["reached"] == 1.0
    assert row["ci_low"] <= median <= row["ci_high"], (row.to_dict(), median)


def test_poisson_generations_to_extinction_match_the_branching_process():
    """A critical branching process: the extinction time has no mean (P(T > g) ~ 2 / g), so the run is capped
    and the distribution of T is compared instead, with the share that never died within the cap."""
    n, lam, G = 10, 0.2, 300
    r = cl.run(_spec("poisson", {"rate": lam}, n, generations=G), save=False)
    first = _first(r, "extinct")
    # the total count is Poisson(nλ) at generation 0, then a critical Poisson(1) Galton-Watson process:
    # P(extinct by g) = exp(nλ (q_g - 1)), q_0 = 0, q_g = exp(q_{g-1} - 1)
    q, dead = 0.0, []
    for _ in range(G):
        dead.append(np.exp(n * lam * (q - 1.0)))
        q = np.exp(q - 1.0)
    for g in (0, 1, 5, 30, G - 1):
        share = np.mean(first <= g)
        se = np.sqrt(dead[g] * (1 - dead[g]) / first.size)
        assert abs(share - dead[g]) < 4 * se, (g, share, dead[g])
    row = r.stages.set_index("stage").loc["extinct"]
    assert row["reached"] == np.mean(np.isfinite(first)) < 1.0  # the cap: a few chains outlive it
    assert int(r.summary.generation.max()) == G - 1
    median = float(np.argmax(np.array(dead) >= 0.5))
    assert row["ci_low"] <= median <= row["ci_high"], (row.to_dict(), median)


def test_categorical_generations_to_fixation_match_a_plain_loop():
    n, probs, R = 20, [0.5, 0.3, 0.2], 3000
    r = cl.run(_spec("categorical", {"probs": probs}, n, replicates=R), save=False)
    first = _first(r, "fixated")
    rng = np.random.default_rng(5)
    plain = []
    for _ in range(R):  # one chain at a time, as a peer's loop does
        counts, g = rng.multinomial(n, probs), 0
        while np.count_nonzero(counts) > 1:
            counts, g = rng.multinomial(n, counts / n), g + 1
        plain.append(g)
    plain = np.array(plain, dtype=float)
    se = np.hypot(first.std(ddof=1) / np.sqrt(R), plain.std(ddof=1) / np.sqrt(R))
    assert abs(first.mean() - plain.mean()) < 4 * se, (first.mean(), plain.mean(), se)


def test_stopping_early_changes_no_number_of_the_generations_it_ran():
    spec = _spec("bernoulli", {"p": 0.4}, 8, replicates=500)
    stopped = cl.run(spec, save=False)
    ran = int(stopped.summary.generation.max()) + 1
    full = cl.run({**spec, "stop": None, "generations": ran + 30}, save=False)
    for name, values in stopped.raw[0].metrics.items():
        np.testing.assert_array_equal(full.raw[0].metrics[name][:ran], values)
        # every chain is fixed: the generations after the stop repeat the last one exactly
        np.testing.assert_array_equal(full.raw[0].metrics[name][ran:], np.broadcast_to(values[-1], (30, 500)))
    np.testing.assert_array_equal(stopped.theory.groupby("metric").size(), ran)


def test_a_stopped_cell_resumes_from_its_checkpoints(tmp_path):
    cell = expand(load_spec(_spec("categorical", {"probs": [0.6, 0.4]}, 12, replicates=300)))[0]
    whole = run_cell(cell, 2, checkpoints=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = run_cell(cell, 2, checkpoints=tmp_path)  # every generation is checkpointed: nothing reruns
    assert next(iter(whole.metrics.values())).shape[0] < 4000
    for name, values in whole.metrics.items():
        np.testing.assert_array_equal(again.metrics[name], values)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"data": {"source": "gaussian", "n": 10}, "model": {"family": "gaussian"}}, "never collapses"),
        ({"policy": {"kind": "mix", "real_fraction": 0.2}}, "allowed with policy.kind 'replace', 'accumulate'"),
        ({"policy": {"kind": "accumulate-subsample"}}, "can train on other records again"),
        ({"policy": {"kind": "replace", "samples": "infinite"}}, "population refits"),
        ({"stop": "forever"}, "stop = 'forever'"),
    ],
)
def test_stop_rules_a_cell_cannot_keep_are_refused_before_it_runs(change, words):
    spec = {**_spec("bernoulli", {"p": 0.4}, 8, replicates=10), **change}
    with pytest.raises(SpecError, match=words):
        cl.run(spec, save=False)
