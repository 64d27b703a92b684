"""The family interface: Family, its capabilities (FamilyTags), its metrics (Metrics), register_family.

A family is a class of generative models. It is built once per cell with its validated parameters and
the cell's :class:`Reference` (the ground truth and held-out real data), and then only fits, samples
and measures. It knows nothing of policies, pools or storage.

Arrays carry a leading replicate axis: ``fit`` receives training records of shape ``(R, N, ...)`` and
returns one batched model holding R fitted models; ``metrics`` returns one value per replicate.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import SpecError
from ..plugins import FAMILIES
from ..spec import validate_params


@dataclass(frozen=True, eq=False)
class Reference:
    """What a cell measures against: the ground truth, held-out real records, and the sizes used."""

    truth: Any
    heldout: np.ndarray
    n: int


class Model(Protocol):
    """R fitted models at once."""

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        """m records per replicate: shape (R, m, ...)."""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(eq=False)
class SumStats:
    """Statistics that merge by addition: a record count and per-replicate sums (totals or category counts)."""

    count: int
    sums: np.ndarray  # (R, ...) sums over records

    @staticmethod
    def merge(parts: list[SumStats]) -> SumStats:
        return SumStats(sum(p.count for p in parts), np.asarray(sum(p.sums for p in parts)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"count": np.array(self.count), "sums": self.sums}

    @staticmethod
    def from_arrays(a: dict[str, np.ndarray]) -> SumStats:
        return SumStats(int(a["count"]), a["sums"])


@dataclass(frozen=True)
class FamilyTags:
    """What a family can do, in one place (after scikit-learn's estimator tags); the engine, the plan's checks and
    the contract tests read these, never a family's name.

    - ``accepts``: the record kinds it fits (continuous, categorical, binary, count, regression, text, image).
    - ``measures_samples``: measured on what it generates (text, images): the engine draws each generation's
      synthetic records before measuring, calls ``metrics(model, samples)`` and reuses those records as the
      synthetic pool and the snapshot (a language model samples once per generation, not three times).
    - ``uses_anchor``: compares each generation with the chain's first model (perplexity under generation 0, rare
      words of the real data): the engine hands it generation 0's model and the real records through
      ``set_anchor`` (refitting generation 0 on resume).
    - ``scores_records``: scores single records (``record_loglik``), so it can anchor likelihood curation and
      leave-one-source-out screens.
    - ``exact``: has the exact fast path over sufficient statistics (see ``Family.stats_of``).
    - ``weighted``: fits records of several parts, each part carrying a given total weight, for
      ``policy.real_weight``: from the parts' sufficient statistics (``fit_weighted``) where the family is
      ``exact``, else from the records with per-record weights (``fit_weighted_records``).
    - ``needs_mixture``: its metrics compare with a Gaussian-mixture truth (component by component): a source that
      is not one (``Source.mixture = False``: moons, circles, swiss roll) is refused.
    """

    accepts: tuple[str, ...] = ()
    measures_samples: bool = False
    uses_anchor: bool = False
    scores_records: bool = False
    exact: bool = False
    needs_mixture: bool = False
    weighted: bool = False  # fits a weighted likelihood from parts of given total weight (``fit_weighted``)


class Metrics(dict):
    """A family's metrics of one generation (name -> one value per replicate), with, optionally, the per-record
    values behind some of them for the report's histograms (``per_record``: name -> (m,) values of replicate 0,
    e.g. each synthetic record's perplexity under generation 0, Shumailov et al.'s Fig. 4)."""

    def __init__(self, values=(), per_record: dict[str, np.ndarray] | None = None):
        super().__init__(values)
        self.per_record = per_record


# class attributes that were capabilities before FamilyTags, and the tag each one became
_FORMER_FLAGS = {
    "accepts": "accepts",
    "measures_samples": "measures_samples",
    "uses_anchor": "uses_anchor",
    "scores_records": "scores_records",
    "supports_exact": "exact",
}


class Family:
    """A class of generative models, batched over R replicate chains.

    Subclasses set ``name``, ``tags`` (a :class:`FamilyTags`), a pydantic ``Params`` model, the metrics that feed
    the stage signals, and implement ``fit`` and ``metrics``; register with ``@register_family``.
    """

    name: ClassVar[str]
    tags: ClassVar[FamilyTags] = FamilyTags()
    Params: ClassVar[type[BaseModel]] = Params
    # which metrics feed the two stage signals (metrics/stages.py): how much of the distribution's
    # tails, and how much of its spread, a fitted model retains. Larger = more retained.
    tail_metrics: ClassVar[tuple[str, ...]] = ()
    spread_metrics: ClassVar[tuple[str, ...]] = ()
    # a metric that is 1 where a chain's model is a point mass (one outcome left: total collapse, the fixed point of
    # drift), for families that can reach one; the stage table reports its first generation per chain (the
    # generations to collapse) and ``stop = "collapsed"`` ends a cell once every chain is there
    collapse_metric: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        """A family written before FamilyTags (``accepts = ("continuous",)`` and flags as class attributes) still
        works: its attributes are folded into its tags, with a DeprecationWarning saying where they go now."""
        super().__init_subclass__(**kwargs)
        former = {tag: cls.__dict__[flag] for flag, tag in _FORMER_FLAGS.items() if flag in cls.__dict__}
        if former:
            if "accepts" in former:
                former["accepts"] = tuple(former["accepts"])
            cls.tags = dataclasses.replace(cls.tags, **former)
            warnings.warn(
                f"family {cls.__name__}: set {', '.join(sorted(former))} in tags = FamilyTags(...), not as class "
                "attributes",
                DeprecationWarning,
                stacklevel=2,
            )

    def record_loglik(self, model: Model, x: np.ndarray) -> np.ndarray:
        """Log-likelihood of each record (R, N, ...) under its own replicate's model: (R, N)."""
        if not hasattr(model, "log_prob"):
            raise SpecError(f"family {self.name!r} does not score records")
        return model.log_prob(x)

    def set_anchor(self, model: Model, real: np.ndarray) -> None:
        """Receive generation 0's model and the real records (R, n, ...) it was fitted on."""

    def __init__(self, params: BaseModel, reference: Reference):
        self.params = params
        self.reference = reference

    @classmethod
    def check_spec(cls, spec, params: BaseModel) -> None:
        """Raise SpecError for settings the family cannot run (checked before anything runs)."""

    def fit(self, x: np.ndarray, rng: np.random.Generator) -> Model:
        raise NotImplementedError

    # --- the exact fast path (optional) ------------------------------------------------------------------
    # A family whose fit depends on its training records only through sufficient statistics that merge
    # across pools (counts, sums, means and scatters) can skip the records: it draws the statistics of m
    # sampled records directly (O(1) per chain and generation instead of O(m)), exact in distribution.
    # It declares ``FamilyTags(exact=True)``, an ``exact: bool = True`` parameter, and the methods below.
    def exact_ok(self, spec, used: int) -> bool:
        """Whether the exact path is exact for this cell, whose policy uses ``used`` records of each synthetic
        pool (e.g. a Wishart draw needs more records than dimensions)."""
        return self.tags.exact and bool(getattr(self.params, "exact", False))

    def fit_weighted(self, parts: list[tuple[Any, float]]) -> Model:
        """The weighted maximum-likelihood fit of parts, each (its sufficient statistics, its total weight); the
        weights sum to 1 and every record of a part weighs the same (``tags.weighted``)."""
        raise NotImplementedError

    def fit_weighted_records(self, x: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> Model:
        """The weighted fit of records (R, N, ...) in which record i carries weight ``weights[i]`` (N,), mean 1,
        the same in every chain: a weighted likelihood, or per-record loss weights for a neural family
        (``tags.weighted`` without the exact path)."""
        raise NotImplementedError

    def stats_of(self, x: np.ndarray):
        """Sufficient statistics of records (R, N, ...)."""
        raise NotImplementedError

    def sample_stats(self, model: Model, m: int, rng: np.random.Generator):
        """Sufficient statistics of m records sampled from each replicate's model, drawn directly."""
        raise NotImplementedError

    def merge_stats(self, parts: list):
        raise NotImplementedError

    def fit_stats(self, stats) -> Model:
        raise NotImplementedError

    def stats_arrays(self, stats) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def stats_from_arrays(self, arrays: dict[str, np.ndarray]):
        raise NotImplementedError

    # --- population refits (``policy.samples = "infinite"``) ------------------------------------------------
    def fit_population(self, parts: list, R: int) -> Model | None:
        """The model fitted to a *distribution* (policies.Part: weighted truth and models), or None where the
        family has no exact population fit; the loop then refits on population_multiple x n records."""
        return None

    def truth_nll(self) -> float:
        """The truth's own mean negative log-likelihood of the held-out records (computed once): subtracted from a
        model's held-out NLL it gives ``kl``, an estimate of KL(truth || model) in nats (0 = the truth itself)."""
        if "_truth_nll" not in self.__dict__:
            self._truth_nll = float(-np.mean(self.reference.truth.logpdf(self.reference.heldout)))
        return self._truth_nll

    def signal_references(self) -> dict[str, float]:
        """The truth's own value of each signal metric (1 for metrics that are already ratios to the truth)."""
        return {m: 1.0 for m in (*self.tail_metrics, *self.spread_metrics)}

    def metrics(self, model: Model, samples: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One value per replicate for each metric; ``samples`` (R, m, ...) only where ``measures_samples``."""
        raise NotImplementedError

    def notes(self, stats: dict[str, dict[str, np.ndarray]]) -> list[str]:
        """Warnings about a finished cell, read off its statistics across chains (metric -> statistic -> (G,),
        engine/sink.py), so a resumed cell says the same."""
        return []


def register_family(cls_or_name: type[Family] | str | None = None):
    """Register a family under ``cls.name`` (or a given name). Use as ``@register_family``."""
    if isinstance(cls_or_name, type):
        return FAMILIES.register(cls_or_name)
    return FAMILIES.register(name=cls_or_name)


def resolve_family(model_spec, source) -> tuple[type[Family], BaseModel]:
    """The family class a spec's ``model`` names, checked against the source's records, and its parameters."""
    cls = FAMILIES.get(model_spec.family)
    if cls is None:
        raise SpecError(f"model.family: unknown family {model_spec.family!r}; allowed: {', '.join(sorted(FAMILIES))}")
    if source.kind not in cls.tags.accepts:
        fits = [n for n, c in sorted(FAMILIES.items()) if source.kind in c.tags.accepts]
        raise SpecError(
            f"model.family: {cls.name!r} cannot fit data.source {source.name!r} ({source.kind} records); "
            f"families for {source.kind} records: {', '.join(fits)}"
        )
    if cls.tags.needs_mixture and not getattr(source, "mixture", True):
        fits = [n for n, c in sorted(FAMILIES.items()) if source.kind in c.tags.accepts and not c.tags.needs_mixture]
        raise SpecError(
            f"model.family: {cls.name!r} measures against a Gaussian-mixture truth and data.source {source.name!r} "
            f"is not one; families for it: {', '.join(fits)}"
        )
    return cls, validate_params(cls.Params, model_spec.params, "model.params")
