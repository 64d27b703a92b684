"""Zero-shot scores of machine-written text under a local causal language model (the packaged SmolLM2-135M).

For each text, one forward pass over its first ``max_tokens`` tokens gives, per predicted token, the log
probability of the token that follows, its rank, and the model's predictive distribution; from those:

- ``loglik``: the mean token log-likelihood (machine text is more predictable);
- ``logrank``: minus the mean log rank of the observed tokens (Gehrmann et al. 2019, GLTR);
- ``entropy``: minus the mean predictive entropy;
- ``fast_detectgpt``: the conditional probability curvature of Fast-DetectGPT (Bao et al., ICLR 2024) in its
  analytic form, sampling and scoring with the same model: (Σ log p(x_t) − Σ μ_t) / √Σ σ²_t, where μ_t and σ²_t
  are the mean and variance of log p(x̃) for x̃ drawn from the model's distribution at position t.

Every score is oriented so that higher means more machine-like, as the literature finds; a supervised detector
learns its own weights. Binoculars (Hans et al. 2024) needs a second model that shares the tokenizer; none is
packaged, so it is not offered.

Scores are cached by content hash (the model, the token limit and the text), in memory and in a SQLite file
under the data cache, so each text is scored once. Texts are padded on the right, so a text's score does not
depend on the batch it shares a forward pass with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..datasets import cache_dir
from ..errors import InputError
from ..families.lm import load_judge_model, torch
from ..io import connect_sqlite

SCORES = ("loglik", "logrank", "entropy", "fast_detectgpt")  # the zero-shot scores
# further per-text features a supervised detector uses beside them: the spread of token log-likelihoods and how
# often the observed token is the model's first or among its ten first choices (GLTR)
FEATURES = (*SCORES, "loglik_std", "top1", "top10")
DEFAULT_MODEL = "smollm2"


class LMScorer:
    """Scores texts under a causal LM: ``scores(texts)`` → an (N, 7) array, columns :data:`FEATURES` (the first
    four are the zero-shot scores, :data:`SCORES`)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        max_tokens: int = 128,
        batch_size: int = 16,
        cache: str | Path | None = "default",
        progress=None,
    ):
        self.model_name, self.max_tokens, self.batch_size = str(model), int(max_tokens), int(batch_size)
        if self.model_name != DEFAULT_MODEL:
            path = Path(self.model_name).expanduser()
            if not (path.suffix.lower() == ".gguf" and path.is_file()) and not (path / "config.json").is_file():
                raise InputError(
                    f"--scoring-model {self.model_name}: not {DEFAULT_MODEL}, a .gguf file or a Hugging "
                    "Face model folder (with config.json)"
                )
        self.progress = progress  # called with (texts scored, texts to score)
        self._model = self._tokenizer = None
        self._memory: dict[str, np.ndarray] = {}
        self._cache_path = _default_cache() if cache == "default" else (Path(cache) if cache else None)
        self._identity: str | None = None
        self.tokens_scored = 0

    @property
    def name(self) -> str:
        return f"language model {Path(self.model_name).name}"

    def _load(self):
        if self._model is None:
            self._model, self._tokenizer = _loaded(self.model_name)
            self._torch = torch()
            # what the cache keys on: the model's configuration and weights' shapes and a checksum of its values
            state = self._model.state_dict()
            h = hashlib.sha256(self._model.config.to_json_string().encode())
            for k in sorted(state)[:8]:
                h.update(k.encode())
                h.update(np.float64(state[k].double().sum().item()).tobytes())
            self._identity = h.hexdigest()[:16]
        return self._model, self._tokenizer

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._identity}|{self.max_tokens}|{text}".encode()).hexdigest()

    def scores(self, texts: list[str]) -> np.ndarray:
        self._load()
        keys = [self._key(t) for t in texts]
        todo = [i for i, k in enumerate(keys) if k not in self._memory]
        if todo and self._cache_path is not None:
            self._memory.update(_read_cache(self._cache_path, [keys[i] for i in todo]))
            todo = [i for i in todo if keys[i] not in self._memory]
        if todo:
            fresh = self._score([texts[i] for i in todo])
            new = {keys[i]: row for i, row in zip(todo, fresh)}
            self._memory.update(new)
            if self._cache_path is not None:
                _write_cache(self._cache_path, new)
        return np.stack([self._memory[k] for k in keys]) if keys else np.zeros((0, len(FEATURES)))

    def _score(self, texts: list[str]) -> np.ndarray:
        model, tok = self._load()
        t = self._torch
        ids = [
            tok(x, add_special_tokens=False, truncation=True, max_length=self.max_tokens)["input_ids"] for x in texts
        ]
        order = np.argsort([-len(i) for i in ids], kind="stable")  # similar lengths share a batch: less padding
        out = np.full((len(texts), len(FEATURES)), np.nan)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        done = 0
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            L = max(len(ids[i]) for i in batch)
            x = t.full((len(batch), L), pad, dtype=t.long)
            mask = t.zeros((len(batch), L), dtype=t.long)
            for row, i in enumerate(batch):
                x[row, : len(ids[i])] = t.tensor(ids[i], dtype=t.long)
                mask[row, : len(ids[i])] = 1
            with t.inference_mode():
                logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
                for row, i in enumerate(batch):
                    n = len(ids[i]) - 1
                    if n < 1:
                        continue
                    out[i] = _token_scores(t, logits[row, :n], x[row, 1 : n + 1])
                    self.tokens_scored += n + 1
            done += len(batch)
            if self.progress is not None:
                self.progress(done, len(order))
        return out


_MODELS: dict = {}  # one loaded copy per model per process: an audit after another does not reload it


def _loaded(name: str):
    if name not in _MODELS:
        _MODELS.clear()  # keep one model in memory at a time
        _MODELS[name] = load_judge_model(name)
    return _MODELS[name]


def _token_scores(t, logits, target) -> np.ndarray:
    lp = t.log_softmax(logits, dim=-1)  # (n, V)
    ll = lp.gather(1, target[:, None])[:, 0]
    p = lp.exp()
    mu = (p * lp).sum(-1)  # E log p(x̃) = minus the entropy
    var = (p * lp * lp).sum(-1) - mu * mu
    rank = (lp > ll[:, None]).sum(-1) + 1
    curvature = (ll.sum() - mu.sum()) / var.sum().clamp_min(1e-12).sqrt()
    return np.array(
        [
            ll.mean().item(),
            -t.log(rank.double()).mean().item(),
            mu.mean().item(),
            curvature.item(),
            ll.std(unbiased=False).item(),
            (rank == 1).double().mean().item(),
            (rank <= 10).double().mean().item(),
        ]
    )


def _default_cache() -> Path | None:
    """COLLAPSELAB_SCORE_CACHE: a file path, or 'off'; by default a file in the data cache."""
    import os

    env = os.environ.get("COLLAPSELAB_SCORE_CACHE")
    if env:
        return None if env.lower() in ("off", "0", "none") else Path(env).expanduser()
    return cache_dir() / "lm-scores.sqlite"


def _read_cache(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    import sqlite3

    if not path.is_file():
        return {}
    found = {}
    try:
        con = connect_sqlite(path, readonly=True)
        try:
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                rows = con.execute(f"SELECT key, v FROM scores WHERE key IN ({','.join('?' * len(part))})", part)
                for k, v in rows:
                    arr = np.frombuffer(v, dtype="<f8") if isinstance(v, bytes) else None
                    if arr is not None and arr.shape == (len(FEATURES),):  # anything else is not ours: rescore
                        found[k] = arr.copy()
        finally:
            con.close()
    except (sqlite3.Error, InputError):
        return {}  # an unreadable cache only costs time
    return found


def _write_cache(path: Path, rows: dict[str, np.ndarray]) -> None:
    import sqlite3

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = connect_sqlite(path)
        try:
            with con:
                con.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, v BLOB)")
                con.executemany(
                    "INSERT OR REPLACE INTO scores VALUES (?, ?)",
                    [(k, np.asarray(v, "<f8").tobytes()) for k, v in rows.items()],
                )
        finally:
            con.close()
    except (sqlite3.Error, InputError, OSError):
        pass  # a read-only or busy cache only costs time
