"""Streamed results: a cell's per-chain values come in one generation at a time, and leave as what the run reports.

The loop hands each generation's values (metric -> (R,)) to a :class:`MetricSink`. The sink buffers a chunk of
generations (about 2^17 values per metric: the temporaries stay in cache) and reduces it to:

- per generation and metric, the statistics across chains (:func:`replicate_stats`: mean, std, se, median, q05,
  q95, count). They are exact: the quantiles come from all R values of the generation, nothing is approximated;
- per chain, the stage codes (metrics.stages), reduced at once to the first generation each stage, and the
  family's collapse metric, is reached (O(R) numbers), and the stage shares' statistics (metrics ``stage_<name>``).

So a cell holds O(R + G) numbers, not O(R·G) (10⁵ chains × 10⁴ generations of a Gaussian: ~134 GB as arrays).
The per-chain values themselves are kept only when asked (``keep_replicates = true``; by default ``"auto"``: for
cells of at most :data:`KEEP_AUTO` chain-generations), for ``RunResult.raw``. Each generation's numbers depend
on its own row only, so how generations are chunked changes no number: a checkpoint reduces the chunk early
(``flush``), saves the sink (:meth:`MetricSink.arrays`), and a resumed cell (:meth:`MetricSink.restore`) gives
the same bytes.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import CollapselabError
from ..metrics.stages import STAGES, stage_codes, stage_shares

# the statistics of summary.csv, in its column order
STATS = ("mean", "std", "se", "median", "q05", "q95", "count")
# ``keep_replicates = "auto"`` keeps the per-chain values of cells with at most this many chain-generations
# (about 0.5 GB for a family with 15 metrics)
KEEP_AUTO = 4_000_000
CHUNK_VALUES = 1 << 17  # values per metric reduced at once: the temporaries stay in cache
THREADED_VALUES = 1 << 20  # a chunk this large (all metrics together) is reduced on a thread of its own
MAX_QUEUED = 2


def replicate_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics along the last (replicate) axis of ``values``, ignoring NaN. Rows with every value present take
    the plain functions and rows with NaN the nan-functions, row by row, so a row's numbers never depend on the
    rows it is reduced with."""
    count = np.sum(~np.isnan(values), axis=-1)
    full = count == values.shape[-1]
    if full.all():
        out = _complete_stats(values)
    elif not full.any():
        out = _incomplete_stats(values, count)
    else:
        a, b = _complete_stats(values[full]), _incomplete_stats(values[~full], count[~full])
        out = {}
        for k in a:
            out[k] = np.empty(values.shape[:-1])
            out[k][full], out[k][~full] = a[k], b[k]
    out["se"] = out["std"] / np.sqrt(count)
    out["count"] = count
    return out


def _complete_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.mean(axis=-1)
        std = values.std(axis=-1, ddof=1) if values.shape[-1] > 1 else np.full(values.shape[:-1], np.nan)
        q05, median, q95 = np.quantile(values, [0.05, 0.5, 0.95], axis=-1)
    return {"mean": mean, "std": std, "median": median, "q05": q05, "q95": q95}


def _incomplete_stats(values: np.ndarray, count: np.ndarray) -> dict[str, np.ndarray]:
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, which is the answer
        mean = np.nanmean(values, axis=-1)
        std = np.where(count > 1, np.nanstd(values, axis=-1, ddof=1), np.nan)
        q05, median, q95 = np.nanquantile(values, [0.05, 0.5, 0.95], axis=-1)
    return {"mean": mean, "std": std, "median": median, "q05": q05, "q95": q95}


@dataclass(frozen=True)
class Signals:
    """What the stages of a cell are read from (families.base.Family, spec ``[stages]``)."""

    tail: tuple[str, ...]
    spread: tuple[str, ...]
    references: dict[str, float]
    config: object  # spec.StagesSpec: early, late, total, reference
    collapse_metric: str | None = None

    @property
    def staged(self) -> bool:
        return bool(self.tail or self.spread)


class MetricSink:
    """One cell's results as they stream in; see the module docstring."""

    def __init__(self, G: int, R: int, signals: Signals, keep: bool, family_name: str = ""):
        self.G, self.R, self.signals, self.keep = G, R, signals, keep
        self.family_name = family_name
        self.names: list[str] = []  # the family's metrics, in the order of generation 0's values
        self.stats: dict[str, dict[str, np.ndarray]] = {}  # name -> stat -> (G,), filled to ``done``
        self.kept: dict[str, np.ndarray] = {}  # name -> (G, R), filled to ``added``, when keep
        self.base: dict[str, np.ndarray] = {}  # generation 0's values of the signal metrics (stage reference)
        self.first: dict[str, np.ndarray] = {}  # stage or collapse metric -> per chain first generation (NaN: not yet)
        self.done = 0  # generations reduced
        self.added_reduced = 0  # generations handed on to be reduced
        self.added = 0  # generations handed in
        self._pending: list[dict[str, np.ndarray]] = []
        self._chunk = max(1, CHUNK_VALUES // max(R, 1))
        # large chunks are reduced on a thread of their own while the loop runs the next generations (NumPy's
        # sorts release the GIL), one chunk after another, in order; at most MAX_QUEUED wait
        self._worker: ThreadPoolExecutor | None = None
        self._queued: deque[Future] = deque()

    # --- in ---------------------------------------------------------------------------------------------------
    def add(self, g: int, values: dict[str, np.ndarray]) -> None:
        """Generation ``g``'s values, metric -> (R,): every generation the same metrics."""
        if g != self.added:
            raise CollapselabError(f"generation {g} handed in after {self.added - 1}")
        for name, v in values.items():
            if v.shape != (self.R,):
                raise CollapselabError(
                    f"family {self.family_name!r}: metric {name!r} has shape {v.shape}, expected ({self.R},)"
                )
        if not self.names:
            self._start(list(values))
        elif set(values) != set(self.names):
            raise CollapselabError(f"family {self.family_name!r}: generation {g} returned other metrics than before")
        if g == 0:
            self.base = {k: np.array(values[k], dtype=float) for k in self._signal_names() if k in values}
        if self.keep:
            for name in self.names:
                self.kept[name][g] = values[name]
        cm = self.signals.collapse_metric
        if cm is not None and cm in values:  # as it comes in: the stop rule reads it every generation
            self._first_hit(cm, values[cm][None] == 1.0, g)
        self._pending.append(values)
        self.added += 1
        if len(self._pending) >= self._chunk:
            self._submit()

    def _start(self, names: list[str]) -> None:
        self.names = names
        every = [*self.names, *self._stage_metric_names()]
        self.stats = {
            name: {k: np.empty(self.G, dtype=np.int64 if k == "count" else float) for k in STATS} for name in every
        }
        if self.keep:
            self.kept = {name: np.empty((self.G, self.R)) for name in self.names}
        firsts = list(STAGES[1:]) if self.signals.staged else []
        if self.signals.collapse_metric is not None:
            firsts.append(self.signals.collapse_metric)
        self.first = {k: np.full(self.R, np.nan) for k in firsts}

    def _signal_names(self) -> list[str]:
        return [*self.signals.tail, *self.signals.spread]

    def _stage_metric_names(self) -> list[str]:
        return [f"stage_{s}" for s in STAGES] if self.signals.staged else []

    # --- reduce -----------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Reduce every generation handed in, and wait until it is reduced."""
        self._submit()
        while self._queued:
            self._queued.popleft().result()
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None

    def _submit(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        start, self.added_reduced = self.added_reduced, self.added_reduced + len(rows)
        small = len(rows) * self.R * (len(self.names) + 4) < THREADED_VALUES or (os.cpu_count() or 1) < 2
        if small and self._worker is None:  # else after the chunks before it, on the same thread: in order
            self._reduce(rows, start)
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collapselab-sink")
        while len(self._queued) >= MAX_QUEUED:
            self._queued.popleft().result()
        self._queued.append(self._worker.submit(self._reduce, rows, start))

    def _reduce(self, rows: list[dict[str, np.ndarray]], a: int) -> None:
        """Generations a .. a + len(rows) - 1: their statistics, stage shares and first stage crossings."""
        b = a + len(rows)
        chunk = {name: np.stack([r[name] for r in rows]) for name in self.names}
        jobs = list(chunk.items())
        if self.signals.staged:
            codes = self._codes(chunk)
            jobs += list(stage_shares(codes).items())
            for k, s in enumerate(STAGES[1:], start=1):
                self._first_hit(s, codes >= k, a)
        for name, values in jobs:
            for stat, v in replicate_stats(values).items():
                self.stats[name][stat][a:b] = v
        self.done = b

    def _codes(self, chunk: dict[str, np.ndarray]) -> np.ndarray:
        sig = self.signals
        if sig.config.reference == "generation0":  # type: ignore[attr-defined]
            base: dict[str, np.ndarray | float] = dict(self.base)
        else:
            base = {k: sig.references.get(k, 1.0) for k in self._signal_names()}
        return stage_codes(chunk, sig.tail, sig.spread, base, sig.config)

    def _first_hit(self, name: str, hit: np.ndarray, offset: int) -> None:
        first = self.first[name]
        fresh = np.isnan(first) & hit.any(axis=0)
        first[fresh] = offset + np.argmax(hit[:, fresh], axis=0)

    # --- out --------------------------------------------------------------------------------------------------
    def all_collapsed(self) -> bool:
        """Whether every chain has reached the collapse metric (with a final collapse: every chain is collapsed)."""
        cm = self.signals.collapse_metric
        return cm is not None and cm in self.first and self.added > 0 and bool(np.all(~np.isnan(self.first[cm])))

    def result(self) -> tuple[dict, dict, dict]:
        """(stats: name -> stat -> (ran,), first: name -> (R,), kept: name -> (ran, R) or {}) for the generations
        handed in."""
        self.flush()
        ran = self.done
        stats = {name: {k: v[:ran] for k, v in s.items()} for name, s in self.stats.items()}
        kept = {name: v[:ran] for name, v in self.kept.items()}
        if self.keep and self.signals.staged:  # the stage indicators per chain, as the stats were read from
            codes = self._codes(kept) if ran else np.empty((0, self.R), dtype=np.int8)
            kept.update(stage_shares(codes))
        return stats, self.first, kept

    # --- checkpoints ------------------------------------------------------------------------------------------
    def arrays(self, first: int, last: int) -> dict[str, np.ndarray]:
        """What a checkpoint of generations first..last holds of the sink: those generations' statistics (and
        per-chain values when kept), and the per-chain state after ``last``. Reduces what is pending first."""
        self.flush()
        assert self.done == last + 1, (self.done, last)
        out: dict[str, np.ndarray] = {}
        for name, s in self.stats.items():
            for k, v in s.items():
                out[f"stat:{k}:{name}"] = v[first : last + 1]
        for name, v in self.kept.items():
            out[f"metric:{name}"] = v[first : last + 1]
        out.update({f"base:{k}": v for k, v in self.base.items()})
        out.update({f"first:{k}": v for k, v in self.first.items()})
        return out

    def restore(self, blocks: list[dict[str, np.ndarray]], generations: int) -> MetricSink:
        """The sink after ``generations`` checkpointed generations, from their blocks' arrays (oldest first)."""
        last = blocks[-1]
        names = [k.split(":", 2)[2] for k in blocks[0] if k.startswith("stat:mean:")]
        self._start([n for n in names if n not in self._stage_metric_names()])
        for name, s in self.stats.items():
            for k in STATS:
                s[k][:generations] = np.concatenate([b[f"stat:{k}:{name}"] for b in blocks])
        for name in self.kept:
            self.kept[name][:generations] = np.concatenate([b[f"metric:{name}"] for b in blocks])
        self.base = {k[5:]: v for k, v in last.items() if k.startswith("base:")}
        self.first.update({k[6:]: np.array(v) for k, v in last.items() if k.startswith("first:")})
        self.done = self.added = self.added_reduced = generations
        return self
