"""Variational autoencoders on 28x28 images (Kingma & Welling 2014), every replicate chain in one batched network.

Each generation trains a fresh VAE on its training images; its synthetic images are decoded from z ~ N(0, I)
(the decoder's mean, or Bernoulli draws of the pixels with ``decode = "bernoulli"``). The next generation
trains on those. Shumailov et al. (2024) show the result: samples blur and classes merge.

The network is an MLP (784 → hidden → 2·latent; latent → hidden → 784, Bernoulli likelihood on pixel
intensities); R replicates train as one network with a replicate axis on every weight (see _numerics/neural.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from .._numerics.neural import BatchedMLP, seed_of, torch
from ..metrics.images import MAX_EVAL, ImageJudge, image_metrics
from .base import Family, FamilyTags, Params, register_family

_JUDGES: dict[tuple, tuple[ImageJudge, np.ndarray]] = {}


@dataclass(eq=False)
class VAEModel:
    encoder: BatchedMLP
    decoder: BatchedMLP
    latent: int
    decode: str

    @property
    def R(self) -> int:
        return self.encoder.layers[0][0].shape[0]

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        t = torch()
        z = t.from_numpy(rng.standard_normal((self.R, m, self.latent)).astype(np.float32))
        with t.no_grad():
            p = self.decoder(z, t.sigmoid).numpy()
        if self.decode == "bernoulli":
            p = (rng.random(p.shape) < p).astype(np.float32)
        return np.round(p * 255).astype(np.uint8).reshape(self.R, m, 28, 28)

    def encode_means(self, images: np.ndarray) -> np.ndarray:
        """Latent means (R, M, latent) of images (R, M, 28, 28): replicate r's encoder on replicate r's images."""
        t = torch()
        x = t.from_numpy(images.reshape(self.R, images.shape[1], -1).astype(np.float32) / 255)
        with t.no_grad():
            return self.encoder(x)[..., : self.latent].numpy()


@register_family
class VAEFamily(Family):
    name = "vae"
    tags = FamilyTags(accepts=("image",), measures_samples=True, uses_anchor=True, weighted=True)
    tail_metrics = ("minority_class_share", "recall")
    spread_metrics = ("latent_std",)

    class Params(Params):
        latent: int = Field(default=16, ge=1, le=256)
        hidden: int = Field(default=400, ge=8, le=4096)
        epochs: int = Field(default=10, ge=1, description="passes over each generation's training images")
        batch_size: int = Field(default=128, ge=1)
        lr: float = Field(default=1e-3, gt=0)
        decode: Literal["mean", "bernoulli"] = "mean"

    def __init__(self, params, reference):
        super().__init__(params, reference)
        self.anchor: VAEModel | None = None
        truth = reference.truth
        key = (truth.info.get("dataset"), len(truth.train), truth.train[:4].tobytes())
        if key not in _JUDGES:  # one classifier per data set and process, trained on the real training split
            judge = ImageJudge.train(truth.train, truth.train_labels)
            feats, _ = judge.features_and_classes(reference.heldout[:MAX_EVAL])
            _JUDGES[key] = (judge, feats)
        self.judge, self.real_features = _JUDGES[key]

    def fit(self, x, rng):
        return self.fit_weighted_records(x, None, rng)

    def fit_weighted_records(self, x, weights, rng):
        """Trains on records whose loss terms carry ``weights`` (N,), mean 1 (None: every record weighs 1)."""
        t = torch()
        p = self.params
        R, N = x.shape[:2]
        gen = t.Generator().manual_seed(seed_of(rng))
        enc = BatchedMLP(R, [784, p.hidden, 2 * p.latent], gen)
        dec = BatchedMLP(R, [p.latent, p.hidden, 784], gen)
        opt = t.optim.Adam([*enc.parameters(), *dec.parameters()], lr=p.lr)
        data = t.from_numpy(x.reshape(R, N, 784).astype(np.float32) / 255)
        w = None if weights is None else t.from_numpy(np.asarray(weights, np.float32))
        rows = t.arange(R)[:, None]
        B = min(p.batch_size, N)
        for _ in range(p.epochs):
            order = t.from_numpy(np.argsort(rng.random((R, N)), axis=1))  # a permutation per replicate
            for s in range(0, N - B + 1, B):
                batch = data[rows, order[:, s : s + B]]  # (R, B, 784)
                h = enc(batch)
                mu, logvar = h[..., : p.latent], h[..., p.latent :].clamp(-10, 10)
                z = mu + t.exp(0.5 * logvar) * t.randn(mu.shape, generator=gen)
                logits = dec(z)
                rec = t.nn.functional.binary_cross_entropy_with_logits(logits, batch, reduction="none").sum(-1)
                kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)
                per_record = rec + kl
                if w is not None:
                    per_record = per_record * w[order[:, s : s + B]]
                loss = per_record.mean(-1).sum()  # replicates' losses add: their gradients stay separate
                opt.zero_grad()
                loss.backward()
                opt.step()
        return VAEModel(enc, dec, p.latent, p.decode)

    def set_anchor(self, model, real):
        self.anchor = model

    def metrics(self, model, samples):
        out = image_metrics(self.judge, self.real_features, samples)
        # spread of what the generation draws, seen through generation 0's encoder (a fixed yardstick)
        out["latent_std"] = self.anchor.encode_means(samples[:, :MAX_EVAL]).std(axis=1).mean(axis=-1)
        return out
