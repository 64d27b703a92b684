"""collapselab: simulate, measure, mitigate and audit model collapse in self-consuming training loops."""

from .api import RunResult, load_run, report, run, runs
from .errors import CollapselabError, SpecError
from .families import Family, Reference, register_family
from .sources import Source, register_source
from .spec import Spec, expand, load_spec

__version__ = "0.1.0"

__all__ = [
    "CollapselabError",
    "Family",
    "Reference",
    "RunResult",
    "Source",
    "Spec",
    "SpecError",
    "expand",
    "load_run",
    "load_spec",
    "register_family",
    "register_source",
    "report",
    "run",
    "runs",
]
