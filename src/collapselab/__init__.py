"""collapselab: simulate, measure, mitigate and audit model collapse in self-consuming training loops.

The names below are imported on first use (PEP 562), so ``collapselab --version`` and ``--help`` start without
NumPy's heavier neighbours (SciPy, pandas, the families); ``import collapselab as cl; cl.run(...)`` is unchanged.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "RunResult": "api",
    "estimate": "api",
    "load_run": "api",
    "plan": "api",
    "report": "api",
    "resume": "api",
    "run": "api",
    "runs": "api",
    "samples": "api",
    "expand": "engine.plan",
    "CollapselabError": "errors",
    "InputError": "errors",
    "RunFailed": "errors",
    "RunInterrupted": "errors",
    "SpecError": "errors",
    "Family": "families",
    "FamilyTags": "families",
    "Metrics": "families",
    "Params": "families",
    "Reference": "families",
    "register_family": "families",
    "Source": "sources",
    "register_source": "sources",
    "Spec": "spec",
    "load_spec": "spec",
}

__all__ = [
    "CollapselabError",
    "Family",
    "FamilyTags",
    "InputError",
    "Metrics",
    "Params",
    "Reference",
    "RunFailed",
    "RunInterrupted",
    "RunResult",
    "Source",
    "Spec",
    "SpecError",
    "estimate",
    "expand",
    "load_run",
    "load_spec",
    "plan",
    "register_family",
    "register_source",
    "report",
    "resume",
    "run",
    "runs",
    "samples",
]
assert set(__all__) == set(_EXPORTS)

if TYPE_CHECKING:
    from .api import RunResult, estimate, load_run, plan, report, resume, run, runs, samples
    from .engine.plan import expand
    from .errors import CollapselabError, InputError, RunFailed, RunInterrupted, SpecError
    from .families import Family, FamilyTags, Metrics, Params, Reference, register_family
    from .sources import Source, register_source
    from .spec import Spec, load_spec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # a submodule (collapselab.api, collapselab.theory, ...), as an eager package had them
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'collapselab' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
