"""Reference verifiers for ``[[curation]] kind = "verifier"``: a chance-level judge, to calibrate against, and a
verifier with a knowledge centre of its own (Yi et al., ICLR 2026).

A verifier is any ``module:function`` called with a batch of records (an array (k, ...), or a list of strings
for text) that returns k scores or accept/reject flags.
"""

from __future__ import annotations

import hashlib

import numpy as np


def random_scores(batch) -> np.ndarray:
    """Scores that carry no information (uniform, seeded by the batch's content, so runs stay deterministic):
    a judge at chance. Its measured AUC is 0.5 and the run warns; it must not slow collapse."""
    data = "\x00".join(batch).encode() if isinstance(batch, list) else np.ascontiguousarray(batch).tobytes()
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    return np.random.default_rng(seed).random(len(batch))


def knowledge_centre(batch, centre, width=1.0) -> np.ndarray:
    """A verifier that knows a point: the score of record x is log exp(-‖x - centre‖² / (2 width²)), so
    ``select = "sample"`` keeps records with weight exp(score), tilting each generation's model towards ``centre``
    (a Gaussian N(μ, σ²) becomes N((μ w² + c σ²)/(σ² + w²), σ² w²/(σ² + w²)) when the candidates are many). Yi,
    Liu, Cheng & Xu (ICLR 2026): verifier-filtered retraining converges to the verifier's knowledge centre, not
    to the truth, unless the verifier is the truth; ``centre`` away from the truth is a biased verifier. Records
    (k, d) or (k,); ``centre`` a number or d numbers."""
    x = np.asarray(batch, dtype=float)
    x = x.reshape(len(x), -1)
    c = np.broadcast_to(np.asarray(centre, dtype=float).reshape(-1), x.shape[1:])
    return -np.sum((x - c) ** 2, axis=1) / (2.0 * float(width) ** 2)
