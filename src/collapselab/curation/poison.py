"""Poisoning: records from an adversarial source, and the screens that look for them.

Attacks (``[poison]``), injected at ``rate`` into the real pool or every synthetic pool, replacing records at
random positions; injected records carry ``poisoned = 1`` and the attacker's ``source`` id in their provenance:

- ``shifted-cluster``  a tight cluster ``shift`` standard deviations from the data's mean along a direction
                       (vector records);
- ``outliers``         scattered points, ``scale`` standard deviations wide around the mean (vector records);
- ``label-flip``       regression rows [x, y] with the label negated (y → −y);
- ``trigger-phrase``   real text records with a phrase written ``repeats`` times into them.

Screens (``[screen]``), run on every pool as it enters the loop (the real pool once, each synthetic pool when
drawn); flagged records are removed and the pool is refilled by resampling its unflagged records:

- ``mahalanobis``      robust squared Mahalanobis distances (a minimum-covariance-determinant estimate by
                       C-steps, batched over replicates) above the χ² 0.999 quantile;
- ``isolation-forest`` scikit-learn's IsolationForest on subsamples of ``isolation_samples`` records (small
                       subsamples resist the masking of a dense poisoned cluster), flagging the
                       ``contamination`` share (one forest per replicate: a screen, not a model, so the loop over
                       replicates is accepted here);
- ``spectral``         spectral signatures (Tran et al. 2018): projections on the top singular vector of the
                       centred features, flagged beyond 4 robust standard deviations;
- ``loso``             leave-one-source-out against a trusted anchor set (held-out real records): the family is
                       refitted without each source; a source whose removal raises the anchor's log-likelihood
                       by more than 4 robust standard deviations of those gains is flagged, with all its records.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from ..errors import SpecError
from ..plugins import ATTACKS, SCREENS
from ..spec import validate_params
from .features import record_features, tfidf

VECTOR_KINDS = ("continuous",)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShiftedParams(_Params):
    shift: float = Field(default=6.0, description="distance from the mean, in standard deviations")
    spread: float = Field(default=0.3, gt=0, description="the cluster's standard deviation, in data sds")
    direction: list[float] | None = Field(default=None, description="default: the first coordinate axis")


class OutlierParams(_Params):
    scale: float = Field(default=8.0, gt=0, description="spread of the outliers, in standard deviations")


class FlipParams(_Params):
    pass


class TriggerParams(_Params):
    phrase: str = Field(description="words of the corpus (e.g. two rare ones), written into poisoned records")
    repeats: int = Field(default=3, ge=1)


def check_poison(spec, source_kind: str) -> None:
    if spec.poison is not None:
        cls = ATTACKS.resolve(spec.poison.kind, "poison.kind")
        if source_kind not in cls.attacks:
            raise SpecError(
                f"poison.kind = {spec.poison.kind!r} attacks {', '.join(cls.attacks)} records, not {source_kind}"
            )
        validate_params(cls.Params, spec.poison.params, "poison.params")


class Attack:
    """An attack: ``kind`` (its name in ``[poison]``), the record kinds it ``attacks``, its ``Params``, and
    ``_records``: the poisoned records that replace those at positions ``idx`` (R, k). Register a new one with
    ``@ATTACKS.register``."""

    kind: ClassVar[str]
    attacks: ClassVar[tuple[str, ...]] = VECTOR_KINDS
    Params: ClassVar[type[BaseModel]] = _Params

    def __init__(self, params: BaseModel, rate: float, source: int):
        self.params, self.rate = params, rate
        self.source = source  # the attacker's source id

    def inject(self, x: np.ndarray, reference: np.ndarray, rng, vocab=None) -> tuple[np.ndarray, np.ndarray]:
        """Records x (R, N, ...) with round(rate·N) replaced by poison; returns (records, poisoned mask).

        Poison takes evenly spaced positions, the same in every replicate: records of a pool are exchangeable,
        so these are as random as any, every prefix of the pool (what mix takes) holds the same share, and
        sources keep one layout across replicates (leave-one-source-out refits them all at once)."""
        R, N = x.shape[:2]
        k = max(1, int(round(self.rate * N)))
        positions = np.floor(np.arange(k) * (N / k) + N / (2 * k)).astype(int)
        idx = np.broadcast_to(positions, (R, k))
        mask = np.zeros((R, N), bool)
        mask[:, positions] = True
        poison = self._records(x, reference, idx, rng, vocab)
        out = x.copy()
        np.put_along_axis(out, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), poison, axis=1)
        return out, mask

    def _records(self, x, reference, idx, rng, vocab) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _taken(x, idx) -> np.ndarray:
        """A copy of the records at positions ``idx``."""
        return np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1).copy()


@ATTACKS.register
class ShiftedCluster(Attack):
    kind = "shifted-cluster"
    Params = ShiftedParams

    def _records(self, x, reference, idx, rng, vocab):
        p = self.params
        R, k = idx.shape
        mean = reference.mean(axis=1, keepdims=True)  # (R, 1, d)
        sd = reference.std(axis=1, keepdims=True)
        d = x.shape[2]
        u = np.zeros(d) if p.direction is None else np.asarray(p.direction, float)
        if p.direction is None:
            u[0] = 1.0
        u = u / np.linalg.norm(u)
        return mean + sd * (p.shift * u + p.spread * rng.standard_normal((R, k, d)))


@ATTACKS.register
class Outliers(Attack):
    kind = "outliers"
    Params = OutlierParams

    def _records(self, x, reference, idx, rng, vocab):
        R, k = idx.shape
        mean = reference.mean(axis=1, keepdims=True)  # (R, 1, d)
        sd = reference.std(axis=1, keepdims=True)
        return mean + self.params.scale * sd * rng.standard_normal((R, k, x.shape[2]))


@ATTACKS.register
class LabelFlip(Attack):
    kind = "label-flip"
    attacks = ("regression",)
    Params = FlipParams

    def _records(self, x, reference, idx, rng, vocab):
        taken = self._taken(x, idx)
        taken[..., -1] = -taken[..., -1]
        return taken


@ATTACKS.register
class TriggerPhrase(Attack):
    kind = "trigger-phrase"
    attacks = ("text",)
    Params = TriggerParams

    def _records(self, x, reference, idx, rng, vocab):
        p = self.params
        R, k = idx.shape
        taken = self._taken(x, idx)
        phrase = vocab.ids(p.phrase.split())
        if (phrase == 0).any():
            raise SpecError(f"poison.params.phrase = {p.phrase!r}: words not in the corpus vocabulary")
        L = taken.shape[2]
        span = len(phrase) * p.repeats
        start = rng.integers(0, max(1, L - span + 1), (R, k))
        pos = start[..., None] + np.arange(min(span, L))  # (R, k, span)
        np.put_along_axis(taken, pos, np.resize(phrase, min(span, L))[None, None].repeat(R, 0).repeat(k, 1), axis=2)
        return taken


def make_attack(spec, sources: int) -> Attack | None:
    if spec.poison is None:
        return None
    cls = ATTACKS.resolve(spec.poison.kind, "poison.kind")
    return cls(cls.Params.model_validate(spec.poison.params), spec.poison.rate, sources)


# --- screens ---------------------------------------------------------------------------------------------------


def robust_mahalanobis(f: np.ndarray, steps: int = 10, support: float = 0.75) -> np.ndarray:
    """Squared distances (R, N) under a minimum-covariance-determinant estimate (C-steps from the median)."""
    R, N, d = f.shape
    h = max(d + 1, int(support * N))
    centre = np.median(f, axis=1)
    cov = np.broadcast_to(np.eye(d), (R, d, d)).copy()
    ridge = 1e-3 * np.mean(np.var(f, axis=1), axis=1)[:, None, None] * np.eye(d) + 1e-12 * np.eye(d)
    for _ in range(steps):
        d2 = _maha(f, centre, cov)
        keep = np.argsort(d2, axis=1, kind="stable")[:, :h]
        sub = np.take_along_axis(f, keep[..., None], axis=1)
        centre = sub.mean(axis=1)
        diff = sub - centre[:, None]
        cov = np.einsum("rni,rnj->rij", diff, diff) / (h - 1) + ridge
    # consistency: the h smallest distances of a Gaussian sample under-estimate its scale
    d2 = _maha(f, centre, cov)
    scale = np.median(d2, axis=1, keepdims=True) / stats.chi2.ppf(0.5, d)
    return d2 / scale


def _maha(f, centre, cov):
    diff = f - centre[:, None]
    sol = np.swapaxes(np.linalg.solve(cov, np.swapaxes(diff, 1, 2)), 1, 2)  # one factorisation per replicate
    return np.einsum("rni,rni->rn", diff, sol)


def spectral_scores(f: np.ndarray) -> np.ndarray:
    """|projection| on the top singular direction of the centred features, in robust standard deviations."""
    centred = f - f.mean(axis=1, keepdims=True)
    if f.shape[2] <= 64:  # few features: the d × d scatter
        _, vecs = np.linalg.eigh(np.einsum("rni,rnj->rij", centred, centred))
        proj = np.einsum("rni,ri->rn", centred, vecs[..., -1])
    else:  # many (text): the N × N Gram matrix; its top eigenvector is the projection up to scale
        vals, vecs = np.linalg.eigh(np.matmul(centred, np.swapaxes(centred, 1, 2)))
        proj = vecs[..., -1] * np.sqrt(np.clip(vals[..., -1:], 0, None))
    med = np.median(proj, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(proj - med), axis=1, keepdims=True)
    return np.abs(proj - med) / np.where(mad > 0, mad, 1.0)


def isolation_flags(f: np.ndarray, contamination: float, samples: int, rng) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    out = np.zeros(f.shape[:2], bool)
    seeds = rng.integers(0, 2**31 - 1, f.shape[0])
    for r in range(f.shape[0]):  # one forest per replicate (see the module notes)
        forest = IsolationForest(
            contamination=contamination,
            max_samples=min(samples, f.shape[1]),
            random_state=int(seeds[r]),
            n_estimators=200,
        )
        out[r] = forest.fit_predict(f[r]) < 0
    return out


def loso_flags(x, source, family, trusted, rng) -> np.ndarray:
    """Records of sources whose removal most improves the trusted anchor's log-likelihood."""
    ids = np.unique(source[0][np.isfinite(source[0])])
    if len(ids) < 3:
        return np.zeros(x.shape[:2], bool)
    anchor = np.broadcast_to(trusted[None], (x.shape[0], *trusted.shape))
    gains = []
    for s in ids:  # a loop over sources, batched over replicates (sources sit at the same positions in all)
        keep = np.flatnonzero(source[0] != s)
        model = family.fit(x[:, keep], rng)
        gains.append(family.record_loglik(model, anchor).mean(axis=1))
    gains = np.stack(gains, axis=1)  # (R, S): higher = the anchor fits better without that source
    med = np.median(gains, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(gains - med), axis=1, keepdims=True)
    bad = (gains - med) > 4 * np.maximum(mad, 1e-9)  # (R, S)
    return ((source[..., None] == ids) & bad[:, None, :]).any(axis=2)


# a screen: (features (R, N, d), records, screen spec, source ids, family, trusted records, rng) -> (R, N) flags
@SCREENS.register(name="mahalanobis")
def _mahalanobis_screen(f, x, spec, source, family, trusted, rng) -> np.ndarray:
    return robust_mahalanobis(f) > stats.chi2.ppf(0.999, f.shape[2])


@SCREENS.register(name="isolation-forest")
def _isolation_screen(f, x, spec, source, family, trusted, rng) -> np.ndarray:
    return isolation_flags(f, spec.contamination, spec.isolation_samples, rng)


@SCREENS.register(name="spectral")
def _spectral_screen(f, x, spec, source, family, trusted, rng) -> np.ndarray:
    return spectral_scores(f) > 4.0


@SCREENS.register(name="loso")
def _loso_screen(f, x, spec, source, family, trusted, rng) -> np.ndarray:
    return loso_flags(x, source, family, trusted, rng)


def check_screens(spec) -> None:
    for i, method in enumerate(spec.screen.methods if spec.screen is not None else []):
        SCREENS.resolve(method, f"screen.methods.{i}")


def screen_flags(spec, x, kind, source, family, trusted, rng) -> np.ndarray:
    """(R, N) records flagged by the screens of ``spec`` (combined by ``any`` or ``all``)."""
    f = record_features(x, kind) if kind != "regression" else np.asarray(x, float)
    if kind == "text":
        f = tfidf(f)
    flags = [SCREENS[method](f, x, spec, source, family, trusted, rng) for method in spec.methods]
    combined = np.stack(flags)
    return combined.any(axis=0) if spec.combine == "any" else combined.all(axis=0)


def refill(flags: np.ndarray, rng) -> np.ndarray:
    """Indices (R, N) that replace each flagged record by a random unflagged record of the same replicate."""
    R, N = flags.shape
    kept = ~flags
    # rank unflagged records per replicate, then draw uniformly among them for each flagged slot
    count = np.maximum(kept.sum(axis=1), 1)
    order = np.argsort(~kept, axis=1, kind="stable")  # unflagged first, in order
    pick = (rng.random((R, N)) * count[:, None]).astype(int)
    replacement = np.take_along_axis(order, pick, axis=1)
    return np.where(kept, np.arange(N)[None, :], replacement)
