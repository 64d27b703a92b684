"""Word n-gram language models, all replicates in one set of sorted tables: the quick way to watch rare words vanish.

A model of order k counts, for every context of j-1 words (j = k, k-1, ..., 1), which word follows it.
Records are fixed-length blocks of word ids (text.py); each record starts from k-1 begin-of-record marks.
Sampling draws the next word from the longest context seen in training (backing off to shorter ones when
a context was never followed by anything), or, with ``interpolation`` λ, from the next-shorter order with
probability λ at each order (Jelinek–Mercer as a sampler). ``smoothing`` ε draws a word uniformly from the
corpus vocabulary with probability ε (additive smoothing at the unigram level): at 0, the maximum-likelihood
model, a word that drops out of one generation's text can never come back.

Tables are keyed by 64-bit hashes of (replicate, context) and (replicate, context, word): sorting and
``searchsorted`` replace dictionaries, so every replicate is fitted and sampled in the same array calls.
(A hash collision needs two of ~10⁷ keys to agree on 64 bits: ~10⁻⁵ per run at the largest sizes.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from ..errors import SpecError
from ..metrics.text import rare_words, text_metrics
from .base import Family, FamilyTags, Metrics, Params, register_family

_MIX = np.uint64(0x9E3779B97F4A7C15)
_ONE = np.uint64(1)
EVAL_FLOOR = 1e-3  # perplexities mix in this much of the uniform word distribution: unseen words cost log(V/1e-3)


def _hash(start: np.ndarray, *cols: np.ndarray) -> np.ndarray:
    h = start.astype(np.uint64) + _ONE
    with np.errstate(over="ignore"):
        for c in cols:
            h = h * _MIX + c.astype(np.uint64) + _ONE
    return h


def contexts(x: np.ndarray, order: int, start: int):
    """The words of records x (R, M, L), flat, and for j = 1..order the hashes of (replicate, the j-1 words before
    each word); every record begins with order-1 marks ``start``."""
    R, M, L = x.shape
    k = order
    padded = np.concatenate([np.full((R, M, k - 1), start, np.int64), x.astype(np.int64)], axis=2)
    rid = np.broadcast_to(np.arange(R, dtype=np.uint64)[:, None, None], (R, M, L)).ravel()
    words = padded[:, :, k - 1 :].ravel()
    keys = [
        _hash(rid, *(padded[:, :, k - j + i : k - j + i + L].ravel() for i in range(j - 1))) for j in range(1, k + 1)
    ]
    return words, keys


@dataclass(eq=False)
class _Table:
    """Counts of (context, next word) for one context length, all replicates together."""

    ctx: np.ndarray  # (C,) sorted context hashes
    first: np.ndarray  # (C,) index of each context's first pair
    total: np.ndarray  # (C,) how often each context was followed by a word
    cum: np.ndarray  # (P,) running count over pairs, grouped by context
    nexts: np.ndarray  # (P,) the word of each pair
    pair_keys: np.ndarray  # (P,) sorted (context, word) hashes
    pair_counts: np.ndarray  # (P,) their counts, aligned with pair_keys

    @classmethod
    def build(cls, ctx_keys: np.ndarray, nexts: np.ndarray) -> _Table:
        # distinct pairs by one sort of their hashes (lexsort on two keys is ~30x slower), then the pairs
        # grouped by context with a stable sort: deterministic, and the words of a context stay contiguous
        hashes = _hash(ctx_keys, nexts)
        order = np.argsort(hashes)  # ties are identical pairs, so an unstable sort is still deterministic
        h = hashes[order]
        new = np.empty(h.size, bool)
        new[0] = True
        new[1:] = h[1:] != h[:-1]
        starts = np.flatnonzero(new)
        pair, at, counts = h[starts], order[starts], np.diff(np.append(starts, h.size))
        by_ctx = np.argsort(ctx_keys[at], kind="stable")
        pk, pw, pc = ctx_keys[at][by_ctx], nexts[at][by_ctx], counts[by_ctx]
        ctx_new = np.empty(pk.size, bool)
        ctx_new[0] = True
        ctx_new[1:] = pk[1:] != pk[:-1]
        first = np.flatnonzero(ctx_new)
        cum = np.cumsum(pc)
        total = np.add.reduceat(pc, first)
        return cls(pk[first], first, total, cum, pw.astype(np.int32), pair, counts)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.minimum(np.searchsorted(self.ctx, keys), self.ctx.size - 1)
        return pos, self.ctx[pos] == keys

    def draw(self, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A next word for contexts at ``pos``, in proportion to the counts."""
        before = np.where(self.first[pos] > 0, self.cum[self.first[pos] - 1], 0)
        target = before + np.floor(rng.random(pos.size) * self.total[pos]).astype(np.int64)
        return self.nexts[np.searchsorted(self.cum, target, side="right")]

    def prob(self, ctx_keys: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(word | context) by maximum likelihood, and whether the context was seen."""
        pos, seen = self.find(ctx_keys)
        pair = _hash(ctx_keys, words)
        ppos = np.minimum(np.searchsorted(self.pair_keys, pair), self.pair_keys.size - 1)
        count = np.where(self.pair_keys[ppos] == pair, self.pair_counts[ppos], 0)
        return np.where(seen, count / np.maximum(self.total[pos], 1), 0.0), seen


@dataclass(eq=False)
class NGramModel:
    tables: list[_Table]  # tables[j-1]: contexts of j-1 words
    R: int
    length: int  # words per record
    V: int  # vocabulary size (ids 0..V-1); V itself marks the start of a record
    interpolation: float
    smoothing: float

    @property
    def order(self) -> int:
        return len(self.tables)

    def _contexts(self, hist: list[np.ndarray], rid: np.ndarray, j: int) -> np.ndarray:
        return _hash(rid, *hist[len(hist) - (j - 1) :]) if j > 1 else _hash(rid)

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        k, R = self.order, self.R
        rid = np.repeat(np.arange(R, dtype=np.uint64), m)
        hist = [np.full(R * m, self.V, np.int64)] * (k - 1)
        out = np.empty((R * m, self.length), np.int32)
        for t in range(self.length):
            # the order each chain starts from: k, or lower with probability λ per step down
            if self.interpolation > 0:
                down = rng.geometric(1 - self.interpolation, R * m) - 1
                start = np.maximum(k - down, 1)
            else:
                start = np.full(R * m, k)
            word = np.full(R * m, -1, np.int64)
            for j in range(k, 0, -1):
                todo = (word < 0) & (start >= j)
                if not todo.any():
                    continue
                pos, seen = self.tables[j - 1].find(self._contexts(hist, rid, j)[todo])
                idx = np.flatnonzero(todo)[seen]
                word[idx] = self.tables[j - 1].draw(pos[seen], rng)
            if self.smoothing > 0:
                flip = rng.random(R * m) < self.smoothing
                word[flip] = rng.integers(1, self.V, flip.sum())
            out[:, t] = word
            hist = [*hist[1:], word] if k > 1 else hist
        return out.reshape(R, m, self.length)

    def nll(self, x: np.ndarray) -> np.ndarray:
        """Mean negative log-likelihood per word of records x, (R, M, L) or (M, L) for every replicate: (R,)."""
        return self.record_nll(x).mean(axis=1)  # records have equal lengths: the mean of means is per word

    def record_nll(self, x: np.ndarray) -> np.ndarray:
        """Mean negative log-likelihood per word of each record: (R, M)."""
        if x.ndim == 2:
            x = np.broadcast_to(x, (self.R, *x.shape))
        R, M, L = x.shape
        lam = self.interpolation
        words, keys = contexts(x, self.order, self.V)
        # interpolated probability, from the shortest context up: p_j = (1-λ) P_j + λ p_{j-1} where the
        # context is seen, p_{j-1} where it is not (all weight backs off)
        p = None
        for table, key in zip(self.tables, keys):
            pj, seen = table.prob(key, words)
            p = pj if p is None else np.where(seen, (1 - lam) * pj + lam * p, p)
        p = (1 - self.smoothing) * p + self.smoothing / (self.V - 1)
        p = (1 - EVAL_FLOOR) * p + EVAL_FLOOR / (self.V - 1)
        return -np.log(p).reshape(R, M, L).mean(axis=2)


@register_family
class NGramFamily(Family):
    name = "ngram"
    tags = FamilyTags(accepts=("text",), measures_samples=True, uses_anchor=True, scores_records=True)
    tail_metrics = ("rare_word_survival",)
    spread_metrics = ("distinct_2",)

    class Params(Params):
        order: int = Field(default=3, ge=1, le=6, description="n: words of context + 1")
        interpolation: float = Field(default=0.0, ge=0, lt=1, description="λ: weight passed to shorter contexts")
        smoothing: float = Field(default=0.0, ge=0, lt=1, description="ε: chance of a uniformly drawn word")
        rare_count: int = Field(default=1, ge=1, description="rare words occur at most this often in the real data")
        embedding_diversity: bool = Field(default=False, description="add the all-MiniLM-L6-v2 diversity metric")

    @classmethod
    def check_spec(cls, spec, params):
        if spec.replicates * spec.data.n * spec.data.params.get("block", 64) > 2e8:
            raise SpecError(
                f"replicates x data.n = {spec.replicates * spec.data.n}: too many records for an in-memory n-gram "
                "table (keep replicates x n x block under 2e8 words)"
            )

    def __init__(self, params, reference):
        super().__init__(params, reference)
        self.V = len(reference.truth.vocab)
        self.anchor: NGramModel | None = None
        self.rare: np.ndarray | None = None

    def fit(self, x, rng):
        nexts, keys = contexts(x, self.params.order, self.V)
        tables = [_Table.build(key, nexts) for key in keys]
        return NGramModel(tables, x.shape[0], x.shape[2], self.V, self.params.interpolation, self.params.smoothing)

    def set_anchor(self, model, real):
        self.anchor = model
        self.rare = rare_words(real, self.V, self.params.rare_count)

    def record_loglik(self, model, x):
        return -model.record_nll(x)  # per word: records have equal lengths

    def metrics(self, model, samples):
        decode = self.reference.truth.vocab.decode if self.params.embedding_diversity else None
        out = text_metrics(samples, self.V, self.rare, decode)
        out["ppl_real"] = np.exp(model.nll(self.reference.heldout))
        per_record = self.anchor.record_nll(samples)
        out["ppl_gen0"] = np.exp(per_record.mean(axis=1))
        return Metrics(out, per_record={"ppl_gen0": np.exp(per_record[0])})
