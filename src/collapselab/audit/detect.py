"""The synthetic share of a candidate data set: read from provenance, or estimated by a measured detector.

A detector is trained on labelled examples (the reference as human-made, examples the user supplies as
synthetic), then *measured* on a held-out calibration split: its true-positive rate t (synthetic flagged) and
false-positive rate f (human flagged). On the candidate it flags a share p; the Rogan–Gladen estimator corrects
it, π = (p − f) / (t − f), and the interval carries the sampling error of p, t and f (delta method):

    Var π ≈ [ p(1−p)/n + (1−π)² f(1−f)/n_human + π² t(1−t)/n_synthetic ] / (t − f)²

with Agresti–Coull adjusted rates in the variance ((k + 2)/(m + 4)), so a rate measured at 0 or 1 still carries
its uncertainty.

Detectors: a gradient-boosted classifier on the records' features (tables, images) or a perplexity detector for
text (per-word negative log-likelihood under a reference n-gram fitted on half of the reference; machine text is
usually more predictable, and the training split decides the direction), its threshold chosen on the training
split (Youden's J, which weighs both classes alike whatever their sizes); the classifier is trained with balanced
class weights, so examples that outnumber the reference do not move its threshold.

With examples, a second estimate beside Rogan–Gladen: the maximum-likelihood weight of the two-component mixture
of the calibration splits' score densities (Liang et al. 2024), with a bootstrap interval.

Without examples of the generator there is no two-sided claim: TPR <= 1 gives only a lower bound,
π >= (p − FPR) / (1 − FPR), with a one-sided 95% confidence bound (Wilson bounds on p and FPR). An upper bound
needs examples. A point estimate is never reported alone: an interval wider than 0.5 says the share is not
identifiable with this detector, and what would narrow it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..curation.judges import auc
from ..errors import InputError

Z95 = 1.959963984540054


@dataclass
class ShareEstimate:
    method: str
    share: float
    low: float
    high: float
    observed: float | None = None  # share flagged by the detector
    tpr: float | None = None
    fpr: float | None = None
    detector_auc: float | None = None
    n_candidate: int = 0
    n_calibration_human: int = 0
    n_calibration_synthetic: int = 0
    note: str = ""
    bound: str = "two-sided"  # or "lower": no examples of the generator, only a lower bound is supported
    mixture: dict | None = None  # the mixture-likelihood estimate {share, low, high}, with examples
    tpr_at_1_fpr: float | None = None  # the detector measured on the calibration split
    tpr_at_5_fpr: float | None = None
    curves: dict | None = None  # score histograms and the ROC curve, for the report

    def to_dict(self) -> dict:
        return asdict(self)


def rogan_gladen(p: float, n: int, tpr: float, n_pos: int, fpr: float, n_neg: int) -> tuple[float, float, float]:
    """Corrected prevalence with a 95% interval, clipped to [0, 1]."""
    j = tpr - fpr
    if j <= 0.02:
        return float("nan"), 0.0, 1.0  # a detector at chance says nothing about the share
    est = (p - fpr) / j
    w = min(max(est, 0.0), 1.0)
    # variances from Agresti–Coull adjusted rates: a rate measured at 0 or 1 is not known to be exactly that
    pa, ta, fa = ((r * m + 2) / (m + 4) for r, m in ((p, n), (tpr, n_pos), (fpr, n_neg)))
    var = (pa * (1 - pa) / n + (1 - w) ** 2 * fa * (1 - fa) / n_neg + w**2 * ta * (1 - ta) / n_pos) / j**2
    half = Z95 * np.sqrt(var + 1e-12)
    return float(min(max(est, 0.0), 1.0)), float(max(est - half, 0.0)), float(min(est + half, 1.0))


Z95_ONE_SIDED = 1.6448536269514722
WIDE = 0.5  # an interval wider than this: the share is not identifiable with this detector


def wilson(k: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (z: the normal quantile)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def fpr_lower_bound(p: float, n: int, fpr: float, n_neg: int) -> tuple[float, float]:
    """(point, 95% lower confidence bound) of π >= (p − FPR)/(1 − FPR): what the false-positive rate alone supports.

    Both are conservative: the point uses TPR = 1, and the confidence bound takes p at its Wilson lower bound and
    FPR at its Wilson upper bound (each one-sided 97.5%, so together at least 95%)."""
    z = 1.959963984540054
    point = (p - fpr) / (1 - fpr) if fpr < 1 else 0.0
    p_low = wilson(p * n, n, z)[0]
    f_high = wilson(fpr * n_neg, n_neg, z)[1]
    low = (p_low - f_high) / (1 - f_high) if f_high < 1 else 0.0
    return float(min(max(point, 0.0), 1.0)), float(min(max(low, 0.0), 1.0))


def mixture_share(s_h: np.ndarray, s_s: np.ndarray, s_c: np.ndarray, rng: np.random.Generator, boot: int = 200) -> dict:
    """The maximum-likelihood mixture weight of the candidate's scores over the human and synthetic score
    densities (Gaussian KDEs of the calibration splits), with a percentile bootstrap interval over candidate and
    calibration records."""
    from scipy.optimize import minimize_scalar
    from scipy.stats import gaussian_kde

    def mle(h, sy, c) -> float:
        if np.ptp(h) == 0 or np.ptp(sy) == 0:
            return float("nan")
        fh, fs = gaussian_kde(h)(c) + 1e-300, gaussian_kde(sy)(c) + 1e-300
        nll = lambda w: -np.log(w * fs + (1 - w) * fh).sum()  # noqa: E731 - concave in w: one optimum
        best = minimize_scalar(nll, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-4})
        return float(min((best.x, 0.0, 1.0), key=nll))  # the optimum may sit on a bound

    share = mle(s_h, s_s, s_c)
    draws = [
        mle(
            s_h[rng.integers(0, len(s_h), len(s_h))],
            s_s[rng.integers(0, len(s_s), len(s_s))],
            s_c[rng.integers(0, len(s_c), len(s_c))],
        )
        for _ in range(boot)
    ]
    draws = np.asarray([d for d in draws if np.isfinite(d)])
    if not np.isfinite(share) or draws.size < max(boot // 2, 1):
        return {"share": None, "low": 0.0, "high": 1.0}
    low, high = np.quantile(draws, [0.025, 0.975])
    return {"share": share, "low": float(min(low, share)), "high": float(max(high, share)), "bootstrap": int(boot)}


def identifiability_note(est: ShareEstimate) -> str:
    """What to say when the interval is too wide to mean much, and what would narrow it."""
    if est.high - est.low <= WIDE:
        return ""
    if est.bound == "lower":
        return (
            f"only a lower bound is supported without examples of the generator; the share is not identifiable "
            f"(interval {est.low:.2f}–{est.high:.2f}): give --synthetic-examples of the model you suspect"
        )
    return (
        f"the share is not identifiable with this detector (interval {est.low:.2f}–{est.high:.2f}, AUC "
        f"{est.detector_auc:.2f}): more examples, a larger candidate or a stronger detector would narrow it"
    )


def provenance_share(origins: list[str]) -> ShareEstimate:
    vals = [str(o).lower() for o in origins]
    synthetic = sum(v in ("synthetic", "1", "true") for v in vals)
    known = sum(v in ("synthetic", "human", "1", "0", "true", "false") for v in vals)
    if known < len(vals):
        raise InputError(f"provenance column: {len(vals) - known} values are not human/synthetic (or 0/1)")
    share = synthetic / len(vals)
    return ShareEstimate("provenance column", share, share, share, n_candidate=len(vals), note="read, not estimated")


class FeatureDetector:
    """Gradient-boosted trees on record features (the classifier is scikit-learn's HistGradientBoosting)."""

    name = "classifier"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, human: np.ndarray, synthetic: np.ndarray) -> FeatureDetector:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits

        X = np.concatenate([human, synthetic])
        y = np.r_[np.zeros(len(human)), np.ones(len(synthetic))]
        with threadpool_limits(1):  # one thread: the same trees on any machine
            # class-balanced: examples that outnumber the reference (or the reverse) weigh as much in all, so the 0.5
            # threshold does not drift with the ratio of the two (weights only when the sizes differ: they make
            # scikit-learn's trees ~14x slower)
            weights = "balanced" if abs(len(human) - len(synthetic)) > 0.05 * len(y) else None
            self.model = HistGradientBoostingClassifier(
                max_iter=100, learning_rate=0.1, random_state=self.seed, class_weight=weights
            )
            self.model.fit(X, y)
        self.threshold = 0.5
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self.model.predict_proba(x)[:, 1]


class PerplexityDetector:
    """Per-word NLL under a reference n-gram: flagged when below a threshold (machine text is more predictable)."""

    name = "perplexity"

    def __init__(self, reference_lm):
        self.lm = reference_lm  # a fitted NGramModel with R = 1

    sign = 1.0

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self.sign * self.lm.record_nll(x[None])[0]  # higher = more likely synthetic

    def fit(self, human: np.ndarray, synthetic: np.ndarray) -> PerplexityDetector:
        # machine text is usually the more predictable; a weak generator's is the less: the training split says
        self.sign = 1.0
        s_h, s_s = self.score(human), self.score(synthetic)
        if _auc(s_s, s_h) < 0.5:
            self.sign = -1.0
            s_h, s_s = -s_h, -s_s
        self.threshold = youden_threshold(s_h, s_s)
        return self


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float(auc(pos[None], neg[None])[0])


def estimate_share(
    detector,
    train_human,
    train_synth,
    cal_human,
    cal_synth,
    candidate,
    rng: np.random.Generator | None = None,
    mixture_boot: int = 0,
) -> ShareEstimate:
    """Train, measure on the calibration split, flag the candidate and correct (Rogan–Gladen); with
    ``mixture_boot`` bootstrap draws, the mixture-likelihood estimate beside it."""
    for name, part in (
        ("reference (human) examples", train_human),
        ("synthetic examples", train_synth),
        ("calibration human", cal_human),
        ("calibration synthetic", cal_synth),
    ):
        if len(part) < 10:
            raise InputError(f"{name}: {len(part)} records are too few to train and measure a detector (need 10)")
    rng = np.random.default_rng(0) if rng is None else rng
    detector.fit(train_human, train_synth)  # both detectors weigh the two classes alike (class weights, Youden's J)
    s_h, s_s, s_c = detector.score(cal_human), detector.score(cal_synth), detector.score(candidate)
    return share_from_scores(detector.name, s_h, s_s, s_c, detector.threshold, rng, mixture_boot)


def youden_threshold(s_h: np.ndarray, s_s: np.ndarray) -> float:
    """The cut that maximises TPR − FPR (flagged: score >= cut), which weighs both classes alike."""
    cuts = np.unique(np.r_[s_h, s_s])
    j = [(s_s >= c).mean() - (s_h >= c).mean() for c in cuts]
    return float(cuts[int(np.argmax(j))])


def tpr_at_fpr(s_h: np.ndarray, s_s: np.ndarray, fpr: float) -> float:
    """The share of synthetic scores above the human scores' (1 − fpr) quantile."""
    return float((s_s > np.quantile(s_h, 1 - fpr)).mean())


def share_from_scores(name: str, s_h, s_s, s_c, threshold: float, rng=None, mixture_boot: int = 0) -> ShareEstimate:
    """Rogan–Gladen (and, with ``mixture_boot``, the mixture likelihood) from calibration scores of human and
    synthetic records measured out of sample, and the candidate's scores."""
    s_h, s_s, s_c = (np.asarray(v, float) for v in (s_h, s_s, s_c))
    t = float((s_s >= threshold).mean())
    f = float((s_h >= threshold).mean())
    p = float((s_c >= threshold).mean())
    share, low, high = rogan_gladen(p, len(s_c), t, len(s_s), f, len(s_h))
    note = "" if np.isfinite(share) else "the detector is no better than chance on the calibration split"
    est = ShareEstimate(
        f"detector: {name}", share, low, high, p, t, f, _auc(s_s, s_h), len(s_c), len(s_h), len(s_s), note
    )
    est.tpr_at_1_fpr, est.tpr_at_5_fpr = tpr_at_fpr(s_h, s_s, 0.01), tpr_at_fpr(s_h, s_s, 0.05)
    est.curves = score_curves(s_h, s_s, s_c, threshold)
    if mixture_boot:
        est.mixture = mixture_share(s_h, s_s, s_c, np.random.default_rng(0) if rng is None else rng, mixture_boot)
    est.note = "; ".join(x for x in (est.note, identifiability_note(est)) if x)
    return est


def score_curves(s_h, s_s, s_c, threshold: float | None, bins: int = 30) -> dict:
    """What the report draws: score histograms on shared bins and the ROC curve (at most ~100 points)."""
    parts = [np.asarray(v, float) for v in (s_h, s_s, s_c) if v is not None and len(v)]
    allv = np.concatenate(parts)
    allv = allv[np.isfinite(allv)]
    edges = np.linspace(allv.min(), allv.max(), bins + 1) if allv.size and np.ptp(allv) > 0 else np.array([0.0, 1.0])
    hist = lambda v: (
        None if v is None or not len(v) else np.histogram(np.clip(v, edges[0], edges[-1]), edges)[0].tolist()
    )  # noqa: E731
    out = {
        "edges": edges.tolist(),
        "human": hist(s_h),
        "synthetic": hist(s_s),
        "candidate": hist(s_c),
        "threshold": threshold,
    }
    if s_s is not None and len(s_s) and len(s_h):
        cuts = np.quantile(np.r_[s_h, s_s], np.linspace(0, 1, 101))
        out["roc"] = {
            "fpr": [1.0] + [float((s_h >= c).mean()) for c in cuts] + [0.0],
            "tpr": [1.0] + [float((s_s >= c).mean()) for c in cuts] + [0.0],
        }
    return out


def estimate_lower_bound(detector, train_human, cal_human, candidate, alpha: float = 0.05) -> ShareEstimate:
    """No examples of the generator: flag records beyond the human training split's two-sided ``alpha`` band of
    scores (machine text may be more or less predictable than human text), measure the FPR on the calibration
    split, and report only the lower bound that supports."""
    for name, part in (("reference (human) records", train_human), ("calibration human", cal_human)):
        if len(part) < 10:
            raise InputError(f"{name}: {len(part)} records are too few to measure a detector (need 10)")
    s_t = detector.score(train_human)
    lo, hi = np.nanquantile(s_t, [alpha / 2, 1 - alpha / 2])  # a text too short to score has no score
    flag = lambda s: (s < lo) | (s > hi)  # noqa: E731
    s_cal, s_cand = detector.score(cal_human), detector.score(candidate)
    f = float(flag(s_cal).mean())
    p = float(flag(s_cand).mean())
    point, low = fpr_lower_bound(p, len(candidate), f, len(cal_human))
    est = ShareEstimate(
        f"detector: {detector.name}, lower bound from its false-positive rate",
        point,
        low,
        1.0,
        p,
        None,
        f,
        None,
        len(candidate),
        len(cal_human),
        0,
        bound="lower",
    )
    est.curves = {**score_curves(s_cal, None, s_cand, None), "band": [float(lo), float(hi)]}
    est.note = identifiability_note(est) or (
        "a lower bound only: without examples of the generator an upper bound is not supported"
    )
    return est
