"""Tail coverage, diversity and distances of a candidate against a reference, and the stage verdict.

Descriptive measures (KS, Wasserstein, TV, MMD with its permutation p-value, PRDC, distinct-n) are reported as
they are. The verdict rests on *calibrated* retention measures only (:func:`calibrate`): each is set against its
null distribution, the same measure between disjoint resamples (at the two sets' sizes) of reference and
candidate pooled, and flagged only below what two samples of one distribution give (family-wise 5% over all measures, Westfall–Young
min-p). Text: rare-word survival (tail), distinct-1 and distinct-2 (spread). Tables, per column: the share of
values beyond the reference's 1st/99th percentiles (tail) and the standard deviation (spread) of numeric
columns; category coverage, rare-category coverage (tail) and entropy (spread) of categorical ones. Images:
PRDC recall and coverage (tail) and feature spread. Nothing here sees the synthetic examples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..curation.features import record_features, standardise, tfidf
from ..metrics.images import frechet, prdc
from ..metrics.stages import STAGES
from ..metrics.text import distinct_n, rare_words
from ..synthesize import column_kinds

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
        return (
            (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
            + (kyy.sum() - np.trace(kyy)) / (len(y) * (len(y) - 1))
            - 2 * kxy.mean()
        )

    base = np.arange(len(z))
    observed = stat(base)
    perms = [stat(rng.permutation(len(z))) for _ in range(permutations)]
    return float(observed), float((1 + sum(p >= observed for p in perms)) / (1 + permutations))


def table_measures(ref, cand, rng) -> dict:
    kinds = column_kinds(ref)
    columns = {}
    for col, kind in kinds.items():
        r, c = ref[col], cand[col]
        if kind == "numeric":
            r, c = r.to_numpy(float), c.to_numpy(float)
            sd = r.std() or 1.0
            lo, hi = np.quantile(r, [TAIL_Q, 1 - TAIL_Q])
            tail_ref = np.mean((r < lo) | (r > hi)) or 2 * TAIL_Q
            span = r.max() - r.min()
            columns[col] = {
                "kind": kind,
                "ks": float(stats.ks_2samp(r, c).statistic),
                "wasserstein_sd": float(stats.wasserstein_distance(r, c) / sd),
                "range_coverage": float(np.clip((min(c.max(), r.max()) - max(c.min(), r.min())) / span, 0, 1))
                if span > 0
                else 1.0,
                "tail_coverage": float(min(1.0, np.mean((c < lo) | (c > hi)) / tail_ref)),
                "std_ratio": float(c.std() / sd),
            }
        else:
            pr, pc = r.value_counts(normalize=True), c.value_counts(normalize=True)
            cats = pr.index.union(pc.index)
            rare = pr[pr < RARE_SHARE].index
            ent_r = stats.entropy(pr.to_numpy())
            columns[col] = {
                "kind": kind,
                "tv": float(0.5 * np.abs(pr.reindex(cats, fill_value=0) - pc.reindex(cats, fill_value=0)).sum()),
                "category_coverage": float(np.isin(pr.index, pc.index).mean()),
                "rare_category_coverage": float(np.isin(rare, pc.index).mean()) if len(rare) else None,
                "entropy_ratio": float(stats.entropy(pc.to_numpy()) / ent_r) if ent_r > 0 else 1.0,
            }
    num = [c for c, v in columns.items() if v["kind"] == "numeric"]
    mmd, p = None, None
    if num:
        r, c = ref[num].to_numpy(float)[None], cand[num].to_numpy(float)[None]
        mmd, p = mmd_test(standardise(r, r)[0], standardise(c, r)[0], rng)
    # the calibrated measures work on one numeric array: categories as codes shared by reference and candidate
    enc_r, enc_c = np.zeros((len(ref), len(kinds))), np.zeros((len(cand), len(kinds)))
    for j, (col, kind) in enumerate(kinds.items()):
        if kind == "numeric":
            enc_r[:, j], enc_c[:, j] = ref[col].to_numpy(float), cand[col].to_numpy(float)
        else:
            codes, _ = pd.factorize(pd.concat([ref[col], cand[col]]).astype(str))
            enc_r[:, j], enc_c[:, j] = codes[: len(ref)], codes[len(ref) :]
    cal = calibrate(_table_measure(list(kinds.items())), enc_r, enc_c, rng)
    return {"columns": columns, "mmd": mmd, "mmd_p_value": p, **_summary(cal), "calibrated": cal}


def _table_measure(kinds):
    def measure(a, b):
        out = {}
        for j, (col, kind) in enumerate(kinds):
            x, y = a[:, j], b[:, j]
            if kind == "numeric":
                lo, hi = np.quantile(x, [TAIL_Q, 1 - TAIL_Q])
                out[f"{col}: tail share"] = (float(np.mean((y < lo) | (y > hi))), "tail")
                out[f"{col}: std"] = (float(y.std()), "spread")
            else:
                K = int(max(x.max(), y.max())) + 1
                px, py = np.bincount(x.astype(int), minlength=K), np.bincount(y.astype(int), minlength=K)
                share = px / px.sum()
                out[f"{col}: category coverage"] = (float(((py > 0) & (px > 0)).sum() / (px > 0).sum()), "tail")
                rare = (px > 0) & (share < RARE_SHARE)
                if rare.any():
                    out[f"{col}: rare category coverage"] = (float((py[rare] > 0).mean()), "tail")
                out[f"{col}: entropy"] = (float(stats.entropy(py[py > 0])), "spread")
        return out

    return measure


def _summary(cal: dict) -> dict:
    """The median retention of each group (1 = as much as a sample like the reference keeps): a summary; the
    verdict reads every measure on its own (a single measure of few tail values is noisy, and its minimum over
    30 columns says little)."""
    ms = cal["measures"].values()
    tails = [v["retention"] for v in ms if v["group"] == "tail"]
    spreads = [v["retention"] for v in ms if v["group"] == "spread"]
    return {
        "tail_retention": float(np.median(tails)) if tails else None,
        "spread_retention": float(np.median(spreads)) if spreads else None,
    }


def text_measures(ref, cand, vocab, rng) -> dict:
    V = len(vocab)
    n = min(len(cand), len(ref))
    sub = ref[rng.permutation(len(ref))[:n]]
    c = cand[rng.permutation(len(cand))[:n]]
    rare = rare_words(ref[None], V, 2)[0]  # words the reference holds once or twice
    present = lambda x: np.isin(np.arange(V), x)  # noqa: E731
    d = {f"distinct_{j}": float(distinct_n(c[None], j)[0]) for j in (1, 2, 3)}
    d_ref = {f"distinct_{j}": float(distinct_n(sub[None], j)[0]) for j in (1, 2, 3)}
    fr, fc = tfidf(record_features(ref[None], "text"))[0], tfidf(record_features(cand[None], "text"))[0]
    mmd, p = mmd_test(fr, fc, rng)

    def measure(a, b):
        rare_a = rare_words(a[None], V, 2)[0]  # rare in A, looked for in B: B never defines its own tails
        seen = np.zeros(V, bool)
        seen[b.ravel()] = True
        return {
            "rare-word survival": (float((seen & rare_a).sum() / max(rare_a.sum(), 1)), "tail"),
            "distinct-1": (float(distinct_n(b[None], 1)[0]), "spread"),
            "distinct-2": (float(distinct_n(b[None], 2)[0]), "spread"),
        }

    cal = calibrate(measure, ref, cand, rng)
    return {
        # (no reference value beside it: the reference's own rare words are rare *in* it, so a part of it keeps
        # them by construction; the calibrated "rare-word survival" compares like with like)
        "records_compared": int(n),
        "rare_word_survival": float((present(c) & rare).sum() / max(rare.sum(), 1)),
        **d,
        **{f"{k}_reference": v for k, v in d_ref.items()},
        "vocabulary": int(present(c).sum()),
        "vocabulary_reference": int(present(sub).sum()),
        "mmd": mmd,
        "mmd_p_value": p,
        **_summary(cal),
        "calibrated": cal,
    }


def image_measures(ref, cand, rng) -> dict:
    n = min(len(cand), len(ref), 2000)
    fr_all = record_features(ref[None], "image")[0]
    fc_all = record_features(cand[None], "image")[0]
    fr = fr_all[rng.permutation(len(ref))[:n]]
    fc = fc_all[rng.permutation(len(cand))[:n]]
    half = n // 2
    own = prdc(fr[:half], fr[half : 2 * half])  # real against real: what a healthy set of this size scores
    got = prdc(fr[:half], fc[:half])
    mmd, p = mmd_test(fr, fc, rng)
    spread = float(np.mean(fc.std(0)) / max(np.mean(fr.std(0)), 1e-12))

    def measure(a, b):
        got = prdc(a, b)
        return {
            "recall": (got["recall"], "tail"),
            "coverage": (got["coverage"], "tail"),
            "feature spread": (float(np.mean(b.std(0))), "spread"),
        }

    cal = calibrate(measure, fr_all, fc_all, rng, cap=300)
    return {
        "records_compared": int(n),
        **{k: float(v) for k, v in got.items()},
        **{f"{k}_reference": float(v) for k, v in own.items()},
        "frechet": float(frechet(fr, fc)),
        "mmd": mmd,
        "mmd_p_value": p,
        "feature_std_ratio": spread,
        **_summary(cal),
        "calibrated": cal,
    }


NULL_DRAWS = 200  # disjoint resamples of the reference per calibrated measure
FAMILY_ALPHA = 0.05  # the chance that a candidate drawn like the reference has any measure flagged
MATERIAL = 0.95  # and a flagged measure has lost at least 5% against the null median: large samples make tiny,
# harmless differences significant (human-only candidates were flagged at retentions of 0.97-0.99)


def calibrate(measure, ref, cand, rng, draws: int = NULL_DRAWS, cap: int | None = None) -> dict:
    """Every retention measure set against its null distribution.

    The candidate's value is ``measure(R, C)``: the reference R against the candidate C (subsampled to the
    reference's size when larger, and both to ``cap`` when given). The null is the same measure between disjoint
    resamples at those sizes drawn from R and C pooled: what two samples of these sizes give when they come from
    one distribution (a permutation test, exact under that hypothesis). Measures are oriented so that lower means
    lost; the p-value is the share of null draws at or below the candidate's value. A measure is flagged when it is
    at least 5% below the null median (:data:`MATERIAL`) and its p-value is at or below the Westfall–Young min-p
    threshold: the 5% quantile of the smallest per-measure null
    p-value of each draw, so that a candidate drawn like the reference has *any* measure flagged with probability
    at most 5%, however many measures (columns) there are.

    Why pooled and not reference-only resamples: halves of one fixed reference vary less than independent samples
    do (the finite-population correction, 1 − m/N), and a reference-only null called one in two human-only
    candidates collapsed.

    ``measure(a, b)`` returns {name: (value, group)} with group "tail" or "spread"."""
    m = min(len(cand), len(ref)) if cap is None else min(len(cand), len(ref), cap)
    r = ref if cap is None or len(ref) <= cap else ref[rng.permutation(len(ref))[:cap]]
    c = cand[rng.permutation(len(cand))[:m]]  # arrays: tables arrive encoded as numbers
    observed = measure(r, c)
    groups = {k: g for k, (_, g) in observed.items()}
    pooled = np.concatenate([r, c])
    null = {k: [] for k in observed}
    for _ in range(draws):
        order = rng.permutation(len(pooled))
        for name, (v, _) in measure(pooled[order[: len(r)]], pooled[order[len(r) :]]).items():
            if name in null:
                null[name].append(v)
    names = [
        k for k in observed if len(null[k]) == draws and np.all(np.isfinite(null[k])) and np.isfinite(observed[k][0])
    ]
    if not names:
        return {"measures": {}, "threshold": None, "draws": draws, "size": int(m), "reference_size": len(r)}
    N = np.array([null[k] for k in names])  # (measures, draws)
    # each null draw's p-value within its own measure's null (share of draws at or below it), the smallest per draw
    null_p = (N[:, None, :] <= N[:, :, None]).mean(-1)
    threshold = float(np.quantile(null_p.min(0), FAMILY_ALPHA))
    out = {}
    for j, k in enumerate(names):
        value = float(observed[k][0])
        med = float(np.median(N[j]))
        p = float((1 + np.sum(N[j] <= value)) / (1 + draws))
        out[k] = {
            "value": value,
            "group": groups[k],
            "null_median": med,
            "null_band": [float(np.quantile(N[j], 0.05)), float(np.quantile(N[j], 0.95))],
            "p_value": p,
            "retention": float(min(value / med, 1.0)) if med > 0 else (1.0 if value >= med else 0.0),
            "flagged": bool(p <= threshold and value < MATERIAL * med),
        }
    return {"measures": out, "threshold": threshold, "draws": draws, "size": int(m), "reference_size": len(r)}


def verdict(calibrated: dict, total=0.05, late=0.5) -> tuple[str, list[str]]:
    """The stage from the calibrated measures: nothing flagged is healthy; a flagged tail measure, or a flagged
    spread measure that keeps at least half the spread, is early; a flagged spread measure below half is late;
    total when the spread measures' median retention is at most 0.05."""
    ms = calibrated["measures"]
    flagged = {k: v for k, v in ms.items() if v["flagged"]}
    spread = [v["retention"] for v in ms.values() if v["group"] == "spread"]
    reasons = []
    for k, v in sorted(flagged.items(), key=lambda kv: kv[1]["p_value"]):
        reasons.append(
            f"{k} {v['value']:.3g} is below what real data of this size gives "
            f"(null 90% band {v['null_band'][0]:.3g}–{v['null_band'][1]:.3g}, p = {v['p_value']:.3g}; "
            f"retention {v['retention']:.2f})"
        )
    if not flagged:
        return STAGES[0], [
            f"no measure is below what two samples of one distribution give ({len(ms)} measures "
            f"against {calibrated['draws']} disjoint resamples of {calibrated['reference_size']} and "
            f"{calibrated['size']} records; family-wise 5%)"
        ]
    lost_spread = [v for v in flagged.values() if v["group"] == "spread" and v["retention"] < late]
    if spread and np.median(spread) <= total and any(v["group"] == "spread" for v in flagged.values()):
        return "total", reasons
    return ("late" if lost_spread else "early"), reasons
