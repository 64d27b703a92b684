"""Cluster-mirrored synthesis of tabular data (CSV or Parquet), with a fidelity report.

Numeric columns are standardised and categorical columns one-hot encoded; the rows are clustered (a Gaussian
mixture, k by BIC or given) by the same :class:`~collapselab.curation.mirror.ClusterMirror` the loop uses. Per
cluster, numeric columns are drawn from a multivariate Gaussian and each categorical column from the cluster's
own category frequencies; every cluster gets its real share of the rows, at least ``floor``. Integer columns
are rounded, and every numeric column is clipped to the real range.

The fidelity report compares synthetic with real: per column 1 − KS statistic (numeric) or 1 − total variation
distance (categorical), correlation similarity (1 − mean |Δ correlation| / 2 over numeric pairs), range
coverage (the share of each real range the synthetic values span) and category coverage (the share of real
categories that appear), and the clusters' coverage.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .curation.mirror import ClusterMirror, largest_remainder
from .errors import InputError
from .io import check_input_file, write_atomic
from .spec import SynthesisSpec


def read_table(path: str | Path, what: str = "--data") -> pd.DataFrame:
    p = check_input_file(path, what)
    if p.stat().st_size == 0:
        raise InputError(f"{what} {path}: the file is empty")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(p)
        elif suffix in (".csv", ".txt", ".tsv"):
            df = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
        else:
            raise InputError(f"{what} {path}: unknown table format {suffix!r}; allowed: .csv, .tsv, .parquet")
    except InputError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError, RecursionError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(f"{what} {path}: cannot read it as a table ({first})") from None
    except Exception as e:  # noqa: BLE001 - pyarrow raises its own error types for damaged files
        raise InputError(f"{what} {path}: cannot read it as a table ({type(e).__name__})") from None
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise InputError(f"{what} {path}: no rows or no columns")
    df.columns = [str(c) for c in df.columns]
    missing = df.isna().sum()
    if missing.any():
        col = missing[missing > 0].index[0]
        raise InputError(f"{what} {path}: column {col!r} has {int(missing[col])} missing values; fill or drop them")
    numeric = df.select_dtypes(include="number")
    if numeric.shape[1] and not np.isfinite(numeric.to_numpy(dtype=float)).all():
        col = next(c for c in numeric.columns if not np.isfinite(numeric[c].to_numpy(dtype=float)).all())
        raise InputError(f"{what} {path}: column {col!r} holds an infinite value; only finite numbers are allowed")
    return df


def column_kinds(df: pd.DataFrame) -> dict[str, str]:
    """numeric (int or float, not bool) or categorical, per column."""
    return {
        c: "numeric"
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        else "categorical"
        for c in df.columns
    }


def synthesize(df: pd.DataFrame, rows: int, spec: SynthesisSpec, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """``rows`` synthetic rows mirroring the clusters of ``df``, and the per-cluster coverage."""
    if rows <= 0:
        raise InputError(f"--rows {rows}: must be a positive number of rows")
    kinds = column_kinds(df)
    num = [c for c, k in kinds.items() if k == "numeric"]
    cat = [c for c, k in kinds.items() if k == "categorical"]
    rng = np.random.default_rng(seed)
    X = df[num].to_numpy(float)
    mean, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    parts = [(X - mean) / sd]
    levels = {c: pd.Index(pd.unique(df[c])) for c in cat}
    for c in cat:  # one-hot, scaled so a category switch weighs like one standard deviation
        parts.append(np.eye(len(levels[c]))[levels[c].get_indexer(df[c])] / np.sqrt(2))
    Z = np.concatenate(parts, axis=1)[None]  # (1, N, D)
    if len(df) < 2 * Z.shape[2] + 2:
        raise InputError(f"--data: {len(df)} rows are too few to cluster {Z.shape[2]} encoded columns")
    mirror = ClusterMirror(spec, Z, rng)
    K = mirror.active.shape[1]
    labels = mirror.assign(Z, mirror.real_centres)[0]
    counts = largest_remainder(mirror.quotas(), rows)[0]
    out_num, out_cat = [], {c: [] for c in cat}
    for k in range(K):  # a loop over clusters (few), not over rows
        if counts[k] == 0:
            continue
        member = labels == k
        Xk = (X[member] - mean) / sd
        mu = Xk.mean(axis=0)
        cov = np.cov(Xk, rowvar=False).reshape(len(num), len(num)) if member.sum() > 1 else np.zeros((len(num),) * 2)
        cov = cov + spec.reg_covar * np.eye(len(num))
        out_num.append(
            rng.multivariate_normal(mu, cov, size=counts[k], method="eigh") if num else np.empty((counts[k], 0))
        )
        for c in cat:
            freq = df.loc[member, c].value_counts(normalize=True)
            out_cat[c].append(rng.choice(freq.index.to_numpy(), size=counts[k], p=freq.to_numpy()))
    synth = pd.DataFrame(np.concatenate(out_num) * sd + mean, columns=num)
    for c in cat:
        synth[c] = np.concatenate(out_cat[c])
    lo, hi = X.min(axis=0), X.max(axis=0)
    for j, c in enumerate(num):
        synth[c] = np.clip(synth[c], lo[j], hi[j])
        if pd.api.types.is_integer_dtype(df[c]):
            synth[c] = np.round(synth[c]).astype(df[c].dtype)
    synth = synth.iloc[rng.permutation(rows)].reset_index(drop=True)[list(df.columns)]
    for c in cat:
        synth[c] = synth[c].astype(df[c].dtype)
    back = np.concatenate(
        [(synth[num].to_numpy(float) - mean) / sd]
        + [np.eye(len(levels[c]))[levels[c].get_indexer(synth[c])] / np.sqrt(2) for c in cat],
        axis=1,
    )[None]
    clusters = {
        "k": int(mirror.clusters[0]),
        "real_shares": mirror.real_shares[0][: int(mirror.clusters[0])].round(4).tolist(),
        "coverage": float(mirror.coverage(back)[0]),
    }
    return synth, clusters


def fidelity(real: pd.DataFrame, synth: pd.DataFrame) -> dict:
    kinds = column_kinds(real)
    columns = {}
    for c, kind in kinds.items():
        if kind == "numeric":
            r, s = real[c].to_numpy(float), synth[c].to_numpy(float)
            span = r.max() - r.min()
            covered = (min(s.max(), r.max()) - max(s.min(), r.min())) / span if span > 0 else 1.0
            columns[c] = {
                "kind": kind,
                "ks_complement": 1 - stats.ks_2samp(r, s).statistic,
                "range_coverage": float(np.clip(covered, 0, 1)),
            }
        else:
            pr, ps = real[c].value_counts(normalize=True), synth[c].value_counts(normalize=True)
            cats = pr.index.union(ps.index)
            tv = 0.5 * np.abs(pr.reindex(cats, fill_value=0) - ps.reindex(cats, fill_value=0)).sum()
            columns[c] = {
                "kind": kind,
                "tv_complement": float(1 - tv),
                "category_coverage": float(np.isin(pr.index, ps.index).mean()),
            }
    num = [c for c, k in kinds.items() if k == "numeric"]
    corr = None
    if len(num) > 1:
        cr, cs = real[num].corr().to_numpy(), synth[num].corr().to_numpy()
        iu = np.triu_indices(len(num), 1)
        corr = float(1 - np.nanmean(np.abs(cr[iu] - cs[iu])) / 2)
    marginal = [v.get("ks_complement", v.get("tv_complement")) for v in columns.values()]
    return {
        "rows_real": len(real),
        "rows_synthetic": len(synth),
        "marginal_mean": float(np.mean(marginal)),
        "correlation_similarity": corr,
        "columns": columns,
    }


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula (starting with = + - @, tab or CR) prefixed with a
    quote (OWASP's advice against CSV injection); numbers are left alone."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c]):
            out[c] = [("'" + v) if isinstance(v, str) and v.startswith(FORMULA_START) else v for v in out[c]]
    return out


def synthesize_file(data, rows: int, out, spec: SynthesisSpec, seed: int = 0, report=None) -> dict:
    """Read ``data``, write ``rows`` synthetic rows to ``out`` (CSV or Parquet) and the fidelity report (JSON)."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out {out}: allowed formats: .csv, .parquet")
    real = read_table(data)
    synth, clusters = synthesize(real, rows, spec, seed)
    result = {**fidelity(real, synth), "clusters": clusters, "data": str(data), "out": str(out), "seed": seed}
    report = Path(report) if report else out.with_suffix(".fidelity.json")
    for folder in {out.parent, report.parent}:
        folder.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        buf = io.BytesIO()
        synth.to_parquet(buf, index=False)
        write_atomic(out, buf.getvalue())
    else:
        write_atomic(out, csv_safe(synth).to_csv(index=False))
    write_atomic(report, json.dumps(result, indent=2) + "\n")
    result["report"] = str(report)
    return result
