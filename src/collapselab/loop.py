"""The self-consuming training loop for one cell, all R replicate chains at once.

    real pool (provenance "real")
    for g in 0 .. G-1:
        train_g = policy.build(real, synthetic pools of generations < g, g)
        model_g = family.fit(train_g)              # batched over the R replicates
        metrics_g = family.metrics(model_g) + synthetic_share(train_g)
        synth_g = model_g.sample(m)                # provenance "synthetic", generation g

The loop knows no family and no storage: it wires a source, a policy and a family together and hands
back one value per replicate, generation and metric.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoints import CellCheckpoints, fingerprint
from .curation.pipeline import Pipeline
from .curation.pipeline import active as pipeline_active
from .errors import CollapselabError
from .families import Reference, resolve_family
from .metrics.stages import first_reached, stage_codes, stage_shares
from .policies import make_policy
from .pool import Pool, StatsPool
from .rng import Stream, data_generator, generator
from .sources import get_source
from .spec import Cell

# progress callback: (cell id, generation just finished, generations in the cell)
Progress = Callable[[str, int, int], None]


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


def run_cell(
    cell: Cell, seed: int, progress: Progress | None = None, checkpoints: "str | Path | None" = None
) -> CellResult:
    """Run one cell; with ``checkpoints`` (a folder), save after every generation and resume from it."""
    with _small_pages():
        return _run_cell(cell, seed, progress, checkpoints)


@contextmanager
def _small_pages():
    """No transparent huge pages for the arrays of a run. NumPy asks the kernel for huge pages on every large
    array; where the kernel compacts memory to find them when a page is first touched (THP defrag "madvise", a
    common default), the first touch of a big run's (generations x chains) metric arrays stalled for 0.2 to 2 s,
    differently each run. Ordinary pages cost a steady ~0.5 s for 1.4 GB. NumPy's switch is process-wide: it is
    put back afterwards."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage as switch
    except ImportError:  # another NumPy: leave the memory policy alone
        yield
        return
    before = switch(False)
    try:
        yield
    finally:
        switch(before)


def _run_cell(cell: Cell, seed: int, progress: Progress | None, checkpoints) -> CellResult:
    from .spec import import_plugins
    from .theory import closed_forms  # late: theory imports families for their constants

    import_plugins(cell.spec, check=False)  # a worker process must register plugin families itself (the
    # client allowed them when it expanded the spec)
    spec = cell.spec
    G, R, n, m = spec.generations, spec.replicates, spec.data.n, spec.samples
    source = get_source(spec.data.source, spec.data.params)
    family_cls, family_params = resolve_family(spec.model, source)

    data_rng = data_generator(spec, seed, cell.index)
    truth = source.truth(n, data_rng)
    real = Pool.real(truth.sample((R, n), data_rng))
    # real data sets hold out a fixed split; closed-form truths draw fresh held-out records
    heldout = getattr(truth, "sample_heldout", lambda k, rng: truth.sample((k,), rng))(spec.data.heldout, data_rng)
    family = family_cls(family_params, Reference(truth=truth, heldout=heldout, n=n))
    policy = make_policy(spec)
    # synthesis, curation, poisoning and screens between models and training sets (curation/pipeline.py)
    pipeline = Pipeline(spec, family, truth, heldout, seed, cell.index, source.kind) if pipeline_active(spec) else None
    if pipeline is not None:
        real = pipeline.real_pool(real)

    def draw_real(k: int, rng: np.random.Generator) -> Pool:
        return Pool.real(truth.sample((R, k), rng))

    # population refits (samples = "infinite"): each generation is fitted to the previous one's distribution
    population = spec.population
    models: list = []  # the models population refits mix (all of them under accumulate, else the last)
    # the exact path draws the sufficient statistics of synthetic pools instead of their records
    exact = policy.supports_stats and family.exact_ok(spec) and pipeline is None
    used = policy.synthetic_used(m)

    synthetic: list[Pool] = []
    metrics: dict[str, np.ndarray] = {}  # name -> (G, R), allocated at the first generation, filled in place
    snapshot_at = snapshot_generations(G)
    snapshot_size = SNAPSHOT_RECORDS
    snapshots: dict[int, np.ndarray] = {}
    distributions: dict[int, dict[str, np.ndarray]] = {}
    start = 0
    saver = None
    if checkpoints is not None and not population:  # population chains have no pools: they rerun in full
        saver = CellCheckpoints(
            checkpoints, fingerprint(cell.resolved, seed, cell.index), policy.keeps_all_pools, family
        )
        state = saver.load(G - 1)
        if state is not None:
            start = state.generation + 1
            for name, done in state.metrics.items():
                metrics[name] = np.empty((G, R))
                metrics[name][:start] = done
            synthetic, snapshots, distributions = state.pools, state.snapshots, state.distributions
            needs_anchor = family.uses_anchor or (pipeline is not None and pipeline.needs_anchor)
            if needs_anchor:  # generation 0 trained on the real pool: refit it, same stream, same model
                anchor = family.fit(real.x, generator(seed, cell.index, Stream.FIT, 0))
                if family.uses_anchor:
                    family.set_anchor(anchor, real.x)
                if pipeline is not None:
                    pipeline.set_anchor(anchor)
            if progress is not None:
                progress(cell.id, start, G)
    for g in range(start, G):
        if population:
            parts = policy.population_parts(g, truth, models)
            model = fit_population(family, parts, spec, generator(seed, cell.index, Stream.FIT, g))
            models = [*models, model] if policy.keeps_all_pools else [model]
            train = None
        else:
            train = policy.build(g, real, synthetic, draw_real, generator(seed, cell.index, Stream.POLICY, g))
            if isinstance(train, StatsPool):
                model = family.fit_stats(train.stats)
            else:
                model = family.fit(train.x, generator(seed, cell.index, Stream.FIT, g))
        if g == 0 and family.uses_anchor:
            family.set_anchor(model, real.x)
        if g == 0 and pipeline is not None:
            pipeline.set_anchor(model)
        samples = None
        if family.measures_samples:  # measured on its own synthetic records, which then feed the next generation
            drawn = m if pipeline is None else pipeline.candidates(m)  # curation draws candidates to filter
            samples = model.sample(drawn, generator(seed, cell.index, Stream.SAMPLE, g))
            values = family.metrics(model, samples[:, :m])
        else:
            values = family.metrics(model)
        values = {k: np.asarray(v, dtype=float) for k, v in values.items()}
        if train is None:
            values["synthetic_share"] = np.full(R, 1.0 - sum(p.weight for p in parts if p.truth is not None))
        else:
            values["synthetic_share"] = train.synthetic_share()
        pool = None
        if g < G - 1 and used > 0 and not population:
            rng = generator(seed, cell.index, Stream.SAMPLE, g)
            if pipeline is not None:
                pool, piped = pipeline.synthetic_pool(g, model, train, samples, m)
                values.update(piped)
            elif samples is not None:
                pool = Pool.synthetic(samples, g)
            elif exact:  # the statistics of exactly the records the policy will use: exact in distribution
                pool = StatsPool(family.sample_stats(model, used, rng), 0, used, R, family)
            else:
                pool = Pool.synthetic(model.sample(m, rng), g)
            synthetic = [*synthetic, pool] if policy.keeps_all_pools else [pool]
        if pipeline is not None:
            values.update(pipeline.screen_values())
            for name in pipeline.metric_names:  # NaN where a stage did not run this generation
                values.setdefault(name, np.full(R, np.nan))
        for name, v in values.items():
            if v.shape != (R,):
                raise CollapselabError(
                    f"family {family_cls.name!r}: metric {name!r} has shape {v.shape}, expected ({R},)"
                )
        if set(values) != set(metrics) and metrics:
            raise CollapselabError(f"family {family_cls.name!r}: generation {g} returned other metrics than before")
        for name, v in values.items():
            if name not in metrics:  # not setdefault: it would allocate a (G, R) array every generation
                metrics[name] = np.empty((G, R))
            metrics[name][g] = v
        if g in snapshot_at:  # its own stream: snapshots never change the chains' draws
            if family.record_metrics:
                distributions[g] = {k: np.asarray(v, dtype=float) for k, v in family.record_metrics.items()}
            if samples is not None:
                snapshots[g] = samples[0, :snapshot_size]
            else:
                one = first_replicate(model, R)
                size = snapshot_size if one is not model else max(1, min(snapshot_size, 2_000_000 // R))
                snapshots[g] = one.sample(size, generator(seed, cell.index, Stream.SNAPSHOT, g))[0]
        if saver is not None:
            saver.save(g, values, pool, snapshots.get(g), distributions.get(g))
        if progress is not None:
            progress(cell.id, g + 1, G)

    codes = stage_codes(
        metrics, family.tail_metrics, family.spread_metrics, family.signal_references(), spec.stages
    )
    first = {}
    if codes is not None:
        metrics.update(stage_shares(codes))
        first = first_reached(codes)
    # the closed forms are for finite samples of the model itself, without anything between generations
    theory = {} if population or pipeline is not None else closed_forms(spec, truth)
    notes = pipeline.warnings() if pipeline is not None else []
    return CellResult(cell.id, cell.overrides, metrics, theory, first, snapshots, distributions, notes)



def fit_population(family, parts, spec, rng: np.random.Generator):
    """Fit a family to a distribution: exactly where it can, else to population_multiple x n records of it."""
    R = spec.replicates
    model = family.fit_population(parts, R)
    if model is not None:
        return model
    size = spec.policy.population_multiple * spec.data.n
    records = [p.sample(R, max(1, int(round(p.weight * size))), rng) for p in parts]
    return family.fit(np.concatenate(records, axis=1), rng)


def first_replicate(model, R: int):
    """Replicate 0's model alone, for a model that is a dataclass of replicate-leading arrays (the parametric
    families): a snapshot then samples one chain, not R. Other models are returned as they are."""
    if not dataclasses.is_dataclass(model):
        return model
    parts = {
        f.name: v[:1]
        for f in dataclasses.fields(model)
        if isinstance(v := getattr(model, f.name), np.ndarray) and v.ndim >= 1 and v.shape[0] == R
    }
    return dataclasses.replace(model, **parts)


SNAPSHOT_RECORDS = 2000


def snapshot_generations(G: int) -> list[int]:
    """Generations whose training data the report shows: the first, the last and three between."""
    return sorted({0, G // 4, G // 2, (3 * G) // 4, G - 1})
