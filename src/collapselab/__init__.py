"""collapselab: simulate, measure, mitigate and audit model collapse in self-consuming training loops."""

from .api import RunResult, load_run, report, resume, run, runs, samples
from .engine.plan import expand
from .errors import CollapselabError, InputError, RunFailed, RunInterrupted, SpecError
from .families import Family, FamilyTags, Metrics, Params, Reference, register_family
from .sources import Source, register_source
from .spec import Spec, load_spec

__version__ = "0.1.0"

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
    "expand",
    "load_run",
    "load_spec",
    "register_family",
    "register_source",
    "report",
    "resume",
    "run",
    "runs",
    "samples",
]
