"""Shared helpers: timing in the same process run, peak memory of a child process, results file."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")


def best_of(fn, repeat: int = 3) -> float:
    """The fastest of ``repeat`` wall-clock timings (the least disturbed by a shared machine)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def save(case: str, record: dict) -> None:
    """Record a case, with the peak resident memory of this process (each case runs in its own process)."""
    record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[case] = {
        **record,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
