"""What one generation of a cell hands the next, and what a cell hands back when it is done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..pool import Pool, StatsPool


@dataclass
class CellState:
    """A cell between generations: everything ``step`` needs to run generation ``generation``.

    ``metrics`` maps a name to an array whose first ``generation`` rows are filled (one value per replicate);
    ``pools`` are the synthetic pools the policy keeps (oldest first; under population refits, ``models`` are
    the fitted models the next distribution mixes instead); ``anchor`` is generation 0's model where a family
    or a curation stage compares with it. Checkpoints save and load exactly this, less the models and the
    anchor, which are refitted (see engine/checkpoints.py).
    """

    generation: int
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    pools: list[Pool | StatsPool] = field(default_factory=list)
    models: list[Any] = field(default_factory=list)
    anchor: Any = None
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    distributions: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


@dataclass
class GenerationRecord:
    """What ``step`` measured and produced in one generation: its metrics (name -> (R,)), the synthetic pool it
    sampled for the next generations (None in the last generation or under population refits), and, at
    snapshot generations, replicate 0's records and per-record values."""

    generation: int
    values: dict[str, np.ndarray]
    pool: Pool | StatsPool | None = None
    snapshot: np.ndarray | None = None
    distribution: dict[str, np.ndarray] | None = None


@dataclass(eq=False)
class CellResult:
    cell_id: str
    overrides: dict
    # metric name -> (G, R) array: one value per generation and replicate chain
    metrics: dict[str, np.ndarray]
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
