"""The source interface: Source, register_source, and get_source (a source built from its validated parameters)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import SpecError
from ..plugins import SOURCES
from ..spec import validate_params


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source:
    """A source of real records.

    Subclasses set ``name``, ``kind`` (the kind of records: continuous, categorical, binary, count,
    regression), a pydantic ``Params`` model, and implement :meth:`truth`.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    mixture: ClassVar[bool] = True  # continuous sources: whether the truth is a Gaussian mixture (FamilyTags)

    def __init__(self, params: BaseModel):
        self.params = params

    def truth(self, n: int, rng: np.random.Generator):
        """The ground truth for a cell whose real pool holds n records (rng: for random designs)."""
        raise NotImplementedError

    def check_n(self, n: int) -> None:
        """Raise SpecError when ``data.n`` is unusable for this source."""


def register_source(cls: type[Source]) -> type[Source]:
    return SOURCES.register(cls)


def get_source(name: str, params: dict[str, Any]) -> Source:
    cls = SOURCES.get(name)
    if cls is None:
        raise SpecError(f"data.source: unknown source {name!r}; allowed: {', '.join(sorted(SOURCES))}")
    return cls(validate_params(cls.Params, params, "data.params"))
