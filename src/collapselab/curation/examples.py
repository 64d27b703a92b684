"""Reference verifiers for ``[[curation]] kind = "verifier"``: a chance-level judge, to calibrate against.

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
