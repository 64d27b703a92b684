"""The command line: bad specs fail with one clear line and exit 2; good runs are stored and shown."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

GOOD = """
name = "tiny"
generations = 4
replicates = 50
[data]
source = "gaussian"
n = 10
[data.params]
mean = 0.0
std = 1.0
[model]
family = "gaussian"
[policy]
kind = "replace"
"""


def cli(*args, cwd):
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "collapselab", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


BAD = {
    "unknown key": (
        GOOD.replace("n = 10", "n = 10\nsise = 3"),
        "unknown key 'data.sise'; allowed: source, n, heldout, params",
    ),
    "unknown top-level key": ("generatoins = 3\n" + GOOD, "unknown key 'generatoins'; allowed: name,"),
    "unknown family": (
        GOOD.replace('family = "gaussian"', 'family = "gausian"'),
        "unknown family 'gausian'; allowed: bernoulli, categorical,",
    ),
    "negative n": (GOOD.replace("n = 10", "n = -5"), "data.n = -5: Input should be greater than 0"),
    "real_fraction 1.5": (
        GOOD.replace('kind = "replace"', 'kind = "mix"\nreal_fraction = 1.5'),
        "policy.real_fraction = 1.5: Input should be less than or equal to 1",
    ),
    "probs not summing to 1": (
        GOOD.replace('source = "gaussian"', 'source = "categorical"')
        .replace("mean = 0.0\nstd = 1.0", "probs = [0.5, 0.4]")
        .replace('family = "gaussian"', 'family = "categorical"'),
        "data.params.probs = [0.5, 0.4]: must sum to 1 (sums to 0.9)",
    ),
    "TOML syntax error": (GOOD.replace("n = 10", "n = = 10"), "TOML syntax error"),
    "unknown estimator": (
        GOOD + '[model.params]\nestimator = "map"\n',
        "model.params.estimator = 'map': Input should be 'mle' or 'unbiased'",
    ),
    "unknown policy": (
        GOOD.replace('kind = "replace"', 'kind = "recycle"'),
        "policy.kind = 'recycle': Input should be 'replace', 'accumulate', 'accumulate-subsample', 'mix' or 'fresh'",
    ),
    "family cannot fit source": (
        GOOD.replace('family = "gaussian"', 'family = "poisson"'),
        "'poisson' cannot fit data.source 'gaussian' (continuous records); families for continuous records: gaussian, gmm, kde",
    ),
    "mix without a fraction": (
        GOOD.replace('kind = "replace"', 'kind = "mix"'),
        "policy.kind = 'mix' needs policy.real_fraction",
    ),
    "bad sweep cell": (
        GOOD + '[sweep]\n"data.n" = [10, 0]\n',
        "sweep cell 1 (data.n=0): data.n = 0: Input should be greater than 0",
    ),
    "zero generations": (
        GOOD.replace("generations = 4", "generations = 0"),
        "generations = 0: Input should be greater than or equal to 1",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    text, message = BAD[case]
    (tmp_path / "spec.toml").write_text(text)
    res = cli("run", "spec.toml", "--out", "results", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert message in lines[0], lines[0]
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]  # no results dir, no workspace


def test_missing_spec_file_and_unknown_preset(tmp_path):
    res = cli("run", "nope.toml", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == "error: spec file not found: nope.toml"
    res = cli("run", "preset:nope", cwd=tmp_path)
    assert res.returncode == 2 and "unknown preset 'nope'; allowed: " in res.stderr and "quickstart" in res.stderr


def test_run_out_writes_the_output_contract(tmp_path):
    (tmp_path / "spec.toml").write_text(
        GOOD + '[sweep]\n"data.n" = [5, 10]\n"policy.kind" = ["replace", "accumulate"]\n'
    )
    res = cli("run", "spec.toml", "--out", "res", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "res"
    assert {p.name for p in out.iterdir()} == {
        "summary.csv",
        "cells.json",
        "spec.toml",
        "theory.csv",
        "stages.csv",
        "snapshots.npz",
        "report.html",
    }
    summary = pd.read_csv(out / "summary.csv", dtype={"cell": str})
    assert list(summary.columns) == [
        "cell",
        "generation",
        "metric",
        "mean",
        "std",
        "se",
        "median",
        "q05",
        "q95",
        "count",
    ]
    assert len(summary) == 4 * 4 * 14  # cells x generations x (9 metrics, synthetic_share, 4 stage shares)
    assert (summary["count"] == 50).all()
    assert json.loads((out / "cells.json").read_text()) == {
        "0": {"data.n": 5, "policy.kind": "replace"},
        "1": {"data.n": 5, "policy.kind": "accumulate"},
        "2": {"data.n": 10, "policy.kind": "replace"},
        "3": {"data.n": 10, "policy.kind": "accumulate"},
    }
    # the written spec reruns the experiment bit for bit
    again = cli("run", str(out / "spec.toml"), "--out", "again", "--quiet", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == ""
    assert (tmp_path / "again" / "summary.csv").read_bytes() == (out / "summary.csv").read_bytes()
    assert "results in" in res.stdout and "cell 3: data.n = 10, policy.kind = accumulate" in res.stdout


def test_workspace_runs_are_indexed_listed_and_shown(tmp_path):
    (tmp_path / "spec.toml").write_text(GOOD)
    first = cli("run", "spec.toml", cwd=tmp_path)
    second = cli("run", "spec.toml", "--json", "--no-report", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    payload = json.loads(second.stdout)
    assert payload["run_id"] == 2 and Path(payload["path"]).name == "0002-tiny"
    assert {r["metric"] for r in payload["final"]} >= {"var_ratio", "synthetic_share"}
    db = tmp_path / "collapselab-runs" / "store.db"
    assert db.is_file()
    import sqlite3

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM summary WHERE run_id = 1").fetchone()[0] == 4 * 14
    con.close()
    listed = cli("runs", "--json", cwd=tmp_path)
    assert [r["id"] for r in json.loads(listed.stdout)] == [1, 2]
    shown = cli("show", "1", "--metric", "var_ratio", cwd=tmp_path)
    assert shown.returncode == 0 and "var_ratio" in shown.stdout and "nll_real" not in shown.stdout
    by_name = cli("show", "tiny", cwd=tmp_path)
    by_dir = cli("show", "collapselab-runs/0002-tiny", cwd=tmp_path)
    assert by_name.stdout == by_dir.stdout and "w2" in by_name.stdout
    missing = cli("show", "7", cwd=tmp_path)
    assert missing.returncode == 2 and "no run '7'" in missing.stderr


def test_preset_runs_from_anywhere_and_presets_are_listed(tmp_path):
    res = cli("presets", cwd=tmp_path)
    assert res.returncode == 0 and "preset:quickstart" in res.stdout
    res = cli("families", cwd=tmp_path)
    assert all(f in res.stdout for f in ("gaussian", "categorical", "bernoulli", "poisson", "gmm", "kde", "linear"))


def test_plugin_family_through_the_cli(tmp_path):
    (tmp_path / "myfamilies.py").write_text(
        "import numpy as np\n"
        "from collapselab import Family, register_family\n"
        "class Uniform:\n"
        "    def __init__(self, lo, hi): self.lo, self.hi = lo, hi\n"
        "    def sample(self, m, rng):\n"
        "        u = rng.random((self.lo.shape[0], m, 1))\n"
        "        return self.lo[:, None, :] + u * (self.hi - self.lo)[:, None, :]\n"
        "@register_family\n"
        "class UniformFamily(Family):\n"
        "    name = 'uniform'\n"
        "    accepts = ('continuous',)\n"
        "    def fit(self, x, rng): return Uniform(x.min(axis=1), x.max(axis=1))\n"
        "    def metrics(self, m): return {'width': (m.hi - m.lo)[:, 0]}\n"
    )
    spec = GOOD.replace('family = "gaussian"', 'family = "uniform"').replace(
        'name = "tiny"', 'name = "tiny"\nplugins = ["myfamilies"]'
    )
    (tmp_path / "spec.toml").write_text(spec)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a spec that imports code runs it: refused unless allowed, and nothing is written
    res = subprocess.run(
        [sys.executable, "-m", "collapselab", "run", "../spec.toml", "--out", "o"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "--allow-plugins" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (elsewhere / "o").exists()
    # allowed: the module is found beside the spec, not in the shell's folder (no PYTHONPATH)
    res = subprocess.run(
        [sys.executable, "-m", "collapselab", "run", "../spec.toml", "--out", "../o", "--allow-plugins"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert str(tmp_path) in (tmp_path / "o" / "spec.toml").read_text()  # the saved spec reruns from anywhere
    s = pd.read_csv(tmp_path / "o" / "summary.csv")
    width = s[s.metric == "width"].sort_values("generation")["mean"].to_numpy()
    assert (width[1:] < width[:-1]).all()  # the range of a uniform refitted on its samples shrinks


def test_a_run_until_collapse_shows_its_bounds_and_generations_to_collapse(tmp_path):
    spec = tmp_path / "until.toml"
    spec.write_text(
        'name = "until"\ngenerations = 5000\nreplicates = 200\nstop = "collapsed"\n'
        '[data]\nsource = "bernoulli"\nn = 8\nparams = { p = 0.3 }\n[model]\nfamily = "bernoulli"\n'
    )
    r = cli("run", str(spec), "--out", str(tmp_path / "out"), "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "bound ≥" in r.stdout and "fixated" in r.stdout
    bounds = pd.read_csv(tmp_path / "out" / "bounds.csv")
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(bounds["metric"]) == {"alive"} and set(bounds["side"]) == {"lower"}
    assert bounds["generation"].max() == summary["generation"].max() < 4999  # stopped once all had fixed
    stages = pd.read_csv(tmp_path / "out" / "stages.csv").set_index("stage")
    assert stages.loc["fixated", "reached"] == 1.0
    shown = cli("show", str(tmp_path / "out"), cwd=tmp_path)
    assert "bound ≥" in shown.stdout and "fixated" in shown.stdout
