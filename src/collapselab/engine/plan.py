"""The plan: a spec expanded into cells, each resolved and checked once.

``expand(spec)`` turns a spec's sweep grid (or its cases) into :class:`CellPlan` objects whose source, family,
policy and mitigation stages are resolved against the plug-in registries and checked together, before
anything runs or is written. Everything downstream (the engine, theory, decompose, the executors, the report)
reads the plan; nothing looks a kind up by its name again.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from ..curation.pipeline import active as pipeline_active
from ..curation.pipeline import check_pipeline
from ..errors import InputError, SpecError
from ..families import Family, resolve_family
from ..plugins import FAMILIES, POLICIES
from ..policies import Policy, check_policy, policy_class
from ..sources import Source, get_source
from ..spec import CASE_LABEL, CASES, MAX_CELLS, Spec, import_plugins, parse_spec, set_dotted
from .sink import KEEP_AUTO


@dataclass(eq=False)
class CellPlan:
    """One cell of a sweep, resolved: its id, the overrides that define it, its spec and what the spec names.

    ``resolved`` is the spec with every default filled in (data and model parameters included): it is what a
    run folder records and what a checkpoint's fingerprint hashes. A plan travels to worker processes as its
    spec; the worker resolves it again there (after importing the spec's plugin modules, which must register
    their classes before anything can refer to them).
    """

    id: str
    index: int
    overrides: dict[str, Any]
    spec: Spec
    resolved: dict[str, Any] = field(default_factory=dict)
    source: Source = field(init=False, repr=False)
    family: type[Family] = field(init=False, repr=False)
    family_params: BaseModel = field(init=False, repr=False)
    policy: type[Policy] = field(init=False, repr=False)
    pipeline: bool = field(init=False, repr=False)  # synthesis, curation, poison or screens between generations

    def __post_init__(self) -> None:
        self._resolve()

    def _resolve(self) -> None:
        spec = self.spec
        self.source = get_source(spec.data.source, spec.data.params)
        self.family, self.family_params = resolve_family(spec.model, self.source)
        self.policy = policy_class(spec)
        self.pipeline = pipeline_active(spec)

    def check(self) -> None:
        """Every setting the parts cannot run together, as a SpecError, before anything runs."""
        spec = self.spec
        self.source.check_n(spec.data.n)
        self.family.check_spec(spec, self.family_params)
        check_policy(spec)
        check_pipeline(spec, self.source, self.family)
        if spec.stop == "collapsed":
            self._check_stop()
        if spec.policy.real_weight is not None:
            self._check_weights()
        check_memory(spec, self.estimated_bytes())
        if not self.resolved:
            self.resolved = spec.model_dump(exclude_none=True)
            self.resolved["data"]["params"] = self.source.params.model_dump(exclude_none=True)
            self.resolved["model"]["params"] = self.family_params.model_dump(exclude_none=True)

    def _check_weights(self) -> None:
        """``policy.real_weight`` needs a family that fits weighted parts, and nothing between generations."""
        if not self.family.tags.weighted:
            able = ", ".join(n for n, c in sorted(FAMILIES.items()) if c.tags.weighted)
            raise SpecError(
                f"policy.real_weight: family {self.family.name!r} fits no weighted likelihood; families that do: {able}"
            )
        if self.pipeline:
            raise SpecError(
                "policy.real_weight: synthesis, curation, poisoning and screens change the parts' records; run without them"
            )

    def _check_stop(self) -> None:
        """``stop = "collapsed"`` needs a family that can collapse to a point mass, a policy under which that state
        is final, and nothing between generations that could bring other records back."""
        if self.family.collapse_metric is None:
            able = ", ".join(n for n, c in sorted(FAMILIES.items()) if c.collapse_metric is not None)
            raise SpecError(
                f"stop = 'collapsed': family {self.family.name!r} never collapses to a point mass; families that "
                f"do: {able}"
            )
        if not self.policy.collapse_is_final:
            able = ", ".join(repr(k) for k, c in POLICIES.items() if c.collapse_is_final)
            raise SpecError(
                f"stop = 'collapsed': under policy.kind = {self.spec.policy.kind!r} a collapsed chain can train on "
                f"other records again; allowed with policy.kind {able}"
            )
        if self.pipeline or self.spec.population:
            raise SpecError(
                "stop = 'collapsed': synthesis, curation, poisoning, screens and population refits can change a "
                "collapsed chain's records; run without them"
            )

    def estimated_bytes(self) -> int:
        """A lower bound of the cell's peak memory (see :func:`estimated_bytes`)."""
        spec, policy = self.spec, self.policy
        exact = (
            policy.supports_stats
            and self.family.tags.exact
            and bool(getattr(self.family_params, "exact", False))
            and not self.pipeline
            and not spec.population
        )
        drops = not policy.reads_real_later and not self.pipeline and not self.family.tags.uses_anchor
        width = record_width(self.source, spec.data.n)
        return estimated_bytes(spec, width, policy.keeps_all_pools, exact, drops)

    @property
    def kind(self) -> str:
        """The kind of records the cell's source yields (continuous, text, image, ...)."""
        return self.source.kind

    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__[k] for k in ("id", "index", "overrides", "spec", "resolved")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        import_plugins(self.spec, check=False)  # the client allowed them when it expanded the spec
        self._resolve()


@dataclass(eq=False)
class RunPlan:
    """A spec and its cells, planned: what ``api.run`` runs (planning once, checking before anything exists)."""

    spec: Spec
    cells: list[CellPlan]


def expand(spec: Spec) -> list[CellPlan]:
    """The cells of a spec: its sweep grid, or the spec itself as cell "0". Each cell is resolved and checked."""
    import_plugins(spec)
    base = spec.model_dump(exclude={"sweep", "plan"}, exclude_none=True)
    keys = list(spec.sweep)
    size = math.prod(len(spec.sweep[k]) for k in keys)
    if size > MAX_CELLS:
        raise SpecError(f"sweep: {size:,} cells, more than the {MAX_CELLS:,} allowed; sweep fewer values")
    cells = []
    for index, values in enumerate(itertools.product(*(spec.sweep[k] for k in keys))):
        overrides: dict[str, Any] = {}
        for k, v in zip(keys, values):
            if k == CASES:  # a case sets several keys at once: they are the cell's overrides
                overrides.update(v)
            else:
                overrides[k] = v
        raw = copy.deepcopy(base)
        for k, v in overrides.items():
            if k != CASE_LABEL:
                set_dotted(raw, k, v)
        try:
            plan = CellPlan(str(index), index, overrides, parse_spec(raw))
            plan.check()
        except InputError as e:  # a file the spec names (data.params.path) is part of the spec
            if not isinstance(e, SpecError):
                e = SpecError(str(e))
            if overrides:
                where = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
                raise SpecError(f"sweep cell {index} ({where}): {e}") from None
            raise e from None
        cells.append(plan)
    return cells


# --- memory: refuse a cell before it allocates what the machine does not have ------------------------------

MEMORY_ENV = "COLLAPSELAB_MEMORY_LIMIT_MB"
METRICS_FLOOR = 8  # every family records at least this many metrics per chain and generation


def memory_limit() -> int:
    """Bytes a cell may use: ``COLLAPSELAB_MEMORY_LIMIT_MB``, else the memory available now."""
    raw = os.environ.get(MEMORY_ENV, "")
    if raw:
        try:
            return int(float(raw) * 2**20)
        except ValueError:
            raise SpecError(f"{MEMORY_ENV} = {raw!r}: expected a number of megabytes") from None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: no limit


def record_width(source, n: int) -> int:
    """Numbers per record of a source (a d-vector: d; a text block: its words; an image: its pixels), read off
    one record of its truth (cheap: closed-form truths are parameters, real data sets are cached)."""
    rng = np.random.default_rng(0)
    try:
        one = np.asarray(source.truth(n, rng).sample((1, 1), rng))
    except Exception:  # noqa: BLE001 - an estimate only: a source that cannot show a record counts as 1 value
        return 1
    return max(1, int(np.prod(one.shape[2:], dtype=np.int64)))


def drawn_per_generation(spec: Spec) -> int:
    """Records sampled per chain and generation: m, or m / (the product of the curation stages' keep shares)."""
    m = spec.samples
    if spec.curation:
        m = math.ceil(m / math.prod(c.keep for c in spec.curation))
    return m


def keeps_replicates(spec: Spec) -> bool:
    """Whether a cell keeps every chain's values (spec ``keep_replicates``; "auto": small cells only)."""
    keep = spec.keep_replicates
    return spec.replicates * spec.generations <= KEEP_AUTO if keep == "auto" else bool(keep)


def estimated_bytes(
    spec: Spec, width: int = 1, keeps_all_pools: bool = False, exact: bool = False, drops_real: bool = False
) -> int:
    """A lower bound of a cell's peak memory: its results (every chain's values where it keeps them, else the
    statistics per generation and a few numbers per chain: engine/sink.py), and the records it holds at once
    (``width`` numbers each): the real pool (one replicate block's where it is dropped after generation 0), the
    synthetic pools it keeps (none on the exact path, which keeps statistics), and one block's records in flight."""
    R, G, n, m = spec.replicates, spec.generations, spec.data.n, drawn_per_generation(spec)
    block = min(R, spec.replicate_block)
    if keeps_replicates(spec):
        results = R * G * METRICS_FLOOR * 8
    else:
        results = G * METRICS_FLOOR * 7 * 8 + R * METRICS_FLOOR * 2 * 8
    real = (block if drops_real else R) * n
    kept = 0 if exact else R * m * (G if keeps_all_pools else 1)
    records = (real + kept + block * (n + m)) * 8 * width
    return results + records + spec.data.heldout * 8 * width


def check_memory(spec: Spec, need: int) -> None:
    have = memory_limit()
    if need > have:
        raise SpecError(
            f"this cell needs at least {need / 2**30:.2f} GiB (replicates = {spec.replicates}, generations = "
            f"{spec.generations}, data.n = {spec.data.n}, {drawn_per_generation(spec):,} records drawn per generation"
            f"), more than the {have / 2**30:.2f} GiB available; lower replicates, generations or the records drawn, "
            f"set keep_replicates = false, or set {MEMORY_ENV}"
        )
