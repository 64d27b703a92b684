"""Text metrics over word-id records (R, M, L), one value per replicate, vectorised over replicates.

- ``distinct_n``       distinct n-grams / n-grams in the generation's synthetic text (n = 1, 2, 3)
- ``vocab``            distinct words in it
- ``rare_word_survival`` share of the words seen at most ``rare_count`` times in the chain's real training
                       records (generation 0's data) that still occur in the generation's synthetic text
- ``repetition``       mean over records of 1 - distinct 4-grams / 4-grams (degenerate loops score high)
- ``ppl_real``         perplexity of held-out real text under the generation's model
- ``ppl_gen0``         perplexity of the generation's synthetic text under the chain's generation-0 model
"""

from __future__ import annotations

import numpy as np

from .. import datasets
from .._numerics.batched import bincount_rows
from .._numerics.neural import torch

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: a multiplicative hash of n-grams


def ngram_keys(x: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of the n-grams inside each record: (..., L) -> (..., L - n + 1) uint64."""
    x = x.astype(np.uint64)
    L = x.shape[-1]
    h = x[..., : L - n + 1].copy()
    with np.errstate(over="ignore"):
        for j in range(1, n):
            h = h * _MIX + x[..., j : L - n + 1 + j] + np.uint64(1)
    return h


def distinct_per_group(keys: np.ndarray) -> np.ndarray:
    """Distinct values in each row of a 2-D array (rows = groups): shape (rows,)."""
    s = np.sort(keys, axis=1)
    return 1 + np.count_nonzero(s[:, 1:] != s[:, :-1], axis=1)


def distinct_n(x: np.ndarray, n: int) -> np.ndarray:
    R = x.shape[0]
    keys = ngram_keys(x, n).reshape(R, -1)
    return distinct_per_group(keys) / keys.shape[1]


def repetition(x: np.ndarray, n: int = 4) -> np.ndarray:
    R, M, L = x.shape
    if L < n + 1:
        return np.zeros(R)
    keys = ngram_keys(x, n).reshape(R * M, -1)
    rep = 1.0 - distinct_per_group(keys) / keys.shape[1]
    return rep.reshape(R, M).mean(axis=1)


def rare_words(real: np.ndarray, V: int, rare_count: int) -> np.ndarray:
    """(R, V) mask of the words each replicate's real records hold at most ``rare_count`` times (and at least once)."""
    counts = bincount_rows(real.reshape(real.shape[0], -1), V)
    return (counts > 0) & (counts <= rare_count)


def text_metrics(samples: np.ndarray, V: int, rare: np.ndarray, decode=None) -> dict[str, np.ndarray]:
    """The model-free text metrics of synthetic records (R, M, L); with ``decode`` (record -> text), also
    ``embedding_diversity``."""
    R = samples.shape[0]
    present = bincount_rows(samples.reshape(R, -1), V) > 0
    present[:, 0] = False  # <unk> is not a word of the corpus
    n_rare = rare.sum(axis=1)
    out = {
        "vocab": present.sum(axis=1).astype(float),
        "distinct_1": distinct_n(samples, 1),
        "distinct_2": distinct_n(samples, 2),
        "distinct_3": distinct_n(samples, 3),
        "rare_word_survival": np.where(n_rare > 0, (present & rare).sum(axis=1) / np.maximum(n_rare, 1), np.nan),
        "repetition": repetition(samples),
    }
    if decode is not None:
        out["embedding_diversity"] = embedding_diversity([[decode(x) for x in rep] for rep in samples])
    return out


_EMBEDDER: list = []  # (tokenizer, model), loaded once per process


def embedding_diversity(texts_per_replicate: list[list[str]], max_records: int = 256) -> np.ndarray:
    """Mean pairwise cosine distance of the records' sentence embeddings (all-MiniLM-L6-v2, packaged), per replicate.

    1 - mean cosine similarity over distinct pairs: it falls as a generation's texts become alike in meaning,
    which distinct-n (surface n-grams) can miss.
    """
    t = torch()
    if not _EMBEDDER:
        from transformers import AutoModel, AutoTokenizer

        folder = datasets.minilm_dir()
        _EMBEDDER.extend([AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()])
    tok, model = _EMBEDDER
    out = []
    for texts in texts_per_replicate:
        texts = texts[:max_records]
        with t.no_grad():
            enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].float()
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # mean pooling, then unit length
            emb = t.nn.functional.normalize(emb, dim=-1).numpy().astype(np.float64)
        k = len(texts)
        sim = (emb @ emb.T).sum() - k  # off-diagonal pairs
        out.append(1.0 - sim / max(k * (k - 1), 1))
    return np.array(out)
