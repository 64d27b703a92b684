"""Detectors of machine-written text on ../shared/data/llm-text (15 sets: 3 domains x 5 source models).

Per set: AUROC and TPR at 1% FPR of each zero-shot score under the packaged SmolLM2-135M (never a source model)
on held-out pairs, and of the supervised detector trained on 60 machine-written examples and 150 human passages
of *other* pairs (a pair never straddles training and test); tokens per second of the scorer on CPU; and the
time to audit 1,000 passages (300 human reference passages, no score cache).

    python -m benchmarks.llm_detect            # or: make bench
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llm-text"
TEST_PAIRS, TRAIN_HUMAN, EXAMPLES = 100, 150, 60
# Bao et al. (ICLR 2024), the averages the data's README gives: Fast-DetectGPT white-box over these five source
# models (scoring model = source model), and black-box on ChatGPT / GPT-4 text with stand-in models
PUBLISHED = {"fast_detectgpt_white_box_mean": 0.9887, "fast_detectgpt_black_box_chatgpt_gpt4_mean": 0.9338}


def auroc(neg, pos) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def tpr_at(neg, pos, fpr=0.01) -> float:
    return float((np.asarray(pos) > np.quantile(neg, 1 - fpr)).mean())


def sets():
    for f in sorted(DATA.glob("*.raw_data.json")):
        yield f.name.removesuffix(".raw_data.json"), json.loads(f.read_text())


def detectors(scorer) -> dict:
    from collapselab.audit.lmscore import SCORES
    from collapselab.audit.textdetect import SupervisedTextDetector

    rows = {}
    for name, d in sets():
        n = len(d["original"])
        order = np.arange(n)  # the files are in no particular order; the first pairs are the test set
        test, human, synth = order[:TEST_PAIRS], order[TEST_PAIRS : TEST_PAIRS + TRAIN_HUMAN], order[-EXAMPLES:]
        th, ts = [d["original"][i] for i in test], [d["sampled"][i] for i in test]
        sh, ss = scorer.scores(th), scorer.scores(ts)
        row = {}
        for j, score in enumerate(SCORES):
            row[score] = {"auroc": auroc(sh[:, j], ss[:, j]), "tpr_at_1_fpr": tpr_at(sh[:, j], ss[:, j])}
        train = [d["original"][i] for i in human] + [d["sampled"][i] for i in synth]
        y = np.r_[np.zeros(len(human)), np.ones(len(synth))]
        det = SupervisedTextDetector(scorer).fit(train, y)
        s_h, s_s = det.score(th), det.score(ts)
        row["supervised_60"] = {"auroc": auroc(s_h, s_s), "tpr_at_1_fpr": tpr_at(s_h, s_s)}
        rows[name] = row
        print(name, " ".join(f"{k} {v['auroc']:.3f}" for k, v in row.items()), flush=True)
    return rows


def throughput(texts) -> float:
    from collapselab.audit.lmscore import LMScorer

    sc = LMScorer(cache=None)
    sc.scores(texts[:4])  # load and warm up
    sc.tokens_scored = 0
    t = time.perf_counter()
    sc.scores(texts[4:])
    return sc.tokens_scored / (time.perf_counter() - t)


def audit_time() -> dict:
    from collapselab.audit import audit

    d = json.loads((DATA / "xsum_gpt2-xl.raw_data.json").read_text())
    w = json.loads((DATA / "writing_gpt2-xl.raw_data.json").read_text())
    ref = d["original"][:300]
    cand = d["original"][300:] + d["sampled"][300:] + w["original"][:400] + w["sampled"][:400]
    cand = cand[:1000]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for p, xs in (("r.jsonl", ref), ("c.jsonl", cand)):
            (tmp / p).write_text("".join(json.dumps({"text": t}) + "\n" for t in xs))
        os.environ["COLLAPSELAB_SCORE_CACHE"] = "off"
        t = time.perf_counter()
        r = audit(tmp / "r.jsonl", tmp / "c.jsonl", project=False)
        dt = time.perf_counter() - t
        os.environ.pop("COLLAPSELAB_SCORE_CACHE")
    words = np.mean([len(x.split()) for x in cand])
    return {
        "passages": len(cand),
        "mean_words": round(float(words), 1),
        "seconds": round(dt, 1),
        "under_3_minutes": dt < 180,
        "verdict": r["verdict"],
    }


def run() -> dict:
    import torch

    from collapselab.audit.lmscore import SCORES, LMScorer

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if not DATA.is_dir():
        return {"skipped": f"{DATA} is not beside this checkout"}
    rows = detectors(LMScorer())
    first = next(iter(sets()))[1]
    out = {
        "sets": rows,
        "published": PUBLISHED,
        "tokens_per_second": round(throughput(first["original"][:68]), 1),
        "audit_1000": audit_time(),
    }
    means = {k: float(np.mean([r[k]["auroc"] for r in rows.values()])) for k in (*SCORES, "supervised_60")}
    out["mean_auroc"] = {k: round(v, 4) for k, v in means.items()}
    out["min_auroc_supervised_60"] = round(min(r["supervised_60"]["auroc"] for r in rows.values()), 4)
    Path(__file__).with_name("llm_detect.json").write_text(json.dumps(out, indent=2) + "\n")
    return {
        "mean AUROC supervised@60": out["mean_auroc"]["supervised_60"],
        "min supervised": out["min_auroc_supervised_60"],
        "best zero-shot": max((v, k) for k, v in means.items() if k != "supervised_60")[1],
        "best zero-shot mean AUROC": round(max(v for k, v in means.items() if k != "supervised_60"), 4),
        "tokens/s": out["tokens_per_second"],
        "audit 1000 passages s": out["audit_1000"]["seconds"],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
