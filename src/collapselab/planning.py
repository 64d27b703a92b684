"""How much real data each generation must keep: the smallest real fraction (or sample size) that meets a
tolerance on a metric at a planned generation.

A requirement is ``METRIC >= VALUE`` or ``METRIC <= VALUE`` at generation ``horizon`` (after that many
retrainings), met either by the metric's mean across chains (``target = "mean"``) or by at least ``confidence``
of the chains (``target = "chains"``). The knob is ``real_fraction`` (``mix`` and ``fresh``: real records per
training set, in steps of 1/n) or ``n`` (the sample size, any policy). Two ways to answer, each a bisection over
the knob's grid, which assumes the requirement, once met, stays met as the knob grows:

- **closed form**, where theory.py has the metric's expectation for the family and policy (the Gaussian under
  replace, accumulate, fresh and mix; categorical, Bernoulli, Poisson, KDE and linear under replace; ...): exact,
  for ``target = "mean"``;
- **search**, on any family: the loop itself runs each candidate with the spec's chains. Every candidate uses the
  spec's seed, so the candidates share their random numbers wherever their draws coincide (common random numbers:
  the real pool, the first generation's fits, ...), and neighbouring candidates differ by the knob, not by noise.
  Its interval: the smallest knob whose optimistic bound meets the requirement, and the smallest whose
  conservative bound does (the chains' 95% interval of the mean, or of the share of chains, ``confidence`` level).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from .engine.loop import run_cell
from .engine.plan import CellPlan, expand
from .errors import SpecError
from .spec import Requirement, Spec, flatten_overrides, load_spec, set_dotted
from .theory import cell_truth, for_cell, stationary

KNOBS = ("real_fraction", "n")
MAX_N = 1_000_000


@dataclass
class Answer:
    """The planner's answer: ``value`` of ``knob`` (None: nothing on the grid meets the requirement), the interval
    of the search (equal to the value for a closed form), how it was found, and every candidate it evaluated."""

    knob: str
    value: float | None
    interval: tuple[float | None, float | None]
    method: str
    requirement: Requirement
    horizon: int
    target: str
    confidence: float
    table: pd.DataFrame  # knob value, estimate, low, high, meets
    stationary: dict[str, float] = field(default_factory=dict)

    @property
    def sentence(self) -> str:
        what = (
            f"the mean {self.requirement}"
            if self.target == "mean"
            else f"{self.requirement} in at least {self.confidence:.0%} of chains"
        )
        where = f"at generation {self.horizon}"
        if self.value is None:
            return f"No {self.knob} on the grid gives {what} {where} ({self.method})."
        shown = _fmt(self.knob, self.value)
        lo, hi = self.interval
        interval = "" if self.method == "closed form" else f"; interval {_fmt(self.knob, lo)} to {_fmt(self.knob, hi)}"
        return f"The smallest {self.knob} that gives {what} {where} is {shown} ({self.method}{interval})."


def _fmt(knob: str, v: float | None) -> str:
    if v is None:
        return "none on the grid"
    return f"{v:.4g}" if knob == "real_fraction" else f"{int(v):,}"


def plan(
    spec: str | dict | Spec,
    need: str | Requirement,
    horizon: int,
    *,
    knob: str = "real_fraction",
    target: Literal["mean", "chains"] = "mean",
    confidence: float = 0.95,
    method: Literal["auto", "closed-form", "search"] = "auto",
    progress: Callable[[str], None] | None = None,
) -> Answer:
    """The smallest ``knob`` value that meets ``need`` at generation ``horizon``; see the module docstring.
    ``method = "auto"`` answers in closed form where there is one, else by search.

    >>> a = plan({"generations": 1, "replicates": 2000, "data": {"source": "gaussian", "n": 20},
    ...           "model": {"family": "gaussian"}, "policy": {"kind": "fresh", "real_fraction": 0.5}},
    ...          "var_ratio >= 0.9", horizon=20)
    >>> a.method, a.value
    ('closed form', 0.3)
    """
    base = load_spec(spec)
    req = need if isinstance(need, Requirement) else Requirement.parse(need)
    if base.sweep:
        raise SpecError("plan: the spec has a sweep; give a single-cell spec (the planner sweeps the knob itself)")
    if knob not in KNOBS:
        raise SpecError(f"plan: knob = {knob!r}; allowed: {', '.join(KNOBS)}")
    if not isinstance(horizon, int) or horizon < 0:
        raise SpecError(f"plan: horizon = {horizon!r}; expected a generation, an integer >= 0")
    if target not in ("mean", "chains"):
        raise SpecError(f"plan: target = {target!r}; allowed: mean, chains")
    if not 0.5 <= confidence < 1:
        raise SpecError(f"plan: confidence = {confidence!r}; expected a number in [0.5, 1)")
    if knob == "real_fraction" and base.policy.kind not in ("mix", "fresh"):
        raise SpecError(
            f"plan: knob = 'real_fraction' needs policy.kind 'mix' or 'fresh', not {base.policy.kind!r}; "
            f"or plan the sample size (knob = 'n')"
        )
    grid = _Grid(base, knob, horizon)
    first = grid.cell(grid.own)
    if method in ("auto", "closed-form") and target == "mean":
        forms = for_cell(first, base.seed)
        if req.metric in forms:
            return _closed_form(grid, req, horizon, confidence)
        if method == "closed-form":
            have = ", ".join(sorted(forms)) or "none"
            raise SpecError(
                f"plan: no closed form of {req.metric!r} for family {first.family.name!r} under policy "
                f"{first.policy.kind!r} (closed forms here: {have}); use method = 'search'"
            )
    elif method == "closed-form":
        raise SpecError("plan: a closed form gives the mean; target = 'chains' needs method = 'search'")
    return _search(grid, req, horizon, target, confidence, progress)


class _Grid:
    """The knob's candidate values as integer steps (real records k of n, or n itself), and the cell each gives."""

    def __init__(self, spec: Spec, knob: str, horizon: int):
        self.spec, self.knob, self.horizon = spec, knob, horizon
        if knob == "real_fraction":
            self.bottom, self.top, self.own = 0, spec.data.n, spec.data.n
        else:
            self.bottom, self.top, self.own = 1, MAX_N, spec.data.n  # bisection doubles up from the spec's n first
        self._cells: dict[int, CellPlan] = {}

    def value(self, step: int) -> float:
        return step / self.spec.data.n if self.knob == "real_fraction" else float(step)

    def cell(self, step: int, keep: bool = False) -> CellPlan:
        raw = self.spec.model_dump(exclude_none=True)
        raw.pop("sweep", None)
        raw.pop("plan", None)
        raw["generations"], raw["stop"] = self.horizon + 1, None
        raw["keep_replicates"] = keep
        if self.knob == "real_fraction":
            raw["policy"].pop("real_count", None)
            set_dotted(raw, "policy.real_fraction", step / self.spec.data.n)
        else:
            set_dotted(raw, "data.n", step)
        return expand(load_spec(raw))[0]


def _bisect(lo: int, hi: int, meets: Callable[[int], bool]) -> int | None:
    """The smallest step in [lo, hi] that meets (met from there on), or None when even ``hi`` does not."""
    if not meets(hi):
        return None
    if meets(lo):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _upper_for_n(grid: _Grid, meets: Callable[[int], bool]) -> int:
    """For knob n: the first power-of-two multiple of the spec's n that meets (the bisection's upper end)."""
    step = grid.spec.data.n
    while not meets(step) and step < MAX_N:
        step = min(step * 2, MAX_N)
    return step


def _closed_form(grid: _Grid, req: Requirement, horizon: int, confidence: float) -> Answer:
    rows: dict[int, float] = {}

    def expected(step: int) -> float:
        if step not in rows:
            rows[step] = float(for_cell(grid.cell(step), grid.spec.seed)[req.metric][horizon])
        return rows[step]

    meets = lambda step: bool(req.met(expected(step)))  # noqa: E731
    hi = grid.top if grid.knob == "real_fraction" else _upper_for_n(grid, meets)
    found = _bisect(grid.bottom, hi, meets)
    table = pd.DataFrame(
        [(grid.value(k), v, v, v, bool(req.met(v))) for k, v in sorted(rows.items())],
        columns=[grid.knob, "expected", "low", "high", "meets"],
    )
    value, limits = None, {}
    if found is not None:
        cell = grid.cell(found)
        value, limits = grid.value(found), stationary(cell, cell_truth(cell, grid.spec.seed))
    return Answer(grid.knob, value, (value, value), "closed form", req, horizon, "mean", confidence, table, limits)


def _search(grid, req: Requirement, horizon: int, target: str, confidence: float, progress) -> Answer:
    z = float(stats.norm.isf((1 - confidence) / 2))
    seen: dict[int, tuple[float, float, float]] = {}  # step -> (estimate, low, high)

    def evaluate(step: int) -> tuple[float, float, float]:
        if step not in seen:
            cell = grid.cell(step, keep=target == "chains")
            if progress is not None:
                progress(f"{grid.knob} = {_fmt(grid.knob, grid.value(step))}")
            res = run_cell(cell, grid.spec.seed)
            if req.metric not in res.stats:
                allowed = ", ".join(sorted(res.stats))
                raise SpecError(f"plan: the run has no metric {req.metric!r}; its metrics: {allowed}")
            if target == "mean":
                s = res.stats[req.metric]
                mean, se = float(s["mean"][horizon]), float(s["se"][horizon])
                seen[step] = (mean, mean - z * se, mean + z * se)
            else:
                values = np.asarray(res.metrics[req.metric][horizon])
                values = values[~np.isnan(values)]
                share = float(np.mean(req.met(values))) if values.size else math.nan
                seen[step] = (share, *_wilson(share, values.size, z))
        return seen[step]

    def meets(step: int, which: int) -> bool:
        est = evaluate(step)[which]
        return est >= confidence if target == "chains" else bool(req.met(est))

    # the estimate itself, then the optimistic and the conservative ends of its interval
    optimistic = 2 if (target == "chains" or req.op == ">=") else 1
    conservative = 1 if optimistic == 2 else 2
    hi = grid.top if grid.knob == "real_fraction" else _upper_for_n(grid, lambda k: meets(k, conservative))
    found = _bisect(grid.bottom, hi, lambda k: meets(k, 0))
    low = _bisect(grid.bottom, hi, lambda k: meets(k, optimistic))
    high = _bisect(grid.bottom, hi, lambda k: meets(k, conservative))
    table = pd.DataFrame(
        [(grid.value(k), *v, bool(meets(k, 0))) for k, v in sorted(seen.items())],
        columns=[grid.knob, "share" if target == "chains" else "mean", "low", "high", "meets"],
    )
    as_value = lambda k: grid.value(k) if k is not None else None  # noqa: E731
    return Answer(
        grid.knob, as_value(found), (as_value(low), as_value(high)), "search", req, horizon, target, confidence, table
    )


def _wilson(share: float, count: int, z: float) -> tuple[float, float]:
    """Wilson's interval for a share of ``count`` chains."""
    if count == 0 or share != share:
        return math.nan, math.nan
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return centre - half, centre + half


def read_sweep(spec: Spec, cells: list[CellPlan], results) -> dict:
    """A run's sweep read against its ``plan`` (spec.PlanSpec): per group of cells that differ only in the knob
    (``policy.real_fraction`` or ``data.n``), each swept value's mean at the horizon with its 95% interval, the
    smallest swept value from which every larger one meets the need (the sweep as a coarse search; None where the
    largest does not), and the closed form's answer where theory has one. What plan.json holds and the report
    draws."""
    assert spec.plan is not None
    req, horizon = Requirement.parse(spec.plan.need), spec.plan.horizon
    knob = next(k for k in ("policy.real_fraction", "data.n") if k in spec.sweep)
    groups: dict[str, dict] = {}
    for cell, res in zip(cells, results):
        fixed = {k: v for k, v in flatten_overrides(cell.overrides).items() if k != knob}
        key = repr(sorted(fixed.items(), key=lambda kv: kv[0]))
        group = groups.setdefault(key, {"fixed": fixed, "rows": [], "cell": cell})
        stats = res.stats.get(req.metric)
        if stats is None:
            raise SpecError(
                f"plan.need: the run has no metric {req.metric!r}; its metrics: {', '.join(sorted(res.stats))}"
            )
        value = cell.spec.policy.real_fraction if knob == "policy.real_fraction" else cell.spec.data.n
        if horizon < len(stats["mean"]):
            mean, se = float(stats["mean"][horizon]), float(stats["se"][horizon])
            group["rows"].append({"value": value, "mean": mean, "low": mean - 1.96 * se, "high": mean + 1.96 * se})
    out = []
    for group in groups.values():
        rows = sorted(group.pop("rows"), key=lambda r: r["value"])
        for r in rows:
            r["meets"] = bool(req.met(r["mean"]))
        optimistic, conservative = ("high", "low") if req.op == ">=" else ("low", "high")
        group["rows"] = rows
        group["sweep_value"] = _smallest_from(rows, req, "mean")
        group["sweep_interval"] = [_smallest_from(rows, req, optimistic), _smallest_from(rows, req, conservative)]
        group["closed_form"] = _closed_form_value(group.pop("cell"), req, horizon, knob)
        group["sentence"] = _sweep_sentence(knob, req, horizon, group)
        out.append(group)
    return {"need": str(req), "horizon": horizon, "knob": knob, "groups": out}


def _smallest_from(rows: list[dict], req: Requirement, column: str) -> float | None:
    """The smallest value from which every larger swept value meets by ``column`` (None: the largest does not)."""
    found = None
    for r in reversed(rows):
        if not req.met(r[column]):
            break
        found = r["value"]
    return found


def _closed_form_value(cell: CellPlan, req: Requirement, horizon: int, knob: str) -> float | None:
    """The planner's closed-form answer for a cell's settings, or None where theory has no closed form."""
    try:
        answer = plan(cell.spec, req, horizon, knob=knob.split(".")[1], method="closed-form")
    except SpecError:
        return None
    return answer.value


def _sweep_sentence(knob: str, req: Requirement, horizon: int, group: dict) -> str:
    where = ", ".join(f"{k} = {v}" for k, v in group["fixed"].items())
    head = f"{where}: " if where else ""
    found, (lo, hi) = group["sweep_value"], group["sweep_interval"]
    name = knob.split(".")[1]
    text = (
        f"{head}no swept {name} gives the mean {req} at generation {horizon}"
        if found is None
        else f"{head}from {name} = {_fmt(name, found)} up, the mean {req} at generation {horizon} "
        f"(with its 95% interval: from {_fmt(name, lo)} to {_fmt(name, hi)})"
    )
    if group["closed_form"] is not None:
        text += f"; the closed form plans {_fmt(name, group['closed_form'])}"
    return text
