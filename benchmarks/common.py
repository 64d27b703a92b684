"""Shared helpers: timing in the same process run, peak memory of a child process, results file."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
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


def child_peak_mb(code: str) -> float:
    """Peak resident memory (MiB) of a fresh Python process running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024  # ru_maxrss is in KiB on Linux; the max over children so far


def save(case: str, record: dict) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[case] = {**record, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                  "date": time.strftime("%Y-%m-%d")}
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
