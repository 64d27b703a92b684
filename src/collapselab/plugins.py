"""One registry for every kind of plug-in: families, sources, policies, curation stages, attacks, screens and
executors.

A registry maps a name to a class (or, for screens and executors, a function). The registries live here, at
the bottom of the layers, so that the schema (``spec.py``) names kinds as plain strings and never imports a
plug-in; the built-ins register themselves when their package is imported (the plan does), and third-party
plug-ins load from the entry-point group ``collapselab.<kind>`` the first time a registry is asked, e.g.
``[project.entry-points."collapselab.families"] myfam = "mypkg.module:MyFamily"``.

    FAMILIES.register(MyFamily)            # or @FAMILIES.register, or @register_family
    FAMILIES.resolve("gaussian", "model.family")   # the class, or SpecError naming the key and what is allowed
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar, overload

from .errors import SpecError

T = TypeVar("T")


def one_of(names: list[str]) -> str:
    """``'a', 'b' or 'c'``: the allowed values as a one-line error lists them."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


class Registry(Generic[T]):
    """Named plug-ins of one kind, in the order they were registered.

    ``what`` names one entry in messages ("family"); ``key`` is the class attribute holding its name
    ("name" or "kind").
    """

    def __init__(self, kind: str, what: str, *, key: str = "name", builtins: str = ""):
        self.kind, self.what, self.key = kind, what, key
        self.group = f"collapselab.{kind}"
        self.builtins = builtins  # the module whose import registers the built-ins (imported by name, on first use)
        self._entries: dict[str, T] = {}
        self._loaded = False

    # --- registration -------------------------------------------------------------------------------------
    @overload
    def register(self, obj: T, *, name: str | None = None) -> T: ...
    @overload
    def register(self, obj: None = None, *, name: str | None = None) -> Callable[[T], T]: ...

    def register(self, obj: T | None = None, *, name: str | None = None) -> Any:
        """Register ``obj`` under ``name`` (default: its ``key`` attribute, or a function's name); usable as a
        decorator with or without arguments. A later registration under a taken name replaces the earlier."""

        def deco(target: T) -> T:
            label = name or getattr(target, self.key, None)
            if not isinstance(label, str) or not label:
                raise TypeError(f"a {self.what} needs a name: set its {self.key!r} or pass name=")
            if isinstance(target, type) and getattr(target, self.key, None) != label:
                setattr(target, self.key, label)
            self._entries[label] = target
            return target

        return deco if obj is None else deco(obj)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    # --- lookup -----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        """Load the built-ins and the entry points, once (cheap after the first call): ``import collapselab`` imports
        no plug-in module, so a registry looked up first imports its own."""
        if self._loaded:
            return
        self._loaded = True
        if self.builtins:
            importlib.import_module(self.builtins)
        for ep in entry_points(group=self.group):
            if ep.name not in self._entries:
                self.register(ep.load(), name=ep.name)

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._entries.items())

    def get(self, name: str, default: T | None = None) -> T | None:
        self._load()
        return self._entries.get(name, default)

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def pop(self, name: str, default: T | None = None) -> T | None:
        return self._entries.pop(name, default)

    def resolve(self, name: str, where: str) -> T:
        """The entry called ``name``, or a SpecError in the spec's own words: ``where = 'x': Input should be ...``."""
        self._load()
        if name not in self._entries:
            raise SpecError(f"{where} = {name!r}: Input should be {one_of(list(self._entries))}")
        return self._entries[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


# the registries; the built-ins register into them from their own modules. Typed Any: the classes they hold
# (Family, Source, Policy, ...) live in layers above this one
FAMILIES: Registry[Any] = Registry("families", "family", builtins="collapselab.families")
SOURCES: Registry[Any] = Registry("sources", "source", builtins="collapselab.sources")
POLICIES: Registry[Any] = Registry("policies", "policy", key="kind", builtins="collapselab.policies")
CURATION_STAGES: Registry[Any] = Registry("curation", "curation stage", key="kind", builtins="collapselab.curation")
ATTACKS: Registry[Any] = Registry("attacks", "poisoning attack", key="kind", builtins="collapselab.curation.poison")
SCREENS: Registry[Any] = Registry("screens", "poisoning screen", key="method", builtins="collapselab.curation.poison")
EXECUTORS: Registry[Any] = Registry("executors", "executor", key="executor", builtins="collapselab.executors")

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r for r in (FAMILIES, SOURCES, POLICIES, CURATION_STAGES, ATTACKS, SCREENS, EXECUTORS)
}
