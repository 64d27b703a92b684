"""Detectors of machine-written text: a zero-shot LM score, and a supervised detector when examples are given.

Supervised: the language model's scores (``lmscore.FEATURES``), cheap stylometric features and character and
word n-grams, into a class-balanced, L2-regularised logistic regression. It is measured by grouped
cross-fitting: the labelled records are cut into K folds by *prompt group* (passages that open with the same
words, e.g. a human text and a model's continuation of its opening, are one group and never straddle folds);
each record is scored by the model trained without its fold, so every calibration score is out-of-sample; the
threshold is Youden's J on those scores, and TPR / FPR / AUROC are measured on them. Each candidate record is
scored by one of the same K models (assigned at random), so candidate and calibration scores come from the same
distribution of detectors: what the Rogan–Gladen correction and the mixture likelihood both assume.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from ..errors import InputError
from .lmscore import SCORES

PROMPT_WORDS = 8  # passages that share their first words share a prompt: one group
_SENT = re.compile(r"(?<=[.!?])\s+")
_WORDS = re.compile(r"\w+")


def prompt_groups(texts: list[str]) -> np.ndarray:
    """A stable group id per text from its first :data:`PROMPT_WORDS` words (case and spacing ignored)."""
    return np.array(
        [zlib.crc32(" ".join(_WORDS.findall(t.lower())[:PROMPT_WORDS]).encode()) for t in texts], dtype=np.int64
    )


STYLE = (
    "word_length",
    "word_length_sd",
    "type_token_100",
    "sentence_words",
    "sentence_words_sd",
    "punctuation",
    "uppercase",
    "digits",
    "non_ascii",
    "newlines",
    "repeated_trigrams",
    "characters",
)


def stylometric(texts: list[str]) -> np.ndarray:
    """(N, len(STYLE)) cheap features of writing style, all computed from the text alone."""
    out = np.zeros((len(texts), len(STYLE)))
    for i, t in enumerate(texts):
        words = _WORDS.findall(t)
        lengths = np.array([len(w) for w in words]) if words else np.zeros(1)
        sents = [len(_WORDS.findall(s)) for s in _SENT.split(t) if s.strip()] or [0]
        lower = [w.lower() for w in words]
        tri = list(zip(lower, lower[1:], lower[2:]))
        n = max(len(t), 1)
        out[i] = (
            lengths.mean(),
            lengths.std(),
            len(set(lower[:100])) / max(len(lower[:100]), 1),
            np.mean(sents),
            np.std(sents),
            sum(not c.isalnum() and not c.isspace() for c in t) / n,
            sum(c.isupper() for c in t) / n,
            sum(c.isdigit() for c in t) / n,
            sum(ord(c) > 127 for c in t) / n,
            t.count("\n") / max(len(words), 1),
            1 - len(set(tri)) / len(tri) if tri else 0.0,
            np.log1p(len(t)),
        )
    return out


class ZeroShotDetector:
    """One zero-shot LM score (higher = more machine-like), thresholded by the caller."""

    def __init__(self, scorer, score: str = "fast_detectgpt"):
        if score not in SCORES:
            raise InputError(f"zero-shot score {score!r}: allowed {', '.join(SCORES)}")
        self.scorer, self.column = scorer, SCORES.index(score)
        self.name = f"{score} under the {scorer.name}"

    def score(self, texts: list[str]) -> np.ndarray:
        return self.scorer.scores(texts)[:, self.column]


class SupervisedTextDetector:
    """LM scores + stylometry + n-grams → class-balanced logistic regression (one fit; see :func:`crossfit`)."""

    def __init__(self, scorer, C: float = 1.0, seed: int = 0):
        self.scorer, self.C, self.seed = scorer, C, seed
        self.name = f"supervised: {'LM scores, ' if scorer is not None else ''}stylometry and n-grams"

    def _dense(self, texts):
        parts = [stylometric(texts)]
        if self.scorer is not None:
            parts.insert(0, self.scorer.scores(texts))
        return np.concatenate(parts, axis=1)

    def fit(self, texts: list[str], y: np.ndarray, dense: np.ndarray | None = None) -> SupervisedTextDetector:
        from scipy import sparse
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        d = self._dense(texts) if dense is None else dense
        self.mean, self.sd = d.mean(0), np.where(d.std(0) > 0, d.std(0), 1.0)
        self.chars = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 4), min_df=2, max_features=20000, sublinear_tf=True
        )
        self.words = TfidfVectorizer(
            analyzer="word", ngram_range=(1, 2), min_df=2, max_features=20000, sublinear_tf=True
        )
        X = sparse.hstack([self._scaled(d), self.chars.fit_transform(texts), self.words.fit_transform(texts)]).tocsr()
        self.model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000)
        self.model.fit(X, y)
        return self

    def _scaled(self, d):
        from scipy import sparse

        return sparse.csr_matrix(np.nan_to_num((d - self.mean) / self.sd) * DENSE_WEIGHT)

    def score(self, texts: list[str], dense: np.ndarray | None = None) -> np.ndarray:
        from scipy import sparse

        d = self._dense(texts) if dense is None else dense
        X = sparse.hstack([self._scaled(d), self.chars.transform(texts), self.words.transform(texts)]).tocsr()
        return self.model.decision_function(X)


DENSE_WEIGHT = 1.0  # the dense features' scale against the unit-norm n-gram blocks


def fold_of(groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold 0..k-1 per record, whole groups at a time."""
    uniq = np.unique(groups)
    assign = dict(zip(uniq, rng.permutation(len(uniq)) % k))
    return np.array([assign[g] for g in groups])


def crossfit(
    make, human: list[str], synthetic: list[str], candidate: list[str], rng: np.random.Generator, folds: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold scores of the human and synthetic records and candidate scores from the same fold models."""
    texts = list(human) + list(synthetic)
    y = np.r_[np.zeros(len(human)), np.ones(len(synthetic))]
    fold = fold_of(prompt_groups(texts), folds, rng)
    cand_fold = rng.permutation(len(candidate)) % folds
    probe = make()
    dense_all = probe._dense(texts + list(candidate))  # LM scores once per text
    dense, dense_c = dense_all[: len(texts)], dense_all[len(texts) :]
    oof, s_c = np.zeros(len(texts)), np.zeros(len(candidate))
    for k in range(folds):
        train = fold != k
        if len(np.unique(y[train])) < 2 or not (~train).any():
            raise InputError("too few prompt groups to cross-fit a detector: give more reference or example records")
        det = make().fit([texts[i] for i in np.flatnonzero(train)], y[train], dense[train])
        oof[~train] = det.score([texts[i] for i in np.flatnonzero(~train)], dense[~train])
        if (cand_fold == k).any():
            idx = np.flatnonzero(cand_fold == k)
            s_c[idx] = det.score([candidate[i] for i in idx], dense_c[idx])
    return oof[: len(human)], oof[len(human) :], s_c
