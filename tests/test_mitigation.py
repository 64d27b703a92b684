"""Mitigations, measured: cluster-mirrored synthesis, judged curation, poisoning screens, the synthesize command."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest

import collapselab as cl
from collapselab.curation.judges import LLMJudge, _auc_parts, auc, http_judge, measure
from collapselab.curation.poison import ShiftedParams, screen_flags
from collapselab.errors import CollapselabError, SpecError
from collapselab.families.base import Reference
from collapselab.families.gmm import GMMFamily
from collapselab.plugins import ATTACKS
from collapselab.sources.truth import MixtureTruth
from collapselab.spec import ScreenSpec

# a 2-D mixture with a 2% minority cluster six standard deviations away; a 2-component GMM refitted on its samples
MINORITY = {
    "generations": 150,
    "replicates": 32,
    "seed": 1,
    "data": {"source": "blobs", "n": 500, "params": {"means": [[0, 0], [6, 6]], "weights": [0.98, 0.02]}},
    "model": {"family": "gmm", "params": {"components": 2}},
}
CHANCE = "collapselab.curation.examples:random_scores"


def alive_generations(result) -> np.ndarray:
    """Per chain, the generations whose model keeps at least half of the minority cluster's true mass."""
    return (result.raw[0].metrics["rare_cluster_mass"] >= 0.01).sum(axis=0)


@pytest.fixture(scope="module")
def plain():
    return cl.run(MINORITY, save=False)


def test_cluster_mirrored_synthesis_keeps_the_minority_alive_three_times_longer(plain):
    mirrored = cl.run({**MINORITY, "synthesis": {"kind": "cluster-mirrored"}}, save=False)
    base, mirror = alive_generations(plain), alive_generations(mirrored)
    assert mirror.mean() >= 3 * base.mean(), (mirror.mean(), base.mean())
    # the mirror found the two real clusters and drew each at its share: coverage stays near 1
    coverage = mirrored.table().xs("0")["cluster_coverage"].dropna()
    assert coverage.min() > 0.9


def test_a_measured_judge_improves_and_a_chance_judge_does_not(plain):
    judged = cl.run({**MINORITY, "curation": [{"kind": "likelihood", "params": {"mode": "ratio"}}]}, save=False)
    chance = cl.run({**MINORITY, "curation": [{"kind": "verifier", "params": {"function": CHANCE}}]}, save=False)
    kl = {
        name: r.raw[0].metrics["kl"][-1].mean()
        for name, r in (("plain", plain), ("judged", judged), ("chance", chance))
    }
    assert kl["judged"] < 0.25 * kl["plain"], kl
    assert kl["chance"] > 0.5 * kl["plain"], kl
    # measured: the anchor-ratio judge separates real from synthetic records once the chain drifts ...
    auc = judged.raw[0].metrics["likelihood_auc"][50:-1]
    assert auc.mean() > 0.52
    # ... the chance judge does not, and the run says so loudly
    assert abs(chance.raw[0].metrics["verifier_auc"][:-1].mean() - 0.5) < 0.01
    assert any("NO BETTER THAN CHANCE" in n for n in chance.raw[0].notes)
    assert np.isnan(chance.raw[0].metrics["verifier_auc"][-1]).all()  # no pool after the last generation


def test_a_chance_judge_warns_on_the_command_line_and_in_the_run_folder(tmp_path):
    spec = tmp_path / "chance.toml"
    spec.write_text(
        'generations = 3\nreplicates = 4\n[data]\nsource = "gaussian"\nn = 200\n[model]\nfamily = "gaussian"\n'
        f'[[curation]]\nkind = "verifier"\nparams = {{ function = "{CHANCE}" }}\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "collapselab", "run", str(spec), "--out", "out", "-q", "--no-report"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert run.returncode == 0, run.stderr
    assert "warning" in run.stderr and "NO BETTER THAN CHANCE" in run.stderr
    assert "NO BETTER THAN CHANCE" in (tmp_path / "out" / "notes.txt").read_text()
    report = subprocess.run(
        [sys.executable, "-m", "collapselab", "report", "out", "-o", "r.html"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert report.returncode == 0, report.stderr
    assert (
        "Warnings" in (tmp_path / "r.html").read_text() and "NO BETTER THAN CHANCE" in (tmp_path / "r.html").read_text()
    )
    with pytest.warns(UserWarning, match="NO BETTER THAN CHANCE"):
        cl.run(str(spec), save=False)


def test_on_chance_error_stops_the_run():
    spec = {
        **MINORITY,
        "generations": 3,
        "replicates": 4,
        "curation": [{"kind": "verifier", "on_chance": "error", "params": {"function": CHANCE}}],
    }
    with pytest.raises(CollapselabError, match="no better than chance"):
        cl.run(spec, save=False)


@pytest.mark.parametrize("shared", [(True, False), (False, False)])
def test_a_judge_at_chance_is_called_better_than_chance_about_one_time_in_forty(shared):
    """Scores without information, measured on held-out records that every chain shares (or on each chain's own):
    the one-sided 1.96-SE test must pass a chance judge as better than chance ~2.5% of the time, not more. With the
    shared records' variance divided by the number of chains it did so 17.5% of the time at 8 chains."""
    rng = np.random.default_rng(7)
    trials, R, n1, n2 = 2000, 8, 100, 100
    better = 0
    for _ in range(trials):
        pos = np.broadcast_to(rng.random(n1), (R, n1)) if shared[0] else rng.random((R, n1))
        result = measure(pos, rng.random((R, n2)), np.full(R, 0.5), "t", shared)
        better += not result.chance
    rate = better / trials
    assert 0.01 < rate < 0.045, rate  # ~0.025; binomial SE 0.0035 at 2,000 trials


def test_delong_parts_add_up_to_the_variance_of_the_auc_over_independent_draws():
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(0.5, 1, (20000, 40)), rng.normal(0, 1, (20000, 30))
    values = auc(pos, neg)
    _, var_pos, var_neg = _auc_parts(pos, neg)
    assert np.mean(var_pos + var_neg) == pytest.approx(values.var(), rel=0.05)


def _poisoned(truth, rng, R=16, n=1000, sources=10):
    x = truth.sample((R, n), rng)
    xp, mask = ATTACKS["shifted-cluster"](ShiftedParams(), 0.05, sources).inject(x, x, rng)
    source = np.broadcast_to((np.arange(n) * sources // n).astype(float), (R, n)).copy()
    source[mask] = sources
    family = GMMFamily(GMMFamily.Params(components=2), Reference(truth, truth.sample((2000,), rng), n))
    return xp, mask, source, family


@pytest.mark.parametrize("method", ["mahalanobis", "spectral", "loso"])
def test_screens_find_a_shifted_cluster_at_five_percent(method):
    rng = np.random.default_rng(0)
    truth = MixtureTruth(np.array([1.0]), np.zeros((1, 2)), np.eye(2)[None])
    x, mask, source, family = _poisoned(truth, rng)
    flags = screen_flags(ScreenSpec(methods=[method]), x, "continuous", source, family, truth.sample((200,), rng), rng)
    hits = (flags & mask).sum(axis=1)
    precision, recall = hits / np.maximum(flags.sum(axis=1), 1), hits / mask.sum(axis=1)
    assert precision.mean() >= 0.9 and recall.mean() >= 0.9, (precision.mean(), recall.mean())


def test_leave_one_source_out_spares_a_real_minority_cluster_that_outlier_screens_cut():
    rng = np.random.default_rng(1)
    truth = MixtureTruth(np.array([0.98, 0.02]), np.array([[0.0, 0.0], [6.0, 6.0]]), np.stack([np.eye(2)] * 2))
    x, mask, source, family = _poisoned(truth, rng)
    trusted = truth.sample((200,), rng)
    result = {}
    for method in ("loso", "mahalanobis"):
        flags = screen_flags(ScreenSpec(methods=[method]), x, "continuous", source, family, trusted, rng)
        result[method] = (flags & mask).sum() / max(flags.sum(), 1)
    assert result["loso"] >= 0.9
    assert result["mahalanobis"] < 0.9  # robust outlier scores flag the genuine minority too


def test_screen_metrics_in_the_loop_and_poison_hurts_without_screening():
    spec = {
        "generations": 4,
        "replicates": 8,
        "seed": 3,
        "data": {"source": "gaussian", "n": 400, "params": {"mean": [0.0, 0.0], "std": 1.0}},
        "model": {"family": "gaussian"},
        "poison": {"kind": "shifted-cluster", "rate": 0.05},
    }
    screened = cl.run({**spec, "screen": {"methods": ["spectral"]}}, save=False).table()
    unscreened = cl.run(spec, save=False).table()
    assert screened.loc[("0", 0), "screen_recall"] >= 0.9 and screened.loc[("0", 0), "screen_precision"] >= 0.9
    assert screened.loc[("0", 0), "kl"] < unscreened.loc[("0", 0), "kl"] / 3


def test_the_pipeline_is_bit_identical_on_workers(tmp_path):
    spec = {
        **MINORITY,
        "generations": 5,
        "replicates": 6,
        "poison": {"kind": "shifted-cluster", "rate": 0.05, "target": "synthetic"},
        "screen": {"methods": ["mahalanobis", "isolation-forest"], "combine": "all"},
        "sweep": {
            "cases": [
                {"case": "mirror", "synthesis": {"kind": "cluster-mirrored"}},
                {"case": "judged", "curation": [{"kind": "discriminator"}, {"kind": "likelihood", "keep": 0.8}]},
            ]
        },
    }
    a = cl.run(spec, tmp_path / "a", report=False)
    b = cl.run(spec, tmp_path / "b", workers=2, report=False)
    assert (a.path / "summary.csv").read_bytes() == (b.path / "summary.csv").read_bytes()
    assert json.loads((a.path / "cells.json").read_text())["1"]["case"] == "judged"


class _Judge(BaseHTTPRequestHandler):
    calls: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][1]["content"]
        passages = prompt.split("\n\n")[1:]
        _Judge.calls.append((len(passages), self.headers.get("Authorization")))
        if len(_Judge.calls) == 1:  # the first request fails: the client must retry
            self.send_response(503)
            self.end_headers()
            return
        ratings = [9 if "good" in p else 2 for p in passages]
        reply = {"choices": [{"message": {"content": f"Ratings: {json.dumps(ratings)}"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_http_judge_on_loopback_batches_retries_and_sends_the_key(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Judge.calls.clear()
    monkeypatch.setenv("JUDGE_KEY", "sekret")
    monkeypatch.setenv("COLLAPSELAB_JUDGE_KEY_ENVS", "JUDGE_KEY")  # the user, not the spec, allows the variable
    try:
        params = LLMJudge.Params(
            endpoint=f"http://127.0.0.1:{server.server_port}/v1",
            api_key_env="JUDGE_KEY",
            batch_size=3,
            concurrency=1,
            retries=2,
            timeout=5,
        )
        texts = ["a good passage", "bad bad", "good again", "meh", "good"]
        assert http_judge(texts, params) == [9, 2, 9, 2, 9]
        assert [c[0] for c in _Judge.calls] == [3, 3, 2]  # the failed batch was sent again
        assert all(c[1] == "Bearer sekret" for c in _Judge.calls)
        dead = LLMJudge.Params(endpoint="http://127.0.0.1:9/v1", retries=1, timeout=1)
        with pytest.raises(CollapselabError, match="failed after 2 attempt"):
            http_judge(["x"], dead)
    finally:
        server.shutdown()


@pytest.mark.neural
@pytest.mark.data("smollm2")
def test_local_smollm2_judge_runs_and_its_fluency_score_prefers_prose():
    from collapselab.curation.judges import local_judge

    good = [
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.",
        "She walked to the village in the morning and bought bread for her family.",
    ]
    bad = ["the the the of of and and the the of", "fortune wife single a a man truth in the"]
    # the rubric question runs for real (a 135M model answers it near chance: what measuring the judge is for)
    rubric = local_judge(good + bad, LLMJudge.Params(batch_size=4))
    assert len(rubric) == 4 and all(np.isfinite(rubric))
    fluency = local_judge(good + bad, LLMJudge.Params(batch_size=3, question="fluency"))
    assert min(fluency[:2]) > max(fluency[2:]), fluency


BAD_SPECS = {
    "unknown stage": ({"curation": [{"kind": "oracle"}]}, "curation.0.kind"),
    "bad stage param": ({"curation": [{"kind": "discriminator", "params": {"featurs": 3}}]}, "featurs"),
    "verifier import": (
        {"curation": [{"kind": "verifier", "params": {"function": "nope.nothing:f"}}]},
        "cannot import",
    ),
    "llm judge on vectors": ({"curation": [{"kind": "llm-judge"}]}, "judges text records"),
    "poison kind": ({"poison": {"kind": "trigger-phrase", "rate": 0.1}}, "attacks text records"),
    "poison rate": ({"poison": {"kind": "outliers", "rate": 1.5}}, "poison.rate = 1.5"),
    "population": ({"policy": {"samples": "infinite"}, "synthesis": {"kind": "cluster-mirrored"}}, "infinite"),
}


@pytest.mark.parametrize("name", list(BAD_SPECS))
def test_bad_mitigation_settings_fail_before_running(name):
    extra, message = BAD_SPECS[name]
    with pytest.raises(SpecError, match=message):
        cl.run({**MINORITY, **extra}, save=False, allow_plugins=True)  # allowed: the check is the one after


def test_synthesize_command_mirrors_a_real_table(tmp_path):
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    wine["magnesium"] = wine["magnesium"].astype(int)
    wine["target"] = wine["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    wine.to_csv(tmp_path / "wine.csv", index=False)
    env = {**os.environ, "COLUMNS": "120"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "collapselab",
            "synthesize",
            "--data",
            "wine.csv",
            "--rows",
            "600",
            "--out",
            "synth.csv",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    synth = pd.read_csv(tmp_path / "synth.csv")
    assert list(synth.columns) == list(wine.columns) and len(synth) == 600
    assert synth["magnesium"].dtype.kind == "i"  # integer columns stay integer
    assert report["clusters"]["k"] >= 2 and report["clusters"]["coverage"] > 0.9
    assert report["marginal_mean"] > 0.85 and report["correlation_similarity"] > 0.9
    assert report["columns"]["target"]["category_coverage"] == 1.0
    assert json.loads((tmp_path / "synth.fidelity.json").read_text())["rows_synthetic"] == 600
    wine.to_parquet(tmp_path / "wine.parquet")
    assert (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "collapselab",
                "synthesize",
                "--data",
                "wine.parquet",
                "--rows",
                "50",
                "--out",
                "sub/synth.parquet",
            ],
            cwd=tmp_path,
            env=env,
        ).returncode
        == 0
    )
    assert len(pd.read_parquet(tmp_path / "sub" / "synth.parquet")) == 50
    (tmp_path / "holes.csv").write_text("a,b\n1,x\n,y\n")
    (tmp_path / "empty.csv").write_text("")
    for data, message in (
        ("holes.csv", "column 'a' has 1 missing values"),
        ("empty.csv", "the file is empty"),
        ("none.csv", "file not found"),
    ):
        bad = subprocess.run(
            [sys.executable, "-m", "collapselab", "synthesize", "--data", data, "--rows", "5", "--out", "o.csv"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
        )
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
        assert not (tmp_path / "o.csv").exists()
