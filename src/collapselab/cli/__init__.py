"""The ``collapselab`` command line: thin verbs over :mod:`collapselab.api`, one module per group.

app.py        the Typer app, shared options, output helpers, the one error handler (main) and exit codes
runs.py       run, resume, runs, show, samples, report
analysis.py   theory, decompose
products.py   synthesize, audit, ledger …, data, presets, families
"""

from . import analysis, products, runs  # noqa: F401  (each registers its verbs on app)
from .app import app, main

__all__ = ["app", "main"]
