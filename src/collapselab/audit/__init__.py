"""Audit a data set for collapse risk: its synthetic share, tail and diversity coverage, distances, a stage
verdict, and a projection of the collapse ahead under a planned retraining policy.

    report = audit("reference.csv", "candidate.csv", synthetic_examples="model_outputs.csv",
                   policy="mix", real_fraction=0.3, generations=10)
    report["verdict"], report["synthetic_share"]["share"], report["projection"]["early"]
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from ..curation.features import record_features
from ..curation.mirror import bic_choice
from ..engine.plan import expand
from ..errors import SpecError
from ..executors import run_cells
from ..families.base import Reference
from ..families.ngram import NGramFamily
from ..io import write_atomic
from ..planning import plan
from ..report.audit import render
from ..spec import Requirement, load_spec
from ..summary import STAGE_COLUMNS, stage_rows, to_frame
from ..synthesize import column_kinds
from .coverage import image_measures, table_measures, text_measures, verdict
from .detect import (
    FeatureDetector,
    PerplexityDetector,
    ShareEstimate,
    estimate_lower_bound,
    estimate_share,
    provenance_share,
    share_from_scores,
    youden_threshold,
)
from .inputs import read_pair
from .ledger import Ledger, plan_mix
from .lmscore import LMScorer
from .textdetect import SupervisedTextDetector, ZeroShotDetector, crossfit

__all__ = ["Ledger", "audit", "plan_mix"]

MAX_DETECTOR_RECORDS = 2000  # per class and split
# texts the language model scores (a random subsample beyond these; the interval counts what was scored): the
# LM forward pass is the audit's cost, ~600 tokens a second on 2 CPU cores
MAX_LM_REFERENCE = 300
MAX_LM_EXAMPLES = 300
MAX_LM_CANDIDATE = 500


def audit(
    reference,
    candidate,
    *,
    synthetic_examples=None,
    provenance: str = "origin",
    policy: str = "replace",
    real_fraction: float | None = None,
    generations: int = 10,
    replicates: int = 8,
    seed: int = 0,
    project: bool = True,
    out=None,
    scoring_model: str | None = "smollm2",
    progress=None,
    plan_need: str | None = None,
    plan_horizon: int | None = None,
) -> dict:
    """The audit report as a dict; with ``out`` (a folder), also ``audit.json`` and ``audit.html``.

    Text is scored by ``scoring_model`` (the packaged SmolLM2-135M, a local Hugging Face folder or a GGUF file);
    ``None`` uses a word trigram fitted on half of the reference instead. ``progress(done, total)`` is called
    while the language model scores texts. ``plan_need`` (``'METRIC >= VALUE'``) at ``plan_horizon``: the planner
    on the projection's surrogate (the smallest real fraction under mix / fresh, else the records per generation)."""
    if plan_need is not None:  # checked before any scoring
        Requirement.parse(plan_need)
        if not isinstance(plan_horizon, int) or isinstance(plan_horizon, bool) or plan_horizon < 0:
            raise SpecError(f"plan_horizon = {plan_horizon!r}: with plan_need, a generation (an integer >= 0)")
    ref, cand, examples = read_pair(reference, candidate, provenance, synthetic_examples)
    # separate streams: the measures and the verdict do not depend on whether examples were given
    share = _share(ref, cand, examples, np.random.default_rng([seed, 1]), seed, scoring_model, progress)
    rng = np.random.default_rng([seed, 2])
    if ref.kind == "table":
        measures = table_measures(ref.x, cand.x, rng)
    elif ref.kind == "text":
        measures = text_measures(ref.x, cand.x, ref.info["vocab"], rng)
    else:
        measures = image_measures(ref.x, cand.x, rng)
    stage, reasons = verdict(measures["calibrated"])
    if stage != "healthy" and share.bound == "lower" and share.low < 0.1:
        share.note = "; ".join(
            x
            for x in (
                share.note,
                (
                    "the candidate looks collapsed but the detector's lower bound is near 0: its synthetic part may come "
                    "from a model this detector does not separate from human text — give --synthetic-examples"
                ),
            )
            if x
        )
    report = {
        "reference": str(reference),
        "candidate": str(candidate),
        "kind": ref.kind,
        "records": {"reference": len(ref), "candidate": len(cand)},
        "synthetic_share": share.to_dict(),
        "measures": measures,
        "verdict": stage,
        "reasons": reasons,
    }
    if project or plan_need is not None:
        surrogate = surrogate_spec(ref.kind, candidate, cand, policy, real_fraction, generations, replicates, seed)
        if project:
            report["projection"] = projection(surrogate)
        if plan_need is not None:
            report["plan"] = plan_on_surrogate(surrogate, plan_need, plan_horizon)
    if out is not None:
        write_report(report, Path(out))
    return report


def _share(ref, cand, examples, rng, seed, scoring_model=None, progress=None) -> ShareEstimate:
    if cand.origins is not None:
        return provenance_share(cand.origins)
    if ref.kind == "text" and scoring_model is not None:
        return _lm_share(ref, cand, examples, rng, seed, scoring_model, progress)
    if examples is None and ref.kind != "text":
        return ShareEstimate(
            "not estimated",
            float("nan"),
            0.0,
            1.0,
            n_candidate=len(cand),
            bound="none",
            note="not identifiable without examples: give --synthetic-examples (records known to be "
            "synthetic) or a provenance column",
        )
    if ref.kind == "text":
        order = rng.permutation(len(ref))
        lm_part, human = ref.x[order[: len(ref) // 2]], ref.x[order[len(ref) // 2 :]]

        class _Truth:
            vocab = ref.info["vocab"]

        scorer = NGramFamily(NGramFamily.Params(order=3, interpolation=0.4), Reference(_Truth, human[:1], len(human)))
        detector = PerplexityDetector(scorer.fit(lm_part[None], rng))
        human = human[rng.permutation(len(human))][: 2 * MAX_DETECTOR_RECORDS]
        if examples is None:  # no generator to calibrate on: the false-positive rate gives a lower bound only
            a = len(human) // 2
            return estimate_lower_bound(detector, human[:a], human[a:], cand.x)
        synth, cand_x = examples.x, cand.x
    else:
        human, synth, cand_x = _features(ref), _features(examples), _features(cand)
        detector = FeatureDetector(seed)
    human = human[rng.permutation(len(human))][: 2 * MAX_DETECTOR_RECORDS]
    synth = synth[rng.permutation(len(synth))][: 2 * MAX_DETECTOR_RECORDS]
    a, b = len(human) // 2, len(synth) // 2
    return estimate_share(detector, human[:a], synth[:b], human[a:], synth[b:], cand_x, rng, mixture_boot=200)


def _lm_share(ref, cand, examples, rng, seed, scoring_model, progress) -> ShareEstimate:
    """The text share with the language-model detectors: zero-shot Fast-DetectGPT curvature and the lower bound
    without examples; the supervised detector, cross-fitted by prompt group, with them."""

    pick = lambda texts, k: [texts[i] for i in np.sort(rng.permutation(len(texts))[:k])]  # noqa: E731
    human = pick(ref.info["texts"], MAX_LM_REFERENCE)
    cand_x = pick(cand.info["texts"], MAX_LM_CANDIDATE)
    scorer = LMScorer(scoring_model, progress=progress)
    sampled = len(cand_x) < len(cand)
    if examples is None:
        a = len(human) // 2
        est = estimate_lower_bound(ZeroShotDetector(scorer), human[:a], human[a:], cand_x)
    else:
        synth = pick(examples.info["texts"], MAX_LM_EXAMPLES)
        s_h, s_s, s_c = crossfit(lambda: SupervisedTextDetector(scorer, seed=seed), human, synth, cand_x, rng)
        est = share_from_scores(
            SupervisedTextDetector(scorer).name + f" ({scorer.name})",
            s_h,
            s_s,
            s_c,
            youden_threshold(s_h, s_s),
            rng,
            mixture_boot=200,
        )
        est.method += ", cross-fitted by prompt group"
    if sampled:
        est.note = "; ".join(
            x
            for x in (
                est.note,
                f"{len(cand_x)} of the candidate's {len(cand)} records scored "
                "(a random subsample; the interval counts it)",
            )
            if x
        )
    return est


def _features(records) -> np.ndarray:

    if records.kind == "image":
        return record_features(records.x[None], "image")[0]
    df = records.x

    parts = []
    for col, k in column_kinds(df).items():
        if k == "numeric":
            parts.append(df[col].to_numpy(float)[:, None])
        else:  # categories as stable hashed codes (not hash(): it changes with every process): the trees split on them
            parts.append(df[col].astype(str).map(lambda v: zlib.crc32(v.encode())).to_numpy(float)[:, None])
    return np.concatenate(parts, axis=1)


def surrogate_spec(kind, path, cand, policy, real_fraction, generations, replicates, seed) -> tuple[dict, str] | str:
    """A spec of the loop on a surrogate of the candidate under the planned policy, and what the surrogate is; or
    why there is none (a string)."""
    policy_spec = {"kind": policy}
    if real_fraction is not None:
        policy_spec["real_fraction"] = real_fraction
    if kind == "table":
        num = cand.x.select_dtypes("number").to_numpy(float)
        if num.shape[1] == 0:
            return "no numeric columns to fit a surrogate to"
        z = (num - num.mean(0)) / np.where(num.std(0) > 0, num.std(0), 1)
        k, fits = bic_choice(z[None], 4, np.random.default_rng(seed), 1e-4)
        fit = fits[int(k[0]) - 1]
        n = int(min(len(z), 2000))
        data = {
            "source": "mixture",
            "n": n,
            "params": {
                "weights": fit.weights[0].tolist(),
                "means": fit.means[0].tolist(),
                "covs": fit.covs[0].tolist(),
            },
        }
        model = {"family": "gmm", "params": {"components": int(k[0])}}
        surrogate = f"a {int(k[0])}-component Gaussian mixture fitted to the candidate's standardised numeric columns"
    elif kind == "text":
        n = int(min(1000, int(0.9 * len(cand)) - 1))  # the candidate's train split holds 90% of its records
        data = {
            "source": "text-file",
            "n": n,
            "heldout": int(min(200, max(1, len(cand) // 10))),
            "params": {"path": str(Path(path).resolve()), "heldout_fraction": 0.1},
        }
        model = {"family": "ngram", "params": {"order": 3}}
        surrogate = "word trigrams fitted to the candidate"
        if n < 10:
            return f"{len(cand)} text records are too few to project"
    else:
        return "projection for images is not built in yet: run a vae spec on --candidate as image-file"
    spec = {
        "name": "audit-projection",
        "generations": generations,
        "replicates": replicates,
        "seed": seed,
        "data": data,
        "model": model,
        "policy": policy_spec,
    }
    return spec, surrogate


def projection(surrogate: tuple[dict, str] | str) -> dict:
    """The loop run on the surrogate (:func:`surrogate_spec`): generations to early and late collapse, median
    over replicate chains with 95% intervals."""
    if isinstance(surrogate, str):
        return {"skipped": surrogate}
    spec, what = surrogate
    planned = load_spec(spec)
    stages = to_frame(STAGE_COLUMNS, stage_rows(run_cells(expand(planned), planned.seed)))
    out = {
        "surrogate": what,
        "policy": spec["policy"],
        "generations": spec["generations"],
        "replicates": spec["replicates"],
    }
    for _, row in stages.iterrows():
        med = row["first_median"]
        out[row["stage"]] = {
            "median": None if not np.isfinite(med) else float(med),
            "ci": [None if not np.isfinite(v) else float(v) for v in (row["ci_low"], row["ci_high"])],
            "reached": float(row["reached"]),
        }
    return out


def plan_on_surrogate(surrogate: tuple[dict, str] | str, need: str, horizon: int, progress=None) -> dict:
    """The planner (planning.plan) on the surrogate: the smallest real fraction (mix, fresh) or records per
    generation (other policies) that meets ``need`` at ``horizon``, by search over the loop itself."""
    if isinstance(surrogate, str):
        return {"skipped": surrogate}
    spec, what = surrogate
    knob = "real_fraction" if spec["policy"]["kind"] in ("mix", "fresh") else "n"
    answer = plan(spec, need, horizon, knob=knob, progress=progress)
    return {
        "surrogate": what,
        "need": str(answer.requirement),
        "horizon": horizon,
        "knob": knob,
        "value": answer.value,
        "interval": list(answer.interval),
        "method": answer.method,
        "sentence": answer.sentence,
        "candidates": answer.table.to_dict(orient="records"),
    }


def write_report(report: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "audit.json", json.dumps(report, indent=2, default=_plain) + "\n")
    write_atomic(folder / "audit.html", render_html(report))


def _plain(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o))


def render_html(report: dict) -> str:

    return render(report, share_sentence(report["synthetic_share"]))


def share_sentence(s: dict) -> str:
    """The synthetic share as one sentence: never a point estimate alone."""
    f = _fmt
    if s.get("bound") == "lower":
        head = (
            f"synthetic share: at least {f(s['share'])} (95% lower confidence bound {f(s['low'])}; an upper "
            f"bound needs --synthetic-examples), {s['method']}; flagged {f(s['observed'])} at FPR {f(s['fpr'])}"
        )
    elif s.get("bound") == "none":
        head = f"synthetic share: not estimated, {s['method']}"
    else:
        head = f"synthetic share: {f(s['share'])} (95% interval {f(s['low'])}–{f(s['high'])}), {s['method']}"
        if s["tpr"] is not None:
            head += f"; detector TPR {f(s['tpr'])}, FPR {f(s['fpr'])}, AUC {f(s['detector_auc'])}"
            if s.get("tpr_at_1_fpr") is not None:
                head += f", TPR at 1% FPR {f(s['tpr_at_1_fpr'])}"
        mix = s.get("mixture")
        if mix and mix.get("share") is not None:
            head += f"; mixture likelihood {f(mix['share'])} ({f(mix['low'])}–{f(mix['high'])})"
    return head + (f" — {s['note']}" if s["note"] else "")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.3g}" if isinstance(v, float) else str(v)
