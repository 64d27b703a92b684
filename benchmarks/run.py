"""Run every benchmark case (``make bench``), print a table, and update benchmarks/results.json."""

from __future__ import annotations

import importlib
import sys

CASES = ["gaussian_chains", "gmm_sklearn", "sweep_scaling"]


def main(names: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("case", "result")
    for name in names or CASES:
        record = importlib.import_module(f"benchmarks.{name}").run()
        table.add_row(name, ", ".join(f"{k} = {v}" for k, v in record.items()))
    Console().print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
