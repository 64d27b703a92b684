"""Contract checks every family, source, policy and curation stage must pass; run them over your own plug-in.

After scikit-learn's ``estimator_checks`` and Optuna's storage test suite: one set of checks, run over every
built-in plug-in by collapselab's own tests and over a user's by theirs::

    from collapselab.testing import check_family

    def test_my_family():
        check_family(MyFamily)  # raises AssertionError naming the broken promise

Each check plans a small spec with the plug-in in it and asserts what the engine relies on:

- **shapes**: one value per replicate chain and generation for every metric, and the same metrics every
  generation (the engine refuses anything else; a check makes it fail here, with the plug-in named);
- **determinism**: the same spec and seed give bit-identical metrics, twice in one process;
- **resume**: a cell cut after its first generation and resumed from its checkpoints gives the metrics of the
  uninterrupted cell, bit for bit;
- **invalid parameters**: an unknown key in the plug-in's ``params`` is refused by ``expand`` with a one-line
  :class:`~collapselab.errors.SpecError` that names the key.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .curation.judges import Stage
from .engine.loop import CellRun, run_cell
from .engine.plan import CellPlan, expand
from .engine.state import CellResult
from .errors import SpecError
from .families import Family
from .plugins import CURATION_STAGES, POLICIES, SOURCES
from .policies import Policy
from .sources import Source, get_source
from .spec import allow_plugins, load_spec

# a small data section per record kind: what a family of that kind is checked on
DATA_FOR_KIND: dict[str, dict[str, Any]] = {
    "continuous": {"source": "gaussian", "n": 40, "heldout": 200, "params": {"mean": [0.0, 1.0]}},
    "categorical": {"source": "zipf", "n": 40, "heldout": 200, "params": {"categories": 8}},
    "binary": {"source": "bernoulli", "n": 40, "heldout": 200, "params": {"p": 0.3}},
    "count": {"source": "poisson", "n": 40, "heldout": 200, "params": {"rate": 2.0}},
    "regression": {"source": "linear", "n": 40, "heldout": 200, "params": {"dim": 2}},
    "binary-regression": {"source": "logistic", "n": 60, "heldout": 200, "params": {"dim": 2}},
    "count-regression": {"source": "poisson-regression", "n": 60, "heldout": 200, "params": {"dim": 2}},
    "text": {"source": "shakespeare", "n": 60, "heldout": 40, "params": {"max_tokens": 20_000}},
    "image": {"source": "digits", "n": 60, "heldout": 60},
}

SMALL = {"name": "contract", "generations": 3, "replicates": 6, "seed": 11}


def check_spec(spec: dict[str, Any], what: str, *, resume: bool = True) -> list[CellResult]:
    """The contract of one spec (a dict): it plans, runs deterministically and resumes bit for bit. ``what``
    names the plug-in under test in every failure. Returns the results of the first run."""
    with allow_plugins():
        cells = expand(load_spec(copy.deepcopy(spec)))
    seed = cells[0].spec.seed
    first = [run_cell(c, seed) for c in cells]
    for cell, res in zip(cells, first):
        _check_shapes(res, cell, what)
    again = [run_cell(c, seed) for c in cells]
    for a, b in zip(first, again):
        _assert_same(a, b, f"{what}: two runs of the same spec and seed differ")
    if resume and not cells[0].spec.population:
        for cell, whole in zip(cells, first):
            _assert_same(
                whole, _cut_and_resume(cell, seed), f"{what}: a resumed cell differs from an uninterrupted one"
            )
    return first


def check_rejects(spec: dict[str, Any], key: str, what: str) -> None:
    """``expand`` refuses ``spec`` with a one-line SpecError that names ``key``."""
    try:
        with allow_plugins():
            expand(load_spec(copy.deepcopy(spec)))
    except SpecError as e:
        message = str(e)
        assert "\n" not in message, f"{what}: the error for {key!r} is not one line: {message!r}"
        assert key in message, f"{what}: the error does not name {key!r}: {message!r}"
        return
    raise AssertionError(f"{what}: a spec with {key!r} was accepted")


def check_family(
    family_cls: type[Family],
    data: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    size: dict[str, int] | None = None,
) -> None:
    """A family's contract on a small spec of the first record kind it accepts (or ``data``). ``size``
    overrides the loop's ``generations`` and ``replicates`` (a network family is checked on fewer)."""
    kinds = family_cls.tags.accepts
    assert kinds, f"family {family_cls.__name__}: its tags accept no record kind"
    assert isinstance(getattr(family_cls, "name", None), str), f"family {family_cls.__name__}: no name"
    data = data or DATA_FOR_KIND[kinds[0]]
    spec = {**SMALL, **(size or {}), "data": data, "model": {"family": family_cls.name, "params": params or {}}}
    what = f"family {family_cls.name!r}"
    results = check_spec(spec, what)
    names = set(results[0].metrics)
    for metric in (*family_cls.tail_metrics, *family_cls.spread_metrics):
        assert metric in names, f"{what}: stage signal {metric!r} is not among its metrics"
    bad = {**spec, "model": {"family": family_cls.name, "params": {**(params or {}), "no_such_key": 1}}}
    check_rejects(bad, "model.params.no_such_key", what)


def check_source(source_cls: type[Source], params: dict[str, Any] | None = None, n: int = 30, R: int = 4) -> None:
    """A source's contract: its truth draws (R, n, ...) records, deterministically, and bad params are refused."""
    what = f"source {source_cls.name!r}"
    assert SOURCES.get(source_cls.name) is source_cls, f"{what} is not registered"
    source = source_cls(source_cls.Params.model_validate(params or {}))
    draws = []
    for _ in range(2):
        rng = np.random.default_rng(5)
        truth = source.truth(n, rng)
        x = np.asarray(truth.sample((R, n), rng))
        assert x.shape[:2] == (R, n), f"{what}: truth.sample((R, n)) has shape {x.shape}, expected ({R}, {n}, ...)"
        draws.append(x)
    assert np.array_equal(draws[0], draws[1]), f"{what}: the same generator drew other records"
    try:
        get_source(source_cls.name, {**(params or {}), "no_such_key": 1})
    except SpecError as e:
        assert "\n" not in str(e) and "data.params.no_such_key" in str(e), f"{what}: unclear error {e}"
    else:
        raise AssertionError(f"{what}: an unknown parameter was accepted")


def check_policy(policy_cls: type[Policy], data: dict[str, Any] | None = None, family: str = "gaussian") -> None:
    """A policy's contract in a small Gaussian loop: shapes, determinism, resume, its real-fraction rule, and a
    synthetic share of 0 at generation 0 and within [0, 1] after."""
    what = f"policy {policy_cls.kind!r}"
    assert POLICIES.get(policy_cls.kind) is policy_cls, f"{what} is not registered"
    policy: dict[str, Any] = {"kind": policy_cls.kind}
    if policy_cls.uses_real_fraction:
        policy["real_fraction"] = 0.25
    spec = {**SMALL, "data": data or DATA_FOR_KIND["continuous"], "model": {"family": family}, "policy": policy}
    share = check_spec(spec, what)[0].metrics["synthetic_share"]
    assert np.all(share[0] == 0), f"{what}: generation 0 trains on synthetic records"
    assert np.all((share >= 0) & (share <= 1)), f"{what}: a synthetic share outside [0, 1]"
    if policy_cls.uses_real_fraction:
        check_rejects({**spec, "policy": {"kind": policy_cls.kind}}, "policy.real_fraction", what)
    else:
        check_rejects({**spec, "policy": {**policy, "real_fraction": 0.5}}, "policy.real_fraction", what)


def check_stage(
    stage_cls: type[Stage],
    params: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    family: str = "gaussian",
    size: dict[str, int] | None = None,
) -> None:
    """A curation stage's contract in a small loop: shapes, determinism, resume, its measured AUC recorded, and
    unknown params refused. ``size`` as for :func:`check_family`."""
    what = f"curation stage {stage_cls.kind!r}"
    assert CURATION_STAGES.get(stage_cls.kind) is stage_cls, f"{what} is not registered"
    stage = {"kind": stage_cls.kind, "keep": 0.5, "measure": 20, "params": params or {}}
    spec = {
        **SMALL,
        **(size or {}),
        "data": data or DATA_FOR_KIND["continuous"],
        "model": {"family": family},
        "curation": [stage],
    }
    metrics = check_spec(spec, what)[0].metrics
    assert f"{stage_cls.kind}_auc" in metrics, f"{what}: its measured AUC is not recorded"
    bad = {**spec, "curation": [{**stage, "params": {**(params or {}), "no_such_key": 1}}]}
    check_rejects(bad, "no_such_key", what)


# --- helpers -----------------------------------------------------------------------------------------------------


def _check_shapes(res: CellResult, cell: CellPlan, what: str) -> None:
    G, R = cell.spec.generations, cell.spec.replicates
    assert res.metrics, f"{what}: no metrics"
    for name, v in res.metrics.items():
        assert v.shape == (G, R), f"{what}: metric {name!r} has shape {v.shape}, expected ({G}, {R})"
    assert "synthetic_share" in res.metrics, f"{what}: no synthetic_share"


def _cut_and_resume(cell: CellPlan, seed: int) -> CellResult:
    """The cell run for one generation with checkpoints, then finished by a fresh run from them."""
    with tempfile.TemporaryDirectory(prefix="collapselab-contract-") as folder:
        run = CellRun(cell, seed)
        saver = run.checkpoints(Path(folder))
        assert saver is not None
        run.start(saver)
        saver.save(run.step(), run.sink)
        saver.flush()
        return run_cell(cell, seed, checkpoints=folder)


def _assert_same(a: CellResult, b: CellResult, message: str) -> None:
    assert set(a.metrics) == set(b.metrics), f"{message}: other metrics"
    for name in a.metrics:
        assert np.array_equal(a.metrics[name], b.metrics[name], equal_nan=True), f"{message} (metric {name!r})"
    assert set(a.stats) == set(b.stats), f"{message}: other statistics"
    for name, s in a.stats.items():
        for k, v in s.items():
            assert np.array_equal(v, b.stats[name][k], equal_nan=True), f"{message} (statistic {k} of {name!r})"
    assert set(a.snapshots) == set(b.snapshots), f"{message}: snapshots at other generations"
    for g in a.snapshots:
        assert np.array_equal(a.snapshots[g], b.snapshots[g], equal_nan=True), f"{message} (snapshot {g})"
