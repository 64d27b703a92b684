"""The audit's HTML page: a Jinja template (``templates/audit.html``) with inline PNG figures, like the run report.

It shows, not only tells: the detector's score histograms for the human and synthetic calibration records and the
candidate (with the threshold, or the human band without examples), the ROC curve, and each calibrated measure
with its null band.
"""

from __future__ import annotations

import json

import numpy as np

from .build import figure_data_url, templates

COLOURS = {"healthy": "#1a7f37", "early": "#bf8700", "late": "#cf222e", "total": "#82071e"}
MAX_NULL_ROWS = 40  # measures drawn in the null-band figure (flagged first); the table lists them all


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def share_figures(s: dict) -> list[dict]:
    import matplotlib.pyplot as plt

    curves = s.get("curves") or {}
    out = []
    edges = np.asarray(curves.get("edges", []), float)
    if edges.size > 1:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        centres, width = (edges[1:] + edges[:-1]) / 2, np.diff(edges)
        for key, colour, label in (
            ("human", "#1d5fa8", "human (calibration)"),
            ("synthetic", "#cf222e", "synthetic (calibration)"),
            ("candidate", "#555555", "candidate"),
        ):
            counts = curves.get(key)
            if counts:
                dens = np.asarray(counts, float) / max(sum(counts), 1) / width
                ax.step(centres, dens, where="mid", color=colour, label=label, lw=1.6 if key == "candidate" else 1.2)
        if curves.get("threshold") is not None:
            ax.axvline(curves["threshold"], color="k", ls="--", lw=1, label="threshold")
        for b in curves.get("band") or []:
            ax.axvline(b, color="k", ls=":", lw=1)
        ax.set_xlabel("detector score (higher: more machine-like)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8, frameon=False)
        caption = (
            "Detector scores: human and synthetic calibration records (each scored out of sample) and the candidate"
            if curves.get("synthetic")
            else "Detector scores of human calibration records and the candidate; dotted: the human band beyond "
            "which a record is flagged"
        )
        out.append({"src": figure_data_url(fig), "caption": caption})
    roc = curves.get("roc")
    if roc:
        fig, ax = plt.subplots(figsize=(3.4, 3.2))
        ax.plot(roc["fpr"], roc["tpr"], color="#cf222e")
        ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title(f"ROC, AUROC {fmt(s.get('detector_auc'))}", fontsize=10)
        out.append({"src": figure_data_url(fig), "caption": "ROC curve of the detector on its calibration records"})
    return out


def null_figures(cal: dict) -> list[dict]:
    import matplotlib.pyplot as plt

    ms = sorted(cal.get("measures", {}).items(), key=lambda kv: (not kv[1]["flagged"], kv[1]["p_value"]))
    ms = ms[:MAX_NULL_ROWS]
    if not ms:
        return []
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(ms) + 0.9))
    for i, (_name, m) in enumerate(ms):
        med = m["null_median"] if m["null_median"] else 1.0
        lo, hi = (b / med for b in m["null_band"])
        ax.plot([lo, hi], [i, i], color="#9bb7d6", lw=6, solid_capstyle="butt")
        ax.plot([1, 1], [i - 0.3, i + 0.3], color="#1d5fa8", lw=1)
        ax.plot(m["value"] / med, i, "o", color="#cf222e" if m["flagged"] else "#333", ms=5)
    ax.set_yticks(range(len(ms)), [name for name, _ in ms], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("candidate / null median (band: the null's 5–95%)")
    return [
        {
            "src": figure_data_url(fig),
            "caption": "Each calibrated measure of the candidate (dot; red when flagged) against "
            "what two samples of one distribution give (band)",
        }
    ]


def render(report: dict, share_line: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    env = templates()
    s = report["synthetic_share"]
    measures = report["measures"]
    cal = measures.get("calibrated")
    plain = [(k, v) for k, v in measures.items() if not isinstance(v, (dict, list))]
    columns = [(c, ", ".join(f"{k} {fmt(v)}" for k, v in m.items())) for c, m in measures.get("columns", {}).items()]
    proj = report.get("projection")
    proj_rows = []
    if proj:
        for st in ("early", "late", "total"):
            if st in proj:
                v = proj[st]
                proj_rows.append(
                    {
                        "stage": st,
                        "median": "not within the run" if v["median"] is None else fmt(v["median"]),
                        "low": fmt(v["ci"][0]),
                        "high": fmt(v["ci"][1]),
                        "reached": f"{v['reached']:.0%}",
                    }
                )
    with matplotlib.rc_context({"text.parse_math": False}):  # column names are users' text, not TeX
        return env.get_template("audit.html").render(
            r=report,
            s=s,
            share_line=share_line,
            fmt=fmt,
            colour=COLOURS.get(report["verdict"], "#222"),
            share_figures=share_figures(s),
            null_figures=null_figures(cal) if cal else [],
            cal=cal,
            cal_rows=sorted(cal["measures"].items(), key=lambda kv: kv[1]["p_value"]) if cal else [],
            plain=plain,
            columns=columns,
            proj=proj,
            proj_rows=proj_rows,
            proj_policy=json.dumps(proj.get("policy", {})) if proj else "",
        )
