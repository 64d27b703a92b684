"""Numeric features of records of any kind, for the discriminator judge and the poisoning screens.

Vectors are used as they are; categories become one-hot columns; text (word-id blocks) becomes hashed
counts of words and word pairs (square-rooted, so a repeated phrase stands out without swamping the rest);
images are average-pooled to 7 × 7. All arrays keep the leading replicate axis: (R, N, ...) → (R, N, D).
"""

from __future__ import annotations

import numpy as np

TEXT_BUCKETS = 1024
_MIX = np.uint64(0x9E3779B97F4A7C15)


def record_features(x: np.ndarray, kind: str, categories: int | None = None) -> np.ndarray:
    """Features (R, N, D); ``categories`` fixes the one-hot width of categorical records, so that two sets
    compared with each other (real and synthetic) get the same columns whatever categories each holds."""
    if kind == "text":
        return text_features(x)
    if kind == "image":
        R, N, h, w = x.shape
        f = 4 if h % 4 == 0 and w % 4 == 0 else 1
        return x.reshape(R, N, h // f, f, w // f, f).mean(axis=(3, 5)).reshape(R, N, -1).astype(float)
    if kind == "categorical":
        K = categories or int(x.max()) + 1
        if K <= TEXT_BUCKETS:
            return (x[..., None] == np.arange(K)).astype(float)
        return (x[..., None] % TEXT_BUCKETS == np.arange(TEXT_BUCKETS)).astype(float)
    x = np.asarray(x, dtype=float)
    return x[..., None] if x.ndim == 2 else x


def text_features(x: np.ndarray) -> np.ndarray:
    """Hashed unigram and bigram counts per record, (R, N, L) word ids → (R, N, 256), square-rooted."""
    R, N, L = x.shape
    words = x.astype(np.uint64)
    uni = (words * _MIX) >> np.uint64(56)
    pairs = ((words[..., :-1] * _MIX) ^ (words[..., 1:] + np.uint64(0x632BE59BD9B4E019))) * _MIX >> np.uint64(56)
    codes = np.concatenate([uni, pairs], axis=-1).astype(np.int64) % TEXT_BUCKETS  # (R, N, 2L-1)
    flat = (np.arange(R * N)[:, None] * TEXT_BUCKETS + codes.reshape(R * N, -1)).ravel()
    counts = np.bincount(flat, minlength=R * N * TEXT_BUCKETS).reshape(R, N, TEXT_BUCKETS)
    return np.sqrt(counts.astype(float))


def tfidf(counts_sqrt: np.ndarray) -> np.ndarray:
    """TF-IDF rows (unit length) from square-rooted hashed counts (R, N, B), document frequencies per replicate:
    what a repeated rare phrase shares across poisoned records stands out against common words."""
    counts = counts_sqrt**2
    df = (counts > 0).mean(axis=1, keepdims=True)
    w = counts * np.log(1.0 / np.maximum(df, 1e-12))
    return w / np.maximum(np.linalg.norm(w, axis=2, keepdims=True), 1e-12)


def standardise(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Features scaled by the mean and standard deviation of reference features, per replicate."""
    mean = reference.mean(axis=1, keepdims=True)
    sd = reference.std(axis=1, keepdims=True)
    return (features - mean) / np.where(sd > 1e-12, sd, 1.0)
