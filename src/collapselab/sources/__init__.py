"""Where the real data comes from. A source validates its parameters and builds a ground truth."""

from . import real as _real  # noqa: F401  (register the built-in sources)
from . import synthetic as _synthetic  # noqa: F401
from .base import SOURCES, Source, get_source, register_source
from .truth import BernoulliTruth, CategoricalTruth, LinearTruth, MixtureTruth, PoissonTruth

__all__ = [
    "SOURCES",
    "Source",
    "get_source",
    "register_source",
    "BernoulliTruth",
    "CategoricalTruth",
    "LinearTruth",
    "MixtureTruth",
    "PoissonTruth",
]
