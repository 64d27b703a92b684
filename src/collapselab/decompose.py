"""Where a collapse comes from: statistical approximation, functional expressivity, functional approximation.

Shumailov et al. (2024) name three error sources. ``decompose`` runs controlled variants of one spec, all with
the same seed (so the same real data and the same held-out records), and splits the distance to the truth at
every generation, per replicate chain, by telescoping:

    total          d(given)                       finite samples, the spec's family, the spec's optimiser budget
    expressivity   d(population)                  samples = "infinite", optimiser run to convergence: what the
                                                  family cannot represent
    statistical    d(converged) - d(population)   what finite samples add (converged = given for closed-form fits)
    approximation  d(given) - d(converged)        what the optimiser's budget adds (iterative families)

so the three parts add up to the total chain by chain. A fourth variant, finite samples with a family that is
well specified for the source (one Gaussian for Gaussian data, a GMM with the truth's components for a
mixture, ...), shows the statistical error alone for comparison. The distance is the family's ``kl`` (KL(truth
‖ model) estimated on the held-out records) where it has one, else its main distance (``tv`` for categorical).
Intervals are 95% normal intervals across replicate chains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .engine.loop import run_cell
from .engine.plan import expand
from .errors import SpecError
from .spec import Spec, load_spec, set_dotted

PARTS = ("total", "expressivity", "statistical", "approximation", "well_specified")

# the main distance to the truth of each family, and how to run its optimiser to convergence
DISTANCE = {
    "gaussian": "kl",
    "gmm": "kl",
    "categorical": "tv",
    "bernoulli": "p_error",
    "poisson": "rate_error",
    "vae": "fd",
}
CONVERGED = {"gmm": {"max_iter": 2000, "tol": 1e-9}, "vae": {"epochs": 100}}
WELL_SPECIFIED = {
    "gaussian": ("gaussian", {}),
    "categorical": ("categorical", {}),
    "zipf": ("categorical", {}),
    "bernoulli": ("bernoulli", {}),
    "poisson": ("poisson", {}),
}


@dataclass
class Decomposition:
    table: pd.DataFrame  # generation, part, mean, ci_low, ci_high
    metric: str
    variants: dict[str, dict]  # variant -> the overrides that define it
    per_replicate: dict[str, np.ndarray]  # part -> (G, R)


def _distance(result, family: str, metric: str, truth) -> np.ndarray:
    m = result.metrics
    if metric in m:
        return m[metric]
    if metric == "p_error":
        return np.abs(m["p"] - truth.p)
    if metric == "rate_error":
        return np.abs(m["rate"] - truth.rate)
    raise SpecError(f"decompose: family {family!r} reports no {metric!r}")


def _variant(spec: Spec, changes: dict) -> Spec:
    raw = spec.model_dump(exclude_none=True)  # a fresh dict: changed in place below
    raw.pop("sweep", None)
    raw["keep_replicates"] = True  # the parts are differences of per-chain values
    for key, value in changes.items():
        set_dotted(raw, key, value)
    return load_spec(raw)


def decompose(spec, converged: dict | None = None, progress=None) -> Decomposition:
    """Run the variants of a single-cell spec and split its distance to the truth into the three error sources."""
    spec = load_spec(spec) if not isinstance(spec, Spec) else spec
    if spec.sweep:
        raise SpecError("decompose: the spec has a sweep; give a single-cell spec (decompose one cell at a time)")
    plan = expand(spec)[0]  # resolved and checked once; the variants are planned below
    family = plan.family.name
    metric = DISTANCE.get(family)
    if metric is None:
        raise SpecError(f"decompose: no distance defined for family {family!r}; supported: {', '.join(DISTANCE)}")
    truth = plan.source.truth(spec.data.n, np.random.default_rng(0))
    well = WELL_SPECIFIED.get(plan.source.name)
    if well is None and plan.source.name == "blobs":
        well = ("gmm", {"components": int(np.asarray(truth.weights).size)})
    conv = converged if converged is not None else CONVERGED.get(family)
    conv_changes = {f"model.params.{k}": v for k, v in (conv or {}).items()}
    # expressivity is what the family misses with infinite data *and* a converged optimiser
    variants = {"given": {}, "population": {"policy.samples": "infinite", **conv_changes}}
    if conv:
        variants["converged"] = conv_changes
    if well is not None:
        variants["well_specified"] = {"model": {"family": well[0], "params": well[1]}}  # params replaced whole
    dist = {}
    for name, changes in variants.items():
        cell = expand(_variant(spec, changes))[0]  # a bad variant fails here, before it runs
        result = run_cell(cell, cell.spec.seed)
        fam = cell.family.name
        dist[name] = _distance(result, fam, DISTANCE.get(fam, metric) if name == "well_specified" else metric, truth)
        if progress is not None:
            progress(name)
    total, pop = dist["given"], dist["population"]
    conv_d = dist.get("converged", total)
    parts = {"total": total, "expressivity": pop, "statistical": conv_d - pop, "approximation": total - conv_d}
    if "well_specified" in dist:
        parts["well_specified"] = dist["well_specified"]
    rows = []
    for part, v in parts.items():
        R = v.shape[1]
        mean = v.mean(axis=1)
        half = 1.96 * (v.std(axis=1, ddof=1) / np.sqrt(R) if R > 1 else np.zeros_like(mean))
        for g in range(v.shape[0]):
            # plain floats: np.float64's repr would write "np.float64(0.19...)" into the CSV
            rows.append((g, part, float(mean[g]), float(mean[g] - half[g]), float(mean[g] + half[g])))
    table = pd.DataFrame(rows, columns=["generation", "part", "mean", "ci_low", "ci_high"])
    return Decomposition(table, metric, variants, parts)
