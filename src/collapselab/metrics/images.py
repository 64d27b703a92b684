"""Image metrics, measured with a classifier trained once on the real data and its features.

- ``class_entropy``        entropy (nats) of the classes the classifier assigns to the generated images
- ``minority_class_share`` the least-generated class's share of the generated images, relative to its share of
                           the real data (1: as often as in the real data; 0: a class has vanished)
- ``precision``, ``recall``, ``density``, ``coverage``  Naeem et al. 2020 (k nearest neighbours, k = 5) on the
                           classifier's penultimate features, generated images against held-out real ones
- ``fd``                   Fréchet distance between the two sets of features (FID's formula, our features)

Images without labels get the classes of k-means (k = 10) on the real pixels, so every metric still applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._numerics.neural import BatchedMLP, torch

CLASSIFIER_SEED = 20240724  # fixed: every run of a data set measures with the same classifier
K_NEIGHBOURS = 5
MAX_EVAL = 1000  # images per set for the neighbour metrics: O(n²) distances


@dataclass(eq=False)
class ImageJudge:
    net: BatchedMLP
    classes: int
    real_share: np.ndarray  # (classes,) share of each class in the real training data

    @classmethod
    def train(cls, images: np.ndarray, labels: np.ndarray | None, epochs: int = 4, max_images: int = 20_000):
        t = torch()
        rng = np.random.default_rng(CLASSIFIER_SEED)
        if labels is None:
            from scipy.cluster.vq import kmeans2

            flat = images.reshape(len(images), -1).astype(np.float64) / 255
            _, labels = kmeans2(flat[: min(len(flat), 5000)], 10, seed=CLASSIFIER_SEED, minit="++")
            labels = _nearest(flat, flat[: min(len(flat), 5000)], labels)
        classes = int(labels.max()) + 1
        idx = rng.permutation(len(images))[:max_images]
        x = t.from_numpy(images[idx].reshape(len(idx), -1).astype(np.float32) / 255)
        y = t.from_numpy(labels[idx].astype(np.int64))
        gen = t.Generator().manual_seed(CLASSIFIER_SEED)
        net = BatchedMLP(1, [784, 256, 64, classes], gen)
        opt = t.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(epochs):
            order = t.from_numpy(rng.permutation(len(idx)))
            for s in range(0, len(idx), 256):
                b = order[s : s + 256]
                loss = t.nn.functional.cross_entropy(net(x[b][None])[0], y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        share = np.bincount(labels, minlength=classes) / len(labels)
        return cls(net, classes, share)

    def features_and_classes(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (N, 64) and predicted classes (N,) of images (N, 28, 28) uint8."""
        t = torch()
        with t.no_grad():
            x = t.from_numpy(images.reshape(1, len(images), -1).astype(np.float32) / 255)
            h = self.net.hidden(x)
            logits = self.net.output(h)
        return h[0].numpy().astype(np.float64), logits[0].argmax(-1).numpy()


def _nearest(x: np.ndarray, centres_src: np.ndarray, labels: np.ndarray) -> np.ndarray:
    centres = np.stack([centres_src[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
    d = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None]
    return d.argmin(axis=1)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(-1)[..., :, None] - 2 * a @ np.swapaxes(b, -1, -2) + (b * b).sum(-1)[..., None, :]
    return np.sqrt(np.clip(d2, 0, None))


def prdc(real: np.ndarray, fake: np.ndarray, k: int = K_NEIGHBOURS) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) of fake features against real ones."""
    real_d = _pairwise(real, real)
    fake_d = _pairwise(fake, fake)
    cross = _pairwise(fake, real)  # (F, Rl)
    r_real = np.sort(real_d, axis=1)[:, k]  # k-th neighbour, the point itself at index 0
    r_fake = np.sort(fake_d, axis=1)[:, k]
    inside = cross <= r_real[None, :]
    return {
        "precision": float(inside.any(axis=1).mean()),
        "recall": float((cross <= r_fake[:, None]).any(axis=0).mean()),
        "density": float(inside.sum() / (k * len(fake))),
        "coverage": float((cross.min(axis=0) <= r_real).mean()),
    }


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """||mu1 - mu2||² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½): the symmetric form, stable for singular covariances."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root1 = _psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(s)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def image_metrics(judge: ImageJudge, real_features: np.ndarray, samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per replicate of samples (R, m, 28, 28)."""
    R = samples.shape[0]
    out: dict[str, list[float]] = {}
    for r in range(R):  # a few neural replicates; the metrics themselves are array operations
        feats, cls = judge.features_and_classes(samples[r, :MAX_EVAL])
        share = np.bincount(cls, minlength=judge.classes) / len(cls)
        nz = share[share > 0]
        values = {
            "class_entropy": float(-(nz * np.log(nz)).sum()),
            "minority_class_share": float(np.min(share / np.maximum(judge.real_share, 1e-12))),
            **prdc(real_features, feats),
            "fd": frechet(real_features, feats),
        }
        for k, v in values.items():
            out.setdefault(k, []).append(v)
    return {k: np.array(v) for k, v in out.items()}
