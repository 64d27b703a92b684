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


def retention(
    metrics: dict[str, np.ndarray], names, references: dict[str, float], reference: str, rows: slice = slice(None)
) -> np.ndarray:
    """Smallest retention over ``names`` at generations ``rows``, shape (G, R); NaN where no metric defines it."""
    parts = []
    for name in names:
        v = metrics[name][rows]
        base = metrics[name][0:1] if reference == "generation0" else references.get(name, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(base > 0, v / base, np.nan)  # nothing to lose: undefined, not "all retained"
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


def stage_codes(metrics, tail_metrics, spread_metrics, references, config) -> np.ndarray | None:
    """(G, R) stage codes for a cell, or None when its family declares no signals."""
    if not tail_metrics and not spread_metrics:
        return None
    G, R = next(iter(metrics.values())).shape
    codes = np.empty((G, R), dtype=np.int8)
    for rows in generation_blocks(G, R):  # a few generations at a time: the temporaries stay in cache
        nan = None if tail_metrics and spread_metrics else np.full((rows.stop - rows.start, R), np.nan)
        tail = retention(metrics, tail_metrics, references, config.reference, rows) if tail_metrics else nan
        spread = retention(metrics, spread_metrics, references, config.reference, rows) if spread_metrics else nan
        codes[rows] = classify(tail, spread, config.early, config.late, config.total)
    return codes


def generation_blocks(G: int, R: int, values: int = 1 << 17) -> list[slice]:
    """Row slices of a (G, R) array holding about ``values`` values each (1 MB of float64): work on such blocks
    keeps temporaries in cache and on the heap, where a whole-array temporary of a big run is a fresh mapping of
    tens of MB to fault in. Each generation's numbers depend on its own row only, so blocks change nothing."""
    step = max(1, values // max(R, 1))
    return [slice(g, min(g + step, G)) for g in range(0, G, step)]


def stage_shares(codes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-replicate indicators ``stage_<name>`` (G, R): their mean across replicates is the share in each stage."""
    return {f"stage_{name}": (codes == k).astype(float) for k, name in enumerate(STAGES)}


def first_reached(codes: np.ndarray) -> dict[str, np.ndarray]:
    """Per replicate, the first generation whose stage is at least each stage (NaN: never reached)."""
    return {name: first_generation(codes >= k) for k, name in enumerate(STAGES[1:], start=1)}


def first_generation(hit: np.ndarray) -> np.ndarray:
    """Per chain, the first generation (row) of a (G, R) boolean array that is true; NaN where none is."""
    first = np.argmax(hit, axis=0).astype(float)
    first[~hit.any(axis=0)] = np.nan
    return first


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
