"""Curation stages and the measurement of every judge before it filters anything.

A stage scores records (higher = better) and keeps a ``keep`` share of its candidates, so the loop draws
``samples / Π keep`` candidates to end with a full synthetic pool: the best scores (``select = "top"``), or a
sample without replacement with weights exp(score) (``"sample"``, by the Gumbel top-k trick; for a
discriminator, whose score is the log odds of "real", this is importance resampling towards the real
distribution — a judge at chance then keeps a uniform random subset instead of amplifying its own noise).
Kept records stay in their random draw order (records of a pool must remain exchangeable: the mix policy takes
the first k of them). Each stage writes its score into the records' provenance (``score:KIND``).

Before it filters, a judge is **measured** every generation on labelled records — held-out real records
(good) against the generation's own candidates (bad), or the user's labelled examples — and the run records
its AUC, and the precision and recall of its keep decision. A judge whose AUC is not above chance (0.5 plus
1.96 standard errors of the mean over chains, DeLong's variance, with the part from the held-out set shared by
every chain not divided by their number) gets a loud warning in the run's notes; ``on_chance = "skip"`` then
keeps a random subset instead of filtering, ``"error"`` stops the run.

Stages:

- ``likelihood``    scores under a frozen anchor (the generation-0 model, fitted on the real pool). ``mode =
                    "band"``: records inside the band of the real records' own log-likelihood quantiles
                    (``band``) score best, the rest by their distance to it (drops implausible records).
                    ``mode = "ratio"``: the log ratio anchor / current model, resampled (``select = "sample"``):
                    pulls each generation's pool back towards the anchor's distribution, tails included.
- ``discriminator`` a real-vs-synthetic classifier (L2 logistic regression on random Fourier features of the
                    records' features, batched over replicates), trained on the real pool against candidates
                    set aside from scoring; keeps what it cannot tell from real (``select = "sample"`` by default).
- ``llm-judge``     a language model rates each text record against a rubric: the packaged SmolLM2-135M-Instruct
                    (score = logit of "Yes" minus "No"; or ``question = "fluency"``: its mean token log-likelihood)
                    or any OpenAI-compatible endpoint (a 1–10 rating).
- ``verifier``      any callable ``module:function`` that scores or accepts records.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._numerics.neural import torch
from ..errors import CollapselabError, RunInterrupted, SpecError
from ..families.lm import load_judge_model
from ..plugins import CURATION_STAGES
from ..spec import TRUSTED_MODULES, format_validation_error, require_plugins
from .features import record_features, standardise


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(eq=False)
class Context:
    """What stages may use: the record kind, the real pool and held-out records, and ways to read records."""

    kind: str
    real: np.ndarray  # (R, n, ...) the real pool
    heldout: np.ndarray  # (H, ...) held-out real records
    family: Any
    decode: Callable[[np.ndarray], str] | None = None  # text records → strings
    anchor: Any = None  # generation 0's model (set by the loop)


@dataclass(eq=False)
class Measured:
    auc: np.ndarray  # (R,)
    precision: np.ndarray
    recall: np.ndarray
    chance: bool
    summary: str


class Stage:
    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = _Params
    kinds: ClassVar[tuple[str, ...] | None] = None  # record kinds it can judge (None: all)
    select: ClassVar[str] = "top"  # the default selection rule

    def __init__(self, spec, params, context: Context):
        self.spec, self.params, self.ctx = spec, params, context

    @classmethod
    def check(cls, spec, params, source_kind: str, family_cls) -> None:
        if cls.kinds is not None and source_kind not in cls.kinds:
            raise SpecError(f"curation kind {cls.kind!r} judges {', '.join(cls.kinds)} records, not {source_kind}")

    def prepare(self, candidates: np.ndarray, aside: int, rng: np.random.Generator, model=None) -> None:
        """Called once per generation before scoring; ``candidates[:, :aside]`` are the measurement records,
        ``model`` the generation's fitted model."""

    @property
    def selection(self) -> str:
        return self.spec.select or self.select

    def score(self, records: np.ndarray) -> np.ndarray:
        """(R, N, ...) records → (R, N) scores, higher = better."""
        raise NotImplementedError


@CURATION_STAGES.register
class Likelihood(Stage):
    kind = "likelihood"

    class Params(_Params):
        mode: Literal["band", "ratio"] = "band"
        band: tuple[float, float] = Field(default=(0.01, 1.0), description="quantiles of the real log-likelihoods")

    @property
    def selection(self):
        return self.spec.select or ("sample" if self.params.mode == "ratio" else "top")

    @classmethod
    def check(cls, spec, params, source_kind, family_cls):
        lo, hi = params.band
        if not 0 <= lo < hi <= 1:
            raise SpecError(f"curation.params.band = {list(params.band)}: need 0 <= low < high <= 1")
        if not family_cls.tags.scores_records:
            raise SpecError(
                f"curation kind 'likelihood' needs a family that scores records; {family_cls.name!r} does not"
            )

    def prepare(self, candidates, aside, rng, model=None):
        self.model = model
        real_ll = self.ctx.family.record_loglik(self.ctx.anchor, self.ctx.real)
        self.lo, self.hi = np.quantile(real_ll, self.params.band, axis=1)[..., None]  # (R, 1) each

    def score(self, records):
        ll = self.ctx.family.record_loglik(self.ctx.anchor, records)
        ll = np.where(np.isfinite(ll), ll, -1e300)
        if self.params.mode == "ratio":
            current = self.ctx.family.record_loglik(self.model, records)
            return np.clip(ll - np.where(np.isfinite(current), current, -1e300), -50, 50)
        return np.minimum(0.0, np.minimum(ll - self.lo, self.hi - ll))  # 0 in the band, below it by distance


@CURATION_STAGES.register
class Discriminator(Stage):
    kind = "discriminator"
    select = "sample"

    class Params(_Params):
        features: int = Field(default=64, ge=8, description="random Fourier features")
        lengthscale: float = Field(default=0.5, gt=0, description="in standard deviations of the real records")
        l2: float = Field(default=1e-3, gt=0, description="penalty per training record")
        iterations: int = Field(default=10, ge=1, description="Newton steps")
        max_train: int = Field(default=2000, ge=20, description="records per class the classifier trains on")

    def _features(self, records):
        f = standardise(record_features(records, self.ctx.kind, self.categories), self.base)
        if self.W is None:
            return f
        return np.sqrt(2.0 / self.W.shape[1]) * np.cos(np.einsum("rnd,dk->rnk", f, self.W) + self.b)

    def prepare(self, candidates, aside, rng, model=None):
        p = self.params
        real = self.ctx.real
        self.categories = getattr(self.ctx.family.reference.truth, "categories", None)
        self.base = record_features(real, self.ctx.kind, self.categories)
        dim = self.base.shape[-1]
        # random Fourier features of low-dimensional records (a smooth nonlinear classifier); text and
        # images are high-dimensional already: linear in their features
        if dim <= 64:
            self.W = rng.standard_normal((dim, p.features)) / p.lengthscale
            self.b = rng.uniform(0, 2 * np.pi, p.features)
        else:
            self.W = None
        k = min(p.max_train, real.shape[1], candidates.shape[1] - aside)
        pos = self._features(real[:, :k])
        neg = self._features(candidates[:, aside : aside + k])
        phi = np.concatenate([pos, neg], axis=1)
        phi = np.concatenate([phi, np.ones(phi.shape[:2] + (1,))], axis=2)  # intercept
        y = np.concatenate([np.ones(k), np.zeros(k)])
        self.w = _logistic_irls(phi, y, p.l2, p.iterations)

    def score(self, records):
        phi = self._features(records)
        return np.einsum("rnk,rk->rn", phi, self.w[:, :-1]) + self.w[:, -1:]  # the logit of P(real)


def _logistic_irls(phi: np.ndarray, y: np.ndarray, l2: float, iterations: int) -> np.ndarray:
    """L2-penalised logistic regression by Newton steps, batched over the leading replicate axis."""
    R, N, D = phi.shape
    w = np.zeros((R, D))
    penalty = l2 * N * np.eye(D)
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    for _ in range(iterations):
        z = np.einsum("rnd,rd->rn", phi, w)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        grad = np.einsum("rnd,rn->rd", phi, p - y) + np.einsum("de,re->rd", penalty, w)
        # the Hessian through BLAS (the cost of a Newton step); it sets only the step, not the optimum the
        # gradient (summed in a fixed order above) defines, so the converged weights do not depend on it
        hess = np.matmul(np.swapaxes(phi, 1, 2), phi * (p * (1 - p))[..., None]) + penalty
        w = w - np.linalg.solve(hess, grad[..., None])[..., 0]
    return w


DEFAULT_RUBRIC = (
    "You judge short passages of English prose. A good passage is fluent, grammatical and coherent, "
    "with varied wording; a bad one is garbled, repetitive or meaningless."
)


@CURATION_STAGES.register
class LLMJudge(Stage):
    kind = "llm-judge"
    kinds = ("text",)

    class Params(_Params):
        model: str = Field(default="smollm2", description="a local model: 'smollm2', an HF folder or a .gguf")
        question: Literal["rubric", "fluency"] = Field(
            default="rubric",
            description="local model: ask the rubric's Yes/No question, or score fluency (mean token log-likelihood)",
        )
        endpoint: str | None = Field(default=None, description="an OpenAI-compatible base URL (…/v1) instead")
        api_model: str = "gpt-4o-mini"
        api_key_env: str = Field(default="OPENAI_API_KEY", description="environment variable holding the key")
        rubric: str = DEFAULT_RUBRIC
        timeout: float = Field(default=30.0, gt=0, le=600, description="seconds per request, reply included")
        retries: int = Field(default=3, ge=0, le=10)
        batch_size: int = Field(default=8, ge=1, description="records per request (local: per forward pass)")
        concurrency: int = Field(default=4, ge=1, description="requests in flight")
        max_chars: int = Field(default=600, ge=20, description="characters of each record shown to the judge")

        @field_validator("endpoint")
        @classmethod
        def _safe_endpoint(cls, url):
            return None if url is None else check_endpoint(url)

        @field_validator("api_key_env")
        @classmethod
        def _allowed_key(cls, name):
            allowed = key_envs()
            if name not in allowed:
                raise ValueError(
                    f"the spec may send only the key in {', '.join(allowed)}; to allow another variable, list it "
                    f"in {KEY_ENVS_ENV} (a spec must not choose which secret leaves the machine)"
                )
            return name

    def score(self, records):
        R, N = records.shape[:2]
        texts = [self.ctx.decode(r)[: self.params.max_chars] for r in records.reshape(R * N, -1)]
        if self.params.endpoint:
            scores = http_judge(texts, self.params)
        else:
            scores = local_judge(texts, self.params)
        return np.asarray(scores, dtype=float).reshape(R, N)


_LOCAL: dict[str, tuple] = {}


def local_judge(texts: list[str], p) -> list[float]:
    """logit P("Yes") − logit P("No") of a local chat model asked whether each text meets the rubric."""
    t = torch()
    if p.model not in _LOCAL:
        _LOCAL[p.model] = load_judge_model(p.model)
    model, tok = _LOCAL[p.model]
    if p.question == "fluency":
        return _fluency(model, tok, texts, p.batch_size)
    yes = tok("Yes", add_special_tokens=False)["input_ids"][0]
    no = tok("No", add_special_tokens=False)["input_ids"][0]
    out: list[float] = []
    for s in range(0, len(texts), p.batch_size):
        prompts = [_chat_prompt(tok, p.rubric, text) for text in texts[s : s + p.batch_size]]
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with t.no_grad():
            logits = model(**batch).logits[:, -1, :]  # left padding: the last position is every prompt's end
        out.extend((logits[:, yes] - logits[:, no]).tolist())
    return out


def _fluency(model, tok, texts: list[str], batch_size: int) -> list[float]:
    """Mean log-likelihood per token of each text under the model (right-padded, padding masked out)."""
    t = torch()
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    out: list[float] = []
    for s in range(0, len(texts), batch_size):
        ids = [[start, *tok(x, add_special_tokens=False)["input_ids"][:256]] for x in texts[s : s + batch_size]]
        width = max(len(i) for i in ids)
        batch = t.full((len(ids), width), tok.pad_token_id or 0)
        mask = t.zeros((len(ids), width), dtype=t.long)
        for i, row in enumerate(ids):
            batch[i, : len(row)] = t.tensor(row)
            mask[i, : len(row)] = 1
        with t.no_grad():
            logp = t.log_softmax(model(input_ids=batch, attention_mask=mask).logits[:, :-1], dim=-1)
        token = logp.gather(2, batch[:, 1:, None])[..., 0] * mask[:, 1:]
        out.extend((token.sum(1) / mask[:, 1:].sum(1).clamp(min=1)).tolist())
    return out


def _chat_prompt(tok, rubric: str, text: str) -> str:
    question = f"Passage:\n{text}\n\nIs this a good passage by the standard above? Answer Yes or No."
    messages = [{"role": "system", "content": rubric}, {"role": "user", "content": question}]
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{rubric}\n\n{question}\nAnswer:"


KEY_ENVS_ENV = "COLLAPSELAB_JUDGE_KEY_ENVS"
DEFAULT_KEY_ENVS = ("OPENAI_API_KEY", "COLLAPSELAB_JUDGE_KEY")
MAX_REPLY_BYTES = 4 << 20
LOOPBACK_HOSTS = ("localhost",)


def key_envs() -> tuple[str, ...]:
    """Environment variables whose value a spec may send as the judge's key: the defaults, and those the user
    (not the spec) lists in COLLAPSELAB_JUDGE_KEY_ENVS."""
    extra = [v.strip() for v in os.environ.get(KEY_ENVS_ENV, "").split(",") if v.strip()]
    return (*DEFAULT_KEY_ENVS, *extra)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str) -> str:
    """An endpoint the key may be sent to: https anywhere, plain http only to this machine (loopback)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as https://api.example.com/v1")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("plain http is allowed only to loopback (127.0.0.1, localhost); use https")
    if parts.username or parts.password:
        raise ValueError("put no credentials in the URL; the key comes from api_key_env")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The key is never sent anywhere but the endpoint: a redirect is an error, not a new request."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


def _read_reply(resp, deadline: float) -> bytes:
    """The whole body by ``deadline`` (a trickling server cannot hold a request past its timeout), at most
    MAX_REPLY_BYTES."""
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("the reply did not arrive within the timeout")
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise ValueError(f"the reply is larger than {MAX_REPLY_BYTES >> 20} MiB")
        chunks.append(chunk)


def http_judge(texts: list[str], p) -> list[float]:
    """Ratings 1–10 from an OpenAI-compatible chat endpoint, ``batch_size`` records per request."""
    batches = [texts[s : s + p.batch_size] for s in range(0, len(texts), p.batch_size)]
    with ThreadPoolExecutor(max_workers=p.concurrency) as pool:
        rated = list(pool.map(lambda b: _rate_batch(b, p), batches))
    return [x for batch in rated for x in batch]


def _rate_batch(texts: list[str], p) -> list[float]:
    numbered = "\n\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
    body = {
        "model": p.api_model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": p.rubric},
            {
                "role": "user",
                "content": f"Rate each numbered passage from 1 (bad) to 10 (excellent). Reply with only a JSON "
                f"list of {len(texts)} numbers, in order.\n\n{numbered}",
            },
        ],
    }
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(p.api_key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    url = p.endpoint.rstrip("/") + "/chat/completions"
    last = "no attempt"
    for attempt in range(p.retries + 1):
        if attempt:
            time.sleep(min(8.0, 0.25 * 2**attempt))
        try:
            req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
            deadline = time.monotonic() + p.timeout
            with _OPENER.open(req, timeout=p.timeout) as resp:
                reply = json.loads(_read_reply(resp, deadline))["choices"][0]["message"]["content"]
            return _parse_ratings(reply, len(texts))
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}" + (
                ": redirect refused (the key goes to the endpoint alone)" if 300 <= e.code < 400 else ""
            )
            if e.code in (400, 401, 403, 404) or 300 <= e.code < 400:  # retrying cannot help
                break
        except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
            last = f"{type(e).__name__}: {e}"
    # the endpoint, not the run, failed: the run keeps its checkpoints and resumes when the endpoint is back
    raise RunInterrupted(
        f"curation llm-judge: {url} failed after {attempt + 1} attempt(s): {last}; the run's "
        "checkpoints are kept: resume it when the endpoint answers"
    )


def _parse_ratings(reply: str, k: int) -> list[float]:
    start, end = reply.find("["), reply.rfind("]")
    if start < 0 or end < start:
        raise ValueError(f"no JSON list in the judge's reply {reply[:80]!r}")
    values = json.loads(reply[start : end + 1])
    if len(values) != k or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"the judge rated {len(values)} passages, expected {k} numbers")
    return [float(v) for v in values]


@CURATION_STAGES.register
class Verifier(Stage):
    kind = "verifier"

    class Params(_Params):
        function: str = Field(description="'module:function', called with a batch of records (text: strings)")
        args: dict[str, Any] = Field(
            default_factory=dict, description="keyword arguments the function is called with (its own settings)"
        )
        batch_size: int = Field(default=4096, ge=1)

    @classmethod
    def check(cls, spec, params, source_kind, family_cls):
        key = "curation.params.function"
        if params.function.partition(":")[0].split(".")[0] not in TRUSTED_MODULES:
            require_plugins(f"{key} = {params.function!r}")
        fn = resolve_callable(params.function, key)
        if params.args:
            import inspect

            try:
                inspect.signature(fn).bind(None, **params.args)
            except TypeError as e:
                raise SpecError(f"curation.params.args: {params.function} does not take them ({e})") from None
            except ValueError:  # no signature to read (a builtin): the call itself says
                pass

    def score(self, records):
        fn = resolve_callable(self.params.function, "curation.params.function")
        R, N = records.shape[:2]
        flat = records.reshape(R * N, *records.shape[2:])
        out = []
        for s in range(0, R * N, self.params.batch_size):
            chunk = flat[s : s + self.params.batch_size]
            batch = [self.ctx.decode(r) for r in chunk] if self.ctx.kind == "text" else chunk
            v = np.asarray(fn(batch, **self.params.args), dtype=float).reshape(-1)
            if v.shape[0] != len(chunk):
                raise CollapselabError(
                    f"verifier {self.params.function}: returned {v.shape[0]} values for {len(chunk)} records"
                )
            out.append(v)
        return np.concatenate(out).reshape(R, N)


def resolve_callable(ref: str, key: str) -> Callable:
    mod, _, name = ref.partition(":")
    if not mod or not name:
        raise SpecError(f"{key} = {ref!r}: expected 'module:function'")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise SpecError(f"{key} = {ref!r}: cannot import it ({e})") from None
    if not callable(fn):
        raise SpecError(f"{key} = {ref!r}: not callable")
    return fn


# --- measuring a judge ---------------------------------------------------------------------------------------


def auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUC per replicate: P(score of a good record > score of a bad one), ties count ½."""
    return _auc_parts(pos, neg)[0]


def _auc_parts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The AUC per replicate (R,) and the two parts of its variance (DeLong et al. 1988): from the good records'
    scores, var(V10)/n1, and from the bad records', var(V01)/n2, where V10 is a good record's share of bad ones
    below it (ties ½) and V01 a bad record's share of good ones above it."""
    from scipy import stats  # late: importing collapselab stays fast

    n1, n2 = pos.shape[1], neg.shape[1]
    ranks = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (ranks[:, :n1] - stats.rankdata(pos, axis=1)) / n2
    v01 = 1 - (ranks[:, n1:] - stats.rankdata(neg, axis=1)) / n1
    a = v10.mean(axis=1)
    var_pos = v10.var(axis=1, ddof=1) / n1 if n1 > 1 else np.zeros_like(a)
    var_neg = v01.var(axis=1, ddof=1) / n2 if n2 > 1 else np.zeros_like(a)
    return a, var_pos, var_neg


def measure(
    pos: np.ndarray, neg: np.ndarray, cutoff: np.ndarray, label: str, shared: tuple[bool, bool] = (False, False)
) -> Measured:
    """AUC, and precision and recall of "keep if score >= cutoff" (good records are the positives).

    Chance is judged on the mean AUC over the R chains. ``shared``: whether the good (bad) records are the same
    in every chain (the held-out real records, labelled examples); their part of the variance then does not
    shrink with R. Counted as independent, 4 chains scoring one shared held-out set at random read as better
    than chance: the shared draw's luck was divided by 2."""
    a, var_pos, var_neg = _auc_parts(pos, neg)
    kept_pos = (pos >= cutoff[:, None]).sum(axis=1)
    kept_neg = (neg >= cutoff[:, None]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(kept_pos + kept_neg > 0, kept_pos / (kept_pos + kept_neg), np.nan)
    recall = kept_pos / pos.shape[1]
    R = a.size
    var = sum(np.mean(v) / (1 if common else R) for v, common in zip((var_pos, var_neg), shared))
    se = float(np.sqrt(max(var, 1e-12)))
    mean = float(a.mean())
    chance = mean - 0.5 < 1.96 * se
    summary = f"{label}: AUC {mean:.3f} ± {1.96 * se:.3f} on {pos.shape[1]} good + {neg.shape[1]} bad records"
    return Measured(a, precision, recall, chance, summary)


# --- the curator: all stages of a spec ------------------------------------------------------------------------


@dataclass(eq=False)
class Curated:
    x: np.ndarray  # (R, m, ...) kept records, in draw order
    extra: dict[str, np.ndarray]  # score:KIND -> (R, m)
    metrics: dict[str, np.ndarray]  # KIND_auc, KIND_precision, KIND_recall, KIND_kept_rejected -> (R,)
    notes: list[str] = field(default_factory=list)


class Curator:
    def __init__(self, specs: list, context: Context, labels: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.ctx = context
        classes = [CURATION_STAGES[s.kind] for s in specs]
        self.stages = [cls(s, cls.Params.model_validate(s.params), context) for cls, s in zip(classes, specs)]
        self.names = stage_names(specs)
        self.labels = labels  # stage name -> (good records, bad records) supplied by the user

    def candidates(self, m: int) -> int:
        """Candidates to draw so that every stage keeps its share and ``m`` records remain."""
        return int(math.ceil(m / math.prod(s.spec.keep for s in self.stages) - 1e-9))

    def aside(self, m: int) -> int:
        """Candidates set aside to measure the judges on (also scored and eligible)."""
        return min(max(s.spec.measure for s in self.stages), self.candidates(m) // 2)

    def curate(self, g: int, candidates: np.ndarray, m: int, rng: np.random.Generator, model=None) -> Curated:
        x = candidates
        aside = self.aside(m)
        R = x.shape[0]
        extra: dict[str, np.ndarray] = {}
        metrics: dict[str, np.ndarray] = {}
        notes: list[str] = []
        pos_heldout = np.broadcast_to(self.ctx.heldout[None], (R, *self.ctx.heldout.shape))
        for i, (stage, name) in enumerate(zip(self.stages, self.names)):
            last = i == len(self.stages) - 1
            k = m if last else max(m, int(round(stage.spec.keep * x.shape[1])))
            stage.prepare(x, aside, rng, model)
            score = stage.score(x)
            # the cutoff that keeps k of the candidates: the k-th best score
            cutoff = -np.sort(-score, axis=1)[:, k - 1]
            if name in self.labels:
                good, bad = (np.broadcast_to(a[None], (R, *a.shape)) for a in self.labels[name])
                pos, neg = stage.score(good), stage.score(bad)
                shared = (True, True)
            else:
                q = min(stage.spec.measure, pos_heldout.shape[1])
                pos, neg = stage.score(pos_heldout[:, :q]), score[:, :aside]
                shared = (True, False)  # one held-out set for every chain; each chain's own candidates
            result = measure(pos, neg, cutoff, f"curation {name} at generation {g}", shared)
            metrics.update(
                {f"{name}_auc": result.auc, f"{name}_precision": result.precision, f"{name}_recall": result.recall}
            )
            if result.chance:
                notes.append(f"JUDGE NO BETTER THAN CHANCE — {result.summary}")
                if stage.spec.on_chance == "error":
                    raise CollapselabError(f"{result.summary}: no better than chance (on_chance = 'error')")
            if result.chance and stage.spec.on_chance == "skip":
                idx = np.broadcast_to(np.arange(k), (R, k))  # a random subset: the candidates are in random order
            else:
                key = score
                if stage.selection == "sample":  # Gumbel top-k: weights exp(score)
                    key = score - np.log(-np.log(rng.random(score.shape)))
                order = np.argsort(-key, axis=1, kind="stable")[:, :k]
                idx = np.sort(order, axis=1)  # keep the draw order: kept records stay exchangeable
            x = np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)
            extra = {n: np.take_along_axis(v, idx, axis=1) for n, v in extra.items()}
            extra[f"score:{name}"] = np.take_along_axis(score, idx, axis=1)
            aside = min(aside, k // 2)
        return Curated(x, extra, metrics, notes)


def stage_names(specs) -> list[str]:
    """How metrics and scores name each stage: its kind, with its index where a kind repeats."""
    kinds = [s.kind for s in specs]
    return [s.kind if kinds.count(s.kind) == 1 else f"{s.kind}{i}" for i, s in enumerate(specs)]


def check_curation(spec, source_kind: str, family_cls) -> None:
    for i, s in enumerate(spec.curation):
        cls = CURATION_STAGES.resolve(s.kind, f"curation.{i}.kind")
        try:
            params = cls.Params.model_validate(s.params)
        except ValidationError as e:  # one line naming the key
            raise SpecError(format_validation_error(e, f"curation[{i}].params")) from None
        cls.check(spec, params, source_kind, family_cls)
        if s.labels is not None:
            load_labels(s.labels, source_kind)


def load_labels(path: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """User-labelled examples: an .npz with ``x`` (records) and ``y`` (1 good, 0 bad)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"curation.labels = {path!r}: file not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            x, y = z["x"], z["y"].astype(int)
    except (OSError, ValueError, KeyError) as e:
        raise SpecError(f"curation.labels = {path!r}: need an .npz with arrays x and y ({e})") from None
    if x.shape[0] != y.shape[0] or not set(np.unique(y)) <= {0, 1} or y.min() == y.max():
        raise SpecError(f"curation.labels = {path!r}: y must label every record of x with 1 (good) or 0 (bad), both")
    return x[y == 1], x[y == 0]
