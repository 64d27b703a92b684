"""The self-consuming training loop for one cell, all R replicate chains at once.

    real pool (provenance "real")
    for g in 0 .. G-1:
        train_g = policy.build(real, synthetic pools of generations < g, g)
        model_g = family.fit(train_g)              # batched over the R replicates
        metrics_g = family.metrics(model_g) + synthetic_share(train_g)
        synth_g = model_g.sample(m)                # provenance "synthetic", generation g

As a kernel (after BlackJAX's ``init`` / ``step``): :class:`CellKernel` holds what one replicate block of a cell
fixes once (its truth, real pool, family, policy and mitigation pipeline); ``init`` gives the :class:`CellState`
before generation 0, or after the last checkpointed generation; ``step(state)`` runs one generation and returns
the next state and a :class:`GenerationRecord`. Population refits, the exact path and the pipeline are variants
inside ``step``'s three parts (train, measure, next pool), not branches of one long function.

A cell of more chains than its spec's ``replicate_block`` runs as several blocks, each a kernel with random numbers of its
own; :class:`CellRun` steps them together and hands each generation's values, all chains merged, to a sink
(engine/sink.py) that keeps the statistics the run reports: memory O(R + G), not O(R·G).

The loop knows no family and no storage: it wires the plan's source, policy and family together and hands
back, per generation and metric, the statistics across chains (and the chains' values where the cell keeps them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..curation.pipeline import Pipeline
from ..errors import SpecError
from ..families import Reference
from ..pool import Pool, StatsPool
from ..rng import Stream, data_generator, generator, replicate_blocks
from ..theory import bounds, closed_forms, limits
from .checkpoints import CellCheckpoints, WriteSchedule, fingerprint
from .plan import CellPlan, keeps_replicates
from .sink import MetricSink, Signals
from .state import CellResult, CellState, GenerationRecord

# progress callback: (cell id, generation just finished, generations in the cell)
Progress = Callable[[str, int, int], None]

SNAPSHOT_RECORDS = 2000


def snapshot_generations(G: int) -> list[int]:
    """Generations whose training data the report shows: the first, the last and three between."""
    return sorted({0, G // 4, G // 2, (3 * G) // 4, G - 1})


def run_cell(
    cell: CellPlan,
    seed: int,
    progress: Progress | None = None,
    checkpoints: str | Path | None = None,
    schedule: WriteSchedule | None = None,
) -> CellResult:
    """Run one cell; with ``checkpoints`` (a folder), checkpoint it every few seconds, when it ends and when it is
    interrupted (engine/checkpoints.py), and resume from what is there."""
    with _small_pages():
        run = CellRun(cell, seed)
        saver = run.checkpoints(checkpoints, schedule)
        run.start(saver)
        if run.generation and progress is not None:
            progress(cell.id, run.generation, run.G)
        try:
            while run.generation < run.G and not run.stopped():
                record = run.step()
                if saver is not None:
                    saver.save(record, run.sink)
                if progress is not None:
                    progress(cell.id, run.generation, run.G)
        except BaseException:
            if saver is not None:  # the generations finished so far, and earlier cells' held ones
                with suppress(Exception):
                    saver.flush()
                    saver.schedule.flush_held()
            raise
        if saver is not None:
            saver.close()
        if run.generation < run.G and progress is not None:  # stopped early: the cell is done
            progress(cell.id, run.G, run.G)
        return run.finish()


class CellRun:
    """One cell: its replicate blocks (rng.replicate_blocks) stepped together, one generation at a time, and their
    values merged into one sink (engine/sink.py). Each block is a :class:`CellKernel` with random numbers of its
    own, so the merged result does not depend on how or where the blocks run; block 0 draws the cell's truth and
    held-out records, which every block shares."""

    def __init__(self, plan: CellPlan, seed: int, blocks: range | None = None):
        """All of the cell's blocks, or only ``blocks`` (a contiguous range: a group that runs apart from the others,
        engine/blocks.py)."""
        self.plan, self.seed = plan, seed
        sizes = replicate_blocks(plan.spec.replicates, plan.spec.replicate_block)
        self.blocks = range(len(sizes)) if blocks is None else blocks
        first = CellKernel(plan, seed, 0, sizes[0])  # block 0 draws the truth and held-out records every block shares
        self.kernels = [first if b == 0 else CellKernel(plan, seed, b, sizes[b], first) for b in self.blocks]
        self.G, self.R = first.G, sum(sizes[b] for b in self.blocks)
        self.generation = 0
        self.states: list[CellState] = []
        self.sink: MetricSink = self.new_sink()
        self.snapshots: dict[int, np.ndarray] = {}
        self.distributions: dict[int, dict[str, np.ndarray]] = {}

    def new_sink(self) -> MetricSink:
        """An empty sink for the cell's results."""
        signals = self.signals()
        return MetricSink(self.G, self.R, signals, keeps_replicates(self.plan.spec), self.plan.family.name)

    def signals(self) -> Signals:
        f = self.kernels[0].family
        return Signals(
            f.tail_metrics, f.spread_metrics, f.signal_references(), self.plan.spec.stages, f.collapse_metric
        )

    def checkpoints(self, folder: str | Path | None, schedule: WriteSchedule | None = None) -> CellCheckpoints | None:
        """The cell's checkpoint folder; population chains have no pools, so they rerun in full instead."""
        first = self.kernels[0]
        if folder is None or first.population:
            return None
        key = fingerprint(self.plan.resolved, self.seed, self.plan.index)
        return CellCheckpoints(folder, key, first.policy.keeps_all_pools, first.family, schedule, self.new_sink)

    def start(self, saver: CellCheckpoints | None = None) -> None:
        """The state before generation 0, or after the last good checkpoint in ``saver``'s folder."""
        loaded = saver.load(self.G - 1, len(self.kernels)) if saver is not None else None
        if loaded is None:
            self.states = [k.init() for k in self.kernels]
            return
        self.generation, self.sink = loaded.generation, loaded.sink
        self.snapshots, self.distributions = loaded.snapshots, loaded.distributions
        self.states = [k.init(loaded.generation, pools) for k, pools in zip(self.kernels, loaded.pools)]

    def step(self) -> GenerationRecord:
        """Run generation ``generation`` in every block; its merged record."""
        g = self.generation
        records = []
        for i, kernel in enumerate(self.kernels):
            self.states[i], record = kernel.step(self.states[i])
            records.append(record)
        first = records[0]
        if len(records) == 1:
            values = first.values
        else:
            values = {name: np.concatenate([r.values[name] for r in records]) for name in first.values}
        self.sink.add(g, values)
        if first.snapshot is not None:
            self.snapshots[g] = first.snapshot
        if first.distribution is not None:
            self.distributions[g] = first.distribution
        self.generation = g + 1
        pools = [r.pool for r in records] if first.pool is not None else None
        return GenerationRecord(g, values, pools, first.snapshot, first.distribution)

    def stopped(self) -> bool:
        """Whether the spec's stop rule ends the cell before ``generations``: with ``stop = "collapsed"``, once
        every chain has been a point mass (the plan allows it only where that state is final, so every later
        generation would repeat it)."""
        return self.plan.spec.stop == "collapsed" and self.sink.all_collapsed()

    def finish(self) -> CellResult:
        """The cell's result: its statistics, stages, closed forms (where they apply) and notes, and its per-chain
        values where it kept them; a cell its stop rule ended early has its generations run, not ``generations``."""
        stats, first, kept = self.sink.result()
        notes: list[str] = []
        for k in self.kernels:
            if k.pipeline is not None:
                notes += [n for n in k.pipeline.warnings() if n not in notes]
        return finish_cell(
            self.plan, self.kernels[0], stats, first, kept, self.snapshots, self.distributions, notes, self.generation
        )


def finish_cell(plan, kernel, stats, first, kept, snapshots, distributions, pipeline_notes, ran) -> CellResult:
    """A cell's result from what its run reduced, with the closed forms, bounds and notes of its block 0
    (``kernel``): for a cell run in one process (CellRun) or as groups (engine/blocks.py)."""
    # closed forms and bounds are for finite samples of the model itself, without anything between generations
    theory, proved = {}, {}
    if not kernel.population and kernel.pipeline is None:
        theory = {k: v[:ran] for k, v in closed_forms(plan, kernel.truth).items()}
        proved = {k: dataclasses.replace(b, values=b.values[:ran]) for k, b in bounds(plan, kernel.truth).items()}
    elif not kernel.population:  # where a curated chain converges (a verifier's knowledge centre)
        proved = {k: dataclasses.replace(b, values=b.values[:ran]) for k, b in limits(plan, kernel.truth).items()}
    notes = kernel.family.notes(stats)
    notes += [n for n in pipeline_notes if n not in notes]
    return CellResult(plan.id, plan.overrides, stats, kept, theory, first, snapshots, distributions, notes, proved)


@contextmanager
def _small_pages():
    """No transparent huge pages for the arrays of a run. NumPy asks the kernel for huge pages on every large
    array; where the kernel compacts memory to find them when a page is first touched (THP defrag "madvise", a
    common default), the first touch of a big run's (generations x chains) metric arrays stalled for 0.2 to 2 s,
    differently each run. Ordinary pages cost a steady ~0.5 s for 1.4 GB. NumPy's switch is process-wide: it is
    put back afterwards."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage as switch  # type: ignore[attr-defined]
    except ImportError:  # another NumPy: leave the memory policy alone
        yield
        return
    before = switch(False)
    try:
        yield
    finally:
        switch(before)


class CellKernel:
    """One replicate block of a cell: its fixed parts, and the ``init`` / ``step`` that move its state."""

    def __init__(self, plan: CellPlan, seed: int, block: int = 0, replicates: int | None = None, first=None):
        """Block ``block`` of ``replicates`` chains (default: all of the cell's, as one block). Block 0 draws the
        cell's truth, its own real records and the held-out records from the cell's DATA stream; a later block
        takes the truth and held-out records of ``first`` (block 0's kernel) and draws its real records from its
        own address."""
        self.plan, self.seed, self.block = plan, seed, block
        spec = self.spec = plan.spec
        self.G, self.m = spec.generations, spec.samples
        self.R = spec.replicates if replicates is None else replicates
        n = spec.data.n
        if first is None:
            data_rng = data_generator(spec, seed, plan.index)
            truth = self.truth = plan.source.truth(n, data_rng)
            real = Pool.real(truth.sample((self.R, n), data_rng))
            # real data sets hold out a fixed split; closed-form truths draw fresh held-out records
            sample_heldout = getattr(truth, "sample_heldout", lambda k, rng: truth.sample((k,), rng))
            self.heldout = sample_heldout(spec.data.heldout, data_rng)
        else:  # its real records are drawn when first needed: blocks that drop them never hold them all at once
            truth, self.truth, self.heldout = first.truth, first.truth, first.heldout
            real = None
        heldout = self.heldout
        self.family = plan.family(plan.family_params, Reference(truth=truth, heldout=heldout, n=n))
        self.policy = plan.policy(spec)
        # synthesis, curation, poisoning and screens between models and training sets (curation/pipeline.py)
        self.pipeline = (
            Pipeline(spec, self.family, truth, heldout, seed, plan.index, plan.kind, block) if plan.pipeline else None
        )
        self._real: Pool | None = self._prepared(real) if real is not None else None
        self._real_drawn = real is not None
        # population refits (samples = "infinite"): each generation is fitted to the previous one's distribution
        self.population = spec.population
        # the exact path draws the sufficient statistics of synthetic pools instead of their records
        self.used = self.policy.synthetic_used(self.m)
        self.exact = self.policy.supports_stats and self.family.exact_ok(spec, self.used) and self.pipeline is None
        self.snapshot_at = snapshot_generations(self.G) if block == 0 else []  # replicate 0 is block 0's
        # the real records are dropped after generation 0 where nothing reads them again (10^5 chains of n = 1,000
        # hold 800 MB of them)
        self.drop_real = not self.policy.reads_real_later and self.pipeline is None and not self.needs_anchor

    def _rng(self, stream: Stream, g: int) -> np.random.Generator:
        return generator(self.seed, self.plan.index, stream, g, self.block)

    def _prepared(self, real: Pool) -> Pool:
        return self.pipeline.real_pool(real) if self.pipeline is not None else real

    @property
    def real(self) -> Pool:
        """The block's real pool. Once dropped (``drop_real``) it is None, typed as a Pool: the policy, the one
        reader left, no longer reads it."""
        if not self._real_drawn:
            rng = data_generator(self.spec, self.seed, self.plan.index, self.block)
            self._real = self._prepared(Pool.real(self.truth.sample((self.R, self.spec.data.n), rng)))
            self._real_drawn = True
        return cast(Pool, self._real)

    def _drop_real(self) -> None:
        if self.drop_real:
            self._real, self._real_drawn = None, True

    def _draw_real(self, k: int, rng: np.random.Generator) -> Pool:
        return Pool.real(self.truth.sample((self.R, k), rng))

    @property
    def needs_anchor(self) -> bool:
        return self.family.tags.uses_anchor or (self.pipeline is not None and self.pipeline.needs_anchor)

    # --- init -------------------------------------------------------------------------------------------------
    def init(self, generation: int = 0, pools: list | None = None) -> CellState:
        """The state before generation 0, or before ``generation`` from the pools checkpoints kept (each
        generation's own pool, oldest first)."""
        if not generation:
            return CellState(0)
        kept: list = []
        for pool in pools or []:  # keep them as step does
            kept = self.policy.keep(kept, pool, self.real)
        state = CellState(generation, kept)
        if self.needs_anchor:  # generation 0 trained on the real pool: refit it, same stream, same model
            self._set_anchor(state, self.family.fit(self.real.x, self._rng(Stream.FIT, 0)))
        self._drop_real()
        return state

    def _set_anchor(self, state: CellState, model: Any) -> None:
        state.anchor = model
        if self.family.tags.uses_anchor:
            self.family.set_anchor(model, self.real.x)
        if self.pipeline is not None:
            self.pipeline.set_anchor(model)

    # --- step -------------------------------------------------------------------------------------------------
    def step(self, state: CellState) -> tuple[CellState, GenerationRecord]:
        """Run generation ``state.generation``: train, measure, sample the next pool, keep the snapshot."""
        g = state.generation
        model, train, share = self._train(state, g)
        if g == 0 and (self.family.tags.uses_anchor or self.pipeline is not None):
            self._set_anchor(state, model)
        values, samples, per_record = self._measure(model, g)
        values["synthetic_share"] = share
        pool = None
        if g < self.G - 1 and self.used > 0 and not self.population:
            pool = self._next_pool(g, model, train, samples, values)
        if self.pipeline is not None:
            values.update(self.pipeline.screen_values())
            for name in self.pipeline.metric_names:  # NaN where a stage did not run this generation
                values.setdefault(name, np.full(self.R, np.nan))
        values.update(self._above_thresholds(values))
        record = GenerationRecord(g, values, pool)
        if g in self.snapshot_at:  # its own stream: snapshots never change the chains' draws
            record.snapshot = self._snapshot(model, samples, g)
            if per_record:
                record.distribution = {k: np.asarray(v, dtype=float) for k, v in per_record.items()}
        pools, models = state.pools, state.models
        if pool is not None:
            pools = self.policy.keep(pools, pool, self.real)
        if self.population:
            models = [*models, model] if self.policy.keeps_all_pools else [model]
        self._drop_real()
        return CellState(g + 1, pools, models, state.anchor), record

    def _train(self, state: CellState, g: int) -> tuple[Any, Pool | StatsPool | None, np.ndarray]:
        """Generation g's model, its training set (None under population refits) and its synthetic share."""
        if self.population:
            parts = self.policy.population_parts(g, self.truth, state.models)
            model = fit_population(self.family, parts, self.spec, self._rng(Stream.FIT, g))
            share = 1.0 - sum(p.weight for p in parts if p.truth is not None)
            return model, None, np.full(self.R, share)
        if self.spec.policy.real_weight is not None:
            weighted = self._train_weighted(state, g)
            if weighted is not None:
                return weighted
        train = self.policy.build(g, self.real, state.pools, self._draw_real, self._rng(Stream.POLICY, g))
        return self._fit(train, g), train, train.synthetic_share()

    def _fit(self, train: Pool | StatsPool, g: int) -> Any:
        if isinstance(train, StatsPool):
            return self.family.fit_stats(train.stats)
        return self.family.fit(train.x, self._rng(Stream.FIT, g))

    def _train_weighted(self, state: CellState, g: int) -> tuple[Any, None, np.ndarray] | None:
        """``policy.real_weight``: the policy's parts fitted with their weights; None where there is one part (a
        plain fit, the same draws)."""
        if g == 0:
            return None
        rng = self._rng(Stream.POLICY, g)
        parts = self.policy.weighted_parts(g, self.real, state.pools, self._draw_real, rng)  # type: ignore[attr-defined]
        if len(parts) == 1:
            pool = parts[0][0]
            return self._fit(pool, g), None, pool.synthetic_share()
        if self.family.tags.exact:  # a weighted fit of the parts' sufficient statistics
            stats = [(p.stats if isinstance(p, StatsPool) else self.family.stats_of(p.x), w) for p, w in parts]
            model = self.family.fit_weighted(stats)
        else:  # records with per-record weights: part p's n_p records share its weight w_p (mean weight 1)
            pools = [cast(Pool, p) for p, _ in parts]  # a family without the exact path keeps records
            total = sum(p.size for p in pools)
            weights = np.concatenate([np.full(p.size, w * total / p.size) for p, w in parts])
            records = cast(Pool, Pool.concat(pools)).x
            model = self.family.fit_weighted_records(records, weights, self._rng(Stream.FIT, g))
        size = sum(p.size for p, _ in parts)
        share = sum(p.size * p.synthetic_share() for p, _ in parts) / size  # of the records, not of their weight
        return model, None, share

    def _measure(self, model: Any, g: int) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict | None]:
        """The family's metrics of model g, its samples where it is measured on what it generates (those
        records then feed the next generation), and the per-record values it keeps (family.Metrics)."""
        samples = None
        if self.family.tags.measures_samples:
            drawn = self.m if self.pipeline is None else self.pipeline.candidates(self.m)  # curation filters
            samples = model.sample(drawn, self._rng(Stream.SAMPLE, g))
            values = self.family.metrics(model, samples[:, : self.m])
        else:
            values = self.family.metrics(model)
        per_record = getattr(values, "per_record", None)
        return {k: np.asarray(v, dtype=float) for k, v in values.items()}, samples, per_record

    def _next_pool(self, g, model, train, samples, values) -> Pool | StatsPool:
        """The synthetic pool of generation g, for the policy to build later training sets from."""
        rng = self._rng(Stream.SAMPLE, g)
        if self.pipeline is not None:
            pool, piped = self.pipeline.synthetic_pool(g, model, train, samples, self.m)
            values.update(piped)
            return pool
        if samples is not None:
            return Pool.synthetic(samples, g)
        if self.exact:  # the statistics of exactly the records the policy will use: exact in distribution
            return StatsPool(self.family.sample_stats(model, self.used, rng), 0, self.used, self.R, self.family)
        return Pool.synthetic(model.sample(self.m, rng), g)

    def _above_thresholds(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """METRIC_above_ε for the spec's ``thresholds``: 1 where a chain's value exceeds ε, 0 below, NaN where the
        metric is (its mean over chains is Pr(METRIC > ε), without borrowing the stage thresholds)."""
        out = {}
        for name, eps in self.spec.thresholds.items():
            if name not in values:
                allowed = ", ".join(sorted(values))
                raise SpecError(f"thresholds.{name}: the run has no metric {name!r}; its metrics: {allowed}")
            v = values[name]
            out[f"{name}_above_{eps:g}"] = np.where(np.isnan(v), np.nan, (v > eps).astype(float))
        return out

    def _snapshot(self, model, samples, g) -> np.ndarray:
        """Replicate 0's records of generation g."""
        if samples is not None:
            return samples[0, :SNAPSHOT_RECORDS]
        one = first_replicate(model, self.R)
        size = SNAPSHOT_RECORDS if one is not model else max(1, min(SNAPSHOT_RECORDS, 2_000_000 // self.R))
        return one.sample(size, self._rng(Stream.SNAPSHOT, g))[0]


def fit_population(family, parts, spec, rng: np.random.Generator):
    """Fit a family to a distribution: exactly where it can, else to population_multiple x n records of it."""
    R = spec.replicates
    model = family.fit_population(parts, R)
    if model is not None:
        return model
    size = spec.policy.population_multiple * spec.data.n
    records = [p.sample(R, max(1, int(round(p.weight * size))), rng) for p in parts]
    return family.fit(np.concatenate(records, axis=1), rng)


def first_replicate(model: Any, R: int) -> Any:
    """Replicate 0's model alone: the model's own ``replicate(0)`` where it has one, else, for a model that is a
    dataclass of replicate-leading arrays (the parametric families), those arrays cut to their first row; a
    snapshot then samples one chain, not R. Other models are returned as they are."""
    if hasattr(model, "replicate"):
        return model.replicate(0)
    if not dataclasses.is_dataclass(model):
        return model
    parts = {
        f.name: v[:1]
        for f in dataclasses.fields(model)
        if isinstance(v := getattr(model, f.name), np.ndarray) and v.ndim >= 1 and v.shape[0] == R
    }
    return dataclasses.replace(model, **parts)  # type: ignore[type-var]  # a dataclass instance, checked above
