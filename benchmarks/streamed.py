"""Streamed results (issue 21): a Gaussian replace cell of 10^5 chains x 10^4 generations x n = 1,000 on the exact
path, its peak resident memory and its chain-generations per second, against the 10^4 x 10^3 case in the same
run. Each case runs in a fresh process, so each peak is its own.

Targets: peak under 1 GB, rate at least 90% of the 10^4 x 10^3 case's. ``STREAMED_GENERATIONS`` shortens the
large case (the full one is 10^9 chain-generations: several minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import collapselab as cl
R, G = int(sys.argv[1]), int(sys.argv[2])
spec = {"generations": G, "replicates": R, "data": {"source": "gaussian", "n": 1000}, "model": {"family": "gaussian"}}
t = time.perf_counter()
result = cl.run(spec, save=False)
seconds = time.perf_counter() - t
last = result.summary.query("metric == 'var_ratio'").iloc[-1]
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "var_ratio": float(last["mean"]), "theory": (999 / 1000) ** G, "count": int(last["count"])}))
"""


def case(R: int, G: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(R), str(G)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    from benchmarks.common import save

    G = int(os.environ.get("STREAMED_GENERATIONS", "10000"))
    small, big = case(10_000, 1_000), case(100_000, G)
    rate_small = 10_000 * 1_000 / small["seconds"]
    rate_big = 100_000 * G / big["seconds"]
    record = {
        "chains_x_generations": f"100,000 x {G:,}",
        "seconds": round(big["seconds"], 1),
        "peak_rss_mb_big": round(big["peak_mb"]),
        "peak_target_mb": 1000,
        "rate_big_M_per_s": round(rate_big / 1e6, 2),
        "rate_10k_x_1k_M_per_s": round(rate_small / 1e6, 2),
        "rate_ratio": round(rate_big / rate_small, 2),
        "rate_ratio_target": 0.9,
        "peak_rss_mb_10k_x_1k": round(small["peak_mb"]),
        "final_var_ratio": round(big["var_ratio"], 4),
        "theory": round(big["theory"], 4),
    }
    save("gaussian_streamed_1e5_chains", record)
    return record


if __name__ == "__main__":
    print(run())
