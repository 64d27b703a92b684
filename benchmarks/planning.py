"""The planner by search on families without a closed form (issue 18): a GMM and the word n-gram model, each
``collapselab.plan`` over the real fraction under ``mix``, timed in one process. Target: each answer, with its
interval, in under 2 minutes on 2 cores."""

from __future__ import annotations

import time

import collapselab as cl
from benchmarks.common import save

GMM = {
    "generations": 1,
    "replicates": 64,
    "data": {
        "source": "blobs",
        "n": 200,
        "params": {"means": [[0.0, 0.0], [4.0, 0.0]], "stds": 1.0, "weights": [0.9, 0.1]},
    },
    "model": {"family": "gmm", "params": {"components": 2}},
    "policy": {"kind": "mix", "real_fraction": 0.5},
}
NGRAM = {
    "generations": 1,
    "replicates": 8,
    "data": {"source": "shakespeare", "n": 200, "heldout": 100},
    "model": {"family": "ngram", "params": {"order": 2, "rare_count": 1}},
    "policy": {"kind": "mix", "real_fraction": 0.5},
}


def _timed(spec: dict, need: str, horizon: int) -> dict:
    started = time.perf_counter()
    answer = cl.plan(spec, need, horizon, method="search")
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 1),
        "answer": answer.value,
        "interval": list(answer.interval),
        "candidates_run": len(answer.table),
        "sentence": answer.sentence,
    }


def run() -> dict:
    record = {
        "gmm": _timed(GMM, "kl <= 0.1", 10),
        "ngram": _timed(NGRAM, "rare_word_survival >= 0.5", 10),
        "target_s": 120,
    }
    save("plan_by_search_gmm_ngram", record)
    return record


if __name__ == "__main__":
    print(run())
