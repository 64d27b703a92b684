"""Data policies: how each generation's training set is built from the real pool and synthetic pools.

Generation 0 always trains on the real pool. For g >= 1 (``synthetic[-1]`` is generation g-1's pool):

- ``replace``               the last synthetic pool alone (the self-consuming loop of Shumailov et al.);
- ``accumulate``            the real pool plus every synthetic pool so far (Gerstgrasser et al. 2024);
- ``accumulate-subsample``  accumulate, subsampled without replacement to the real pool's size n
                            (compute-matched accumulate);
- ``mix``                   n records: round(f·n) drawn from the real pool, the rest from the last
                            synthetic pool (f = ``real_fraction``);
- ``fresh``                 like mix, but the real part is newly drawn from the source each generation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._numerics.batched import sparse_subsample_rows, subsample_rows
from .errors import SpecError
from .plugins import POLICIES
from .pool import Pool, StatsPool
from .spec import Spec

DrawReal = Callable[[int, np.random.Generator], Pool]


@dataclass(frozen=True, eq=False)
class Part:
    """One component of a population training distribution: the truth or a fitted (batched) model."""

    weight: float
    truth: Any = None
    model: Any = None

    def sample(self, R: int, k: int, rng: np.random.Generator) -> np.ndarray:
        return self.truth.sample((R, k), rng) if self.truth is not None else self.model.sample(k, rng)


class Policy:
    """A data policy. Subclasses set ``kind`` and their facts below, implement ``_build`` (and
    ``_population_parts`` where the population differs from "the last model"), and register with
    ``@POLICIES.register``."""

    kind: str
    keeps_all_pools = False  # whether older synthetic pools must be kept in memory
    uses_real_fraction = False  # whether ``policy.real_fraction`` is required (and allowed)
    grows = False  # whether the training set grows by m records each generation (its cost, for scheduling)
    # the exact fast path (families/base.py) needs training sets built from whole pools
    supports_stats = True
    # whether a model that is a point mass trains only on copies of that point from then on (so ``stop =
    # "collapsed"`` may end the cell): true where each training set is the newest pool or every record so far
    collapse_is_final = False
    # whether training sets after generation 0 read the real pool (else the loop may drop its records)
    reads_real_later = True

    def __init__(self, spec: Spec):
        self.n = spec.data.n
        self.samples = spec.samples
        self.generations = spec.generations
        self.real_fraction = spec.policy.real_fraction
        self.fixed_real = spec.policy.real_count  # fixed counts: this many real records beside m synthetic ones
        self.real_weight = spec.policy.real_weight  # mix / fresh: the real records' total weight in a weighted fit

    def real_count(self) -> int:
        """Real records in a training set (only for policies that use a real fraction): round(f·n) of n, or the
        spec's ``real_count``."""
        if self.fixed_real is not None:
            return self.fixed_real
        return int(round((self.real_fraction or 0.0) * self.n))

    def synthetic_used(self, m: int) -> int:
        """How many records of the newest synthetic pool the policy uses (all of them, unless mixed)."""
        return m

    def population_parts(self, g: int, truth, models: list) -> list[Part]:
        """Generation g's training *distribution* with infinitely many records (``samples = "infinite"``):
        the mixture of the truth and earlier models that the finite training set is a sample of."""
        if g == 0:
            return [Part(1.0, truth=truth)]
        return [p for p in self._population_parts(truth, models) if p.weight > 0]

    def _population_parts(self, truth, models) -> list[Part]:
        return [Part(1.0, model=models[-1])]

    def build(
        self, g: int, real: Pool, synthetic: list[Pool | StatsPool], draw_real: DrawReal, rng
    ) -> Pool | StatsPool:
        if g == 0:
            return real
        return self._build(g, real, synthetic, draw_real, rng)

    def _build(self, g, real, synthetic, draw_real, rng) -> Pool | StatsPool:
        raise NotImplementedError

    def keep(self, kept: list[Pool | StatsPool], pool: Pool | StatsPool, real: Pool) -> list[Pool | StatsPool]:
        """The pools later generations build from, once generation g's ``pool`` joins those ``kept`` so far: the
        newest alone, or every pool for a policy that keeps them all."""
        return [*kept, pool] if self.keeps_all_pools else [pool]


@POLICIES.register
class Replace(Policy):
    kind = "replace"
    collapse_is_final = True
    reads_real_later = False

    def _build(self, g, real, synthetic, draw_real, rng):
        return synthetic[-1]


@POLICIES.register
class Accumulate(Policy):
    kind = "accumulate"
    keeps_all_pools = True
    grows = True
    collapse_is_final = True  # a point mass fitted on every record so far: every record is that point

    def _build(self, g, real, synthetic, draw_real, rng):
        if isinstance(synthetic[-1], StatsPool):  # the running merge of keep(): real pool included
            return synthetic[-1]
        return Pool.concat([real, *synthetic])

    def keep(self, kept, pool, real):
        """On the exact path, one running merged statistic instead of every pool: merging real + all pools each
        generation was quadratic in G, and held every pool (d = 31: 3.5 GB). The merge is the same left fold
        (((real + s0) + s1) + ...), so the numbers are the same to the bit."""
        if isinstance(pool, StatsPool):
            return [StatsPool.merge([kept[-1] if kept else real, pool])]
        return [*kept, pool]

    def _population_parts(self, truth, models):  # weights in proportion to the pools' sizes
        total = self.n + self.samples * len(models)
        return [Part(self.n / total, truth=truth), *(Part(self.samples / total, model=m) for m in models)]


@POLICIES.register
class AccumulateSubsample(Accumulate):
    kind = "accumulate-subsample"
    grows = False
    collapse_is_final = False  # a subsample can hold one value while the pools still hold others
    supports_stats = False  # a random subset of records is not a function of the pools' statistics

    def _build(self, g, real, synthetic, draw_real, rng):
        pools = [real, *synthetic]
        total = sum(p.size for p in pools)
        return Pool.take_concat(pools, sparse_subsample_rows(real.x.shape[0], total, self.n, rng))

    def keep(self, kept, pool, real):
        """Every synthetic record in one pool with room for all generations' records, allocated once: the
        training set is then gathered from two pools (real, synthetic), not from every generation's."""
        if not kept:
            return [pool]
        return [kept[-1].extended(pool, self.samples * max(self.generations - 1, 1))]


@POLICIES.register
class Mix(Policy):
    kind = "mix"
    uses_real_fraction = True

    def synthetic_used(self, m: int) -> int:
        """n - round(f·n) of the newest pool; with fixed counts (``real_count``) all m records drawn."""
        return m if self.fixed_real is not None else self.n - self.real_count()

    def _real_part(self, real: Pool, k: int, draw_real: DrawReal, rng) -> Pool:
        R = real.x.shape[0]
        return real.take(subsample_rows(R, real.size, k, rng))

    def _population_parts(self, truth, models):
        k = self.real_count()
        used = self.synthetic_used(self.samples)
        f = k / (k + used) if self.real_weight is None or not (k and used) else self.real_weight
        return [Part(f, truth=truth), Part(1.0 - f, model=models[-1])]

    def _build(self, g, real, synthetic, draw_real, rng):
        return Pool.concat([pool for pool, _ in self.weighted_parts(g, real, synthetic, draw_real, rng)])

    def weighted_parts(self, g, real, synthetic, draw_real, rng) -> list[tuple[Pool | StatsPool, float]]:
        """Generation g's training set as its real and synthetic parts, each with its total weight in a weighted
        fit: ``policy.real_weight`` for the real records, the rest for the synthetic ones (the same draws as
        ``build``)."""
        if g == 0:
            return [(real, 1.0)]
        k = self.real_count()
        used = self.synthetic_used(self.samples)
        w = self.real_weight if self.real_weight is not None else k / (k + used)
        parts: list[tuple[Pool | StatsPool, float]] = []
        if k:
            parts.append((self._real_part(real, k, draw_real, rng), w if used else 1.0))
        if used:
            parts.append((synthetic[-1].head(used), 1.0 - w if k else 1.0))
        return parts


@POLICIES.register
class Fresh(Mix):
    kind = "fresh"

    def _real_part(self, real, k, draw_real, rng):
        return draw_real(k, rng)


def policy_class(spec: Spec) -> type[Policy]:
    """The policy a spec names, or a SpecError listing the registered ones."""
    return POLICIES.resolve(spec.policy.kind, "policy.kind")


def make_policy(spec: Spec) -> Policy:
    return policy_class(spec)(spec)


def check_policy(spec: Spec) -> None:
    """Settings a policy cannot run, caught before anything runs."""
    cls = policy_class(spec)
    fraction, count = spec.policy.real_fraction, spec.policy.real_count
    if spec.policy.real_weight is not None and not hasattr(cls, "weighted_parts"):
        able = ", ".join(repr(k) for k, c in POLICIES.items() if hasattr(c, "weighted_parts"))
        raise SpecError(
            f"policy.real_weight: policy.kind = {spec.policy.kind!r} has no real records to weigh; allowed with "
            f"policy.kind {able}"
        )
    if cls.uses_real_fraction and count is not None:
        if fraction is not None:
            raise SpecError("policy.real_count: give policy.real_fraction or policy.real_count, not both")
        if cls is Mix and count > spec.data.n:
            raise SpecError(
                f"policy.real_count = {count}: mix draws it from the real pool of data.n = {spec.data.n} records; "
                f"allowed: 0 .. {spec.data.n} (fresh draws new real records: any count)"
            )
        if count + spec.samples == 0:
            raise SpecError("policy.real_count = 0 with no synthetic records: an empty training set")
    elif cls.uses_real_fraction:
        if fraction is None:
            raise SpecError(
                f"policy.kind = {spec.policy.kind!r} needs policy.real_fraction (a number in [0, 1]) or "
                f"policy.real_count (real records beside policy.samples synthetic ones)"
            )
        policy = cls(spec)
        need = spec.data.n - policy.real_count()
        if spec.samples < need:
            raise SpecError(
                f"policy.samples = {spec.samples}: {spec.policy.kind} with real_fraction "
                f"{spec.policy.real_fraction} needs at least {need} synthetic records per generation"
            )
    else:
        for key, value in (("real_fraction", fraction), ("real_count", count)):
            if value is not None:
                allowed = ", ".join(repr(k) for k, c in POLICIES.items() if c.uses_real_fraction)
                raise SpecError(
                    f"policy.{key} = {value}: only used by kind {allowed.replace(', ', ' or ')}, "
                    f"not {spec.policy.kind!r}"
                )
