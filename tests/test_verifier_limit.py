"""Verifier-filtered retraining converges to the verifier's knowledge centre, not to the truth (Yi, Liu, Cheng &
Xu, ICLR 2026), on a Gaussian under replace: theory.limits draws the limit, and the chains approach it."""

import warnings

import numpy as np
import pytest

import collapselab as cl
from collapselab.errors import SpecError

CENTRE = "collapselab.curation.examples:knowledge_centre"


def _spec(stage, mean=(0.0,), generations=80, replicates=300, n=100):
    return {
        "generations": generations,
        "replicates": replicates,
        "seed": 2,
        "data": {"source": "gaussian", "n": n, "params": {"mean": list(mean)}},
        "model": {"family": "gaussian"},
        "policy": {"kind": "replace"},
        "keep_replicates": False,
        "curation": [stage],
    }


def _verifier(centre, width, keep=0.2):
    return {
        "kind": "verifier",
        "keep": keep,
        "select": "sample",
        "params": {"function": CENTRE, "args": {"centre": centre, "width": width}},
    }


def _run(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the verifier cannot tell real from synthetic: the run warns, rightly
        return cl.run(spec, save=False)


@pytest.mark.parametrize(
    "centre, width, mean",
    [(1.0, 0.5, (0.0,)), ([0.5, -0.5], 0.3, (0.0, 0.0)), (-1.0, 0.4, (0.5,))],
)
def test_the_chain_converges_to_the_knowledge_centre(centre, width, mean):
    r = _run(_spec(_verifier(centre, width), mean))
    lim = r.bounds[r.bounds.metric == "mean_sq_drift"]
    assert set(lim["side"]) == {"limit"} and "Yi et al. 2026" in lim["source"].iloc[0]
    target = float(np.sum((np.asarray(centre, float) - np.asarray(mean)) ** 2))
    np.testing.assert_allclose(lim["bound"], target)
    stats = r.raw[0].stats
    drift, G = stats["mean_sq_drift"]["mean"], len(stats["mean_sq_drift"]["mean"])
    gaps = np.abs(target - drift[[G // 4, G // 2, G - 1]])
    assert gaps[0] > gaps[1] > gaps[2], gaps  # it keeps approaching
    assert gaps[2] < 0.05 * target, (gaps, target)  # and is near it, far from the truth (drift 0)
    assert drift[0] < 0.05 * target  # generation 0 was near the truth
    assert stats["trace_ratio"]["mean"][-1] < 0.01  # the point mass at the centre


@pytest.mark.parametrize("n, dim, samples", [(100, 1, None), (50, 2, None), (200, 1, 100)])
def test_the_anchor_as_verifier_keeps_the_error_near_generation_zeros(n, dim, samples):
    """The likelihood stage in ratio mode has the anchor (generation 0's fit) as its knowledge: the error settles
    near the anchor's own plus one refit's, tr Σ (1/n + (1 - 1/n)/m) (an approximation: the simulation sits 8-12%
    above it, the finite candidates' resampling carrying part of each generation's deviation to the next), while
    plain replace keeps growing."""
    ratio = {"kind": "likelihood", "params": {"mode": "ratio"}}
    spec = _spec(ratio, mean=(0.0,) * dim, generations=40, replicates=600, n=n)
    if samples:
        spec["policy"] = {"kind": "replace", "samples": samples}
    curated = _run(spec)
    plain = _run({**spec, "curation": []})
    m = samples or n
    lim = curated.bounds[curated.bounds.metric == "mean_sq_drift"]["bound"].iloc[0]
    assert lim == pytest.approx(dim * (1 / n + (1 - 1 / n) / m))
    settled = curated.raw[0].stats["mean_sq_drift"]["mean"][20:].mean()
    assert lim < settled < 1.15 * lim, (settled, lim)
    assert plain.raw[0].stats["mean_sq_drift"]["mean"][-1] > 5 * lim
    assert plain.bounds is None or plain.bounds.empty or "limit" not in set(plain.bounds["side"])


def test_the_cli_prints_the_limit(tmp_path):
    import subprocess
    import sys

    spec = tmp_path / "v.toml"
    spec.write_text(
        'generations = 12\nreplicates = 50\n[data]\nsource = "gaussian"\nn = 50\n[model]\nfamily = "gaussian"\n'
        f'[[curation]]\nkind = "verifier"\nkeep = 0.2\nselect = "sample"\n'
        f'params = {{ function = "{CENTRE}", args = {{ centre = 1.0, width = 0.5 }} }}\n'
    )
    res = subprocess.run(
        [sys.executable, "-m", "collapselab", "run", str(spec), "--out", str(tmp_path / "out"), "--no-report"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "limit →" in res.stdout
    assert "limit" in (tmp_path / "out" / "bounds.csv").read_text()


def test_verifier_args_are_checked_before_anything_runs():
    bad = _spec({"kind": "verifier", "params": {"function": CENTRE, "args": {"center": 1.0}}})
    with pytest.raises(SpecError, match="curation.params.args") as e:
        cl.run(bad, save=False)
    assert "\n" not in str(e.value)
