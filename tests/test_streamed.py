"""Streamed results (engine/sink.py) and replicate blocks (rng.py, engine/loop.py): statistics computed as the
generations arrive, the same bytes for any chunking, block count, executor or resume."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import collapselab as cl
from collapselab.engine import sink as sink_mod
from collapselab.engine.plan import expand
from collapselab.engine.sink import STATS, replicate_stats
from collapselab.spec import load_spec

# 1,000 chains in blocks of 300: three full blocks and one of 100
BLOCKED = {
    "generations": 12,
    "replicates": 1000,
    "replicate_block": 300,
    "data": {"source": "gaussian", "n": 15},
    "model": {"family": "gaussian"},
    "keep_replicates": True,
}


def _summary(result) -> bytes:
    return result.summary.to_csv(index=False).encode()


def test_streamed_statistics_are_those_of_the_kept_values():
    """Every statistic of summary.csv, computed as the generations came in, equals the one computed afterwards
    from all (G, R) values, bit for bit, stage shares included."""
    r = cl.run({**BLOCKED, "replicate_block": 10_000}, save=False)
    res = r.raw[0]
    assert set(res.stats) == set(res.metrics)
    for name, values in res.metrics.items():
        whole = replicate_stats(values)
        for k in STATS:
            np.testing.assert_array_equal(res.stats[name][k], whole[k], err_msg=f"{k} of {name}")


def test_rows_with_and_without_nan_do_not_depend_on_their_neighbours():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(6, 50))
    values[2, 3] = np.nan
    values[4] = np.nan
    together = replicate_stats(values)
    for g in range(6):
        alone = replicate_stats(values[g : g + 1])
        for k in STATS:
            np.testing.assert_array_equal(together[k][g : g + 1], alone[k], err_msg=f"row {g}, {k}")
    assert together["count"].tolist() == [50, 50, 49, 50, 0, 50]
    assert np.isnan(together["mean"][4]) and not np.isnan(together["mean"][2])


def test_chunk_size_changes_no_byte(monkeypatch):
    """The sink reduces generations in chunks; one generation per chunk gives the same summary and stages."""
    spec = {**BLOCKED, "keep_replicates": False}
    default = cl.run(spec, save=False)
    monkeypatch.setattr(sink_mod, "CHUNK_VALUES", 1)
    one = cl.run(spec, save=False)
    assert _summary(default) == _summary(one)
    assert default.stages.equals(one.stages)


def test_without_kept_replicates_the_cell_holds_no_chain_values():
    r = cl.run({**BLOCKED, "keep_replicates": False}, save=False)
    assert r.raw[0].metrics == {}
    assert r.raw[0].stats["var_ratio"]["mean"].shape == (12,)
    assert r.raw[0].first_stage["early"].shape == (1000,)
    kept = cl.run(BLOCKED, save=False)
    assert _summary(r) == _summary(kept)


def test_keep_replicates_auto_keeps_small_cells_only():
    small = expand(load_spec({**BLOCKED, "keep_replicates": "auto"}))[0]
    from collapselab.engine.loop import CellRun

    assert CellRun(small, 0).sink.keep
    big = expand(load_spec({**BLOCKED, "keep_replicates": "auto", "generations": 5000}))[0]  # 5·10^6 > 4·10^6
    assert not CellRun(big, 0).sink.keep


def test_block_zero_is_the_cell_without_blocks_and_blocks_are_independent():
    """Block 0 keeps the address a cell of that many chains always had; block b's chains are the same whatever
    the number of blocks after it."""
    whole = cl.run(BLOCKED, save=False).raw[0].metrics
    first = cl.run({**BLOCKED, "replicates": 300}, save=False).raw[0].metrics
    two = cl.run({**BLOCKED, "replicates": 600}, save=False).raw[0].metrics
    for name in ("var_ratio", "mean_sq_drift", "stage_late"):
        np.testing.assert_array_equal(whole[name][:, :300], first[name])
        np.testing.assert_array_equal(whole[name][:, :600], two[name])
    # and the blocks draw different numbers: no two blocks' chains repeat each other
    assert not np.array_equal(whole["var_ratio"][:, :100], whole["var_ratio"][:, 300:400])


def test_blocked_cell_agrees_with_the_closed_form():
    """4,000 chains in 7 blocks (the last of 400): var_ratio within 4 SE of ((n-1)/n)^g at every generation."""
    spec = {**BLOCKED, "replicates": 4000, "replicate_block": 600, "generations": 30, "keep_replicates": False}
    r = cl.run(spec, save=False)
    s = r.summary[r.summary.metric == "var_ratio"]
    expected = r.theory[r.theory.metric == "var_ratio"]["expected"].to_numpy()
    z = (s["mean"].to_numpy() - expected) / s["se"].to_numpy()
    assert np.all(np.abs(z) < 4), z


@pytest.mark.parametrize("executor,workers", [("processes", 2), ("processes", 3), ("dask", 2)])
def test_blocked_summary_is_byte_identical_on_every_executor(executor, workers, tmp_path):
    spec = {**BLOCKED, "keep_replicates": False, "sweep": {"data.n": [15, 40]}}
    inline = cl.run(spec, out=tmp_path / "inline", report=False)
    other = cl.run(spec, out=tmp_path / executor, report=False, executor=executor, workers=workers)
    for name in ("summary.csv", "stages.csv", "theory.csv"):
        assert (inline.path / name).read_bytes() == (other.path / name).read_bytes(), name


def test_blocked_cell_resumes_byte_identical_after_sigkill(tmp_path):
    """A 4-block cell killed mid-run (checkpoints after every generation) resumes to the same bytes."""
    spec = tmp_path / "spec.toml"
    body = load_spec({**BLOCKED, "generations": 400, "keep_replicates": False, "name": "blocked"}).to_toml()
    spec.write_text(body)
    whole = cl.run(str(spec), out=tmp_path / "whole", report=False)
    script = (
        "import os, collapselab as cl\n"
        "os.environ['COLLAPSELAB_CHECKPOINT_SECONDS'] = '0'\n"
        f"cl.run({str(spec)!r}, out={str(tmp_path / 'cut')!r}, report=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    manifest = tmp_path / "cut" / ".checkpoints" / "cell-0" / "manifest-000030.json"
    deadline = time.monotonic() + 120
    while not manifest.exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "cut" / "summary.csv").exists()
    resumed = cl.resume(tmp_path / "cut", report=False, workspace=tmp_path / "ws")
    for name in ("summary.csv", "stages.csv", "theory.csv"):
        assert (whole.path / name).read_bytes() == (resumed.path / name).read_bytes(), name


def test_kept_replicates_are_written_and_read_back_memory_mapped(tmp_path):
    r = cl.run({**BLOCKED, "generations": 5}, out=tmp_path / "run", report=False)
    kept = r.raw[0].metrics["var_ratio"]
    assert isinstance(kept, np.memmap) and kept.shape == (5, 1000)
    saved = cl.load_run(tmp_path / "run", workspace=tmp_path / "ws")["replicates"]["0"]
    np.testing.assert_array_equal(saved["var_ratio"], kept)
    assert set(saved) == set(r.raw[0].metrics)
    auto = cl.run({**BLOCKED, "generations": 5, "keep_replicates": "auto"}, out=tmp_path / "auto", report=False)
    assert auto.raw[0].metrics and not (tmp_path / "auto" / "replicates").exists()  # in memory, not on disk


def test_reducing_on_a_thread_gives_the_same_bytes_as_in_line(monkeypatch):
    """Large chunks are reduced on a thread while the loop goes on; the last, smaller chunk must queue behind the
    others (it once overtook them). Every chunk on the thread, or none, gives the same statistics and crossings."""
    spec = {**BLOCKED, "generations": 23, "keep_replicates": False}
    monkeypatch.setattr(sink_mod, "CHUNK_VALUES", 5 * 1000)  # chunks of 5 generations: the last one of 3
    monkeypatch.setattr(sink_mod, "THREADED_VALUES", 1 << 62)
    inline = cl.run(spec, save=False)
    monkeypatch.setattr(sink_mod, "THREADED_VALUES", 15 * 5 * 1000)  # full chunks on the thread, the last in line
    mixed = cl.run(spec, save=False)
    monkeypatch.setattr(sink_mod, "THREADED_VALUES", 0)
    threaded = cl.run(spec, save=False)
    for other in (mixed, threaded):
        assert _summary(other) == _summary(inline)
        for k, v in inline.raw[0].first_stage.items():
            np.testing.assert_array_equal(other.raw[0].first_stage[k], v)
    assert inline.summary.generation.max() == 22


def test_dry_run_prints_each_cells_estimate_and_writes_nothing(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        load_spec({**BLOCKED, "keep_replicates": "auto", "sweep": {"replicates": [1000, 100_000]}}).to_toml()
    )
    env = {**__import__("os").environ, "COLUMNS": "160"}
    res = subprocess.run(
        [sys.executable, "-m", "collapselab", "run", str(spec), "--dry-run", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "100,000" in res.stdout and "334" in res.stdout  # 100,000 chains in 334 blocks of 300
    assert "Nothing was run or written" in res.stdout
    assert not (tmp_path / "o").exists() and not (tmp_path / "collapselab-runs").exists()


def test_estimate_grows_with_the_cell_and_refuses_what_cannot_fit(monkeypatch):
    table = cl.estimate({**BLOCKED, "keep_replicates": "auto", "sweep": {"generations": [10, 40]}})
    small, long = table.itertuples(index=False)
    assert (small.blocks, small.keeps_replicates) == (4, True)
    assert long.memory_bytes > small.memory_bytes and long.seconds > small.seconds > 0
    # streamed: a 10^5 x 10^4 Gaussian cell needs far less than its 10^9 chain-generations of values
    big = cl.estimate(
        {
            **BLOCKED,
            "replicates": 100_000,
            "generations": 10_000,
            "keep_replicates": "auto",
            "replicate_block": 10_000,
            "data": {"source": "gaussian", "n": 1000},
        },
        calibrate=False,
    )
    assert big.memory_bytes[0] < 1 << 30 and not big.keeps_replicates[0]
    monkeypatch.setenv("COLLAPSELAB_MEMORY_LIMIT_MB", "50")
    with pytest.raises(cl.SpecError, match="needs at least .*keep_replicates = false"):
        cl.estimate({**BLOCKED, "replicates": 100_000, "generations": 1000}, calibrate=False)
