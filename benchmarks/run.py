"""Run every benchmark case (``make bench``), print a table, and update benchmarks/results.json."""

from __future__ import annotations

import sys

CASES = [
    "gaussian_chains",
    "streamed",
    "split_cell",
    "gmm_sklearn",
    "loops",
    "accumulate",
    "planning",
    "sweep_scaling",
    "transformer_mfu",
    "llm_detect",
]


def main(names: list[str]) -> None:
    """Each case runs in a fresh process, so its peak memory is its own."""
    import json
    import subprocess

    from rich.console import Console
    from rich.table import Table

    table = Table("case", "result")
    for name in names or CASES:
        out = subprocess.run(
            [sys.executable, "-c", f"import json, benchmarks.{name} as b; print(json.dumps(b.run()))"],
            check=True,
            capture_output=True,
            text=True,
        )
        record = json.loads(out.stdout.strip().splitlines()[-1])
        table.add_row(name, ", ".join(f"{k} = {v}" for k, v in record.items()))
    Console().print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
