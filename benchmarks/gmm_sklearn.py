"""Shumailov et al.'s GMM setting: collapselab's batched EM against the scikit-learn refit/resample loop.

2 components, full covariances, 2-D, n = 1,000 samples of one blob, 200 generations under replace. The
baseline is the loop of the paper's notebook: per chain and generation, GaussianMixture(2).fit(x) then
x = gmm.sample(n). It is timed on 16 chains and compared per chain-generation; the distributions of
component_std_max at the last generation are compared with two-sample Kolmogorov-Smirnov and Mann-Whitney
tests. Target (issue 8): at least 20x, with the same distribution; through the CLI (issue 21), at least 25x.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import stats

import collapselab as cl
from benchmarks.common import save

CHAINS, GENERATIONS, N = 64, 200, 1000
BASELINE_CHAINS = 16


def baseline(chains: int, generations: int, n: int, seed: int = 0) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    out = np.empty(chains)
    for c in range(chains):
        x = rng.standard_normal((n, 2))
        for g in range(generations):
            gmm = GaussianMixture(2, covariance_type="full", random_state=int(rng.integers(2**31))).fit(x)
            if g == generations - 1:
                out[c] = np.sqrt(np.linalg.eigvalsh(gmm.covariances_).max())
            else:
                x, _ = gmm.sample(n)
    return out


def cli_seconds(spec: dict) -> float:
    """The same cell the way users run it: ``collapselab run SPEC --out DIR --no-report -q``, a fresh process."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spec.toml"
        path.write_text(cl.load_spec({"name": "bench-gmm", **spec}).to_toml())
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "collapselab", "run", str(path), "--out", str(Path(d) / "o"), "--no-report", "-q"]
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t


def run() -> dict:
    spec = {
        "generations": GENERATIONS,
        "replicates": CHAINS,
        "data": {"source": "blobs", "n": N, "params": {"means": [[0.0, 0.0]], "stds": 1.0}},
        "model": {"family": "gmm", "params": {"components": 2}},
    }
    t = time.perf_counter()
    result = cl.run(spec, save=False)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    base = baseline(BASELINE_CHAINS, GENERATIONS, N)
    base_s = time.perf_counter() - t
    ours_std = result.raw[0].metrics["component_std_max"][-1]
    record = {
        "ours_s_64_chains": round(ours, 2),
        "baseline_s_per_chain": round(base_s / BASELINE_CHAINS, 2),
        "speedup_per_chain_generation": round((base_s / BASELINE_CHAINS) / (ours / CHAINS), 1),
        "target": ">= 20",
        "component_std_max_gen199_ours": f"{ours_std.mean():.3f} ± {ours_std.std(ddof=1):.3f} (64 chains)",
        "component_std_max_gen199_sklearn": f"{base.mean():.3f} ± {base.std(ddof=1):.3f} ({BASELINE_CHAINS} chains)",
        "same_distribution_ks_p": round(float(stats.ks_2samp(ours_std, base).pvalue), 3),
        "same_distribution_mannwhitney_p": round(float(stats.mannwhitneyu(ours_std, base).pvalue), 3),
    }
    cli = cli_seconds(spec)
    record["ours_cli_s_64_chains (collapselab run --out DIR --no-report, fresh process)"] = round(cli, 2)
    record["speedup_per_chain_generation_cli"] = round((base_s / BASELINE_CHAINS) / (cli / CHAINS), 1)
    record["target_cli"] = ">= 25"
    save("gmm_shumailov_vs_sklearn_loop", record)
    return record


if __name__ == "__main__":
    print(run())
