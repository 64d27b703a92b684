"""What happens to records between a model and the next training set: synthesis, curation, poisoning, screens.

    real pool ── poison (target "real") ── screen ──────────────────────────────▶ the policy's real pool
    model_g / cluster mirror ── candidates ── curation stages ── poison (target "synthetic") ── screen ──▶ pool g

The loop hands this pipeline its pools and models; the pipeline knows no family (it calls the family's fit and
record log-likelihood where a stage needs them) and no storage. Its measurements — each judge's AUC, precision
and recall, each screen's precision, recall and removed share, the mirror's cluster coverage — are metrics like
any other, NaN in generations where they did not run.
"""

from __future__ import annotations

import numpy as np

from ..errors import SpecError
from ..pool import Pool
from ..rng import Stream, generator
from .judges import Context, Curator, check_curation, load_labels, stage_names
from .mirror import ClusterMirror
from .poison import check_poison, check_screens, make_attack, refill, screen_flags

SCREEN_METRICS = ("screen_precision", "screen_recall", "screen_removed")


def active(spec) -> bool:
    return bool(spec.curation) or spec.synthesis.kind != "model" or spec.poison is not None or spec.screen is not None


def check_pipeline(spec, source, family_cls) -> None:
    """Settings the pipeline cannot run, caught before anything runs."""
    if not active(spec):
        return
    if spec.population:
        raise SpecError(
            "policy.samples = 'infinite' fits distributions, not records: it cannot be combined with "
            "synthesis, curation, poison or screen"
        )
    if spec.synthesis.kind == "cluster-mirrored" and source.kind != "continuous":
        raise SpecError(
            f"synthesis.kind = 'cluster-mirrored' needs vector records (continuous sources), not {source.kind}"
        )
    check_curation(spec, source.kind, family_cls)
    check_poison(spec, source.kind)
    check_screens(spec)
    if spec.screen is not None and "loso" in spec.screen.methods and not family_cls.tags.scores_records:
        raise SpecError(
            f"screen.methods: 'loso' refits the family and scores the trusted anchor set; "
            f"{family_cls.name!r} does not score records"
        )


class Pipeline:
    def __init__(self, spec, family, truth, heldout: np.ndarray, seed: int, cell: int, kind: str, block: int = 0):
        self.spec, self.family, self.seed, self.cell, self.kind = spec, family, seed, cell, kind
        self.block = block  # the replicate block whose chains it serves (rng.py)
        self.vocab = getattr(truth, "info", {}).get("vocab")
        self.heldout = heldout
        screen = spec.screen
        self.sources = screen.sources if screen is not None else 1
        self.attack = make_attack(spec, self.sources)
        self.mirror: ClusterMirror | None = None
        self.curator: Curator | None = None
        self.context: Context | None = None  # built with the (possibly attacked) real pool, in real_pool
        self._labels = {
            name: load_labels(s.labels, kind) for name, s in zip(stage_names(spec.curation), spec.curation) if s.labels
        }
        self.notes: list[str] = []
        names: list[str] = []
        if spec.curation:
            names += [f"{n}_{k}" for n in stage_names(spec.curation) for k in ("auc", "precision", "recall")]
        if screen is not None:
            names += SCREEN_METRICS
        if spec.synthesis.kind == "cluster-mirrored":
            names.append("cluster_coverage")
        self.metric_names = names
        self._screened: dict[str, np.ndarray] = {}

    @property
    def needs_anchor(self) -> bool:
        return any(s.kind == "likelihood" for s in self.spec.curation)

    def _rng(self, stream: Stream, g: int) -> np.random.Generator:
        return generator(self.seed, self.cell, stream, g, self.block)

    def real_pool(self, real: Pool) -> Pool:
        """The real pool after an attack on it and the screens (generation 0's screen metrics)."""
        R, n = real.x.shape[:2]
        extra = dict(real.extra)
        if self.spec.screen is not None or self.attack is not None:
            extra["source"] = np.broadcast_to((np.arange(n) * self.sources // n).astype(float), (R, n)).copy()
        x = real.x
        if self.attack is not None and self.spec.poison.target == "real":
            x, mask = self.attack.inject(x, x, self._rng(Stream.POISON, 0), self.vocab)
            extra["poisoned"] = mask.astype(float)
            extra["source"] = np.where(mask, float(self.attack.source), extra["source"])
        pool = Pool(x, real.generation, extra)
        decode = self.vocab.decode if self.vocab is not None else None
        self.context = Context(self.kind, x, self.heldout, self.family, decode)
        if self.spec.curation:
            self.curator = Curator(self.spec.curation, self.context, self._labels)
        if self.spec.synthesis.kind == "cluster-mirrored":
            self.mirror = ClusterMirror(self.spec.synthesis, x, self._rng(Stream.SYNTHESIS, 0))
        return self._screen(pool, 0)

    def set_anchor(self, model) -> None:
        if self.curator is not None:
            self.context.anchor = model

    def candidates(self, m: int) -> int:
        return self.curator.candidates(m) if self.curator is not None else m

    def synthetic_pool(self, g: int, model, train: Pool, samples: np.ndarray | None, m: int) -> tuple[Pool, dict]:
        """Generation g's synthetic pool of m records, and the pipeline's metrics of generation g."""
        values: dict[str, np.ndarray] = {}
        M = self.candidates(m)
        if self.mirror is not None:
            generated = self.mirror.fit(train.x)
            cand = generated.sample(M, self._rng(Stream.SYNTHESIS, g + 1))
            values["cluster_coverage"] = self.mirror.coverage(cand)
        elif samples is not None and samples.shape[1] >= M:
            cand = samples
        else:
            cand = model.sample(M, self._rng(Stream.SAMPLE, g))
        extra: dict[str, np.ndarray] = {}
        if self.curator is not None:
            curated = self.curator.curate(g, cand, m, self._rng(Stream.CURATE, g), model)
            cand, extra = curated.x, curated.extra
            values.update(curated.metrics)
            self.notes.extend(curated.notes)
        R = cand.shape[0]
        if self.spec.screen is not None or self.attack is not None:
            extra["source"] = np.full((R, cand.shape[1]), -1.0)  # the generator is one source
        if self.attack is not None and self.spec.poison.target == "synthetic":
            cand, mask = self.attack.inject(cand, self.context.real, self._rng(Stream.POISON, g + 1), self.vocab)
            extra["poisoned"] = mask.astype(float)
            extra["source"] = np.where(mask, float(self.attack.source), extra["source"])
        pool = Pool(cand, np.full(cand.shape[:2], g, dtype=np.int16), extra)
        return self._screen(pool, g + 1), values

    def _screen(self, pool: Pool, g: int) -> Pool:
        spec = self.spec.screen
        if spec is None:
            return pool
        rng = self._rng(Stream.SCREEN, g)
        trusted = self.heldout[: spec.trusted]
        flags = screen_flags(spec, pool.x, self.kind, pool.column("source"), self.family, trusted, rng)
        poisoned = pool.column("poisoned") > 0
        counts = self._screened
        for name, v in (
            ("flagged", flags.sum(1)),
            ("hit", (flags & poisoned).sum(1)),
            ("poisoned", poisoned.sum(1)),
            ("total", np.full(flags.shape[0], flags.shape[1])),
        ):
            counts[name] = counts.get(name, 0) + v
        return pool.take(refill(flags, rng))

    def warnings(self) -> list[str]:
        """The run's notes, a judge's repeated chance warning kept once with the count of later generations."""
        seen: dict[str, list[str]] = {}
        for note in self.notes:
            seen.setdefault(note.split(" at generation ")[0], []).append(note)
        return [v[0] if len(v) == 1 else f"{v[0]} (and {len(v) - 1} later generations)" for v in seen.values()]

    def screen_values(self) -> dict[str, np.ndarray]:
        """Screen metrics over the pools screened since the last call (NaN where undefined)."""
        c, self._screened = self._screened, {}
        if not c:
            return {}
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "screen_precision": np.where(c["flagged"] > 0, c["hit"] / np.maximum(c["flagged"], 1), np.nan),
                "screen_recall": np.where(c["poisoned"] > 0, c["hit"] / np.maximum(c["poisoned"], 1), np.nan),
                "screen_removed": c["flagged"] / c["total"],
            }
