"""Executors, resume after SIGKILL, corrupt checkpoints, and concurrent writers to the store."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SWEEP = """
name = "scale"
generations = 12
replicates = 300
seed = 5
[data]
source = "gaussian"
n = 20
[model]
family = "gaussian"
[sweep]
policy = [{ kind = "replace" }, { kind = "accumulate" }, { kind = "mix", real_fraction = 0.2 }, { kind = "accumulate-subsample" }]
"""


def cli(*args, cwd, **kw):
    return subprocess.run(
        [sys.executable, "-m", "collapselab", *args], cwd=cwd, capture_output=True, text=True, timeout=300, **kw
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process result every executor must reproduce byte for byte."""
    d = tmp_path_factory.mktemp("ref")
    (d / "spec.toml").write_text(SWEEP)
    res = cli("run", "spec.toml", "--out", "inline", "--executor", "inline", "--no-report", "-q", cwd=d)
    assert res.returncode == 0, res.stderr
    return d, (d / "inline" / "summary.csv").read_bytes()


def test_process_pool_matches_inline(reference):
    d, want = reference
    res = cli("run", "spec.toml", "--out", "procs", "--workers", "2", "--no-report", "-q", cwd=d)
    assert res.returncode == 0, res.stderr
    assert (d / "procs" / "summary.csv").read_bytes() == want


@pytest.mark.cluster
def test_dask_local_cluster_matches_inline(reference):
    d, want = reference
    res = cli("run", "spec.toml", "--out", "dask", "--executor", "dask", "--workers", "2", "--no-report", "-q", cwd=d)
    assert res.returncode == 0, res.stderr
    assert (d / "dask" / "summary.csv").read_bytes() == want


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_workers(address: str, n: int, timeout: float = 60) -> None:
    from distributed import Client

    deadline = time.time() + timeout
    while True:
        try:
            with Client(address, timeout="5s") as c:
                if len(c.scheduler_info()["workers"]) == n:
                    return
        except OSError:
            pass
        assert time.time() < deadline, "the dask workers did not start"
        time.sleep(0.5)


def listening_addresses(pids: set[int]) -> set[str]:
    """The IP addresses on which these processes listen (TCP, IPv4 and IPv6), read from /proc."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else []:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] != "0A" or parts[9] not in inodes:  # 0A: LISTEN
                continue
            hexaddr = parts[1].split(":")[0]
            if len(hexaddr) == 8:
                out.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(hexaddr)[::-1]))
            else:
                raw = bytes.fromhex(hexaddr)
                out.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))))
    return out


def _children(pid: int) -> set[int]:
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out |= {int(p.name)} | _children(int(p.name))
    return out


@pytest.mark.cluster
def test_local_cluster_listens_on_loopback_only():
    from distributed import Client

    from collapselab.executors import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        addresses = listening_addresses({os.getpid(), *_children(os.getpid())})
    assert addresses and addresses <= {"127.0.0.1"}, addresses


@pytest.mark.cluster
def test_dask_scheduler_and_two_workers_as_separate_processes(reference, tmp_path):
    """Workers started in another folder: the run's checkpoints reach them as an absolute path (nothing lands in
    their working folder), and every server binds loopback alone."""
    d, want = reference
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    elsewhere = tmp_path / "workers-cwd"
    elsewhere.mkdir()
    procs = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=elsewhere,
        )
    ]
    try:
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--dashboard-address",
                        "127.0.0.1:0",
                        "--name",
                        f"w{i}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    cwd=elsewhere,
                )
            )
        _wait_for_workers(address, 2)
        pids = {p.pid for p in procs} | {c for p in procs for c in _children(p.pid)}
        assert listening_addresses(pids) <= {"127.0.0.1"}
        res = cli("run", "spec.toml", "--out", "remote", "--scheduler", address, "--no-report", "-q", cwd=d)
        assert res.returncode == 0, res.stderr
        assert (d / "remote" / "summary.csv").read_bytes() == want
        assert list(elsewhere.iterdir()) == [] or all(p.name.startswith("dask-") for p in elsewhere.iterdir())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.cluster
def test_a_dask_run_whose_workers_are_all_gone_fails_with_one_line(tmp_path):
    """A scheduler without workers: the run gives up after COLLAPSELAB_DASK_NO_WORKERS_S with one line and keeps
    its folder for resume; an unreachable scheduler is one line too."""
    (tmp_path / "spec.toml").write_text(SWEEP)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched = subprocess.Popen(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        deadline = time.time() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.time() < deadline
            time.sleep(0.3)
        started = time.time()
        res = cli(
            "run",
            "spec.toml",
            "--out",
            "x",
            "--scheduler",
            address,
            "-q",
            cwd=tmp_path,
            env={**os.environ, "COLLAPSELAB_DASK_NO_WORKERS_S": "3"},
        )
        assert res.returncode == 1 and time.time() - started < 120
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no Dask worker has been alive"), res.stderr
        assert (tmp_path / "x" / "spec.toml").is_file()  # kept: resume finishes it when workers are back
        res = cli("resume", "x", "--executor", "inline", "-q", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        sched.terminate()
        sched.wait(timeout=30)
        res = cli("run", "spec.toml", "--out", "y", "--scheduler", address, "-q", cwd=tmp_path)
        assert res.returncode == 2 and res.stderr.startswith("error: --scheduler") and len(res.stderr.splitlines()) == 1
    finally:
        sched.kill()
        sched.wait(timeout=30)


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    (tmp_path / "spec.toml").write_text(SWEEP)
    port = _free_port()
    res = cli("run", "spec.toml", "--out", "x", "--scheduler", f"tcp://127.0.0.1:{port}", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith(f"error: --scheduler tcp://127.0.0.1:{port}: cannot connect")
    res = cli("run", "spec.toml", "--out", "x", "--executor", "ray", cwd=tmp_path)
    assert res.returncode == 2 and "--executor 'ray': allowed: inline, processes, dask" in res.stderr


LONG = """
name = "long"
generations = 150
replicates = 500
seed = 2
[data]
source = "gaussian"
n = 20
[model]
family = "gaussian"
[sweep]
policy = [{ kind = "replace" }, { kind = "accumulate" }, { kind = "fresh", real_fraction = 0.1 }]
"""


def _kill_mid_run(tmp_path: Path, args: list[str], run_dir: Path, at_generation: int = 5) -> None:
    """Start a run, SIGKILL it once cell 0 has checkpointed ``at_generation`` (so mid-way through a later one)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "collapselab", *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    manifest = run_dir / ".checkpoints" / "cell-0" / f"manifest-{at_generation:06d}.json"
    deadline = time.time() + 120
    while not manifest.exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.csv").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    (d / "spec.toml").write_text(LONG)
    res = cli("run", "spec.toml", "--out", "whole", "--no-report", "-q", cwd=d)
    assert res.returncode == 0, res.stderr
    return (d / "whole" / "summary.csv").read_bytes()


def test_sigkill_then_resume_is_byte_identical(tmp_path, uninterrupted):
    (tmp_path / "spec.toml").write_text(LONG)
    _kill_mid_run(tmp_path, ["run", "spec.toml", "--out", "cut", "--no-report"], tmp_path / "cut")
    res = cli("resume", "cut", "--no-report", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cut" / "summary.csv").read_bytes() == uninterrupted
    assert not (tmp_path / "cut" / ".checkpoints").exists()
    again = cli("resume", "cut", cwd=tmp_path)
    assert again.returncode == 2 and "already finished" in again.stderr


def test_a_corrupt_checkpoint_restarts_that_cell_from_its_last_good_generation(tmp_path, uninterrupted):
    (tmp_path / "spec.toml").write_text(LONG)
    _kill_mid_run(tmp_path, ["run", "spec.toml", "--out", "cut", "--no-report"], tmp_path / "cut", at_generation=8)
    folder = tmp_path / "cut" / ".checkpoints" / "cell-0"
    last = max(int(p.stem.split("-")[1]) for p in folder.glob("manifest-*.json"))
    pool = folder / f"pool-{last:06d}.npz"
    pool.write_bytes(pool.read_bytes()[: pool.stat().st_size // 2])  # truncated
    res = cli("resume", "cut", "--no-report", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"pool-{last:06d}.npz skipped: checksum mismatch (corrupt or truncated)" in res.stderr
    assert (tmp_path / "cut" / "summary.csv").read_bytes() == uninterrupted


def test_killed_workspace_run_is_listed_unfinished_and_resumed_by_id(tmp_path, uninterrupted):
    (tmp_path / "spec.toml").write_text(LONG)
    _kill_mid_run(tmp_path, ["run", "spec.toml", "--no-report"], tmp_path / "collapselab-runs" / "0001-long")
    listed = json.loads(cli("runs", "--json", cwd=tmp_path).stdout)
    assert [(r["id"], r["status"]) for r in listed] == [(1, "unfinished")]
    res = cli("resume", "1", "--workers", "2", "--no-report", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "collapselab-runs" / "0001-long" / "summary.csv").read_bytes() == uninterrupted
    listed = json.loads(cli("runs", "--json", cwd=tmp_path).stdout)
    assert [(r["id"], r["status"]) for r in listed] == [(1, "finished")]
    con = sqlite3.connect(tmp_path / "collapselab-runs" / "store.db")
    n_rows = con.execute("SELECT COUNT(*) FROM summary WHERE run_id = 1").fetchone()[0]
    assert n_rows == uninterrupted.count(b"\n") - 1


def test_concurrent_runs_share_the_store_without_losing_or_duplicating_rows(tmp_path):
    (tmp_path / "spec.toml").write_text(SWEEP)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "collapselab", "run", "spec.toml", "--no-report", "-q"],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    con = sqlite3.connect(tmp_path / "collapselab-runs" / "store.db")
    runs = con.execute("SELECT id, path FROM runs ORDER BY id").fetchall()
    assert [r[0] for r in runs] == [1, 2, 3, 4] and len({r[1] for r in runs}) == 4
    counts = con.execute(
        "SELECT run_id, COUNT(*), COUNT(DISTINCT cell || generation || metric) FROM summary GROUP BY run_id"
    ).fetchall()
    expected = (Path(runs[0][1]) / "summary.csv").read_text().count("\n") - 1
    assert counts == [(i, expected, expected) for i in (1, 2, 3, 4)]


def test_plain_progress_lines_when_not_on_a_terminal(monkeypatch):
    from rich.console import Console

    import collapselab.cli.runs as cli_mod

    console = Console(stderr=True, force_terminal=False, record=True, width=200)
    monkeypatch.setattr(cli_mod, "err_console", console)
    with cli_mod._Progress("x", {"0": 4, "1": 4}, silent=False, interval=0.0) as progress:
        for g in range(1, 5):
            progress("0", g, 4)
        progress("1", 4, 4)
    text = console.export_text()
    assert "progress: cells 0/2, generations 1/8 (12%)" in text
    assert "progress: cells 2/2, generations 8/8 (100%)" in text and "ETA 0 s" in text


def test_progress_counts_each_cells_own_generations(monkeypatch):
    """Sweep cases with different generations (preset:mitigations: 60 and 15) end at 100%, not 675/900."""
    from rich.console import Console

    import collapselab.cli.runs as cli_mod

    console = Console(stderr=True, force_terminal=False, record=True, width=200)
    monkeypatch.setattr(cli_mod, "err_console", console)
    with cli_mod._Progress("x", {"0": 60, "1": 15}, silent=False, interval=0.0) as progress:
        progress("0", 60, 60)
        progress("1", 15, 15)
    assert "progress: cells 2/2, generations 75/75 (100%)" in console.export_text()


@pytest.mark.cluster
def test_a_lost_scheduler_is_one_line_and_the_run_resumes(tmp_path, uninterrupted):
    (tmp_path / "spec.toml").write_text(LONG)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    sched = subprocess.Popen(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
    )
    worker = subprocess.Popen(
        [
            str(BIN / "dask"),
            "worker",
            address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--dashboard-address",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
    )
    try:
        _wait_for_workers(address, 1)
        deadline = time.time() + 120
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collapselab",
                "run",
                "spec.toml",
                "--out",
                "cut",
                "-q",
                "--scheduler",
                address,
                "--no-report",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        manifest = tmp_path / "cut" / ".checkpoints" / "cell-0" / "manifest-000003.json"
        while not manifest.exists():
            assert run.poll() is None and time.time() < deadline
            time.sleep(0.02)
        sched.kill()
        _, err = run.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert run.returncode == 1 and len(lines) == 1 and "lost the Dask scheduler" in lines[0], err
    finally:
        for p in (sched, worker):
            p.kill()
            p.wait(timeout=30)
    res = cli("resume", "cut", "--executor", "inline", "-q", "--no-report", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cut" / "summary.csv").read_bytes() == uninterrupted
