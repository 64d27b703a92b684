"""Constructed candidates with a known synthetic share, from real data and a fitted model (tests of the audit)."""

from __future__ import annotations

import numpy as np

from collapselab.audit.detect import FeatureDetector, PerplexityDetector, estimate_share
from collapselab.curation.features import record_features

SHARES = (0.0, 0.1, 0.3, 0.7)


class Case:
    """Human records, a generator's synthetic records, and how a detector sees them."""

    def trial(self, share: float, seed: int):
        rng = np.random.default_rng(seed)
        h = self.human[rng.permutation(len(self.human))]
        s = self.synthetic[rng.permutation(len(self.synthetic))]
        a, b, c = self.sizes
        k = int(round(share * c))
        candidate = np.concatenate([h[2 * a : 2 * a + c - k], s[2 * a : 2 * a + k]])
        return estimate_share(
            self.detector(seed),
            self.feat(h[:a]),
            self.feat(s[:a]),
            self.feat(h[a : 2 * a]),
            self.feat(s[a : 2 * a]),
            self.feat(candidate),
        )


class TabularCase(Case):
    """Breast-cancer measurements (569 rows, 30 columns) and cluster-mirrored synthetic rows."""

    def __init__(self):
        from sklearn.datasets import load_breast_cancer

        from collapselab.spec import SynthesisSpec
        from collapselab.synthesize import synthesize

        df = load_breast_cancer(as_frame=True).data
        synth, _ = synthesize(df, 4000, SynthesisSpec(kind="cluster-mirrored"), seed=0)
        self.human, self.synthetic = df.to_numpy(float), synth.to_numpy(float)
        self.mean, self.sd = self.human.mean(0), self.human.std(0)
        self.sizes = (150, 150, 260)  # detector training, calibration (each per class), candidate

    def feat(self, x):
        return (x - self.mean) / self.sd

    def detector(self, seed):
        return FeatureDetector(seed)


class ImageCase(Case):
    """MNIST digits and a PCA-Gaussian generator fitted on 5,000 of them."""

    def __init__(self):
        from collapselab.datasets import load_images

        images, _ = load_images("mnist")
        x = images[:12000].astype(float) / 255
        fit = x[:5000].reshape(5000, -1)
        mean = fit.mean(0)
        u, sv, vt = np.linalg.svd(fit - mean, full_matrices=False)
        comps, scale = vt[:40], sv[:40] / np.sqrt(len(fit))
        z = np.random.default_rng(0).standard_normal((6000, 40)) * scale
        self.synthetic = np.clip(mean + z @ comps, 0, 1).reshape(-1, 28, 28)
        self.human = x[5000:]
        self.sizes = (300, 300, 400)

    def feat(self, x):
        return record_features(x[None], "image")[0]

    def detector(self, seed):
        return FeatureDetector(seed)


class TextCase(Case):
    """Jane Austen in 64-word blocks, and text sampled from a trigram fitted on half of them; the detector scores
    perplexity under an interpolated trigram of the same half (as the audit does without examples)."""

    def __init__(self):
        from collapselab.families.base import Reference
        from collapselab.families.ngram import NGramFamily
        from collapselab.sources import get_source

        truth = get_source("austen", {}).truth(1, np.random.default_rng(0))
        blocks = truth.train[np.random.default_rng(0).permutation(len(truth.train))]
        half = len(blocks) // 2
        family = NGramFamily(NGramFamily.Params(order=3), Reference(truth, truth.heldout_records, half))
        generator = family.fit(blocks[None, :half], np.random.default_rng(0))
        self.synthetic = generator.sample(3000, np.random.default_rng(1))[0]
        scorer = NGramFamily(
            NGramFamily.Params(order=3, interpolation=0.4), Reference(truth, truth.heldout_records, half)
        )
        self.lm = scorer.fit(blocks[None, :half], np.random.default_rng(0))  # the data the generator learnt from
        self.human = blocks[half:]
        self.sizes = (200, 200, 300)

    def feat(self, x):
        return x

    def detector(self, seed):
        return PerplexityDetector(self.lm)


def coverage(case: Case, share: float, trials: int = 50) -> tuple[float, list]:
    estimates = [case.trial(share, seed) for seed in range(trials)]
    hit = [e.low - 1e-12 <= share <= e.high + 1e-12 for e in estimates]
    return float(np.mean(hit)), estimates
