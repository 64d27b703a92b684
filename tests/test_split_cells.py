"""One cell's replicate blocks split across Dask workers (engine/blocks.py): the same bytes as one process, for any
number of workers and after a SIGKILL mid-run (issue 21, item 3)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import collapselab as cl
from collapselab.engine.blocks import CHUNK_ENV, groups_of
from collapselab.engine.plan import expand
from collapselab.spec import load_spec

# 2,500 chains in blocks of 1,000 (the last of 500): three blocks, not a multiple of the block size
SPLIT = {
    "name": "split",
    "generations": 60,
    "replicates": 2500,
    "replicate_block": 1000,
    "seed": 4,
    "data": {"source": "gaussian", "n": 30},
    "model": {"family": "gaussian"},
    "policy": {"kind": "replace"},
    "keep_replicates": True,
}
FILES = ("summary.csv", "stages.csv", "theory.csv")


def test_groups_cover_the_blocks_in_order():
    cell = expand(load_spec({**SPLIT, "replicates": 10_500}))[0]  # 11 blocks
    for workers in (1, 2, 3, 4, 11, 50):
        groups = groups_of(cell, workers)
        assert len(groups) == min(workers, 11)
        assert [b for g in groups for b in g] == list(range(11))
        sizes = [len(g) for g in groups]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("policy", [{"kind": "replace"}, {"kind": "accumulate"}])
def test_a_split_cell_gives_the_same_bytes_on_every_executor(tmp_path, monkeypatch, policy):
    monkeypatch.setenv(CHUNK_ENV, "25000")  # 10 generations per chunk: six chunks, and groups that wait for the merge
    spec = {**SPLIT, "policy": policy}
    inline = cl.run(spec, out=tmp_path / "inline", report=False)
    runs = {
        "processes": {"executor": "processes", "workers": 2},
        "dask-1": {"executor": "dask", "workers": 1},
        "dask-2": {"executor": "dask", "workers": 2},
        "dask-3": {"executor": "dask", "workers": 3},
    }
    for name, kw in runs.items():
        other = cl.run(spec, out=tmp_path / name, report=False, **kw)
        for f in FILES:
            assert (inline.path / f).read_bytes() == (other.path / f).read_bytes(), (name, f)
        for metric, values in inline.raw[0].metrics.items():
            np.testing.assert_array_equal(values, other.raw[0].metrics[metric], err_msg=f"{name}: {metric}")
        for stage, first in inline.raw[0].first_stage.items():
            np.testing.assert_array_equal(first, other.raw[0].first_stage[stage], err_msg=f"{name}: {stage}")
        assert not list((other.path / ".checkpoints").glob("**/chunk-*.npz"))  # merged and cleared


def test_a_split_cell_resumes_byte_identical_after_sigkill(tmp_path):
    """The run (client and workers, one process group) is killed once the client has merged some chunks and the
    groups have checkpointed; resumed on two workers it gives the bytes of an uninterrupted one-process run."""
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(load_spec({**SPLIT, "generations": 400, "keep_replicates": False}).to_toml())
    env = {**os.environ, CHUNK_ENV: "25000", "COLLAPSELAB_CHECKPOINT_SECONDS": "0"}
    whole = cl.run(str(spec_path), out=tmp_path / "whole", report=False)
    script = (
        "import collapselab as cl\n"
        "if __name__ == '__main__':\n"
        f"    cl.run({str(spec_path)!r}, out={str(tmp_path / 'cut')!r}, report=False, executor='dask', workers=2)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    merged = tmp_path / "cut" / ".checkpoints" / "cell-0" / "merged.npz"
    deadline = time.monotonic() + 240
    try:
        while not merged.exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # mid-way through later generations
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "cut" / "summary.csv").exists()
    states = list((tmp_path / "cut" / ".checkpoints" / "cell-0").glob("group-*/state/manifest-*.json"))
    assert states, "the groups had checkpointed"
    os.environ[CHUNK_ENV] = "25000"
    try:
        resumed = cl.resume(tmp_path / "cut", report=False, workspace=tmp_path / "ws", executor="dask", workers=2)
    finally:
        del os.environ[CHUNK_ENV]
    for f in FILES:
        assert (whole.path / f).read_bytes() == (resumed.path / f).read_bytes(), f
