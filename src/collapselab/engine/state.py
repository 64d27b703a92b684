"""What one generation of a cell hands the next, and what a cell hands back when it is done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..pool import Pool, StatsPool


@dataclass
class CellState:
    """One replicate block of a cell between generations: everything its kernel's ``step`` needs to run
    generation ``generation``.

    ``pools`` are the synthetic pools the policy keeps (oldest first; under population refits, ``models`` are the
    fitted models the next distribution mixes instead); ``anchor`` is generation 0's model where a family or a
    curation stage compares with it. Checkpoints save and load the pools; the models and the anchor are refitted
    (see engine/checkpoints.py).
    """

    generation: int
    pools: list[Pool | StatsPool] = field(default_factory=list)
    models: list[Any] = field(default_factory=list)
    anchor: Any = None


@dataclass
class Checkpointed:
    """A cell as its checkpoints left it: the next generation to run, the results so far (an
    engine.sink.MetricSink), each replicate block's pools (oldest first), and the snapshots so far."""

    generation: int
    sink: Any
    pools: list[list[Pool | StatsPool]]
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    distributions: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


@dataclass
class GenerationRecord:
    """What one generation measured and produced: its metrics (name -> (R,)), the synthetic pool it sampled for
    the next generations (None in the last generation or under population refits; for a whole cell, a list with
    one pool per replicate block), and, at snapshot generations, replicate 0's records and per-record values."""

    generation: int
    values: dict[str, np.ndarray]
    pool: Any = None
    snapshot: np.ndarray | None = None
    distribution: dict[str, np.ndarray] | None = None


@dataclass(eq=False)
class CellResult:
    cell_id: str
    overrides: dict
    # metric name -> statistic (engine.sink.STATS: mean, std, se, median, q05, q95, count) -> (G,) array
    stats: dict[str, dict[str, np.ndarray]]
    # metric name -> (G, R) array, one value per generation and replicate chain, where the cell kept them
    # (spec keep_replicates; by default for small cells), else empty
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    # closed-form expectations where the literature has one: metric name -> (G,) array
    theory: dict[str, np.ndarray] = field(default_factory=dict)
    # per replicate, the first generation reaching each stage (NaN: never); empty without stage signals
    first_stage: dict[str, np.ndarray] = field(default_factory=dict)
    # records sampled from replicate 0's model at chosen generations, for distribution snapshots
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    # per-record values of replicate 0's synthetic records at the same generations (family.record_metrics)
    distributions: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    # warnings the run must show its user (a judge no better than chance, ...)
    notes: list[str] = field(default_factory=list)
    # bounds on a metric's mean where the literature proves one (theory.Bound: side, (G,) values, source)
    bounds: dict[str, Any] = field(default_factory=dict)
