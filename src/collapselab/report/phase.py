"""Phase diagrams of two-parameter sweeps: "how much synthetic data is too much?"

For a run whose cells vary along at least two swept keys, the first two become the axes (further swept keys
give one set of diagrams per combination). Each diagram is a heatmap over the grid: the median generation at
which chains reach early and late collapse ("never" when most chains do not within the run), the share of
healthy chains at the last generation, and the last generation's mean of the main metrics.

A cell *stays healthy* when at least :data:`HEALTHY_SHARE` of its chains are healthy at every generation (its
``stage_healthy`` share never drops below it). That is not "the median chain never reaches a stage": a chain can
dip into early collapse and recover, and the stage table's first-reach generations count the dip. When one axis is ``policy.real_fraction``, the *frontier* is,
for each value of the other axis, the smallest real fraction from which every larger fraction stays
healthy; the diagrams outline those cells and the report states them in words.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..spec import flatten_overrides

HEALTHY_SHARE = 0.5
FRACTION_KEY = "policy.real_fraction"


def _order(values):
    uniq = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in uniq):
        return sorted(uniq)
    return uniq


@dataclass
class PhaseGrid:
    x_key: str
    y_key: str
    x: list
    y: list
    fixed: dict  # the other swept keys' values for this set of diagrams
    cells: dict  # (x, y) -> cell id
    generations: int

    def title(self) -> str:
        rest = ", ".join(f"{k} = {v}" for k, v in self.fixed.items())
        return f"{self.y_key} × {self.x_key}" + (f" ({rest})" if rest else "")


def grids(cells: dict[str, dict], generations: int) -> list[PhaseGrid]:
    flat = {c: flatten_overrides(o) for c, o in cells.items()}
    keys = list(dict.fromkeys(k for o in flat.values() for k in o))
    # axes: keys every cell sets (a key set by only some cells, e.g. real_fraction beside kind = "replace",
    # is a linked setting, not an axis) with more than one value
    varying = [k for k in keys if all(k in o for o in flat.values()) and len({repr(o[k]) for o in flat.values()}) > 1]
    if len(varying) < 2:
        return []
    x_key, y_key, rest = varying[0], varying[1], varying[2:]
    if y_key == FRACTION_KEY:  # real fraction along x reads as "more real data to the right"
        x_key, y_key = y_key, x_key
    out = []
    rest_values = [_order([o.get(k) for o in flat.values()]) for k in rest]
    for combo in itertools.product(*rest_values):
        fixed = dict(zip(rest, combo))
        members = {c: o for c, o in flat.items() if all(o.get(k) == v for k, v in fixed.items())}
        grid = {(o.get(x_key), o.get(y_key)): c for c, o in members.items()}
        xs, ys = _order([k[0] for k in grid]), _order([k[1] for k in grid])
        if len(xs) < 2 or len(ys) < 2 or len(grid) != len(xs) * len(ys):
            continue  # not a full two-parameter grid
        out.append(PhaseGrid(x_key, y_key, xs, ys, fixed, grid, generations))
    return out


def stays_healthy(summary: pd.DataFrame, cell: str) -> bool | None:
    """Whether at least HEALTHY_SHARE of the cell's chains are healthy at every generation (a statement about the
    chains at each generation: a chain may dip into a stage and recover, so it is not "the median chain never
    collapses"; the stage table gives first-reach generations)."""
    h = summary[(summary["cell"] == cell) & (summary["metric"] == "stage_healthy")]
    if h.empty:
        return None
    return bool(h["mean"].min() >= HEALTHY_SHARE)


def frontier(grid: PhaseGrid, summary: pd.DataFrame) -> dict:
    """For each value of the other axis, the smallest real fraction from which all larger ones stay healthy
    (None: not even the largest fraction in the sweep does)."""
    if grid.x_key != FRACTION_KEY:
        return {}
    out = {}
    for yv in grid.y:
        best = None
        for xv in reversed(grid.x):
            cell = grid.cells.get((xv, yv))
            if cell is None or not stays_healthy(summary, cell):
                break
            best = xv
        out[yv] = best
    return out


def quantities(grid: PhaseGrid, summary: pd.DataFrame, stages: pd.DataFrame | None) -> list[tuple[str, np.ndarray]]:
    """(label, values over the grid: rows y, columns x) for every quantity the data allows."""
    out = []
    shape = (len(grid.y), len(grid.x))

    def fill(get):
        a = np.full(shape, np.nan)
        for i, yv in enumerate(grid.y):
            for j, xv in enumerate(grid.x):
                c = grid.cells.get((xv, yv))
                if c is not None:
                    a[i, j] = get(c)
        return a

    if stages is not None and not stages.empty:
        st = stages.set_index(["cell", "stage"])["first_median"]
        for stage in ("early", "late"):
            out.append(
                (f"generations to {stage} collapse (median chain)", fill(lambda c, s=stage: st.get((c, s), np.nan)))
            )
    last = summary[summary["generation"] == grid.generations - 1].set_index(["cell", "metric"])["mean"]
    metrics = [m for m in dict.fromkeys(summary["metric"]) if m != "synthetic_share" and not m.startswith("stage_")]
    if "stage_healthy" in set(summary["metric"]):
        metrics = ["stage_healthy", *metrics]
    shown: list[np.ndarray] = []
    for m in metrics:
        values = fill(lambda c, m=m: last.get((c, m), np.nan))
        if any(np.array_equal(values, v, equal_nan=True) for v in shown):
            continue  # e.g. var_ratio, det_ratio and trace_ratio of a 1-D Gaussian
        shown.append(values)
        label = "share of healthy chains" if m == "stage_healthy" else m
        out.append((f"{label} at generation {grid.generations - 1}", values))
        if len(shown) == 5:
            break
    return out
