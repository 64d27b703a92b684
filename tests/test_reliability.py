"""Nothing lost, nothing crashes, nothing exposed: one test per defect of issue 15 (fuzzing: test_fuzz.py)."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import collapselab as cl
from collapselab.errors import CollapselabError, InputError, SpecError

TINY = """
name = "tiny"
generations = 4
replicates = 16
seed = 1
[data]
source = "gaussian"
n = 10
[model]
family = "gaussian"
"""


def cli(*args, cwd, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "collapselab", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )


def one_error_line(res, code=2) -> str:
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


# --- data loss and checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["delete", "truncate", "drop-table"])
def test_an_index_reset_never_reuses_or_deletes_a_run_folder(tmp_path, damage):
    ws = tmp_path / "ws"
    first = cl.run(TINY_SPEC, workspace=ws, report=False)
    second = cl.run(TINY_SPEC, workspace=ws, report=False)
    kept = {p: (p / "summary.csv").read_bytes() for p in (first.path, second.path)}
    db = ws / "store.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if damage == "delete":
        db.unlink()
    elif damage == "truncate":
        db.write_bytes(b"")
    else:
        with sqlite3.connect(db) as con:
            con.execute("DROP TABLE runs")
    third = cl.run(TINY_SPEC, workspace=ws, report=False)
    assert third.path not in kept and third.run_id == 3
    for p, data in kept.items():
        assert (p / "summary.csv").read_bytes() == data  # the earlier results are untouched


def test_the_index_row_holds_the_path_from_the_moment_the_id_is_reserved(tmp_path):
    from collapselab.store import Store

    store = Store(tmp_path / "ws")
    run_id, path = store.new_run_dir("x")
    assert path.is_dir() and list(path.iterdir()) == []
    runs = store.runs()
    assert runs.loc[0, "path"] == str(path.resolve()) and runs.loc[0, "status"] == "unfinished"


TINY_SPEC = {
    "name": "tiny",
    "generations": 4,
    "replicates": 16,
    "seed": 1,
    "data": {"source": "gaussian", "n": 10},
    "model": {"family": "gaussian"},
}
LONG_SPEC = {**TINY_SPEC, "name": "long", "generations": 40, "replicates": 64}


def _interrupted_run(tmp_path, monkeypatch, stop_at=20) -> Path:
    """A run directory with checkpoints of generations 0..stop_at-1, as a killed run leaves it."""
    out = tmp_path / "run"

    def stop(cell_id, done, total):
        if done == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cl.run(LONG_SPEC, out, report=False, progress=stop)
    assert (out / ".checkpoints" / "cell-0").is_dir()
    return out


def test_resume_survives_hostile_checkpoint_files(tmp_path, monkeypatch):
    want = cl.run(LONG_SPEC, tmp_path / "whole", report=False)
    out = _interrupted_run(tmp_path, monkeypatch)
    folder = out / ".checkpoints" / "cell-0"
    (folder / "manifest-000019.json").write_text("[1, 2, 3]")  # valid JSON, not an object
    (folder / "block-000018.npz").unlink()
    os.mkfifo(folder / "block-000018.npz")  # a FIFO would block a reader forever
    (folder / "pool-000017.npz").unlink(missing_ok=True)
    (folder / "pool-000017.npz").symlink_to("/dev/zero")  # a device link would never end
    (folder / ".block-000020.npz.tmp-999").write_bytes(b"half")  # what a killed writer leaves
    (out / "cells.json").unlink()  # resume needs no cells.json
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = cl.resume(out, report=False)
    assert any("skipped" in str(w.message) for w in caught)
    assert (out / "summary.csv").read_bytes() == (tmp_path / "whole" / "summary.csv").read_bytes()
    assert json.loads((out / "cells.json").read_text()) == {"0": {}}
    assert not (out / ".checkpoints").exists()
    assert done.summary.equals(want.summary)


def test_a_checkpoint_from_another_code_version_is_not_reused(tmp_path, monkeypatch):
    import collapselab.engine.checkpoints as ck

    out = _interrupted_run(tmp_path, monkeypatch)
    monkeypatch.setattr(ck, "code_version", lambda: "another version of collapselab")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cl.resume(out, report=False)
    assert any("another spec, seed or collapselab version" in str(w.message) for w in caught)


def test_temporary_files_are_removed_when_a_write_fails(tmp_path, monkeypatch):
    from collapselab.io import write_atomic

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        write_atomic(tmp_path / "x.csv", "a,b\n")
    assert list(tmp_path.iterdir()) == []


# --- crashes and wrong exits -------------------------------------------------------------------------------------

CASES_SPEC = (
    TINY
    + """
[sweep]
cases = [{ case = "short", generations = 2 }, { case = "long" }]
"""
)


def test_cases_with_different_generations_print_show_and_report(tmp_path):
    """preset:mitigations' shape (cases of 60 and 15 generations): the summary, show and JSON all work."""
    (tmp_path / "spec.toml").write_text(CASES_SPEC)
    res = cli("run", "spec.toml", "--out", "o", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "cell 0: case = short" in res.stdout and "gen 1" in res.stdout and "gen 3" in res.stdout
    assert (tmp_path / "o" / "report.html").is_file()
    res = cli("show", "o", "--show", "0,3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = cli("run", "spec.toml", "--out", "o2", "--json", "--no-report", cwd=tmp_path)
    final = json.loads(res.stdout)["final"]
    assert {(r["cell"], r["generation"]) for r in final} == {("0", 1), ("1", 3)}


def test_non_finite_numbers_are_refused_and_json_is_strict(tmp_path):
    for value in ("nan", "inf", "-inf"):
        (tmp_path / "spec.toml").write_text(TINY.replace("n = 10", f"n = 10\nparams = {{ mean = {value} }}"))
        line = one_error_line(cli("run", "spec.toml", "--out", "o", cwd=tmp_path))
        assert "data.params.mean" in line and "finite" in line
        assert not (tmp_path / "o").exists()
    with pytest.raises(SpecError, match="within"):
        cl.load_spec({**TINY_SPEC, "data": {"source": "gaussian", "n": 10, "params": {"mean": 1e300}}})
    # a metric that is NaN by design prints as null, never as bare NaN
    (tmp_path / "spec.toml").write_text(TINY.replace("replicates = 16", "replicates = 1"))
    res = cli("run", "spec.toml", "--out", "o", "--json", "--no-report", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "NaN" not in res.stdout
    json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in --json output"))


def test_user_text_is_never_read_as_markup_or_tex(tmp_path):
    spec = (
        TINY.replace('name = "tiny"', 'name = "[/x]"')
        + """
[sweep]
cases = [{ case = "$\\\\nope$" }, { case = "[bold]b[/bold]" }]
"""
    )
    (tmp_path / "spec.toml").write_text(spec)
    res = cli("run", "spec.toml", "-w", "ws", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "case = [bold]b[/bold]" in res.stdout and "report:" in res.stdout
    res = cli("runs", "-w", "ws", cwd=tmp_path)
    assert res.returncode == 0 and "[/x]" in res.stdout and "finished" in res.stdout
    line = one_error_line(cli("run", "nope.toml", "--workspace", "[bold]ws", cwd=tmp_path))
    assert "nope.toml" in line
    res = cli("run", "spec.toml", "--out", "o", "--executor", "[red]x[/red]", cwd=tmp_path)
    assert "[red]x[/red]" in one_error_line(res)


def test_huge_runs_are_refused_before_they_allocate(tmp_path):
    with pytest.raises(SpecError, match=r"needs at least [0-9.]+ GiB .*replicates = 1000000000"):
        cl.expand(cl.load_spec({**TINY_SPEC, "replicates": 10**9}))
    (tmp_path / "spec.toml").write_text(TINY.replace("replicates = 16", "replicates = 100000"))
    line = one_error_line(
        cli("run", "spec.toml", "--out", "o", cwd=tmp_path, env={"COLLAPSELAB_MEMORY_LIMIT_MB": "10"})
    )
    assert "needs at least" in line and "COLLAPSELAB_MEMORY_LIMIT_MB" in line
    assert not (tmp_path / "o").exists()
    grid = {**TINY_SPEC, "sweep": {"seed": list(range(1600)), "data.n": list(range(2, 1500))}}
    started = time.perf_counter()
    with pytest.raises(SpecError, match="cells, more than"):
        cl.expand(cl.load_spec(grid))
    assert time.perf_counter() - started < 5  # refused from the sweep's size, not after building its cells


def test_deep_nesting_and_odd_api_dicts_raise_spec_errors():
    deep: dict = {}
    node = deep
    for _ in range(2000):
        node["x"] = {}
        node = node["x"]
    for bad in (
        {**TINY_SPEC, "data": {"source": "gaussian", "n": 10, "params": deep}},
        [1, 2],
        "not a spec",
        {**TINY_SPEC, 3: 4},
        {**TINY_SPEC, "generations": 2**70},
    ):
        with pytest.raises(SpecError):
            cl.expand(cl.load_spec(bad))


def test_a_run_that_fails_while_running_leaves_nothing_behind(tmp_path, monkeypatch):
    import collapselab.families.gaussian as g

    def broken(self, *a, **k):
        raise np.linalg.LinAlgError("singular matrix")

    monkeypatch.setattr(g.GaussianFamily, "metrics", broken)
    with pytest.raises(cl.RunFailed, match="LinAlgError: singular matrix"):
        cl.run(TINY_SPEC, workspace=tmp_path / "ws", report=False)
    assert [p.name for p in (tmp_path / "ws").iterdir() if not p.name.startswith("store.db")] == []
    assert cl.runs(tmp_path / "ws").empty
    out = tmp_path / "out"
    with pytest.raises(cl.RunFailed):
        cl.run(TINY_SPEC, out, report=False)
    assert not out.exists()


def test_unwritable_paths_corrupt_and_locked_indexes_are_one_line_errors(tmp_path):
    (tmp_path / "spec.toml").write_text(TINY)
    (tmp_path / "file").write_text("x")
    one_error_line(cli("run", "spec.toml", "--out", "file/sub", cwd=tmp_path))
    one_error_line(cli("run", "spec.toml", "--out", "/proc/collapselab-out", cwd=tmp_path))
    one_error_line(cli("run", "spec.toml", "-w", "/proc/collapselab-ws", cwd=tmp_path))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "store.db").write_bytes(b"this is not a database" * 100)
    for args in (("runs", "-w", "bad"), ("run", "spec.toml", "-w", "bad", "-q"), ("show", "1", "-w", "bad")):
        assert "not a valid SQLite file" in one_error_line(cli(*args, cwd=tmp_path))
    assert not [p for p in (tmp_path / "bad").iterdir() if p.name != "store.db"]  # no ghost run folder
    cl.run(TINY_SPEC, workspace=tmp_path / "ws", report=False)
    locker = sqlite3.connect(tmp_path / "ws" / "store.db")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        res = cli("run", "spec.toml", "-w", "ws", "-q", cwd=tmp_path, env={"COLLAPSELAB_SQLITE_TIMEOUT_S": "1"})
        assert "locked" in one_error_line(res)
    finally:
        locker.rollback()
        locker.close()
    assert len(cl.runs(tmp_path / "ws")) == 1


def test_listing_runs_creates_nothing(tmp_path):
    res = cli("runs", "-w", "nowhere", cwd=tmp_path)
    assert res.returncode == 0 and "no runs" in res.stdout
    assert not (tmp_path / "nowhere").exists()


def test_concurrent_ledger_writers_all_succeed(tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"content": f"r{i}", "origin": "human"}) + "\n" for i in range(50)))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "collapselab", "ledger", "add", str(records), "--db", "l.db"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(24)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 24, [o[1] for o in outs if o[1]]
    with sqlite3.connect(tmp_path / "l.db") as con:
        assert con.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 24 * 50


@pytest.mark.parametrize(
    "line, key",
    [
        ('{"content": "x", "origin": ["human"]}', "origin"),
        ('{"content": "x", "origin": "human", "quality": "high"}', "quality"),
        ('{"content": "x", "origin": "human", "quality": true}', "quality"),
        ('{"content": "x", "origin": "human", "generation": 1.5}', "generation"),
        ('{"content_hash": 7, "origin": "human"}', "content_hash"),
        ('{"content": "x", "origin": "human", "model": {"a": 1}}', "model"),
        ('{"content": "x", "origin": "human", "quality": NaN}', "not JSON"),
        ("\xff\xfe not utf-8", "UTF-8"),
        ("[" * 1000 + "]" * 1000, "nested"),
    ],
)
def test_ledger_fields_of_the_wrong_type_are_refused(tmp_path, line, key):
    (tmp_path / "r.jsonl").write_bytes(line.encode("latin-1") + b"\n")
    assert key in one_error_line(cli("ledger", "add", "r.jsonl", "--db", "l.db", cwd=tmp_path))


def test_decomposition_csv_holds_plain_numbers(tmp_path):
    (tmp_path / "spec.toml").write_text(TINY)
    res = cli("decompose", "spec.toml", "--out", "dec", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "dec" / "decomposition.csv").read_text()
    assert "np.float64" not in text
    table = pd.read_csv(tmp_path / "dec" / "decomposition.csv")
    assert table["mean"].dtype == float and np.isfinite(table["mean"]).all()


# --- exposure -----------------------------------------------------------------------------------------------------


def test_a_verifier_outside_collapselab_needs_permission(tmp_path):
    spec = {**TINY_SPEC, "curation": [{"kind": "verifier", "params": {"function": "subprocess:getoutput"}}]}
    with pytest.raises(SpecError, match="--allow-plugins"):
        cl.expand(cl.load_spec(spec))
    ok = {
        **TINY_SPEC,
        "curation": [{"kind": "verifier", "params": {"function": "collapselab.curation.examples:random_scores"}}],
    }
    assert cl.expand(cl.load_spec(ok))  # collapselab's own functions need none


class _Redirect(BaseHTTPRequestHandler):
    target = ""
    seen: list = []

    def do_POST(self):
        _Redirect.seen.append((self.server.server_port, self.headers.get("Authorization")))
        if self.server.server_port != int(_Redirect.target.rsplit(":", 1)[1].split("/")[0]):
            self.send_response(307)
            self.send_header("Location", _Redirect.target)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"choices": [{"message": {"content": "[5]"}}]}')

    def log_message(self, *args):
        pass


class _Trickle(BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(40):  # bounded: 40 bytes over 8 s at most
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def _serve(handler):
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_llm_judge_key_stays_on_the_endpoint(monkeypatch):
    from collapselab.curation.judges import LLMJudge, http_judge

    first, second = _serve(_Redirect), _serve(_Redirect)
    try:
        _Redirect.target = f"http://127.0.0.1:{second.server_port}/v1/chat/completions"
        _Redirect.seen = []
        monkeypatch.setenv("OPENAI_API_KEY", "sekret")
        params = LLMJudge.Params(endpoint=f"http://127.0.0.1:{first.server_port}/v1", retries=2, timeout=5)
        with pytest.raises(CollapselabError, match="redirect"):
            http_judge(["x"], params)
        assert [port for port, _ in _Redirect.seen] == [first.server_port]  # never followed, never retried
    finally:
        first.shutdown()
        second.shutdown()
    for bad, why in (
        ({"endpoint": "http://example.com/v1"}, "loopback"),
        ({"endpoint": "https://u:p@example.com/v1"}, "credentials"),
        ({"endpoint": "ftp://127.0.0.1/v1"}, "http"),
        ({"endpoint": "https://example.com/v1", "api_key_env": "AWS_SECRET_ACCESS_KEY"}, "may send only"),
    ):
        spec = {
            **TINY_SPEC,
            "data": {"source": "austen", "n": 50},
            "model": {"family": "ngram"},
            "curation": [{"kind": "llm-judge", "params": bad}],
        }
        with pytest.raises(SpecError, match=why):
            cl.expand(cl.load_spec(spec))


def test_llm_judge_timeout_bounds_a_trickling_reply():
    from collapselab.curation.judges import LLMJudge, http_judge

    server = _serve(_Trickle)
    try:
        params = LLMJudge.Params(endpoint=f"http://127.0.0.1:{server.server_port}/v1", retries=0, timeout=1)
        started = time.perf_counter()
        with pytest.raises(CollapselabError, match="timeout|Timeout"):
            http_judge(["x"], params)
        assert time.perf_counter() - started < 4
    finally:
        server.shutdown()


def test_synthesized_csv_cells_cannot_be_formulas(tmp_path):
    rng = np.random.default_rng(0)
    real = pd.DataFrame({"x": rng.normal(size=300), "cmd": rng.choice(["=1+1", "+SUM(A1)", "-2+3", "@x", "ok"], 300)})
    real.to_csv(tmp_path / "real.csv", index=False)
    res = cli("synthesize", "--data", "real.csv", "--rows", "200", "--out", "s.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    synth = pd.read_csv(tmp_path / "s.csv")
    assert not synth["cmd"].str.match(r"^[=+\-@]").any()
    assert synth["cmd"].str.startswith("'=").any() and (synth["x"] < 0).any()  # numbers stay numbers


# --- what a new user trips on -----------------------------------------------------------------------------------


def test_relative_paths_in_a_spec_mean_beside_the_spec(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    words = " ".join(f"w{int(i)}" for i in np.random.default_rng(0).zipf(1.5, 3000) % 200)
    (folder / "corpus.txt").write_text(words)
    (folder / "spec.toml").write_text(
        "generations = 2\nreplicates = 2\n[data]\nsource = 'text-file'\nn = 20\nheldout = 5\n"
        "params = { path = 'corpus.txt', block = 8 }\n[model]\nfamily = 'ngram'\n"
    )
    res = cli("run", "project/spec.toml", "--out", "o", "-q", "--no-report", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    saved = (tmp_path / "o" / "spec.toml").read_text()
    assert str(folder / "corpus.txt") in saved
    (tmp_path / "elsewhere").mkdir()
    res = cli(
        "run", str(tmp_path / "o" / "spec.toml"), "--out", "again", "-q", "--no-report", cwd=tmp_path / "elsewhere"
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "elsewhere" / "again" / "summary.csv").read_bytes() == (
        tmp_path / "o" / "summary.csv"
    ).read_bytes()


def test_bad_options_are_refused_before_a_run_exists(tmp_path):
    (tmp_path / "spec.toml").write_text(TINY)
    one_error_line(cli("run", "spec.toml", "-w", "ws", "--show", "99", cwd=tmp_path))
    one_error_line(cli("run", "spec.toml", "-w", "ws", "--show", "x", cwd=tmp_path))
    one_error_line(cli("run", "spec.toml", "-w", "ws", "--executor", "ray", cwd=tmp_path))
    assert not (tmp_path / "ws").exists()  # no ghost unfinished run


def test_unfinished_runs_are_listed_and_named_as_such(tmp_path, monkeypatch):
    def stop(cell_id, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cl.run(LONG_SPEC, workspace=tmp_path / "ws", report=False, progress=stop)
    res = cli("runs", "-w", "ws", cwd=tmp_path)
    assert "unfinished" in res.stdout and "status" in res.stdout
    for verb in ("show", "report", "samples"):
        line = one_error_line(cli(verb, "1", "-w", "ws", cwd=tmp_path))
        assert "has not finished" in line and "collapselab resume 1" in line


def test_version_short_help_and_bracketed_help_text(tmp_path):
    from collapselab import __version__

    res = cli("--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == f"collapselab {__version__}"
    res = cli("run", "-h", cwd=tmp_path, env={"COLUMNS": "200"})
    assert res.returncode == 0 and "--allow-plugins" in res.stdout
    res = cli("data", "-h", cwd=tmp_path, env={"COLUMNS": "200"})
    assert "--prepare / --status" in res.stdout or "--prepare/--status" in res.stdout
    res = cli("data", "--status", cwd=tmp_path, env={"COLUMNS": "300"})
    assert "data prepare" not in res.stdout  # it once advised a verb that does not exist


def test_tables_show_the_median_beside_the_mean(tmp_path):
    (tmp_path / "spec.toml").write_text(TINY)
    res = cli("run", "spec.toml", "--out", "o", "--no-report", cwd=tmp_path, env={"COLUMNS": "200"})
    lines = res.stdout.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("│ var_ratio"))
    assert lines[i + 1].startswith("│   median")
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    median0 = summary.query("metric == 'var_ratio' and generation == 0")["median"].iloc[0]
    assert f"{median0:.4g}" in lines[i + 1]


def test_samples_prints_generated_records(tmp_path):
    (tmp_path / "spec.toml").write_text(TINY)
    cli("run", "spec.toml", "--out", "o", "--no-report", "-q", cwd=tmp_path)
    res = cli("samples", "o", "--generation", "0", "-n", "3", "--json", cwd=tmp_path)
    got = json.loads(res.stdout)
    assert got["generation"] == 0 and len(got["records"]) == 3 and got["kind"] == "continuous"
    snaps = np.load(tmp_path / "o" / "snapshots.npz")
    assert np.allclose(np.asarray(got["records"]), snaps["cell0_gen0"][:3])
    line = one_error_line(cli("samples", "o", "--generation", "9", cwd=tmp_path))
    assert "samples were kept at generations 0, 1, 2, 3" in line
    assert "allowed: 0" in one_error_line(cli("samples", "o", "--cell", "9", cwd=tmp_path))


def test_text_samples_are_decoded_to_words(tmp_path):
    try:
        cl.expand(cl.load_spec({**TINY_SPEC, "data": {"source": "austen", "n": 50}, "model": {"family": "ngram"}}))
    except InputError as e:
        pytest.skip(str(e))
    spec = {
        **TINY_SPEC,
        "generations": 2,
        "replicates": 2,
        "data": {"source": "austen", "n": 50},
        "model": {"family": "ngram"},
    }
    res = cl.run(spec, tmp_path / "o", report=False)
    got = cl.samples(res.path, limit=2)
    assert got["kind"] == "text" and all(isinstance(t, str) and len(t.split()) > 20 for t in got["records"])


def test_a_read_only_workspace_can_be_listed_and_shown(tmp_path):
    ws, mnt = tmp_path / "ws", tmp_path / "ro"
    cl.run(TINY_SPEC, workspace=ws, report=False)
    mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(ws), str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("no bind mounts here (needs root)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], capture_output=True).returncode != 0:
            pytest.skip("no read-only remount here")
        res = cli("runs", "-w", str(mnt), cwd=tmp_path)
        assert res.returncode == 0 and "finished" in res.stdout, res.stderr
        assert cli("show", "1", "-w", str(mnt), cwd=tmp_path).returncode == 0
        (tmp_path / "spec.toml").write_text(TINY)
        assert "cannot be written" in one_error_line(cli("run", "spec.toml", "-w", str(mnt), cwd=tmp_path))
        assert "cannot write there" in one_error_line(cli("run", "spec.toml", "--out", str(mnt / "o"), cwd=tmp_path))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_the_frontier_says_what_it_measures(tmp_path):
    """It once said "the median chain stays healthy" of a cell whose median chain reached early collapse at
    generation 2: the frontier is about the share of healthy chains at each generation, and says so."""
    spec = {
        "name": "phase",
        "generations": 12,
        "replicates": 200,
        "data": {"source": "gaussian", "n": 20},
        "model": {"family": "gaussian"},
        "policy": {"kind": "mix", "real_fraction": 0.0},
        "sweep": {"data.n": [10, 100], "policy.real_fraction": [0.0, 0.5, 0.9]},
    }
    html = (cl.run(spec, tmp_path / "p").path / "report.html").read_text()
    sentences = re.findall(r"<li>data.n = \d+: (.*?)</li>", html)
    assert sentences and all("half of the chains" in t and "median chain" not in t for t in sentences)


# --- checkpoints by time -------------------------------------------------------------------------------------


def _cell(policy):
    from collapselab.engine.plan import expand

    return expand(cl.load_spec({**LONG_SPEC, "policy": policy}))[0]


@pytest.mark.parametrize("policy", [{"kind": "replace"}, {"kind": "accumulate"}], ids=lambda p: p["kind"])
def test_checkpoints_are_written_in_blocks_by_time_and_resume_bit_for_bit(tmp_path, monkeypatch, policy):
    """A clock that ticks once per look: with a 3-tick interval, a block every few generations. The run is cut at
    generation 11 (the pending generations are written as it stops), its newest block's files are corrupted, and
    the resumed cell is the uncut one, to the bit."""
    import collapselab.engine.checkpoints as ck
    from collapselab.engine.loop import run_cell

    cell = _cell(policy)
    whole = run_cell(cell, 3)
    ticks = iter(range(10**6))
    monkeypatch.setattr(ck.time, "monotonic", lambda: float(next(ticks)))
    monkeypatch.setenv("COLLAPSELAB_CHECKPOINT_SECONDS", "3")

    def cut(cell_id, done, total):
        if done == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, 3, cut, checkpoints=tmp_path)
    manifests = [json.loads(p.read_text()) for p in tmp_path.glob("manifest-*.json")]
    spans = [(m["first"], m["generation"]) for m in sorted(manifests, key=lambda m: m["generation"])]
    assert spans[0][0] == 0 and spans[-1][1] == 10 and len(spans) < 11  # blocks of several generations
    assert all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:]))
    pools = sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("pool-*.npz"))
    if policy["kind"] == "replace":  # the last two blocks' last pools only
        assert pools == [spans[-2][1], spans[-1][1]]
        newest = tmp_path / f"pool-{spans[-1][1]:06d}.npz"
        newest.write_bytes(newest.read_bytes()[:100])  # a torn pool: fall back on the block before
    else:
        assert pools == list(range(11))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run_cell(cell, 3, checkpoints=tmp_path)
    assert (policy["kind"] == "replace") == any("checksum mismatch" in str(w.message) for w in caught)
    for name, values in whole.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values)


def test_a_cell_shorter_than_the_interval_writes_one_block_at_its_end(tmp_path, monkeypatch):
    from collapselab.engine.loop import run_cell

    monkeypatch.setenv("COLLAPSELAB_CHECKPOINT_SECONDS", "3600")
    run_cell(_cell({"kind": "replace"}), 3, checkpoints=tmp_path)
    assert [p.name for p in sorted(tmp_path.glob("manifest-*.json"))] == ["manifest-000039.json"]
    assert json.loads((tmp_path / "manifest-000039.json").read_text())["first"] == 0


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_checkpoint_interval_is_one_line_before_anything_is_written(tmp_path, monkeypatch, value):
    monkeypatch.setenv("COLLAPSELAB_CHECKPOINT_SECONDS", value)
    with pytest.raises(cl.InputError, match=f"COLLAPSELAB_CHECKPOINT_SECONDS = '{value}': expected a number"):
        cl.run(TINY_SPEC, tmp_path / "out", report=False)
    assert not (tmp_path / "out").exists()


def test_short_cells_leave_their_checkpoints_to_the_next_write_and_an_interrupt_writes_them(tmp_path, monkeypatch):
    """Inline cells share one clock: a cell that ends within the interval writes nothing then (for a fast run,
    checkpoints are pure cost), and the interrupt of a later cell writes it with that cell's own generations."""
    monkeypatch.setenv("COLLAPSELAB_CHECKPOINT_SECONDS", "3600")
    spec = {**LONG_SPEC, "generations": 12, "sweep": {"data.n": [10, 20, 30]}}
    want = cl.run(spec, tmp_path / "whole", report=False)
    seen = {}

    def interrupt(cell_id, done, total):
        if cell_id == "1" and done == 5:
            seen["cell 0 written"] = any((out / ".checkpoints" / "cell-0").glob("manifest-*.json"))
            raise KeyboardInterrupt

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        cl.run(spec, out, report=False, progress=interrupt)
    assert seen == {"cell 0 written": False}
    folder = out / ".checkpoints"
    assert [p.name for p in (folder / "cell-0").glob("manifest-*.json")] == ["manifest-000011.json"]
    assert [p.name for p in (folder / "cell-1").glob("manifest-*.json")] == ["manifest-000004.json"]
    done = cl.resume(out, report=False)
    assert (out / "summary.csv").read_bytes() == (tmp_path / "whole" / "summary.csv").read_bytes()
    assert done.summary.equals(want.summary)
