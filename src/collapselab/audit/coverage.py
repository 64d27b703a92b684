"""Tail coverage, diversity and distances of a candidate against a reference, and the stage verdict.

Text and image statistics that depend on sample size (rare-word survival, distinct-n, PRDC) are compared with
the same statistic of a reference subsample of the candidate's size, so a small but healthy candidate is not
mistaken for a collapsed one. Two retentions (1 = as much as real data of that size) feed the verdict, with
the loop's thresholds (metrics/stages.py): total when spread ≤ 0.05, late when spread < 0.5, early when
tail < 0.5, healthy otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..curation.features import record_features, standardise, tfidf
from ..metrics.stages import STAGES

TAIL_Q = 0.01  # a value is in a column's tail beyond the reference's 1st or 99th percentile
RARE_SHARE = 0.02  # a category is rare below this share of the reference


def mmd_test(a: np.ndarray, b: np.ndarray, rng, permutations: int = 200, cap: int = 500) -> tuple[float, float]:
    """Unbiased MMD² with an RBF kernel (median bandwidth) and its permutation p-value."""
    a = a[rng.permutation(len(a))[:cap]]
    b = b[rng.permutation(len(b))[:cap]]
    z = np.concatenate([a, b])
    d2 = np.maximum(np.sum(z**2, 1)[:, None] + np.sum(z**2, 1)[None] - 2 * z @ z.T, 0)
    k = np.exp(-d2 / np.median(d2[d2 > 0]))
    n = len(a)

    def stat(idx):
        x, y = idx[:n], idx[n:]
        kxx, kyy, kxy = k[np.ix_(x, x)], k[np.ix_(y, y)], k[np.ix_(x, y)]
        return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (len(y) * (len(y) - 1))
                - 2 * kxy.mean())

    base = np.arange(len(z))
    observed = stat(base)
    perms = [stat(rng.permutation(len(z))) for _ in range(permutations)]
    return float(observed), float((1 + sum(p >= observed for p in perms)) / (1 + permutations))


def table_measures(ref, cand, rng) -> dict:
    from ..curation.tabular import column_kinds

    columns, tails, spreads = {}, [], []
    for col, kind in column_kinds(ref).items():
        r, c = ref[col], cand[col]
        if kind == "numeric":
            r, c = r.to_numpy(float), c.to_numpy(float)
            sd = r.std() or 1.0
            lo, hi = np.quantile(r, [TAIL_Q, 1 - TAIL_Q])
            tail_ref = np.mean((r < lo) | (r > hi)) or 2 * TAIL_Q
            tail = min(1.0, np.mean((c < lo) | (c > hi)) / tail_ref)
            span = r.max() - r.min()
            columns[col] = {
                "kind": kind, "ks": float(stats.ks_2samp(r, c).statistic),
                "wasserstein_sd": float(stats.wasserstein_distance(r, c) / sd),
                "range_coverage": float(np.clip((min(c.max(), r.max()) - max(c.min(), r.min())) / span, 0, 1))
                if span > 0 else 1.0,
                "tail_coverage": float(tail), "std_ratio": float(c.std() / sd),
            }
            tails.append(tail)
            spreads.append(min(1.0, c.std() / sd))
        else:
            pr, pc = r.value_counts(normalize=True), c.value_counts(normalize=True)
            cats = pr.index.union(pc.index)
            rare = pr[pr < RARE_SHARE].index
            ent_r = stats.entropy(pr.to_numpy())
            ent_c = stats.entropy(pc.to_numpy())
            columns[col] = {
                "kind": kind,
                "tv": float(0.5 * np.abs(pr.reindex(cats, fill_value=0) - pc.reindex(cats, fill_value=0)).sum()),
                "category_coverage": float(np.isin(pr.index, pc.index).mean()),
                "rare_category_coverage": float(np.isin(rare, pc.index).mean()) if len(rare) else None,
                "entropy_ratio": float(ent_c / ent_r) if ent_r > 0 else 1.0,
            }
            if len(rare):
                tails.append(columns[col]["rare_category_coverage"])
            spreads.append(min(1.0, columns[col]["entropy_ratio"]))
    num = [c for c, v in columns.items() if v["kind"] == "numeric"]
    mmd, p = None, None
    if num:
        r, c = ref[num].to_numpy(float)[None], cand[num].to_numpy(float)[None]
        mmd, p = mmd_test(standardise(r, r)[0], standardise(c, r)[0], rng)
    return {"columns": columns, "mmd": mmd, "mmd_p_value": p,
            "tail_retention": float(np.mean(tails)) if tails else None,
            "spread_retention": float(np.median(spreads)) if spreads else None}


def text_measures(ref, cand, vocab, rng) -> dict:
    from ..metrics.text import distinct_n, rare_words

    V = len(vocab)
    n = min(len(cand), len(ref))
    sub = ref[rng.permutation(len(ref))[:n]]
    c = cand[rng.permutation(len(cand))[:n]]
    rare = rare_words(ref[None], V, 2)[0]  # words the reference holds once or twice
    present = lambda x: np.isin(np.arange(V), x)  # noqa: E731
    survival_c = (present(c) & rare).sum() / max(rare.sum(), 1)
    survival_r = (present(sub) & rare).sum() / max(rare.sum(), 1)
    d = {f"distinct_{j}": float(distinct_n(c[None], j)[0]) for j in (1, 2, 3)}
    d_ref = {f"distinct_{j}": float(distinct_n(sub[None], j)[0]) for j in (1, 2, 3)}
    fr, fc = tfidf(record_features(ref[None], "text"))[0], tfidf(record_features(cand[None], "text"))[0]
    mmd, p = mmd_test(fr, fc, rng)
    return {
        "records_compared": int(n), "rare_word_survival": float(survival_c),
        "rare_word_survival_reference": float(survival_r), **d,
        **{f"{k}_reference": v for k, v in d_ref.items()},
        "vocabulary": int(present(c).sum()), "vocabulary_reference": int(present(sub).sum()),
        "mmd": mmd, "mmd_p_value": p,
        "tail_retention": float(survival_c / survival_r) if survival_r > 0 else None,
        "spread_retention": float(d["distinct_2"] / d_ref["distinct_2"]) if d_ref["distinct_2"] > 0 else None,
    }


def image_measures(ref, cand, rng) -> dict:
    from ..metrics.images import frechet, prdc

    n = min(len(cand), len(ref), 2000)
    fr = record_features(ref[rng.permutation(len(ref))[:n]][None], "image")[0]
    fc = record_features(cand[rng.permutation(len(cand))[:n]][None], "image")[0]
    half = n // 2
    own = prdc(fr[:half], fr[half : 2 * half])  # real against real: what a healthy set of this size scores
    got = prdc(fr[:half], fc[:half])
    mmd, p = mmd_test(fr, fc, rng)
    spread = float(np.mean(fc.std(0)) / max(np.mean(fr.std(0)), 1e-12))
    return {
        "records_compared": int(n), **{k: float(v) for k, v in got.items()},
        **{f"{k}_reference": float(v) for k, v in own.items()},
        "frechet": float(frechet(fr, fc)), "mmd": mmd, "mmd_p_value": p, "feature_std_ratio": spread,
        "tail_retention": float(got["recall"] / own["recall"]) if own["recall"] > 0 else None,
        "spread_retention": min(1.0, spread),
    }


def verdict(tail: float | None, spread: float | None, early=0.5, late=0.5, total=0.05) -> tuple[str, list[str]]:
    reasons = []
    stage = STAGES[0]
    if spread is not None and spread <= total:
        stage = "total"
        reasons.append(f"spread retention {spread:.3f} <= {total}: the variety is essentially gone")
    elif spread is not None and spread < late:
        stage = "late"
        reasons.append(f"spread retention {spread:.3f} < {late}: more than half the spread is lost")
    if tail is not None and tail < early:
        if stage == STAGES[0]:
            stage = "early"
        reasons.append(f"tail retention {tail:.3f} < {early}: more than half of the reference's tails are missing")
    if stage == STAGES[0]:
        reasons.append(
            f"tail retention {tail:.3f} and spread retention {spread:.3f} are above the thresholds ({early}, {late})"
            if tail is not None and spread is not None else "no tail or spread signal fell below its threshold"
        )
    return stage, reasons
