"""Audit: calibrated synthetic share (coverage over seeded trials), verdicts, projection, ledger, bad inputs."""

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from audit_cases import SHARES, ImageCase, TabularCase, TextCase, coverage

import collapselab as cl
from collapselab.audit import audit
from collapselab.audit.detect import rogan_gladen
from collapselab.audit.ledger import Ledger, plan_mix
from collapselab.errors import InputError
from collapselab.sources import get_source


@pytest.mark.parametrize(
    "case_cls",
    [
        TabularCase,
        pytest.param(ImageCase, marks=pytest.mark.data("mnist")),
        pytest.param(TextCase, marks=pytest.mark.data("austen")),
    ],
    ids=["tabular", "mnist", "austen"],
)
def test_the_share_interval_covers_the_truth_in_90_percent_of_50_trials(case_cls):
    case = case_cls()
    for share in SHARES:
        covered, estimates = coverage(case, share, trials=50)
        assert covered >= 0.9, (share, covered)
        assert abs(np.mean([e.share for e in estimates]) - share) < 0.08  # and it is about right on average


def test_rogan_gladen_corrects_a_biased_detector_and_refuses_a_chance_one():
    share, low, high = rogan_gladen(p=0.38, n=1000, tpr=0.8, n_pos=500, fpr=0.2, n_neg=500)
    assert share == pytest.approx(0.3) and low < 0.3 < high
    assert np.isnan(rogan_gladen(0.5, 1000, 0.51, 500, 0.5, 500)[0])


@pytest.fixture(scope="module")
def austen_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("austen")
    truth = get_source("austen", {}).truth(1, None)
    decode = truth.vocab.decode
    train = truth.train[np.random.default_rng(0).permutation(len(truth.train))]
    (folder / "reference.txt").write_text("\n\n".join(decode(r) for r in train[:4000]))
    (folder / "heldout.txt").write_text("\n\n".join(decode(r) for r in truth.heldout_records[:1000]))
    run = cl.run(
        {
            "generations": 6,
            "replicates": 1,
            "seed": 0,
            "data": {"source": "austen", "n": 1000, "heldout": 200},
            "model": {"family": "ngram", "params": {"order": 3}},
        },
        save=False,
    )
    (folder / "gen5.txt").write_text("\n\n".join(decode(r) for r in run.raw[0].snapshots[5]))
    return folder


@pytest.mark.data("austen")
def test_a_real_heldout_split_is_healthy_and_five_replace_generations_are_not(austen_files):
    # the verdict never depends on the share's detector: the cheap trigram one keeps this test fast
    healthy = audit(austen_files / "reference.txt", austen_files / "heldout.txt", project=False, scoring_model=None)
    collapsed = audit(austen_files / "reference.txt", austen_files / "gen5.txt", project=False, scoring_model=None)
    assert healthy["verdict"] == "healthy", healthy["reasons"]
    assert collapsed["verdict"] in ("early", "late"), collapsed["reasons"]
    assert collapsed["measures"]["rare_word_survival"] < 0.5 * healthy["measures"]["rare_word_survival"]
    assert collapsed["measures"]["mmd_p_value"] < 0.05 < healthy["measures"]["mmd_p_value"]


@pytest.mark.data("austen")
def test_projection_and_report_files_from_the_command_line(austen_files, tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "collapselab",
            "audit",
            "--reference",
            str(austen_files / "reference.txt"),
            "--candidate",
            str(austen_files / "heldout.txt"),
            "--policy",
            "mix",
            "--real-fraction",
            "0.5",
            "--generations",
            "6",
            "--replicates",
            "2",
            "--out",
            "report",
            "--scoring-model",
            "ngram",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "verdict: healthy" in run.stdout and "projection" in run.stdout
    report = json.loads((tmp_path / "report" / "audit.json").read_text())
    assert report["projection"]["policy"] == {"kind": "mix", "real_fraction": 0.5}
    assert set(report["projection"]) >= {"early", "late", "total"}
    html = (tmp_path / "report" / "audit.html").read_text()
    assert "verdict: healthy" in html and "Projection" in html


def _tables(tmp_path):
    from sklearn.datasets import load_breast_cancer

    from collapselab.spec import SynthesisSpec
    from collapselab.synthesize import synthesize

    # shuffled: the file's row order is not random, and rows 300-500 alone differ from rows 0-300 beyond what two
    # random samples do (the calibrated verdict rightly calls that early)
    df = load_breast_cancer(as_frame=True).data.sample(frac=1, random_state=0).reset_index(drop=True)
    synth, _ = synthesize(df, 600, SynthesisSpec(kind="cluster-mirrored"), seed=1)
    df.iloc[:300].to_csv(tmp_path / "reference.csv", index=False)
    mixed = pd.concat([df.iloc[300:500].assign(origin="human"), synth.iloc[:100].assign(origin="synthetic")])
    mixed.to_csv(tmp_path / "labelled.csv", index=False)
    mixed.drop(columns="origin").to_csv(tmp_path / "candidate.csv", index=False)
    synth.iloc[100:].to_csv(tmp_path / "examples.csv", index=False)
    return df


def test_tabular_audit_reads_provenance_or_estimates_with_a_measured_detector(tmp_path):
    _tables(tmp_path)
    read = audit(tmp_path / "reference.csv", tmp_path / "labelled.csv", project=False)
    assert read["synthetic_share"]["method"] == "provenance column"
    assert read["synthetic_share"]["share"] == pytest.approx(1 / 3)
    est = audit(
        tmp_path / "reference.csv",
        tmp_path / "candidate.csv",
        synthetic_examples=tmp_path / "examples.csv",
        generations=3,
        replicates=2,
    )
    s = est["synthetic_share"]
    assert s["method"] == "detector: classifier" and s["low"] <= 1 / 3 <= s["high"]
    assert 0.5 < s["detector_auc"] <= 1 and est["verdict"] == "healthy"
    assert est["projection"]["surrogate"].endswith("numeric columns")
    assert "ks" in est["measures"]["columns"]["mean radius"]


BAD = {
    "mismatched columns": (lambda d: d.drop(columns="mean area"), "columns do not match the reference"),
    "non-numeric": (
        lambda d: d.astype({"mean radius": object}).assign(**{"mean radius": ["abc"] + [1.0] * (len(d) - 1)}),
        "holds 'abc' where the reference has numbers",
    ),
    "missing values": (lambda d: d.assign(**{"mean radius": [np.nan] + [1.0] * (len(d) - 1)}), "missing values"),
}


@pytest.mark.parametrize("name", list(BAD) + ["empty", "format", "too large"])
def test_bad_audit_inputs_exit_2_with_one_line(name, tmp_path):
    df = _tables(tmp_path)
    cand = tmp_path / "bad.csv"
    env = {**os.environ, "COLUMNS": "200"}
    if name in BAD:
        BAD[name][0](df.iloc[300:400]).to_csv(cand, index=False)
        message = BAD[name][1]
    elif name == "empty":
        cand.write_text("")
        message = "the file is empty"
    elif name == "format":
        cand = tmp_path / "bad.xlsx"
        cand.write_text("x")
        message = "unknown format '.xlsx'"
    else:
        cand.write_text("a\n" + "1\n" * 10)
        os.environ["COLLAPSELAB_MAX_INPUT_MB"] = "0.00001"  # the one input-size limit (collapselab.io)
        try:
            with pytest.raises(cl.InputError, match=r"over the \d+ B limit"):
                audit(tmp_path / "reference.csv", cand, project=False)
        finally:
            del os.environ["COLLAPSELAB_MAX_INPUT_MB"]
        return
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "collapselab",
            "audit",
            "--reference",
            "reference.csv",
            "--candidate",
            cand.name,
            "--out",
            "out",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _ledger_rows():
    rows = [
        {
            "content": f"human text {i}",
            "origin": "human",
            "source": "web",
            "licence": "CC-BY-4.0",
            "quality": 0.5 + i / 100,
        }
        for i in range(40)
    ]
    rows += [
        {"content": f"gpt text {i}", "origin": "synthetic", "model": "gpt", "generation": 1, "quality": 0.9}
        for i in range(50)
    ]
    rows += [
        {
            "content": f"llama text {i}",
            "origin": "synthetic",
            "model": "llama",
            "generation": 2,
            "quality": 0.2 if i < 10 else 0.8,
            "verdicts": {"judge": "ok"},
        }
        for i in range(30)
    ]
    rows += [{"content": "human text 0", "origin": "human", "quality": 0.1}]  # a duplicate
    return rows


def test_ledger_is_append_only_and_round_trips_jsonl_and_croissant(tmp_path):
    src = tmp_path / "records.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _ledger_rows()))
    with Ledger(tmp_path / "ledger.db") as ledger:
        assert ledger.import_jsonl(src) == 121
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ledger.db.execute("UPDATE records SET origin = 'human'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ledger.db.execute("DELETE FROM records")
        summary = ledger.summary()
        assert summary["by_origin"] == {"human": 41, "synthetic": 80, "unknown": 0}
        assert summary["unique_contents"] == 120 and summary["synthetic_by_model"] == {"gpt": 50, "llama": 30}
        ledger.export_jsonl(tmp_path / "out.jsonl")
        doc = ledger.croissant("demo")
    back = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(back) == 121 and back[0]["content_hash"] == __import__("hashlib").sha256(b"human text 0").hexdigest()
    assert doc["rai:hasSyntheticData"] is True and doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    with Ledger(tmp_path / "again.db") as again:  # an export imports back unchanged
        again.import_jsonl(tmp_path / "out.jsonl")
        assert [{k: v for k, v in r.items() if k != "added_at"} for r in again.rows()] == [
            {k: v for k, v in r.items() if k != "added_at"} for r in back
        ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "x", "origin": "alien"}\n')
    with pytest.raises(InputError, match="line 1: origin = 'alien'; allowed: human, synthetic, unknown"):
        Ledger(tmp_path / "ledger.db").import_jsonl(bad)


def test_mix_planner_meets_constraints_and_says_which_bound(tmp_path):
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.add(_ledger_rows())
        rows = ledger.rows()
    plan = plan_mix(rows, min_real=0.4, max_per_generator=0.35, min_quality=0.3)
    # 40 human records allow 100 at 40% real, but gpt may fill only 35% and llama has 20 good records left:
    # 40 + floor(0.35·N) + 20 >= N first holds at N = 92
    assert plan.size == 92 and plan.human == 40 and plan.by_model == {"gpt": 32, "llama": 20}
    assert plan.dropped["duplicate"] == 1 and plan.dropped["low_quality"] == 10
    assert "maximum share per generator" in plan.binding
    loose = plan_mix(rows, min_real=0.4, max_per_generator=0.6, min_quality=0.3)
    assert loose.size == 100 and "minimum real share" in loose.binding
    assert len({r["content_hash"] for r in plan.rows}) == plan.size
    small = plan_mix(rows, size=20, min_real=0.5)
    assert small.size == 20 and small.human >= 10 and "requested size" in small.binding
    capped = plan_mix(rows, min_real=0.0, max_per_generator=0.2)
    assert max(capped.by_model.values()) <= 0.2 * capped.size + 1e-9


def test_a_wide_interval_says_the_share_is_not_identifiable():
    from collapselab.audit.detect import ShareEstimate, identifiability_note

    wide = ShareEstimate("detector: classifier", 0.4, 0.05, 0.9, detector_auc=0.6)
    assert "not identifiable" in identifiability_note(wide)
    assert identifiability_note(ShareEstimate("detector: classifier", 0.3, 0.2, 0.4, detector_auc=0.9)) == ""


def test_a_categorical_column_collapsed_to_one_value_is_flagged_by_name(tmp_path):
    """Issue 16: entropy ratio 0 once still got 'healthy' (the median over columns hid it)."""
    rng = np.random.default_rng(0)
    n = 400

    def table(k):
        return pd.DataFrame(
            {
                "age": rng.normal(40, 10, k),
                "income": rng.lognormal(10, 0.5, k),
                "height": rng.normal(170, 8, k),
                "region": rng.choice(list("ABCDE"), k, p=[0.4, 0.3, 0.15, 0.1, 0.05]),
            }
        )

    table(n).to_csv(tmp_path / "reference.csv", index=False)
    table(200).to_csv(tmp_path / "same.csv", index=False)
    table(200).assign(region="A").to_csv(tmp_path / "collapsed.csv", index=False)
    same = audit(tmp_path / "reference.csv", tmp_path / "same.csv", project=False)
    collapsed = audit(tmp_path / "reference.csv", tmp_path / "collapsed.csv", project=False)
    assert same["verdict"] == "healthy", same["reasons"]
    assert collapsed["verdict"] != "healthy"
    flagged = [k for k, v in collapsed["measures"]["calibrated"]["measures"].items() if v["flagged"]]
    assert flagged and all(k.startswith("region:") for k in flagged), flagged
    assert any("region: entropy" in r for r in collapsed["reasons"])
    m = collapsed["measures"]["calibrated"]["measures"]["region: entropy"]
    assert m["value"] == 0 and m["p_value"] < 0.01 and m["null_band"][0] > 0


def test_the_planner_runs_on_the_audited_surrogate(tmp_path):
    """issue 18: plan on an audited data set: the smallest real fraction under mix that keeps the surrogate's kl
    at generation 4 within the need, by search over the loop on the GMM surrogate, with an interval."""
    _tables(tmp_path)
    kw = {"policy": "mix", "real_fraction": 0.5, "generations": 5, "replicates": 8, "project": False}
    est = audit(tmp_path / "reference.csv", tmp_path / "candidate.csv", plan_need="kl <= 12", plan_horizon=4, **kw)
    planned = est["plan"]
    assert planned["method"] == "search" and planned["knob"] == "real_fraction"
    assert planned["surrogate"].endswith("numeric columns")
    low, high = planned["interval"]
    assert planned["value"] is not None and 0 < low <= planned["value"] <= high < 1
    assert "interval" in planned["sentence"]
    with pytest.raises(cl.SpecError, match="need = 'kl < 1'"):
        audit(tmp_path / "reference.csv", tmp_path / "candidate.csv", plan_need="kl < 1", plan_horizon=4, **kw)
