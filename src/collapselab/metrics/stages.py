"""Collapse stages, per replicate chain and generation: healthy, early, late, total.

The source article pictures collapse in stages: *early* (the rare parts of the distribution are forgotten
while the model still looks fine), *late* (the structure goes: variance shrinks, patterns blend) and
*total* (a self-consuming fixed point). Two signals, each a retention (1 = as much as the reference):

- **tail retention** T: the family's ``tail_metrics`` (tail_mass, rare_mass, support, alive, ...);
- **spread retention** S: the family's ``spread_metrics`` (std_ratio, entropy, component_std_max, ...).

A signal with several metrics takes the smallest retention (the most-lost aspect). Retention is measured
against a reference: ``generation0`` (default; the model fitted on the real data, per replicate, so
generation 0 is healthy by definition and every stage is what the loop lost) or ``truth`` (the true
distribution's value: finite-sample loss at generation 0 counts too).

Rules, first match wins (thresholds from the spec's ``[stages]`` table)::

    total    S <= total   (default 0.05: the spread is essentially gone; a dead or fixated chain)
    late     S <  late    (default 0.5: half the spread lost)
    early    T <  early   (default 0.5: half the tail lost, spread still there)
    healthy  otherwise

A family that declares no signal metrics gets no stage metrics.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

STAGES = ("healthy", "early", "late", "total")
HEALTHY, EARLY, LATE, TOTAL = range(4)


def retention(rows: dict[str, np.ndarray], names, base: dict[str, np.ndarray | float]) -> np.ndarray:
    """Smallest retention over ``names`` of a block of generations (``rows``: name -> (k, R)) against ``base``
    (name -> generation 0's values per chain, or the reference value), shape (k, R); NaN where no metric
    defines it."""
    parts = []
    for name in names:
        v = rows[name]
        b = base.get(name, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(np.greater(b, 0), v / b, np.nan)  # nothing to lose: undefined, not "all retained"
        parts.append(np.broadcast_to(r, v.shape))
    if len(parts) == 1:  # one metric: its retention (nanmin over one value is that value)
        return np.array(parts[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(np.stack(parts), axis=0)


def classify(tail: np.ndarray, spread: np.ndarray, early: float, late: float, total: float) -> np.ndarray:
    """Stage codes (0 healthy .. 3 total) from the two retentions; NaN signals never trigger a stage."""
    stage = np.full(np.broadcast_shapes(tail.shape, spread.shape), HEALTHY, dtype=np.int8)
    stage[tail < early] = EARLY
    stage[spread < late] = LATE
    stage[spread <= total] = TOTAL
    return stage


def stage_codes(rows: dict[str, np.ndarray], tail_metrics, spread_metrics, base, config) -> np.ndarray:
    """(k, R) stage codes of a block of generations (``rows``: name -> (k, R)), their retentions taken against
    ``base`` (see :func:`retention`); the family declares at least one signal."""
    k, R = next(iter(rows.values())).shape
    nan = None if tail_metrics and spread_metrics else np.full((k, R), np.nan)
    tail = retention(rows, tail_metrics, base) if tail_metrics else nan
    spread = retention(rows, spread_metrics, base) if spread_metrics else nan
    return classify(tail, spread, config.early, config.late, config.total)


def stage_shares(codes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-replicate indicators ``stage_<name>`` (G, R): their mean across replicates is the share in each stage."""
    return {f"stage_{name}": (codes == k).astype(float) for k, name in enumerate(STAGES)}


def median_with_ci(first: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """(share of replicates that reached, median first generation, CI low, CI high).

    Never reaching counts as +inf (right-censored at the last generation), so the median and its
    distribution-free CI (binomial order statistics) are inf when fewer than half the chains got there.
    """
    R = first.size
    x = np.sort(np.where(np.isnan(first), np.inf, first))
    reached = float(np.mean(np.isfinite(x)))
    median = float(np.median(x)) if R else np.nan
    if R == 0:
        return reached, np.nan, np.nan, np.nan
    alpha = 1 - level
    lo = int(stats.binom.ppf(alpha / 2, R, 0.5))
    hi = int(stats.binom.isf(alpha / 2, R, 0.5))
    lo, hi = max(lo - 1, 0), min(hi, R - 1)
    return reached, median, float(x[lo]), float(x[hi])
