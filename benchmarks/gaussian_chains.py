"""Gaussian replace chains: collapselab's exact path against the per-chain NumPy loop of the paper repositories.

Target (issue 8): 10,000 chains x 1,000 generations x n = 1,000 in under 5 s. The baseline loops over chains
and generations in Python, sampling n records and refitting mean and std each time, as the published
notebooks do; it runs on a subset of chains and is compared per chain-generation.
"""

from __future__ import annotations

import time

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
    ours_var = result.raw[0].metrics["var_ratio"][-1].mean()
    record = {
        "ours_s": round(ours, 2),
        "target_s": 5.0,
        "baseline_s_for_10000_chains (extrapolated)": round(per_base * CHAINS * GENERATIONS, 1),
        "speedup_per_chain_generation": round(per_base / per_ours, 1),
        "final_var_ratio_ours": round(float(ours_var), 4),
        "final_var_ratio_baseline_20_chains": round(float(base[:, -1].mean()), 4),
        "theory": round(((N - 1) / N) ** GENERATIONS, 4),
    }
    save("gaussian_replace_exact_10k_chains_1000_generations", record)
    return record


if __name__ == "__main__":
    print(run())
