"""The Python API does the same work as the CLI."""

import doctest

import numpy as np
import pandas as pd
import pytest

import collapselab as cl
import collapselab.api
from collapselab.families import FAMILIES


def test_api_docstring_examples():
    assert doctest.testmod(collapselab.api, raise_on_error=False).failed == 0


def test_run_result_tables_and_raw_values(tmp_path):
    result = cl.run("preset:quickstart", tmp_path / "qs")
    assert isinstance(result.summary, pd.DataFrame)
    assert set(result.cells) == {"0", "1", "2"}
    raw = result.raw[0].metrics["var_ratio"]
    assert raw.shape == (result.spec.generations, result.spec.replicates)
    row = result.summary.query("cell == '0' and generation == 3 and metric == 'var_ratio'").iloc[0]
    assert row["mean"] == pytest.approx(raw[3].mean())
    assert row["median"] == pytest.approx(np.median(raw[3]))
    assert row["se"] == pytest.approx(raw[3].std(ddof=1) / np.sqrt(raw.shape[1]))
    wide = result.table(generations=[0, 29])
    assert wide.loc[("0", 29), "synthetic_share"] == 1.0
    loaded = cl.load_run(tmp_path / "qs")
    pd.testing.assert_frame_equal(loaded["summary"], result.summary, check_dtype=False)
    assert set(loaded["theory"].cell) == {"0", "1", "2"}  # replace, accumulate and mix all have closed forms


def test_workspace_api(tmp_path):
    spec = {
        "name": "w",
        "generations": 2,
        "replicates": 10,
        "data": {"source": "poisson", "n": 5, "params": {"rate": 1.0}},
        "model": {"family": "poisson"},
    }
    r = cl.run(spec, workspace=tmp_path)
    assert r.run_id == 1 and r.path.parent == tmp_path
    assert list(cl.runs(tmp_path)["name"]) == ["w"]
    assert (
        cl.load_run("w", tmp_path)["summary"].shape[0] == 2 * 8
    )  # rate, alive, extinct, synthetic_share, 4 stage shares


def test_a_run_that_fails_midway_leaves_nothing_behind(tmp_path):
    """A failure of the run itself would fail the same way on resume: no folder that looks resumable (issue 15)."""

    @cl.register_family("test-explodes")
    class Explodes(cl.Family):
        accepts = ("continuous",)

        def fit(self, x, rng):
            if np.all(x[0] == x[0, 0]):  # never true on real data; true for the synthetic pool below
                raise RuntimeError("boom")

            class M:
                def sample(self, m, rng):
                    return np.zeros((x.shape[0], m, 1))

            return M()

        def metrics(self, model):
            return {}

    spec = {
        "generations": 3,
        "replicates": 4,
        "data": {"source": "gaussian", "n": 5},
        "model": {"family": "test-explodes"},
    }
    try:
        with pytest.raises(cl.RunFailed, match="RuntimeError: boom"):
            cl.run(spec, tmp_path / "out")
        with pytest.raises(cl.RunFailed, match="RuntimeError: boom"):
            cl.run(spec, workspace=tmp_path / "ws")
    finally:
        FAMILIES.pop("test-explodes")
    assert not (tmp_path / "out").exists()
    assert cl.runs(tmp_path / "ws").empty
    assert [p.name for p in (tmp_path / "ws").iterdir() if not p.name.startswith("store.db")] == []


def test_spec_objects_dicts_and_files_are_the_same_spec(tmp_path):
    spec = cl.load_spec("preset:quickstart")
    (tmp_path / "s.toml").write_text(spec.to_toml())
    assert cl.load_spec(tmp_path / "s.toml") == spec
    assert cl.load_spec(spec.model_dump()) == spec
    cells = cl.expand(spec)
    assert [c.overrides for c in cells] == [
        {"policy": {"kind": "replace"}},
        {"policy": {"kind": "accumulate"}},
        {"policy": {"kind": "mix", "real_fraction": 0.1}},
    ]


def test_every_preset_parses_and_papers_loops_runs_every_case():
    for preset in cl.api.presets():
        cl.load_spec(preset["preset"])
    spec = cl.load_spec("preset:papers-loops").model_copy(update={"generations": 3, "replicates": 5})
    result = cl.run(spec, save=False)
    assert len(result.cells) == 9
    names = set(result.summary["metric"])
    assert {"nll_real", "bandwidth", "l2_gen0", "component_std_3", "test_mse", "var_ratio_above_0.5"} <= names
    assert {"std_ratio_above_0.9", "sigma_ratio", "separation", "fixated"} <= names
    assert {"support", "std_ratio_above_0.9"} <= set(result.bounds["metric"])
    assert "fixated" in set(result.stages["stage"])
