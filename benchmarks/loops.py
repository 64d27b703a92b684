"""Categorical, Poisson and KDE chains against the loops users write today (per chain, per generation).

Categorical and Poisson: NumPy loops as in the paper repositories (sample n records, refit by counting or
averaging). KDE: scikit-learn's KernelDensity fit/sample loop. Baselines run on a subset of the chains and are
compared per chain-generation.
"""

from __future__ import annotations

import time

import numpy as np

import collapselab as cl
from benchmarks.common import save

GENERATIONS = 200


def _ours(spec: dict) -> float:
    t = time.perf_counter()
    cl.run(spec, save=False)
    return time.perf_counter() - t


def categorical_loop(chains, n, K, seed=0):
    rng = np.random.default_rng(seed)
    p0 = np.arange(1, K + 1, dtype=float) ** -1.1
    p0 /= p0.sum()
    for _ in range(chains):
        p = p0
        for _ in range(GENERATIONS):
            x = rng.choice(K, size=n, p=p)
            p = np.bincount(x, minlength=K) / n


def poisson_loop(chains, n, rate, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(chains):
        lam = rate
        for _ in range(GENERATIONS):
            lam = rng.poisson(lam, size=n).mean()


def kde_loop(chains, n, bandwidth, seed=0):
    from sklearn.neighbors import KernelDensity

    rng = np.random.default_rng(seed)
    for _chain in range(chains):
        x = rng.standard_normal((n, 1))
        for _ in range(GENERATIONS):
            x = KernelDensity(bandwidth=bandwidth).fit(x).sample(n, random_state=int(rng.integers(2**31)))


def run() -> dict:
    record = {}
    cases = [
        (
            "categorical",
            {"source": "zipf", "n": 1000, "params": {"categories": 100}},
            {"family": "categorical"},
            lambda c: categorical_loop(c, 1000, 100),
        ),
        (
            "poisson",
            {"source": "poisson", "n": 1000, "params": {"rate": 2.0}},
            {"family": "poisson"},
            lambda c: poisson_loop(c, 1000, 2.0),
        ),
        (
            "kde",
            {"source": "gaussian", "n": 500},
            {"family": "kde", "params": {"bandwidth": 0.2}},
            lambda c: kde_loop(c, 500, 0.2),
        ),
    ]
    for name, data, model, loop in cases:
        chains = 2000 if name != "kde" else 200
        base_chains = 20 if name != "kde" else 5
        ours = _ours({"generations": GENERATIONS, "replicates": chains, "data": data, "model": model})
        t = time.perf_counter()
        loop(base_chains)
        base = time.perf_counter() - t
        record[f"{name}_ours_s_{chains}_chains"] = round(ours, 2)
        record[f"{name}_speedup_per_chain_generation"] = round((base / base_chains) / (ours / chains), 1)
    save("categorical_poisson_kde_vs_loops", record)
    return record


if __name__ == "__main__":
    print(run())
