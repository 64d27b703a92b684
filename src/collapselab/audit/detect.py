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
split (Youden's J).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import SpecError

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


def provenance_share(origins: list[str]) -> ShareEstimate:
    vals = [str(o).lower() for o in origins]
    synthetic = sum(v in ("synthetic", "1", "true") for v in vals)
    known = sum(v in ("synthetic", "human", "1", "0", "true", "false") for v in vals)
    if known < len(vals):
        raise SpecError(f"provenance column: {len(vals) - known} values are not human/synthetic (or 0/1)")
    share = synthetic / len(vals)
    return ShareEstimate("provenance column", share, share, share, n_candidate=len(vals), note="read, not estimated")


class FeatureDetector:
    """Gradient-boosted trees on record features (the classifier is scikit-learn's HistGradientBoosting)."""

    name = "classifier"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, human: np.ndarray, synthetic: np.ndarray) -> "FeatureDetector":
        from sklearn.ensemble import HistGradientBoostingClassifier

        from threadpoolctl import threadpool_limits

        X = np.concatenate([human, synthetic])
        y = np.r_[np.zeros(len(human)), np.ones(len(synthetic))]
        with threadpool_limits(1):  # one thread: the same trees on any machine
            self.model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=self.seed)
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

    def fit(self, human: np.ndarray, synthetic: np.ndarray) -> "PerplexityDetector":
        # machine text is usually the more predictable; a weak generator's is the less: the training split says
        self.sign = 1.0
        s_h, s_s = self.score(human), self.score(synthetic)
        if _auc(s_s, s_h) < 0.5:
            self.sign = -1.0
            s_h, s_s = -s_h, -s_s
        cuts = np.unique(np.r_[s_h, s_s])
        j = [(s_s >= c).mean() - (s_h >= c).mean() for c in cuts]
        self.threshold = float(cuts[int(np.argmax(j))])
        return self


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from ..curation.judges import auc

    return float(auc(pos[None], neg[None])[0])


def estimate_share(detector, train_human, train_synth, cal_human, cal_synth, candidate) -> ShareEstimate:
    """Train, measure on the calibration split, flag the candidate and correct (Rogan–Gladen)."""
    for name, part in (("reference (human) examples", train_human), ("synthetic examples", train_synth),
                       ("calibration human", cal_human), ("calibration synthetic", cal_synth)):
        if len(part) < 10:
            raise SpecError(f"{name}: {len(part)} records are too few to train and measure a detector (need 10)")
    detector.fit(train_human, train_synth)
    s_h, s_s, s_c = detector.score(cal_human), detector.score(cal_synth), detector.score(candidate)
    t = float((s_s >= detector.threshold).mean())
    f = float((s_h >= detector.threshold).mean())
    p = float((s_c >= detector.threshold).mean())
    share, low, high = rogan_gladen(p, len(candidate), t, len(cal_synth), f, len(cal_human))
    note = "" if np.isfinite(share) else "the detector is no better than chance on the calibration split"
    return ShareEstimate(
        f"detector: {detector.name}", share, low, high, p, t, f, _auc(s_s, s_h), len(candidate), len(cal_human),
        len(cal_synth), note,
    )
