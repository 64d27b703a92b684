"""Verbs for real data sets: synthesize, audit and the provenance ledger; and what is installed: data, presets,
families."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import InputError
from ..io import write_atomic
from .app import JsonOpt, app, err_console, fail, fmt, lazy_module, out_console, print_json, say

api = lazy_module("collapselab.api")


@app.command()
def synthesize(
    data: Path = typer.Option(
        ..., "--data", help="Real table: .csv, .tsv or .parquet (numeric and categorical columns)."
    ),
    rows: int = typer.Option(..., "--rows", help="Synthetic rows to write."),
    out: Path = typer.Option(..., "--out", "-o", help="Synthetic table: .csv or .parquet."),
    clusters: str = typer.Option("bic", "--clusters", help="Clusters of the real rows: a number, or 'bic'."),
    max_clusters: int = typer.Option(8, "--max-clusters", min=1, help="Largest k tried with --clusters bic."),
    floor: float = typer.Option(0.01, "--floor", help="Smallest share of the rows per cluster."),
    seed: int = typer.Option(0, "--seed", min=0),
    report: Path | None = typer.Option(None, "--report", help="Fidelity report (default: OUT with .fidelity.json)."),
    as_json: bool = JsonOpt,
):
    """Cluster-mirrored synthetic rows for a real table, and a fidelity report."""
    try:
        result = api.synthesize(
            data,
            rows,
            out,
            clusters=int(clusters) if clusters.isdigit() else clusters,
            max_clusters=max_clusters,
            floor=floor,
            seed=seed,
            report=report,
        )
    except InputError as e:  # the API names its keywords; here they are options
        if not str(e).startswith("synthesis."):
            raise
        fail(str(e).replace("synthesis.", "--").replace("_", "-"))
    if as_json:
        print_json(result)
        return
    table = Table(
        "column",
        "kind",
        "fidelity (1 - KS / 1 - TV)",
        "range / category coverage",
        title=f"{result['rows_synthetic']} synthetic rows from {result['rows_real']} real",
    )
    for col, v in result["columns"].items():
        fid = v.get("ks_complement", v.get("tv_complement"))
        cov = v.get("range_coverage", v.get("category_coverage"))
        table.add_row(col, v["kind"], fmt(fid), fmt(cov))
    out_console.print(table)
    c = result["clusters"]
    corr = result["correlation_similarity"]
    out_console.print(
        f"clusters: {c['k']} (real shares {c['real_shares']}), cluster coverage {fmt(c['coverage'])}; "
        f"correlation similarity {fmt(corr) if corr is not None else '-'}; "
        f"mean marginal fidelity {fmt(result['marginal_mean'])}"
    )
    out_console.print(f"written: {result['out']}, {result['report']}")


@app.command()
def audit(
    reference: Path = typer.Option(..., "--reference", help="Real data: .csv/.tsv/.parquet, .txt/.jsonl or .npy."),
    candidate: Path = typer.Option(..., "--candidate", help="The data set to audit, of the same kind."),
    synthetic_examples: Path | None = typer.Option(
        None, "--synthetic-examples", help="Records known to be synthetic: trains and calibrates the detector."
    ),
    provenance: str = typer.Option("origin", "--provenance-column", help="Column (or JSONL field) human/synthetic."),
    policy: str = typer.Option("replace", "--policy", help="Planned retraining policy for the projection."),
    real_fraction: float | None = typer.Option(None, "--real-fraction", help="mix / fresh: real share."),
    generations: int = typer.Option(10, "--generations", min=1, help="Generations to project."),
    replicates: int = typer.Option(8, "--replicates", min=1, help="Replicate chains of the projection."),
    seed: int = typer.Option(0, "--seed", min=0),
    no_projection: bool = typer.Option(False, "--no-projection", help="Skip the simulated projection."),
    plan_need: str | None = typer.Option(
        None, "--plan", help="Plan on the projection's surrogate: 'METRIC >= VALUE' (or <=), e.g. 'kl <= 0.1'."
    ),
    plan_horizon: int | None = typer.Option(None, "--plan-horizon", min=0, help="The generation --plan must hold at."),
    out: Path = typer.Option(Path("audit"), "--out", "-o", help="Folder for audit.json and audit.html."),
    scoring_model: str = typer.Option(
        "smollm2",
        "--scoring-model",
        help="Text: the LM that scores passages (smollm2, a local Hugging Face folder or a .gguf file; "
        "'ngram' for a word trigram on the reference).",
    ),
    as_json: bool = JsonOpt,
):
    """Audit a data set for collapse risk: synthetic share, tails and diversity, a verdict and a projection."""
    from ..policies import POLICIES  # registers the built-in policies (the package is imported lazily)

    if policy not in POLICIES:
        fail(f"--policy {policy!r}; allowed: {', '.join(POLICIES.names())}")
    uses_fraction = POLICIES[policy].uses_real_fraction
    if uses_fraction and real_fraction is None:
        fail(f"--policy {policy} needs --real-fraction (a number in [0, 1])")
    if real_fraction is not None and not 0 <= real_fraction <= 1:
        fail(f"--real-fraction {real_fraction}: must be in [0, 1]")
    if (plan_need is None) != (plan_horizon is None):
        fail("--plan and --plan-horizon go together: the requirement and the generation it must hold at")
    report = api.audit(
        reference,
        candidate,
        synthetic_examples=synthetic_examples,
        provenance=provenance,
        policy=policy,
        real_fraction=real_fraction if uses_fraction else None,
        generations=generations,
        replicates=replicates,
        seed=seed,
        project=not no_projection,
        out=out,
        scoring_model=None if scoring_model == "ngram" else scoring_model,
        progress=_ScoringProgress(as_json),
        plan_need=plan_need,
        plan_horizon=plan_horizon,
    )
    if as_json:
        print_json(report)
        return
    s = report["synthetic_share"]
    out_console.print(f"[bold]verdict: {escape(str(report['verdict']))}[/]", markup=True)
    for r in report["reasons"]:
        out_console.print(f"  - {r}", highlight=False)
    from ..audit import share_sentence

    say(share_sentence(s))
    m = report["measures"]
    out_console.print(
        f"median retention: tail {fmt(m['tail_retention'])}, spread {fmt(m['spread_retention'])}; "
        f"MMD {fmt(m['mmd'])} (permutation p = {fmt(m['mmd_p_value'])})",
        highlight=False,
    )
    proj = report.get("projection")
    if proj and "skipped" not in proj:
        parts = []
        for st in ("early", "late"):
            v = proj.get(st)
            if v:
                med = "not within the run" if v["median"] is None else fmt(v["median"])
                ci = "–".join("∞" if c is None else fmt(c) for c in v["ci"])
                parts.append(f"{st} collapse at generation {med} [{ci}]")
        out_console.print(
            f"projection ({json.dumps(proj['policy'])}, {proj['generations']} generations): " + "; ".join(parts),
            highlight=False,
        )
    elif proj:
        out_console.print(f"projection skipped: {proj['skipped']}")
    planned = report.get("plan")
    if planned:
        say(f"plan on the surrogate: {planned.get('sentence') or planned['skipped']}")
    out_console.print(f"written: {out / 'audit.json'}, {out / 'audit.html'}")


ledger_app = typer.Typer(help="The record-level provenance ledger (SQLite, append-only).", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
LedgerDb = typer.Option(Path("ledger.db"), "--db", help="The ledger's SQLite file.")


@ledger_app.command("add")
def ledger_add(
    jsonl: Path = typer.Argument(
        ...,
        help="JSONL records: content or content_hash, origin, model, generation, source, licence, quality, verdicts.",
    ),
    db: Path = LedgerDb,
):
    """Append records (all or nothing)."""
    with api.ledger(db) as ledger:
        n = ledger.import_jsonl(jsonl)
    out_console.print(f"added {n} records to {db}")


@ledger_app.command("export")
def ledger_export(out: Path = typer.Argument(..., help="JSONL file to write."), db: Path = LedgerDb):
    """Every row as JSONL."""
    with api.ledger(db) as ledger:
        n = ledger.export_jsonl(out)
    out_console.print(f"wrote {n} records to {out}")


@ledger_app.command("summary")
def ledger_summary(db: Path = LedgerDb, as_json: bool = JsonOpt):
    """Counts by origin and generator, synthetic share, licences, sources."""
    with api.ledger(db) as ledger:
        s = ledger.summary()
    if as_json:
        print_json(s)
        return
    table = Table("", "value")
    for k, v in s.items():
        table.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else fmt(v) if isinstance(v, float) else str(v))
    out_console.print(table)


@ledger_app.command("croissant")
def ledger_croissant(
    out: Path = typer.Argument(..., help="JSON-LD file to write."),
    db: Path = LedgerDb,
    name: str = typer.Option("dataset", "--name"),
):
    """The dataset-level summary as Croissant JSON-LD (with rai:hasSyntheticData)."""
    with api.ledger(db) as ledger:
        doc = ledger.croissant(name)
    write_atomic(out, json.dumps(doc, indent=2) + "\n")
    out_console.print(f"wrote {out} (rai:hasSyntheticData = {str(doc['rai:hasSyntheticData']).lower()})")


@ledger_app.command("plan")
def ledger_plan(
    out: Path = typer.Argument(..., help="JSONL of the chosen records."),
    db: Path = LedgerDb,
    size: int | None = typer.Option(None, "--size", min=1, help="Records wanted (default: as many as allowed)."),
    min_real: float = typer.Option(0.0, "--min-real", help="Smallest share of human records."),
    max_per_generator: float = typer.Option(1.0, "--max-per-generator", help="Largest share of any one model."),
    min_quality: float | None = typer.Option(None, "--min-quality", help="Drop records scoring below this."),
    keep_duplicates: bool = typer.Option(False, "--keep-duplicates", help="Do not deduplicate by content hash."),
):
    """Build a training set that meets the constraints, and say which one bound its size."""
    with api.ledger(db) as ledger:
        plan = api.plan_mix(ledger.rows(), size, min_real, max_per_generator, min_quality, not keep_duplicates)
    write_atomic(out, "".join(json.dumps(r, sort_keys=True) + "\n" for r in plan.rows))
    real = plan.human / plan.size if plan.size else 0.0
    out_console.print(
        f"planned {plan.size} records: {plan.human} human ({real:.1%}), synthetic by model "
        f"{json.dumps(plan.by_model)}; dropped {json.dumps(plan.dropped)}",
        highlight=False,
    )
    out_console.print(f"bound by {plan.binding}", highlight=False)


@app.command()
def data(prepare: bool = typer.Option(True, "--prepare/--status", help="Convert what needs converting (default).")):
    """Real data sets and packaged models: convert them once into the cache folder, and say what is installed."""
    table = Table("data", "status")
    for name, status in api.prepare_data(prepare).items():
        table.add_row(name, status)
    out_console.print(table)
    out_console.print(f"cache folder: {api.cache_dir()} (set COLLAPSELAB_DATA to move it)")


@app.command()
def presets():
    """List the specs that ship with collapselab (run one with 'collapselab run preset:NAME')."""
    table = Table("preset", "name", "what it shows")
    for p in api.presets():
        table.add_row(p["preset"], p["name"], p["description"])
    out_console.print(table)


@app.command()
def families():
    """List the model families (built in and registered by plugins)."""
    table = Table("family", "fits records", "parameters (default)")
    for name, cls in api.families():
        params = ", ".join(f"{k}={f.default!r}" for k, f in cls.Params.model_fields.items()) or "-"
        table.add_row(name, ", ".join(cls.tags.accepts), params)
    out_console.print(table)


class _ScoringProgress:
    """'scoring texts: 320/800' on stderr while the language model works: rewritten in place on a terminal,
    a line every 10 s in logs."""

    def __init__(self, silent: bool):
        self.silent, self.last, self.start = silent, 0.0, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.silent:
            return
        now = time.monotonic()
        if err_console.is_terminal:
            end = "\n" if done == total else ""
            err_console.file.write(f"\rscoring texts with the language model: {done}/{total}{end}")
            err_console.file.flush()
        elif now - self.last >= 10 or done == total:
            self.last = now
            err_console.print(
                f"scoring texts with the language model: {done}/{total} ({now - self.start:.0f} s)", highlight=False
            )
