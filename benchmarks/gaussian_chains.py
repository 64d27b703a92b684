"""Gaussian replace chains: collapselab's exact path against the per-chain NumPy loop of the paper repositories.

Target (issue 8): 10,000 chains x 1,000 generations x n = 1,000 in under 5 s. The baseline loops over chains
and generations in Python, sampling n records and refitting mean and std each time, as the published
notebooks do; it runs on a subset of chains and is compared per chain-generation.

The same case also runs the way users run it (issue 21): ``collapselab run SPEC --out DIR --no-report -q`` in a
fresh process, with checkpoints by time (the default) and after every generation (the former behaviour,
``COLLAPSELAB_CHECKPOINT_SECONDS=0``), and the command line's start-up (``collapselab --version``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import collapselab as cl
from benchmarks.common import save

CHAINS, GENERATIONS, N = 10_000, 1_000, 1_000
BASELINE_CHAINS = 20


def baseline(chains: int, generations: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((chains, generations))
    for c in range(chains):
        x = rng.normal(0.0, 1.0, n)
        for g in range(generations):
            mu, sigma = x.mean(), x.std()
            out[c, g] = sigma**2
            x = rng.normal(mu, sigma, n)
    return out


SPEC_TOML = f"""
name = "bench-gaussian"
generations = {GENERATIONS}
replicates = {CHAINS}
[data]
source = "gaussian"
n = {N}
[model]
family = "gaussian"
"""


def cli_seconds(*args: str, env: dict | None = None) -> float:
    """Wall-clock seconds of ``collapselab ARGS`` in a fresh process."""
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "collapselab", *args], check=True, capture_output=True, env={**os.environ, **(env or {})}
    )
    return time.perf_counter() - t


def cli_record() -> dict:
    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "spec.toml"
        spec.write_text(SPEC_TOML)
        run = lambda out, **env: cli_seconds(
            "run", str(spec), "--out", str(Path(d) / out), "--no-report", "-q", env=env
        )
        by_time = min(run("a"), run("b"))
        every = min(run("c", COLLAPSELAB_CHECKPOINT_SECONDS="0"), run("d", COLLAPSELAB_CHECKPOINT_SECONDS="0"))
    startup = min(cli_seconds("--version") for _ in range(5))
    return {
        "cli_run_s (checkpoints by time)": round(by_time, 2),
        "cli_target_s": 4.0,
        "cli_run_s (checkpoint every generation)": round(every, 2),
        "cli_startup_s (--version)": round(startup, 3),
        "cli_startup_target_s": 0.5,
    }


def run() -> dict:
    spec = {
        "generations": GENERATIONS,
        "replicates": CHAINS,
        "data": {"source": "gaussian", "n": N},
        "model": {"family": "gaussian"},
    }
    t = time.perf_counter()
    result = cl.run(spec, save=False)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    base = baseline(BASELINE_CHAINS, GENERATIONS, N)
    base_s = time.perf_counter() - t
    per_ours = ours / (CHAINS * GENERATIONS)
    per_base = base_s / (BASELINE_CHAINS * GENERATIONS)
    ours_var = result.summary.query("metric == 'var_ratio'")["mean"].iloc[-1]
    record = {
        "ours_s": round(ours, 2),
        "target_s": 5.0,
        "baseline_s_for_10000_chains (extrapolated)": round(per_base * CHAINS * GENERATIONS, 1),
        "speedup_per_chain_generation": round(per_base / per_ours, 1),
        "final_var_ratio_ours": round(float(ours_var), 4),
        "final_var_ratio_baseline_20_chains": round(float(base[:, -1].mean()), 4),
        "theory": round(((N - 1) / N) ** GENERATIONS, 4),
        **cli_record(),
    }
    save("gaussian_replace_exact_10k_chains_1000_generations", record)
    return record


if __name__ == "__main__":
    print(run())
