"""Experiment specs: TOML in, validated objects out, with one-line errors that name the key.

A spec describes one experiment; its optional ``[sweep]`` table maps dotted keys to lists and expands
the spec into the grid of *cells* (their cartesian product, in the order the keys are written). The key
``cases`` lists named variants instead: tables of keys set together (``{case = "mix 10%", policy = {kind = "mix",
real_fraction = 0.1}}``), for comparisons that are not a grid.

This module is the schema alone: it names plug-ins (sources, families, policies, curation stages, attacks,
screens) by plain strings and imports none of them. ``engine.plan.expand`` builds the cells, resolves every name
against the registries (``collapselab.plugins``) and checks each cell in full before anything runs or is written.
"""

from __future__ import annotations

import contextvars
import copy
import math
import os
import re
import sys
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import SpecError

# ``[sweep] cases = [{...}, {...}]``: named variants, each a table of (dotted) keys set together; ``case`` labels one
CASES = "cases"
CASE_LABEL = "case"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    source: str
    n: int = Field(gt=0, description="records in the real pool")
    heldout: int = Field(default=2000, gt=0, description="held-out real records for metrics")
    params: dict[str, Any] = {}


class ModelSpec(_Strict):
    family: str
    params: dict[str, Any] = {}


class PolicySpec(_Strict):
    kind: str = Field(default="replace", description="a registered policy (collapselab.plugins.POLICIES)")
    real_fraction: float | None = Field(default=None, ge=0, le=1)
    real_count: int | None = Field(
        default=None, ge=0, description="mix / fresh: real records per training set, beside `samples` synthetic ones"
    )
    samples: int | Literal["infinite"] | None = Field(
        default=None, description="synthetic records drawn per generation, or 'infinite' (population refits)"
    )
    real_weight: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="mix / fresh: the total weight of the real records in a weighted fit (the synthetic ones carry "
        "the rest); unset: every record weighs the same",
    )
    population_multiple: int = Field(
        default=50, ge=1, description="samples = 'infinite' without an exact population fit: refit on this many x n"
    )

    @model_validator(mode="after")
    def _fraction_needed(self):
        if isinstance(self.samples, int) and self.samples <= 0:
            raise ValueError(f"policy.samples = {self.samples} must be a positive number of records or 'infinite'")
        return self


class StagesSpec(_Strict):
    """Thresholds of the collapse stages (see collapselab.metrics.stages)."""

    reference: Literal["generation0", "truth"] = "generation0"
    early: float = Field(default=0.5, ge=0, le=1, description="tail retention below this: early (0: never)")
    late: float = Field(default=0.5, ge=0, le=1, description="spread retention below this: late (0: never)")
    total: float = Field(default=0.05, ge=0, lt=1, description="spread retention at or below this: total")

    @model_validator(mode="after")
    def _ordered(self):
        if self.total > self.late:
            raise ValueError(f"stages.total = {self.total} must not exceed stages.late = {self.late}")
        return self


class SynthesisSpec(_Strict):
    """How each generation's synthetic records are produced from its training set (collapselab.curation.mirror)."""

    kind: Literal["model", "cluster-mirrored"] = "model"
    clusters: int | Literal["bic"] = Field(default="bic", description="clusters of the real data, or 'bic'")
    max_clusters: int = Field(default=8, ge=1, description="largest k tried when clusters = 'bic'")
    floor: float = Field(default=0.01, ge=0, lt=1, description="smallest share of the synthetic pool per cluster")
    reg_covar: float = Field(default=1e-6, ge=0)

    @model_validator(mode="after")
    def _clusters(self):
        if isinstance(self.clusters, int) and self.clusters < 1:
            raise ValueError(f"synthesis.clusters = {self.clusters} must be a positive number or 'bic'")
        return self


class CurationSpec(_Strict):
    """One curation stage, applied to each generation's synthetic records before they enter a training set."""

    kind: str = Field(description="a registered curation stage (collapselab.plugins.CURATION_STAGES)")
    keep: float = Field(default=0.5, gt=0, le=1, description="share of the candidates the stage keeps")
    select: Literal["top", "sample"] | None = Field(
        default=None,
        description="keep the best scores ('top'), or sample without replacement with weights exp(score) "
        "('sample': importance resampling when the score is a log density ratio); default per kind",
    )
    measure: int = Field(default=200, ge=10, description="labelled records per class the judge is measured on")
    on_chance: Literal["warn", "skip", "error"] = Field(
        default="warn", description="what to do when the measured judge is no better than chance"
    )
    labels: str | None = Field(default=None, description="user-labelled examples (good = 1, bad = 0) to measure on")
    params: dict[str, Any] = {}


class PoisonSpec(_Strict):
    """Records from an adversarial source injected at a rate (collapselab.curation.poison)."""

    kind: str = Field(description="a registered attack (collapselab.plugins.ATTACKS)")
    rate: float = Field(gt=0, lt=1, description="share of the target pool replaced by poisoned records")
    target: Literal["real", "synthetic"] = "real"
    params: dict[str, Any] = {}


class ScreenSpec(_Strict):
    """Poisoning screens run on every training set before fitting; flagged records are removed."""

    methods: list[str] = Field(min_length=1, description="registered screens (collapselab.plugins.SCREENS)")
    combine: Literal["any", "all"] = Field(default="any", description="flag a record when any / all methods do")
    contamination: float = Field(default=0.05, gt=0, lt=0.5, description="isolation forest's expected share")
    isolation_samples: int = Field(
        default=32, ge=4, description="records per isolation tree: small subsamples resist masking (Liu et al.)"
    )
    sources: int = Field(default=10, ge=2, description="sources the real pool is drawn from (leave-one-source-out)")
    trusted: int = Field(default=200, ge=10, description="trusted anchor records (held-out real) for loso")


_NEED = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    """A tolerance on a metric, parsed from ``'METRIC >= VALUE'`` or ``'METRIC <= VALUE'``."""

    metric: str
    op: Literal[">=", "<="]
    value: float

    @classmethod
    def parse(cls, text: str) -> Requirement:
        m = _NEED.match(text)
        if m is None:
            raise SpecError(
                f"need = {text!r}: expected 'METRIC >= VALUE' or 'METRIC <= VALUE', e.g. 'var_ratio >= 0.99'"
            )
        try:
            value = float(m.group(3))
        except ValueError:
            raise SpecError(f"need = {text!r}: {m.group(3)!r} is not a number") from None
        return cls(m.group(1), m.group(2), value)  # type: ignore[arg-type]  # the pattern allows only these two

    def met(self, x):
        return x >= self.value if self.op == ">=" else x <= self.value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class PlanSpec(_Strict):
    """A requirement the run's sweep is read against: the smallest swept ``policy.real_fraction`` (or ``data.n``)
    whose cells meet it at ``horizon``, and the closed form's answer where theory has one (plan.json, the report)."""

    need: str = Field(description="'METRIC >= VALUE' or 'METRIC <= VALUE', met by the mean across chains")
    horizon: int = Field(ge=0, description="the generation at which the requirement must hold")

    @model_validator(mode="after")
    def _need(self):
        try:
            Requirement.parse(self.need)
        except SpecError as e:
            raise ValueError(f"plan.{e}") from None
        return self


PLAN_KNOBS = ("policy.real_fraction", "data.n")


class Spec(_Strict):
    name: str = "experiment"
    description: str = ""
    generations: int = Field(ge=1)
    replicates: int = Field(default=1000, ge=1)
    seed: int = Field(default=0, ge=0)
    plugins: list[str] = []
    # folders searched for the plugin modules: the spec file's folder, recorded so a saved spec.toml reruns anywhere
    plugin_dirs: list[str] = []
    data: DataSpec
    model: ModelSpec
    policy: PolicySpec = PolicySpec()
    stages: StagesSpec = StagesSpec()
    synthesis: SynthesisSpec = SynthesisSpec()
    curation: list[CurationSpec] = []
    poison: PoisonSpec | None = None
    screen: ScreenSpec | None = None
    shared_data: bool = Field(
        default=False,
        description="every cell of a sweep draws the same real data and held-out records (a paired comparison)",
    )
    sweep: dict[str, list[Any]] = {}
    # metric -> ε: adds METRIC_above_ε, 1 where a chain's value exceeds ε (its mean: Pr(METRIC > ε) per generation)
    thresholds: dict[str, float] = {}
    replicate_block: int = Field(
        default=10_000,
        ge=1,
        description="chains per replicate block: a cell of more chains runs as blocks of this many, each with "
        "random numbers of its own (rng.py); part of the address, so changing it changes the draws of cells with "
        "more chains, and of no cell with fewer",
    )
    keep_replicates: bool | Literal["auto"] = Field(
        default="auto",
        description="keep every chain's value of every metric and generation (RunResult.raw, replicates/ in the "
        "run folder): true, false, or 'auto' (cells of at most 4,000,000 chain-generations); the summary, stages "
        "and report never need them",
    )
    stop: Literal["collapsed"] | None = Field(
        default=None,
        description="'collapsed': end a cell once every chain has collapsed to a point mass (its family's "
        "collapse_metric); `generations` is then the most it runs",
    )
    plan: PlanSpec | None = Field(
        default=None,
        description="a requirement to read the sweep against (needs a sweep over policy.real_fraction or data.n)",
    )

    @model_validator(mode="after")
    def _sweep_lists(self):
        for key, values in self.sweep.items():
            if not values:
                raise ValueError(f"sweep {key!r} has no values")
            if key.split(".")[0] in ("sweep", "plugins", "name", "description", "plan"):
                raise ValueError(f"sweep {key!r}: that key cannot be swept")
            if key == CASES and not all(isinstance(v, dict) and v for v in values):
                raise ValueError(f"sweep {CASES!r}: every case must be a non-empty table of keys to set")
        if self.plan is not None:
            if not any(k in self.sweep for k in PLAN_KNOBS):
                raise ValueError(
                    f"plan: the spec must sweep {' or '.join(PLAN_KNOBS)} (the values it reads the need at)"
                )
            if self.plan.horizon >= self.generations:
                raise ValueError(
                    f"plan.horizon = {self.plan.horizon}: beyond the run's last generation ({self.generations - 1})"
                )
        return self

    @property
    def population(self) -> bool:
        """Population refits: each generation fitted to the previous generation's distribution, not a sample."""
        return self.policy.samples == "infinite"

    @property
    def samples(self) -> int:
        """Synthetic records drawn per generation (with population refits: how many to measure, n)."""
        s = self.policy.samples
        return self.data.n if s is None or s == "infinite" else s

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(exclude_none=True))


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line naming the key, the bad value and what is allowed."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    key = ".".join(p for p in (prefix, loc) if p)
    if e["type"] == "extra_forbidden":
        return f"unknown key {key!r}" + _allowed_keys(err, e["loc"])
    if e["type"] == "missing":
        return f"missing key {key!r}"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "value_error" and not e["loc"]:  # a model-level check: its message names the keys
        return f"{prefix + ': ' if prefix else ''}{msg}"
    return f"{key} = {short_repr(e.get('input'))}: {msg}"


def short_repr(value, limit: int = 80) -> str:
    """A value as the message shows it: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _allowed_keys(err: ValidationError, loc) -> str:
    model = err.title
    cls = _MODELS.get(model)
    if cls is None:
        return ""
    for part in loc[:-1]:
        f = cls.model_fields.get(part)
        ann = getattr(f, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return ""
        cls = ann
    return "; allowed: " + ", ".join(cls.model_fields)


_MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (Spec, DataSpec, ModelSpec, PolicySpec, StagesSpec, SynthesisSpec, CurationSpec, PoisonSpec, ScreenSpec)
}


def validate_params(model: type[BaseModel], params: dict[str, Any], prefix: str) -> BaseModel:
    try:
        return model.model_validate(params)
    except ValidationError as err:
        e = err.errors()[0]
        if e["type"] == "extra_forbidden":
            raise SpecError(
                f"unknown key '{prefix}.{e['loc'][0]}'; allowed: {', '.join(model.model_fields) or 'none'}"
            ) from None
        raise SpecError(format_validation_error(err, prefix)) from None


def read_toml(source: str | Path) -> dict[str, Any]:
    """Parse a spec file, or ``preset:NAME`` for a spec that ships with collapselab."""
    text, where = _read_text(str(source))
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{where}: TOML syntax error: {e}") from None


def _read_text(source: str) -> tuple[str, str]:
    if source.startswith("preset:"):
        name = source.removeprefix("preset:")
        res = resources.files("collapselab") / "presets" / f"{name}.toml"
        if not res.is_file():
            raise SpecError(f"unknown preset {name!r}; allowed: {', '.join(list_presets())}")
        return res.read_text(encoding="utf-8"), source
    path = Path(source)
    if not path.is_file():
        raise SpecError(f"spec file not found: {source}")
    try:
        return path.read_text(encoding="utf-8"), source
    except UnicodeDecodeError:
        raise SpecError(f"{source}: not a UTF-8 text file") from None


def list_presets() -> list[str]:
    folder = resources.files("collapselab") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


# numbers beyond these overflow once squared or summed (a mean of 1e300 gives infinite metrics): refused
MAX_FLOAT = 1e100
MAX_INT = 2**63 - 1
MAX_DEPTH = 16  # tables nested deeper than this are refused (no spec needs more; deep nesting exhausts the stack)
MAX_CELLS = 100_000  # sweeps larger than this are refused before their cells are built


def check_raw(raw: Any, where: str = "", depth: int = 0) -> None:
    """Refuse what no schema check catches: NaN and infinities, and nesting deep enough to exhaust the stack."""
    if depth > MAX_DEPTH:
        raise SpecError(f"{where or 'spec'}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise SpecError(f"{where or 'spec'} = {raw}: must be a finite number")
    if isinstance(raw, float) and abs(raw) > MAX_FLOAT:
        raise SpecError(f"{where or 'spec'} = {raw}: must be within ±{MAX_FLOAT:g} (larger numbers overflow)")
    if isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) > MAX_INT:
        raise SpecError(f"{where or 'spec'} = {short_repr(raw)}: must be within ±(2**63 - 1)")
    if isinstance(raw, dict):
        for k, v in raw.items():
            if not isinstance(k, str):
                raise SpecError(f"{where or 'spec'}: key {k!r} is not a string")
            check_raw(v, f"{where}.{k}" if where else k, depth + 1)
    elif isinstance(raw, (list, tuple)):
        for i, v in enumerate(raw):
            check_raw(v, f"{where}[{i}]", depth + 1)
    elif raw is not None and not isinstance(raw, (str, int, float, bool)):
        if not hasattr(raw, "isoformat"):  # TOML dates and times are values too
            raise SpecError(f"{where or 'spec'}: a {type(raw).__name__} is not a spec value")


def parse_spec(raw: dict[str, Any], where: str = "spec") -> Spec:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a spec is a table of keys, not a {type(raw).__name__}")
    check_raw(raw)
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(format_validation_error(err)) from None
    except RecursionError:  # pragma: no cover - check_raw bounds the depth
        raise SpecError(f"{where}: nested too deeply") from None


def resolve_paths(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of a spec file's table whose relative file paths (``data.params.path``, ``curation.labels``, in the
    spec, its sweep values and its cases) mean "beside the spec file", not "wherever the shell is", and whose
    plugin modules are searched for in that folder. The saved spec.toml then reruns from anywhere."""
    raw = copy.deepcopy(raw)

    def fix(value):
        if isinstance(value, str) and value and not value.startswith("~") and not Path(value).is_absolute():
            return str((folder / value).resolve())
        return value

    def fix_curation(stages) -> None:
        for stage in stages if isinstance(stages, list) else []:
            if isinstance(stage, dict) and "labels" in stage:
                stage["labels"] = fix(stage["labels"])

    def fix_table(node) -> None:  # the spec itself, or one case of a sweep: nested or dotted keys
        if not isinstance(node, dict):
            return
        data = node.get("data")
        params = data.get("params") if isinstance(data, dict) else None
        if isinstance(params, dict) and "path" in params:
            params["path"] = fix(params["path"])
        if isinstance(node.get("data.params"), dict) and "path" in node["data.params"]:
            node["data.params"]["path"] = fix(node["data.params"]["path"])
        if "data.params.path" in node:
            node["data.params.path"] = fix(node["data.params.path"])
        fix_curation(node.get("curation"))

    fix_table(raw)
    sweep = raw.get("sweep")
    if isinstance(sweep, dict):
        for key, values in sweep.items():
            if not isinstance(values, list):
                continue
            if key == CASES:
                for case in values:
                    fix_table(case)
            elif key == "data.params.path":
                sweep[key] = [fix(v) for v in values]
            elif key == "curation":
                for stages in values:
                    fix_curation(stages)
            elif key in ("data", "data.params"):
                for v in values:
                    fix_table({"data": v} if key == "data" else {"data": {"params": v}})
    if isinstance(raw.get("plugins"), list) and raw["plugins"]:
        dirs = raw.setdefault("plugin_dirs", [])
        if isinstance(dirs, list) and str(folder) not in dirs:
            dirs.append(str(folder))
    return raw


def load_spec(source: str | Path | dict | Spec) -> Spec:
    if isinstance(source, Spec):
        return source
    if isinstance(source, dict):
        return parse_spec(source)
    raw = read_toml(source)
    if not str(source).startswith("preset:"):
        raw = resolve_paths(raw, Path(source).expanduser().resolve().parent)
    return parse_spec(raw, str(source))


# --- plugins: a spec that names modules to import runs their code, so importing them is opt-in ------------

_PLUGINS_ALLOWED: contextvars.ContextVar[bool] = contextvars.ContextVar("plugins_allowed", default=False)
PLUGINS_ENV = "COLLAPSELAB_ALLOW_PLUGINS"
TRUSTED_MODULES = ("collapselab",)  # verifier functions from these need no permission


def plugins_allowed() -> bool:
    return _PLUGINS_ALLOWED.get() or os.environ.get(PLUGINS_ENV, "") == "1"


@contextmanager
def allow_plugins(allowed: bool = True):
    """Within this block, specs may import their ``plugins`` and name any verifier ``function``."""
    token = _PLUGINS_ALLOWED.set(allowed or _PLUGINS_ALLOWED.get())
    try:
        yield
    finally:
        _PLUGINS_ALLOWED.reset(token)


def require_plugins(what: str) -> None:
    if not plugins_allowed():
        raise SpecError(
            f"{what}: a spec that imports code runs it; allow it with --allow-plugins "
            f"(Python: collapselab.run(..., allow_plugins=True); or {PLUGINS_ENV}=1)"
        )


def flatten_overrides(overrides: dict, prefix: str = "") -> dict[str, Any]:
    """A cell's overrides as dotted keys: a table value of a sweep becomes one key per entry."""
    out: dict[str, Any] = {}
    for k, v in overrides.items():
        if isinstance(v, dict):
            out.update(flatten_overrides(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def describe_overrides(overrides: dict) -> str:
    """``policy.kind = mix, policy.real_fraction = 0.1``: how tables and reports name a cell."""
    return ", ".join(f"{k} = {v}" for k, v in flatten_overrides(overrides).items())


def set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise SpecError(f"sweep {key!r}: {p!r} is not a table")
        node = nxt
    if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
        node[parts[-1]] = {**node[parts[-1]], **value}  # a table value sets several linked keys at once
    else:
        node[parts[-1]] = value


def import_plugins(spec: Spec, check: bool = True) -> None:
    """Import a spec's plugin modules (they register families and sources); ``check``: only if allowed."""
    if not spec.plugins:
        return
    if check:
        require_plugins(f"plugins = {spec.plugins!r}")
    import importlib

    for d in spec.plugin_dirs:
        if d not in sys.path:
            sys.path.append(d)
    for m in spec.plugins:
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise SpecError(f"plugins: cannot import {m!r} ({e})") from None
        except Exception as e:  # noqa: BLE001 - a plugin that fails to import is the user's code failing
            raise SpecError(f"plugins: importing {m!r} failed ({type(e).__name__}: {e})") from None
