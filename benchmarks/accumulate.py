"""Gaussian and linear-regression chains under ``accumulate`` (Gerstgrasser et al. 2024): collapselab's exact path
against the loop the papers' code runs (per chain: keep every generation's records, refit on all of them, sample
n more), at d = 1, 10 and 31; ``accumulate-subsample`` (refit on n of the accumulated records, drawn without
replacement) against the same loop with that draw; and collapselab's time at G = 100, 200 and 400 generations,
which must grow linearly in G (one running merged statistic), not quadratically (every pool merged again each
generation).

The peer loop runs on a subset of the chains and is compared per chain-generation.
"""

from __future__ import annotations

import time

import numpy as np

import collapselab as cl
from benchmarks.common import save

N = 100


def _spec(source: str, params: dict, family: str, chains: int, generations: int) -> dict:
    return {
        "generations": generations,
        "replicates": chains,
        "seed": 0,
        "data": {"source": source, "n": N, "params": params},
        "model": {"family": family},
        "policy": {"kind": "accumulate"},
    }


def gaussian_spec(d: int, chains: int, generations: int) -> dict:
    return _spec("gaussian", {"mean": [0.0] * d}, "gaussian", chains, generations)


def subsample_spec(d: int, chains: int, generations: int) -> dict:
    spec = gaussian_spec(d, chains, generations)
    return {**spec, "policy": {"kind": "accumulate-subsample"}}


def linear_spec(d: int, chains: int, generations: int) -> dict:
    return _spec("linear", {"dim": d}, "linear", chains, generations)


def _seconds(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def _ours(spec: dict) -> float:
    return _seconds(lambda: cl.run(spec, save=False))


def accumulate_loop(chains: int, d: int, generations: int, seed: int = 0) -> None:
    """The peers' loop: every record kept, the Gaussian refitted on all of them each generation."""
    rng = np.random.default_rng(seed)
    for _ in range(chains):
        data = rng.standard_normal((N, d))
        for _ in range(generations):
            mean, cov = data.mean(axis=0), np.atleast_2d(np.cov(data, rowvar=False, bias=True))
            data = np.concatenate([data, rng.multivariate_normal(mean, cov, size=N)])


def subsample_loop(chains: int, d: int, generations: int, seed: int = 0) -> None:
    """The peers' accumulate-subsample: every record kept, the Gaussian refitted on n of them drawn anew."""
    rng = np.random.default_rng(seed)
    for _ in range(chains):
        data = rng.standard_normal((N, d))
        train = data
        for _ in range(generations):
            mean, cov = train.mean(axis=0), np.atleast_2d(np.cov(train, rowvar=False, bias=True))
            data = np.concatenate([data, rng.multivariate_normal(mean, cov, size=N)])
            train = data[rng.choice(len(data), N, replace=False)]


def linear_loop(chains: int, d: int, generations: int, seed: int = 0) -> None:
    """The peers' linear chain: one design, every generation's labels kept, OLS on all rows each generation."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, d))
    w = np.full(d, 1 / np.sqrt(d))
    for _ in range(chains):
        xs, ys = [X], [X @ w + rng.standard_normal(N)]
        for _ in range(generations):
            fit, *_ = np.linalg.lstsq(np.concatenate(xs), np.concatenate(ys), rcond=None)
            xs.append(X)
            ys.append(X @ fit + rng.standard_normal(N))


def _speedups(record: dict, prefix: str, spec_for, peer_loop, cases, generations: int = 100) -> None:
    """Per chain-generation: the peer loop's time over collapselab's, for each (d, chains, peer chains)."""
    for d, chains, peer_chains in cases:
        ours = _ours(spec_for(d, chains, generations)) / (chains * generations)
        peer = _seconds(peer_loop, peer_chains, d, generations) / (peer_chains * generations)
        record[f"{prefix}d{d}_speedup_vs_peer_loop"] = round(peer / ours, 1)


def run() -> dict:
    record: dict = {}
    growth = {G: _ours(gaussian_spec(1, 4000, G)) for G in (100, 200, 400)}
    record["d1_4000_chains_seconds_G100_200_400"] = [round(growth[G], 3) for G in (100, 200, 400)]
    record["G400_over_G100"] = round(growth[400] / growth[100], 2)
    _speedups(record, "", gaussian_spec, accumulate_loop, ((1, 4000, 20), (10, 1000, 10), (31, 500, 5)))
    _speedups(record, "subsample_", subsample_spec, subsample_loop, ((1, 4000, 20), (10, 1000, 10), (31, 500, 5)))
    _speedups(record, "linear_", linear_spec, linear_loop, ((1, 4000, 20), (10, 4000, 20), (31, 1000, 10)))
    save("accumulate", record)
    return record


if __name__ == "__main__":
    print(run())
