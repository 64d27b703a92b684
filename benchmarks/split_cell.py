"""One big cell on a Dask LocalCluster (issue 21, item 3): a Gaussian replace cell of 2 x 10^5 chains x 1,000
generations x n = 1,000 (20 replicate blocks, the exact path) on 1 worker (the cell as one task) and on 2 workers
(two groups of blocks, merged by the client), in one run; and a cell whose chains cost more than their merge (the
records path, 2 x 10^4 chains x 100 generations). Target: 2 workers >= 1.8x the 1-worker speed.
``SPLIT_GENERATIONS`` shortens the first case. Each case runs in a fresh process.

On a 2-core machine the exact path's chains are so cheap that reducing their values (exact quantiles of 2 x 10^5
values per metric and generation, on the client) costs about as much as running them: with 2 workers and the
client on 2 cores that work competes for the same cores, while 1 worker runs beside the client's reduction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = """
import json, sys, time, tempfile
import collapselab as cl
if __name__ == "__main__":
    R, G, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    exact = sys.argv[4] == "exact"
    spec = {"generations": G, "replicates": R, "data": {"source": "gaussian", "n": 1000},
            "model": {"family": "gaussian", "params": {"exact": exact}}, "keep_replicates": False}
    out = tempfile.mkdtemp()
    t = time.perf_counter()
    result = cl.run(spec, out=out + "/run", report=False, executor="dask", workers=workers)
    seconds = time.perf_counter() - t
    digest = __import__("hashlib").sha256(open(out + "/run/summary.csv", "rb").read()).hexdigest()
    print(json.dumps({"seconds": seconds, "summary_sha256": digest}))
"""


def case(R: int, G: int, workers: int, path: str = "exact") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(R), str(G), str(workers), path], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    from benchmarks.common import save

    G = int(os.environ.get("SPLIT_GENERATIONS", "1000"))
    R = 200_000
    one, two = case(R, G, 1), case(R, G, 2)
    rec1, rec2 = case(20_000, 100, 1, "records"), case(20_000, 100, 2, "records")
    record = {
        "chains_x_generations": f"{R:,} x {G:,}",
        "seconds_1_worker": round(one["seconds"], 1),
        "seconds_2_workers": round(two["seconds"], 1),
        "speedup": round(one["seconds"] / two["seconds"], 2),
        "speedup_target": 1.8,
        "same_summary": one["summary_sha256"] == two["summary_sha256"],
        "records_path_20k_x_100_seconds_1_worker": round(rec1["seconds"], 1),
        "records_path_20k_x_100_seconds_2_workers": round(rec2["seconds"], 1),
        "records_path_speedup": round(rec1["seconds"] / rec2["seconds"], 2),
        "records_path_same_summary": rec1["summary_sha256"] == rec2["summary_sha256"],
        "cores": os.cpu_count(),
    }
    save("split_cell_dask", record)
    return record


if __name__ == "__main__":
    print(run())
