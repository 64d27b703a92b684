"""Closed-form expectations from the literature, per generation, for the cells that have one.

Notation: generation 0 is fitted on the n real records, each later generation on the training set the
policy builds; m = ``policy.samples`` synthetic records are drawn per generation (m = n by default),
a_k = (k-1)/k is the shrinkage of a maximum-likelihood variance fitted on k records.

Under ``replace``:

- Gaussian MLE (any d; Shumailov et al. 2024)    E[σ²_g]/σ² = a_n · a_m^g              (var_ratio, trace_ratio)
                                                  E‖μ_g-μ‖² = tr Σ (1/n + Σ_{k<g} a_n a_m^k / m)
                                                  (= tr Σ (1-(1-1/n)^(g+1)) when m = n)
- Gaussian, unbiased covariance                   E[σ²_g]/σ² = 1, E‖μ_g-μ‖² = tr Σ (1/n + g/m)
- Gaussian determinant (Wishart moments)          E[det Σ_g]/det Σ = c_n c_m^g, c_k = Π_{i=1..d}(k-i)/k
                                                  (denominator k-1 for the unbiased estimator)
                                                  E[log det Σ_g/det Σ] = l_n + g l_m (log_det_ratio),
                                                  l_k = Σ_{i=1..d} (ψ((k-i)/2) + log 2) - d log k, ψ = digamma
- KDE, bandwidth h (1-D variance recursion)       V_0 = a_n σ² + h², V_g = a_m V_{g-1} + h²
- Categorical MLE (Wright-Fisher drift)           E[H_g] = (1-1/n)(1-1/m)^g · H, H = 1 - Σ p_k²
                                                  E[support_g] = Σ_k P(category k not yet lost)
- Bernoulli / Poisson (Suresh et al. 2024)        E[p_g] = p, E[λ_g] = λ (martingales);
                                                  E[p_g(1-p_g)] = p(1-p)(1-1/n)(1-1/m)^g  (variance)
                                                  P(0 < p_g < 1) = alive(p) + alive(1-p) - 1  (unfixed)
                                                  P(alive) from the exact binomial chain / the Poisson
                                                  branching process: P(dead by g) = exp(nλ(q-1)),
                                                  q = h(f^(g-1)(0)), f(s)=e^(s-1), h(s)=e^((m/n)(s-1))
- Linear regression, fixed design X, m = n        E‖ŵ_g-w*‖² = σ² tr((XᵀX)⁻¹) (g+1)      (Dohmatob et al. 2024)
                                                  a Gaussian design per chain: tr((XᵀX)⁻¹) -> d/(n-d-1)

Under ``accumulate`` and ``fresh``, Gaussian (MLE or unbiased; exact moment recursions derived here, per unit of
variance, for a pool P_g of N_g records: A_g = E Σ x², B_g = E (Σ x)², with x centred on the true mean):

- accumulate: N_g = n + g·m, A_{g+1} = A_g + m(E v_g + B_g/N_g²), B_{g+1} = (1 + m/N_g)² B_g + m E v_g,
  E v_g = (A_g - B_g/N_g)/c_g (c_g = N_g, or N_g - 1 unbiased), E‖μ_g-μ‖² = tr Σ · B_g/N_g²
- fresh (k = round(f·n) new real records, s = n - k synthetic): A = k + s(E v + E μ²), B = k + s² E μ² + s E v
- mix (k of the same n real records, drawn anew each generation without replacement, s synthetic): as fresh, but
  the model's mean stays correlated with the real pool's sum P: B = k + 2s(k/n)C_g + s² E μ² + s E v, with
  C_g = E[μ_g P], C_0 = 1, C_{g+1} = (k + s C_g)/(k + s)
- fresh with ``policy.real_weight = w`` (a weighted MLE: the k real records carry weight w, the s synthetic ones
  1 - w; derived here): E μ'² = w²/k + (1-w)²(E μ² + E v/s),
  E v' = w(k-1)/k + (1-w)(s-1)/s E v + w(1-w)(1/k + E μ² + E v/s). With the variance known (E v = 1) and k = s,
  the stationary E μ² ∝ (w² + (1-w)²)/(1 - (1-w)²) is least at w = (√5 - 1)/2 ≈ 0.618, the golden ratio of He,
  Xu & Cheng (2025), not at the pooled w = 1/2 (:func:`best_real_weight` finds it for the fitted variance too)
- the stationary values of these recursions (:func:`stationary`) are their fixed points (fresh, MLE, N = k + s:
  E v* = k(N + s - 1)/((N + s)k + s); with unbiased fits E v* = k(N + s - 1)/((N + s)(k - 1) + s))

- Linear regression, m = n                        E‖ŵ_g-w*‖² = σ² tr((XᵀX)⁻¹) Σ_{k=1..g+1} 1/k²  (Gerstgrasser et al. 2024)
- Logistic and Poisson regression (fixed design X, canonical link, m = n; first order in 1/n, Dey & Donoho 2024):
  with I = Σ_i v_i(β*) x_i x_iᵀ the design's information, E[(β̂_g-β*)ᵀ I (β̂_g-β*)] = d Σ_{k=1..g+1} 1/k² under
  accumulate (bounded by d π²/6: the π²/6 pathway) and d (g+1) under replace (fisher_error; param_error with
  tr(I⁻¹) for d). Under replace the first-order form holds while d (g+1)/n is small: past that, a logistic chain
  moves where the information is lower and its error grows faster than linearly

Bounds on the rate of collapse (Suresh et al. 2024, "Rate of model collapse in recursive training"), under replace
with m = n and maximum likelihood, drawn beside the simulation (``bounds``: metric -> :class:`Bound`):

- a symbol seen c times in generation 0's data survives g more fits with P ≥ 1 - exp(-c/g): the time to forget
  it grows linearly in c. Averaged over c ~ Binomial(n, p) (Poisson(nλ) for the Poisson family):
  Bernoulli, categorical   P(alive_g) ≥ 1 - (1 - p(1 - e^(-1/g)))^n     (support: the sum over categories)
  Poisson                  P(alive_g) ≥ 1 - exp(nλ(e^(-1/g) - 1))
- the Gaussian's std dies at rate e^(-g/(4n)): Markov's inequality on E σ_g = σ c_n^(g+1), with
  c_n = E sqrt(χ²(n-1)/n) ≤ e^(-1/(4n)), gives, for ``thresholds = {std_ratio = ε}`` in 1-D,
  P(σ_g > εσ) ≤ e^(-g/(4n)) / ε    (std_ratio_above_ε)
Both are checked against the exact chains in tests/test_theory.py (they hold at every n, c and g tried).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special, stats

from .families.kde import KDEFamily, bandwidth_of, kernel_variance
from .policies import make_policy
from .rng import data_generator
from .spec import Spec

# exact Markov chains cost O(states² · G); beyond this many states the closed form is not computed
_MAX_CHAIN_STATES = 2000


def cell_truth(plan, seed: int):
    """The ground truth of one cell (an engine.plan.CellPlan), the one its run draws."""
    return plan.source.truth(plan.spec.data.n, data_generator(plan.spec, seed, plan.index))


def for_cell(plan, seed: int) -> dict[str, np.ndarray]:
    """The closed forms of one cell, with the same ground truth its run draws."""
    return closed_forms(plan, cell_truth(plan, seed))


def closed_forms(plan, truth) -> dict[str, np.ndarray]:
    """Expected value of each metric per generation, shape (G,), where a closed form is known for the plan's
    family under its policy."""
    spec = plan.spec
    handler = _HANDLERS.get((plan.family.name, plan.policy.kind))
    if handler is None:
        return {}
    if _sampling_biased(spec) and handler is not _gaussian_replace:  # only the Gaussian replace chain has its form
        return {}
    return {k: np.asarray(v, dtype=float) for k, v in handler(spec, truth).items()}


def _sampling_biased(spec: Spec) -> bool:
    """Whether the family samples from a distorted model (truncation, temperature: sampling-bias control)."""
    params = spec.model.params
    return params.get("truncation", 1.0) != 1.0 or params.get("temperature", 1.0) != 1.0


@dataclass(frozen=True, eq=False)
class Bound:
    """A bound on a metric's mean across chains, per generation: ``side`` says which way it holds; or, with side
    ``"limit"``, the value the mean converges to as the generations grow (:func:`limits`)."""

    side: Literal["lower", "upper", "limit"]
    values: np.ndarray  # (G,)
    source: str = "Suresh et al. 2024"


def bounds(plan, truth) -> dict[str, Bound]:
    """The rate-of-collapse bounds that apply to a cell (see the module docstring): maximum likelihood under
    replace with as many synthetic records as real ones, and no sampling bias."""
    spec = plan.spec
    handler = _BOUND_HANDLERS.get(plan.family.name)
    if handler is None or plan.policy.kind != "replace" or spec.samples != spec.data.n or spec.population:
        return {}
    if _sampling_biased(spec):
        return {}
    g = np.arange(spec.generations)
    with np.errstate(divide="ignore"):
        kept = np.where(g > 0, 1.0 - np.exp(-1.0 / np.maximum(g, 1)), 1.0)  # 1 - e^(-1/g); g = 0: seen at all
    return handler(spec, truth, g, kept)


KNOWLEDGE_CENTRE = "collapselab.curation.examples:knowledge_centre"


def limits(plan, truth) -> dict[str, Bound]:
    """Where a curated Gaussian chain under replace converges (side ``"limit"``), drawn beside the simulation:

    - a verifier with a knowledge centre c of its own (``curation.examples.knowledge_centre``, Yi, Liu, Cheng &
      Xu, ICLR 2026): each generation is pulled towards c and its variance shrinks, so the chain converges to the
      point mass at c, not to the truth: ‖μ_g - μ‖² → ‖c - μ‖², var_ratio and trace_ratio → 0. The approach is
      slow (the pull weakens as the variance goes: the gap falls like 1/g);
    - the likelihood stage in ``ratio`` mode, whose verifier is generation 0's fit (its knowledge centre is the
      anchor): each generation's kept records are, approximately, a fresh draw of m records from the anchor, so
      E‖μ_g - μ‖² settles near the anchor's own error plus one refit's, tr Σ (1/n + (1 - 1/n)/m), instead of
      growing as under plain replace (approximate: importance resampling from finitely many candidates carries
      part of each generation's deviation to the next; simulated, the chains settle 8-12% above it).
    """
    spec = plan.spec
    if plan.family.name != "gaussian" or plan.policy.kind != "replace" or spec.population or len(spec.curation) != 1:
        return {}
    if spec.synthesis.kind != "model" or spec.poison is not None or spec.screen is not None or _sampling_biased(spec):
        return {}
    stage, G = spec.curation[0], spec.generations
    params = stage.params or {}
    if stage.kind == "verifier" and params.get("function") == KNOWLEDGE_CENTRE and "centre" in params.get("args", {}):
        centre = np.broadcast_to(np.asarray(params["args"]["centre"], dtype=float).reshape(-1), truth.mean.shape)
        source = "Yi et al. 2026: the verifier's knowledge centre"
        gap = float(np.sum((centre - truth.mean) ** 2))
        out = {
            "mean_sq_drift": Bound("limit", np.full(G, gap), source),
            "trace_ratio": Bound("limit", np.zeros(G), source),
        }
        if truth.dim == 1:
            out["var_ratio"] = Bound("limit", np.zeros(G), source)
        return out
    if stage.kind == "likelihood" and params.get("mode") == "ratio":
        n, m = spec.data.n, spec.samples
        settled = float(np.trace(truth.cov)) * (1 / n + (1 - 1 / n) / m)
        return {"mean_sq_drift": Bound("limit", np.full(G, settled), "the anchor as verifier (approximate)")}
    return {}


def _gaussian_std_bound(spec: Spec, truth, g: np.ndarray, kept: np.ndarray) -> dict[str, Bound]:
    if getattr(truth, "dim", 0) != 1 or spec.model.params.get("estimator", "mle") != "mle":
        return {}
    n = spec.data.n
    return {
        f"std_ratio_above_{eps:g}": Bound("upper", np.minimum(np.exp(-g / (4 * n)) / eps, 1.0))
        for metric, eps in spec.thresholds.items()
        if metric == "std_ratio" and eps > 0
    }


_BOUND_HANDLERS = {
    "bernoulli": lambda spec, truth, g, kept: {"alive": Bound("lower", 1.0 - (1.0 - truth.p * kept) ** spec.data.n)},
    "categorical": lambda spec, truth, g, kept: {
        "support": Bound("lower", np.sum(1.0 - (1.0 - np.outer(truth.probs, kept)) ** spec.data.n, axis=0))
    },
    "poisson": lambda spec, truth, g, kept: {"alive": Bound("lower", 1.0 - np.exp(-spec.data.n * truth.rate * kept))},
    "gaussian": _gaussian_std_bound,
}


def _shrink(k: int) -> float:
    return (k - 1) / k


def _gaussian_replace(spec: Spec, truth) -> dict:
    if not hasattr(truth, "cov"):
        return {}
    G, n, m, d = spec.generations, spec.data.n, spec.samples, truth.dim
    g = np.arange(G)
    out = {}
    unbiased = spec.model.params.get("estimator", "mle") == "unbiased"
    # sampling bias ψ (truncation): generation g+1 is fitted to draws from N(μ_g, ψ²Σ_g)
    psi2 = float(spec.model.params.get("truncation", 1.0)) ** 2
    var = (1.0 if unbiased else _shrink(n)) * ((1.0 if unbiased else _shrink(m)) * psi2) ** g
    prev = np.concatenate([[0.0], np.cumsum(var[:-1])])  # Σ_{k<g} E[σ²_k]/σ²
    drift = np.trace(truth.cov) * (1 / n + psi2 * prev / m)
    if d == 1:
        out["var_ratio"] = var
    out["trace_ratio"] = var
    out["mean_sq_drift"] = drift
    if getattr(truth, "components", None) == 1:  # Wishart determinant moments need Gaussian real data

        def c(k):
            i = np.arange(1, d + 1)
            return np.prod((k - i) / (k - 1 if unbiased else k))

        out["det_ratio"] = c(n) * (c(m) * psi2**d) ** g

        def log_c(k):  # E log det(scatter/k'): Σ_i E log χ²(k - i) - d log k', Bartlett's decomposition
            i = np.arange(1, d + 1)
            return np.sum(special.digamma((k - i) / 2) + np.log(2)) - d * np.log(k - 1 if unbiased else k)

        if d > 1 and min(n, m) > d:  # (in 1-D var_ratio says it all; on d records or fewer, log det = -inf)
            out["log_det_ratio"] = log_c(n) + (log_c(m) + d * np.log(psi2)) * g
    return out


def _pooled_moments(spec: Spec):
    """(E v_g, E μ_g²) per unit variance for g = 0, 1, ... under accumulate / fresh / mix (the module docstring)."""
    n, m, kind = spec.data.n, spec.samples, spec.policy.kind
    unbiased = spec.model.params.get("estimator", "mle") == "unbiased"
    A, B, N = float(n), float(n), n  # generation 0: n real records of unit variance, centred
    policy = make_policy(spec)
    k, s = policy.real_count(), policy.synthetic_used(m)
    cross = 1.0  # mix: E[μ_g P], P the real pool's sum (generation 0: E[P²]/n = 1)
    var, mu2 = (A - B / N) / (N - 1 if unbiased else N), B / N**2
    w = spec.policy.real_weight
    while w is not None and k and s:  # fresh, weighted: real records carry w of the weight (module docstring)
        yield var, mu2
        gap = 1 / k + mu2 + var / s  # E (mean of the real part - mean of the synthetic part)²
        var, mu2 = (
            w * (k - 1) / k + (1 - w) * (s - 1) / s * var + w * (1 - w) * gap,
            w**2 / k + (1 - w) ** 2 * (mu2 + var / s),
        )
    while True:
        var, mu2 = (A - B / N) / (N - 1 if unbiased else N), B / N**2
        yield var, mu2
        if kind == "accumulate":
            A, B, N = A + m * (var + mu2), (1 + m / N) ** 2 * B + m * var, N + m
        elif kind == "fresh":  # a new training set of k real and s synthetic records (n - k, or m with fixed counts)
            A, B, N = k + s * (var + mu2), k + s**2 * mu2 + s * var, k + s
        else:  # mix: k of the same n real records, drawn anew, so the model's mean stays tied to the pool's
            A = k + s * (var + mu2)
            B = k + 2 * s * (k / n) * cross + s**2 * mu2 + s * var
            N, cross = k + s, (k + s * cross) / (k + s)


def best_real_weight(spec: Spec, metric: str = "mean_sq_drift") -> float | None:
    """The real weight w that minimises the stationary value of ``metric`` (by default the mean's squared error)
    of the Gaussian MLE under ``fresh`` with real and synthetic records (a grid of 1/1000, refined to 1e-6 by
    golden-section search); None where the spec is not one."""
    policy = make_policy(spec)
    k, s = policy.real_count(), policy.synthetic_used(spec.samples)
    if spec.policy.kind != "fresh" or not (k and s) or spec.model.params.get("estimator", "mle") != "mle":
        return None

    def limit(w: float) -> float:
        weighted = spec.model_copy(update={"policy": spec.policy.model_copy(update={"real_weight": w})})
        now = _fixed_point(weighted, 1e-14, 100_000)
        return now[1] if metric == "mean_sq_drift" else -now[0] if metric in ("var_ratio", "trace_ratio") else np.nan

    grid = np.arange(1, 1000) / 1000
    values = np.array([limit(w) for w in grid])
    i = int(np.nanargmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    while hi - lo > 1e-7:
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if limit(a) < limit(b):
            hi = b
        else:
            lo = a
    return float((lo + hi) / 2)


def _gaussian_metrics(truth, var, mu2) -> dict:
    out = {"trace_ratio": var, "mean_sq_drift": np.trace(truth.cov) * mu2}
    if truth.dim == 1:
        out["var_ratio"] = var
    return out


def _gaussian_pooled(spec: Spec, truth) -> dict:
    """Exact expectations of variance and mean drift under accumulate / fresh / mix (see the module docstring)."""
    if not hasattr(truth, "cov") or (spec.policy.real_weight is not None and spec.policy.kind != "fresh"):
        return {}
    moments = np.array([v for v, _ in zip(_pooled_moments(spec), range(spec.generations))])
    return _gaussian_metrics(truth, moments[:, 0], moments[:, 1])


def stationary(plan, truth, tol: float = 1e-13, max_generations: int = 1_000_000) -> dict[str, float]:
    """The limits as g grows of the closed forms that have one: the Gaussian under ``fresh`` and ``mix`` with real
    records in every training set (their moment recursions contract by s/(k + s) per generation); empty
    elsewhere. Iterated to a fixed point, and checked in tests against the fresh formula in the module docstring."""
    spec = plan.spec
    if plan.family.name != "gaussian" or plan.policy.kind not in ("fresh", "mix") or not hasattr(truth, "cov"):
        return {}
    if make_policy(spec).real_count() == 0 or _sampling_biased(spec):
        return {}
    if spec.policy.real_weight is not None and spec.policy.kind != "fresh":
        return {}
    var, mu2 = _fixed_point(spec, tol, max_generations)
    return {k: float(v) for k, v in _gaussian_metrics(truth, var, mu2).items()}


def _fixed_point(spec: Spec, tol: float, max_generations: int) -> tuple[float, float]:
    """(E v, E μ²) once the moment recursion moves them by less than ``tol`` (or after ``max_generations``)."""
    last = (np.inf, np.inf)
    for g, now in enumerate(_pooled_moments(spec)):
        if abs(now[0] - last[0]) < tol and abs(now[1] - last[1]) < tol or g >= max_generations:
            return now
        last = now
    raise AssertionError("unreachable: the recursion is endless")


def _kde_replace(spec: Spec, truth) -> dict:
    if truth.dim != 1:
        return {}
    params = KDEFamily.Params(**spec.model.params)

    def added(records: int) -> float:  # the kernel's variance, with the bandwidth a fit on `records` uses
        return kernel_variance(params.kernel, bandwidth_of(params.bandwidth, records, 1), 1)

    sigma2 = float(truth.cov[0, 0])
    v = np.empty(spec.generations)
    v[0] = _shrink(spec.data.n) * sigma2 + added(spec.data.n)
    for g in range(1, spec.generations):
        v[g] = _shrink(spec.samples) * v[g - 1] + added(spec.samples)
    return {"var_ratio": v / sigma2}


def _survival(p: np.ndarray, n: int, m: int, G: int) -> np.ndarray | None:
    """P(count > 0) per generation for Wright-Fisher chains started from Binomial(n, p), shape (len(p), G)."""
    if max(n, m) > _MAX_CHAIN_STATES:
        return None
    p = np.atleast_1d(p)
    dist = stats.binom.pmf(np.arange(n + 1)[None, :], n, p[:, None])  # (P, n+1) over gen-0 counts
    first = stats.binom.pmf(np.arange(m + 1)[None, :], m, (np.arange(n + 1) / n)[:, None])  # n -> m
    step = stats.binom.pmf(np.arange(m + 1)[None, :], m, (np.arange(m + 1) / m)[:, None])  # m -> m
    # P(dead at g) = dist · first · step^(g-1) · e0: carry the column step^(g-1) e0 (a matrix-vector product per
    # generation) instead of every category's distribution (a matrix-matrix product)
    alive = np.empty((p.shape[0], G))
    alive[:, 0] = 1.0 - dist[:, 0]
    to_dead = np.zeros(m + 1)
    to_dead[0] = 1.0
    for g in range(1, G):
        alive[:, g] = 1.0 - dist @ (first @ to_dead)
        to_dead = step @ to_dead
    return alive


def _categorical_replace(spec: Spec, truth) -> dict:
    G, n, m = spec.generations, spec.data.n, spec.samples
    H = 1.0 - np.sum(truth.probs**2)
    out = {"gini_simpson": (1 - 1 / n) * (1 - 1 / m) ** np.arange(G) * H}
    if truth.categories * max(n, m) <= 200_000:
        alive = _survival(truth.probs, n, m, G)
        if alive is not None:
            out["support"] = alive.sum(axis=0)
    return out


def _bernoulli_replace(spec: Spec, truth) -> dict:
    G, n, m, p = spec.generations, spec.data.n, spec.samples, truth.p
    # E[p_g(1 - p_g)] shrinks by (1 - 1/k) per fit on k records (the heterozygosity of Wright-Fisher drift)
    out = {"p": np.full(G, p), "variance": p * (1 - p) * (1 - 1 / n) * (1 - 1 / m) ** np.arange(G)}
    alive = _survival(np.array([p, 1.0 - p]), n, m, G)
    if alive is not None:  # the chain of the ones, and the chain of the zeros (fixation at 1 = the zeros' death)
        out["alive"] = alive[0]
        out["unfixed"] = alive[0] + alive[1] - 1.0  # P(0 < count < m) = 1 - P(count = 0) - P(count = m)
        out["fixated"] = 1.0 - out["unfixed"]
    return out


def _poisson_replace(spec: Spec, truth) -> dict:
    G, n, m, lam = spec.generations, spec.data.n, spec.samples, truth.rate
    # q = probability that one gen-0 count unit has no descendants at generation g (pgf iteration)
    dead = np.empty(G)
    inner = 0.0  # f^(g-1)(0), f(s) = exp(s-1): extinction by g-1 steps of the Poisson(1) branching
    for g in range(G):
        q = 0.0 if g == 0 else np.exp((m / n) * (inner - 1.0))
        if g >= 1:
            inner = np.exp(inner - 1.0)
        dead[g] = np.exp(n * lam * (q - 1.0))
    return {"rate": np.full(G, lam), "alive": 1.0 - dead, "extinct": dead}


def _linear(accumulate: bool):
    def handler(spec: Spec, truth) -> dict:
        if spec.samples != spec.data.n:  # the closed form needs synthetic labels on the same design
            return {}
        n, d = truth.design.shape
        if n <= d:  # the minimum-norm fit (over-parameterised): no closed form here
            return {}
        if truth.design_seed is None:  # one shared design: the expectation given it
            X = truth.design
            base = truth.noise**2 * np.trace(np.linalg.inv(X.T @ X))
        elif n > d + 1:  # a Gaussian design per chain: E tr((XᵀX)⁻¹) = d / (n - d - 1) (inverse Wishart)
            base = truth.noise**2 * d / (n - d - 1)
        else:  # the inverse Wishart has no mean
            return {}
        k = np.arange(1, spec.generations + 1)
        return {"test_error": base * (np.cumsum(1.0 / k**2) if accumulate else k)}

    return handler


def _glm(accumulate: bool):
    """Logistic and Poisson regression on a fixed design, m = n, to first order in 1/n (Dey & Donoho 2024)."""

    def handler(spec: Spec, truth) -> dict:
        if spec.samples != spec.data.n:  # whole passes over the design in every training set
            return {}
        k = np.arange(1, spec.generations + 1)
        growth = np.cumsum(1.0 / k**2) if accumulate else k.astype(float)
        return {"fisher_error": truth.dim * growth, "param_error": np.trace(np.linalg.inv(truth.information)) * growth}

    return handler


_HANDLERS = {
    ("gaussian", "replace"): _gaussian_replace,
    ("gaussian", "accumulate"): _gaussian_pooled,
    ("gaussian", "fresh"): _gaussian_pooled,
    ("gaussian", "mix"): _gaussian_pooled,
    ("kde", "replace"): _kde_replace,
    ("categorical", "replace"): _categorical_replace,
    ("bernoulli", "replace"): _bernoulli_replace,
    ("poisson", "replace"): _poisson_replace,
    ("linear", "replace"): _linear(accumulate=False),
    ("linear", "accumulate"): _linear(accumulate=True),
    ("logistic", "replace"): _glm(accumulate=False),
    ("logistic", "accumulate"): _glm(accumulate=True),
    ("poisson-regression", "replace"): _glm(accumulate=False),
    ("poisson-regression", "accumulate"): _glm(accumulate=True),
}
