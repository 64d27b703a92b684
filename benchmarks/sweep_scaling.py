"""An 8-cell sweep on 1 and on 2 worker processes (issue 7's target: at least 1.7x faster on 2)."""

from __future__ import annotations

import collapselab as cl
from benchmarks.common import best_of, save

SPEC = {
    "name": "bench-sweep",
    "generations": 100,
    "replicates": 2000,
    "data": {"source": "gaussian", "n": 100, "params": {"mean": [0, 0, 0], "std": [1, 2, 3]}},
    "model": {"family": "gaussian"},
    "sweep": {
        "policy": [
            {"kind": "replace"},
            {"kind": "mix", "real_fraction": 0.1},
            {"kind": "fresh", "real_fraction": 0.1},
            {"kind": "mix", "real_fraction": 0.5},
        ],
        "data.n": [100, 200],
    },
}


def run(repeat: int = 2) -> dict:
    one = best_of(lambda: cl.run(SPEC, save=False, executor="processes", workers=1), repeat)
    two = best_of(lambda: cl.run(SPEC, save=False, executor="processes", workers=2), repeat)
    record = {
        "cells": 8,
        "one_worker_s": round(one, 3),
        "two_workers_s": round(two, 3),
        "speedup": round(one / two, 2),
        "target": ">= 1.7",
    }
    save("sweep_8_cells_2_workers", record)
    return record


if __name__ == "__main__":
    print(run())
