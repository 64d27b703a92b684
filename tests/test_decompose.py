"""Population refits and the decomposition of collapse into its error sources, and the article's claims."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import metric

import collapselab as cl
from collapselab.decompose import decompose

WELL_SPECIFIED = {
    "gaussian": ("gaussian", {"mean": [1.0, -1.0], "cov": [[2.0, 0.5], [0.5, 1.0]]}, {}),
    "categorical": ("zipf", {"categories": 30}, {}),
    "poisson": ("poisson", {"rate": 1.5}, {}),
    "bernoulli": ("bernoulli", {"p": 0.2}, {}),
}


def _population(source, sparams, family, fparams, kind="replace", generations=8, **policy):
    spec = {
        "generations": generations,
        "replicates": 3,
        "seed": 4,
        "data": {"source": source, "n": 30, "params": sparams},
        "model": {"family": family, "params": fparams},
        "policy": {"kind": kind, "samples": "infinite", **policy},
    }
    return cl.run(spec, save=False)


@pytest.mark.parametrize("kind", ["replace", "accumulate", "mix"])
@pytest.mark.parametrize("family", list(WELL_SPECIFIED))
def test_population_chain_of_a_well_specified_family_does_not_drift(family, kind):
    source, sparams, fparams = WELL_SPECIFIED[family]
    r = _population(source, sparams, family, fparams, kind, **({"real_fraction": 0.3} if kind == "mix" else {}))
    s = r.summary
    for name, df in s[~s.metric.str.startswith("stage_") & (s.metric != "synthetic_share")].groupby("metric"):
        v = df.sort_values("generation")["mean"].to_numpy()
        np.testing.assert_allclose(v, v[0], rtol=1e-9, atol=1e-7, err_msg=f"{family} {name}")  # w2 = sqrt(rounding)
    if family == "gaussian":  # fitted to the truth itself: no distance at all
        kl, _ = metric(r, "kl")
        np.testing.assert_allclose(kl, 0.0, atol=1e-9)
    assert r.theory.empty  # the closed forms are for finite samples, and are not drawn beside population chains


def test_gmm_population_chain_is_approximate_and_labelled_by_its_sample_size():
    """No exact population fit for a GMM: EM on population_multiple x n records; the chain barely moves."""
    r = _population(
        "blobs", {"means": [-3.0, 3.0], "stds": 1.0}, "gmm", {"components": 2}, generations=6, population_multiple=200
    )
    kl, _ = metric(r, "kl")
    assert np.all(np.abs(kl) < 0.01), kl


def test_misspecified_population_chain_sits_at_its_fixed_point_from_generation_0():
    """One Gaussian on a bimodal mixture: the moment-matched Gaussian at generation 0, and there it stays."""
    r = _population("blobs", {"means": [-2.0, 2.0], "stds": 1.0}, "gaussian", {}, generations=10)
    var, _ = metric(r, "var_ratio")
    np.testing.assert_allclose(var, 1.0, rtol=1e-12)  # the mixture's own variance: 1 + 4
    kl, _ = metric(r, "kl")
    assert kl[0] > 0.1  # the expressivity error: KL(bimodal || best Gaussian) is far from 0
    np.testing.assert_allclose(kl, kl[0], rtol=1e-12)


def _small(source, sparams, family, fparams, generations=8, replicates=300):
    return {
        "generations": generations,
        "replicates": replicates,
        "seed": 1,
        "data": {"source": source, "n": 60, "params": sparams},
        "model": {"family": family, "params": fparams},
    }


@pytest.mark.parametrize(
    "case",
    [
        ("blobs", {"means": [-2.0, 2.0], "stds": 1.0}, "gaussian", {}),
        ("blobs", {"means": [-3.0, 3.0], "stds": 1.0}, "gmm", {"components": 2, "max_iter": 3}),
        ("zipf", {"categories": 30}, "categorical", {}),
    ],
)
def test_decomposition_parts_add_up_to_the_total_within_their_intervals(case):
    dec = decompose(_small(*case))
    wide = dec.table.pivot(index="generation", columns="part", values="mean")
    lo = dec.table.pivot(index="generation", columns="part", values="ci_low")
    hi = dec.table.pivot(index="generation", columns="part", values="ci_high")
    parts = wide["expressivity"] + wide["statistical"] + wide["approximation"]
    assert np.all(parts >= lo["total"] - 1e-12) and np.all(parts <= hi["total"] + 1e-12)
    assert np.all(hi["total"] > lo["total"]) or case[2] == "categorical"
    if case[2] == "gmm":  # approximate population refits (EM on 50 x n records) drift, 50x slower than n;
        # a 2-component GMM can represent the 2-blob truth: next to no expressivity error
        assert np.all(wide["expressivity"] < 0.1 * wide["statistical"].iloc[-1])
    else:  # exact population refits: flat
        assert wide["expressivity"].std() < 1e-9
    assert wide["statistical"].iloc[-1] > wide["statistical"].iloc[0]  # compounds under replace
    if case[2] == "gmm":  # the 3-iteration EM budget is a real gap, and here a helpful one: it regularises
        assert np.any(np.abs(wide["approximation"]) > (hi - lo)["approximation"] / 2)
        assert hi["approximation"].iloc[-1] < 0
    else:
        assert np.all(wide["approximation"] == 0)


def test_decomposition_of_a_neural_family():
    """A VAE on real digits: the optimiser's budget (2 epochs vs 8) is a third error source."""
    spec = {
        "generations": 3,
        "replicates": 2,
        "seed": 1,
        "data": {"source": "digits", "n": 300, "heldout": 150},
        "model": {"family": "vae", "params": {"epochs": 2, "hidden": 64, "latent": 4}},
        "policy": {"population_multiple": 2},
    }
    dec = decompose(spec, converged={"epochs": 8})
    assert dec.metric == "fd" and set(dec.variants) == {"given", "population", "converged"}
    wide = dec.table.pivot(index="generation", columns="part", values="mean")
    np.testing.assert_allclose(
        wide["expressivity"] + wide["statistical"] + wide["approximation"], wide["total"], rtol=1e-12
    )
    assert np.isfinite(wide.to_numpy()).all() and (wide["total"] > 0).all()


def _kl(n, kind="replace", generations=10, replicates=400):
    r = cl.run(
        {
            "generations": generations,
            "replicates": replicates,
            "seed": 2,
            "data": {"source": "gaussian", "n": n, "params": {"std": 1.0}},
            "model": {"family": "gaussian"},
            "policy": {"kind": kind},
        },
        save=False,
    )
    return metric(r, "kl")


def test_claim_statistical_error_vanishes_as_n_grows():
    """'If enterprises use an infinite number of samples, errors would disappear': KL after 10 generations of
    replace falls about tenfold per tenfold n (it is ~ g·d(d+3)/4n for small g/n)."""
    last = [_kl(n)[0][-1] for n in (10, 100, 1000, 10_000)]
    assert all(a > 5 * b for a, b in zip(last, last[1:])), last
    assert last[-1] < 0.003


def test_claim_statistical_error_compounds_under_replace_and_stays_bounded_under_accumulate():
    rep, _ = _kl(50, "replace", generations=40)
    acc, _ = _kl(50, "accumulate", generations=40)
    assert rep[-1] > 50 * rep[0] and np.all(np.diff(rep[::5]) > 0)
    assert acc[-1] < 2 * acc[0] and acc[-1] - acc[20] < 0.01  # levels off near its generation-0 value


def test_decompose_command(tmp_path):
    run = [
        sys.executable,
        "-m",
        "collapselab",
        "decompose",
        "preset:error-sources",
        "--out",
        str(tmp_path / "d"),
        "--show",
        "0,19",
    ]
    res = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "expressivity" in res.stdout and (tmp_path / "d" / "decomposition.html").stat().st_size > 10_000
    bad = subprocess.run(
        [sys.executable, "-m", "collapselab", "decompose", "preset:quickstart"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "has a sweep" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
