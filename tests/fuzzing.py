"""Hypothesis strategies and one in-process CLI runner for the fuzz tests (tests/test_fuzz.py).

Specs are small valid specs with mutations: a key set to a hostile value (NaN, infinities, huge or negative
numbers, markup, TeX, nested tables, wrong types), a key removed, an unknown key added. Hostile files are
what a user or an attacker can hand the audit, the ledger, synthesize and the text-file source. Every outcome
must be: exit 0 with complete results, or exit 2 with one line starting with ``error:`` and nothing written.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from hypothesis import strategies as st

# small, fast, valid specs: one per family kind the CPU runs in milliseconds
BASES = [
    {"generations": 3, "replicates": 8, "data": {"source": "gaussian", "n": 10}, "model": {"family": "gaussian"}},
    {
        "generations": 3,
        "replicates": 8,
        "data": {"source": "gaussian", "n": 10, "params": {"cov": [[1.0, 0.2], [0.2, 1.0]]}},
        "model": {"family": "gaussian", "params": {"estimator": "unbiased"}},
        "policy": {"kind": "accumulate"},
    },
    {
        "generations": 3,
        "replicates": 8,
        "data": {"source": "categorical", "n": 20, "params": {"probs": [0.5, 0.3, 0.2]}},
        "model": {"family": "categorical"},
        "policy": {"kind": "mix", "real_fraction": 0.2},
    },
    {
        "generations": 3,
        "replicates": 8,
        "data": {"source": "zipf", "n": 50, "params": {"categories": 20}},
        "model": {"family": "categorical"},
    },
    {
        "generations": 3,
        "replicates": 8,
        "data": {"source": "poisson", "n": 10, "params": {"rate": 2.0}},
        "model": {"family": "poisson"},
        "policy": {"kind": "fresh", "real_fraction": 0.5},
    },
    {
        "generations": 3,
        "replicates": 8,
        "data": {"source": "bernoulli", "n": 10, "params": {"p": 0.3}},
        "model": {"family": "bernoulli"},
    },
    {
        "generations": 3,
        "replicates": 4,
        "data": {"source": "blobs", "n": 60, "params": {"means": [[0.0, 0.0], [4.0, 4.0]]}},
        "model": {"family": "gmm", "params": {"components": 2}},
    },
    {"generations": 3, "replicates": 4, "data": {"source": "gaussian", "n": 30}, "model": {"family": "kde"}},
    {
        "generations": 3,
        "replicates": 8,
        "data": {"source": "linear", "n": 20, "params": {"dim": 3}},
        "model": {"family": "linear"},
        "policy": {"kind": "accumulate-subsample"},
    },
    {
        "generations": 3,
        "replicates": 4,
        "data": {"source": "blobs", "n": 80, "params": {"means": [[0.0, 0.0], [5.0, 5.0]], "weights": [0.9, 0.1]}},
        "model": {"family": "gmm"},
        "synthesis": {"kind": "cluster-mirrored"},
    },
    {
        "generations": 3,
        "replicates": 4,
        "data": {"source": "gaussian", "n": 40},
        "model": {"family": "gaussian"},
        "curation": [{"kind": "likelihood"}],
    },
    {
        "generations": 3,
        "replicates": 4,
        "data": {"source": "blobs", "n": 80, "params": {"means": [[0.0, 0.0], [5.0, 5.0]]}},
        "model": {"family": "gmm"},
        "poison": {"kind": "outliers", "rate": 0.05},
        "screen": {"methods": ["mahalanobis"]},
    },
    {
        "generations": 3,
        "replicates": 8,
        "data": {"source": "gaussian", "n": 10},
        "model": {"family": "gaussian"},
        "sweep": {"policy.kind": ["replace", "accumulate"], "data.n": [5, 10]},
    },
    {
        "generations": 4,
        "replicates": 8,
        "data": {"source": "gaussian", "n": 10},
        "model": {"family": "gaussian"},
        "sweep": {
            "cases": [
                {"case": "short", "generations": 2},
                {"case": "mix", "policy": {"kind": "mix", "real_fraction": 0.3}},
            ]
        },
    },
]

# bases that read files: the runner writes corpus.txt and images.npy into each case's folder (prepare_folder)
BASES += [
    {
        "generations": 2,
        "replicates": 2,
        "data": {"source": "text-file", "n": 20, "heldout": 5, "params": {"path": "corpus.txt", "block": 8}},
        "model": {"family": "ngram", "params": {"order": 2}},
    },
    {
        "generations": 2,
        "replicates": 2,
        "data": {"source": "text-file", "n": 20, "heldout": 5, "params": {"path": "corpus.txt", "block": 8}},
        "model": {"family": "ngram"},
        "curation": [{"kind": "discriminator", "measure": 10}],
    },
    {
        "generations": 2,
        "replicates": 2,
        "data": {"source": "image-file", "n": 20, "heldout": 5, "params": {"path": "images.npy"}},
        "model": {"family": "kde"},
    },
]

KEYS = [
    "name",
    "description",
    "generations",
    "replicates",
    "seed",
    "plugins",
    "shared_data",
    "data",
    "data.source",
    "data.n",
    "data.heldout",
    "data.params",
    "data.params.mean",
    "data.params.std",
    "data.params.cov",
    "data.params.probs",
    "data.params.p",
    "data.params.rate",
    "data.params.means",
    "data.params.weights",
    "data.params.dim",
    "data.params.categories",
    "data.params.exponent",
    "data.params.path",
    "model",
    "model.family",
    "model.params",
    "model.params.estimator",
    "model.params.components",
    "model.params.bandwidth",
    "model.params.temperature",
    "model.params.truncation",
    "model.params.exact",
    "model.params.max_iter",
    "model.params.tol",
    "policy",
    "policy.kind",
    "policy.real_fraction",
    "policy.samples",
    "policy.population_multiple",
    "stages",
    "stages.early",
    "stages.late",
    "stages.total",
    "stages.reference",
    "synthesis.kind",
    "synthesis.clusters",
    "synthesis.floor",
    "curation",
    "poison",
    "poison.rate",
    "screen",
    "sweep",
    "sweep.data.n",
    "sweep.policy.kind",
    "sweep.cases",
    "sweep.name",
    "unknown",
    "data.unknown",
]

NUMBERS = st.one_of(
    st.sampled_from([0, -1, 1, 2, 3, 10**7, 10**12, 2**63 - 1, -(2**63), 0.5, 1e-300, 1e300, -0.0, 1.5, 2.0, 1e7]),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.integers(-5, 50),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
TEXTS = st.one_of(
    st.sampled_from(
        [
            "[/x]",
            "[bold]x[/bold]",
            "$\\nope$",
            "$x^$",
            "",
            " ",
            "gaussian",
            "replace",
            "mix",
            "fresh",
            "accumulate",
            "infinite",
            "bic",
            "../../etc/passwd",
            "/dev/zero",
            "x" * 5000,
            "\x00",
            "é\u202e",
            "preset:quickstart",
            "{{ 7*7 }}",
            "<script>alert(1)</script>",
            "os:system",
            "nope.nothing:f",
        ]
    ),
    st.text(max_size=20),
)
LEAVES = st.one_of(NUMBERS, TEXTS, st.booleans(), st.none())
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["kind", "x", "n", "params", "case", "rate"]), inner, max_size=3),
    ),
    max_leaves=8,
)


def _set(raw: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def _delete(raw: dict, dotted: str) -> None:
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        node = node.get(p)
        if not isinstance(node, dict):
            return
    node.pop(parts[-1], None)


EDGE_INTS = st.sampled_from([0, 1, 2, 3, 5, -1, 10**7, 10**9, 2**62])
EDGE_FLOATS = st.sampled_from([0.0, 1.0, 0.5, 1e-12, 1e12, -1.0, 1.0000001, 0.999999, float("nan"), float("inf")])
# plausible values per key: the right type at the edges of what is allowed (most bugs live there)
PLAUSIBLE = {
    "generations": EDGE_INTS,
    "replicates": EDGE_INTS,
    "seed": EDGE_INTS,
    "data.n": EDGE_INTS,
    "data.heldout": EDGE_INTS,
    "data.params.dim": EDGE_INTS,
    "data.params.categories": EDGE_INTS,
    "model.params.components": EDGE_INTS,
    "model.params.max_iter": EDGE_INTS,
    "policy.population_multiple": EDGE_INTS,
    "synthesis.clusters": st.one_of(EDGE_INTS, st.just("bic")),
    "data.params.mean": st.one_of(EDGE_FLOATS, st.lists(EDGE_FLOATS, min_size=1, max_size=3)),
    "data.params.std": EDGE_FLOATS,
    "data.params.p": EDGE_FLOATS,
    "data.params.rate": EDGE_FLOATS,
    "data.params.exponent": EDGE_FLOATS,
    "model.params.bandwidth": EDGE_FLOATS,
    "model.params.temperature": EDGE_FLOATS,
    "model.params.truncation": EDGE_FLOATS,
    "model.params.tol": EDGE_FLOATS,
    "policy.real_fraction": EDGE_FLOATS,
    "stages.early": EDGE_FLOATS,
    "stages.late": EDGE_FLOATS,
    "stages.total": EDGE_FLOATS,
    "synthesis.floor": EDGE_FLOATS,
    "poison.rate": EDGE_FLOATS,
    "data.params.cov": st.sampled_from(
        [
            [[1.0]],
            [[1.0, 2.0], [2.0, 1.0]],
            [[0.0, 0.0], [0.0, 0.0]],
            [[1.0, 0.0]],
            [],
            [[1e-300, 0.0], [0.0, 1e300]],
            [[-1.0]],
        ]
    ),
    "data.params.probs": st.sampled_from([[1.0], [0.0, 1.0], [0.5, 0.6], [], [-0.1, 1.1], [1e-300, 1.0], [0.2] * 5]),
    "data.params.means": st.sampled_from([[[0.0]], [[0.0, 0.0], [1.0]], [], [[0.0, 0.0]], [[1e300, 0.0], [0.0, 0.0]]]),
    "data.params.weights": st.sampled_from([[1.0], [0.5, 0.5], [0.0, 1.0], [2.0, -1.0], [], [1.0, 0.0, 0.0]]),
    "data.source": st.sampled_from(
        [
            "gaussian",
            "categorical",
            "zipf",
            "poisson",
            "bernoulli",
            "blobs",
            "linear",
            "mixture",
            "text-file",
            "image-file",
            "digits",
            "nope",
            "[/x]",
            "",
        ]
    ),
    "data.params.path": st.sampled_from(["missing.txt", "/dev/zero", "/", ".", "spec.toml", "../x", "/etc/hostname"]),
    "model.family": st.sampled_from(
        ["gaussian", "categorical", "poisson", "bernoulli", "gmm", "kde", "linear", "ngram", "vae", "nope", "[bold]x"]
    ),
    "model.params.estimator": st.sampled_from(["mle", "unbiased", "nope"]),
    "policy.kind": st.sampled_from(["replace", "accumulate", "accumulate-subsample", "mix", "fresh", "nope"]),
    "policy.samples": st.one_of(EDGE_INTS, st.just("infinite")),
    "stages.reference": st.sampled_from(["generation0", "truth"]),
    "synthesis.kind": st.sampled_from(["model", "cluster-mirrored"]),
    "name": st.sampled_from(["[/x]", "[bold]run[/bold]", "$\\nope$", "a/b/../c", "x" * 300, "", "é\u202e", "ok"]),
    "description": st.sampled_from(["[/x]", "$x$", "<b>x</b>"]),
    "plugins": st.sampled_from([["os"], ["nope_module"], [], ["collapselab"]]),
    "shared_data": st.booleans(),
    "curation": st.sampled_from(
        [
            [{"kind": "likelihood", "keep": 1e-9}],
            [{"kind": "discriminator", "measure": 10}],
            [{"kind": "verifier", "params": {"function": "subprocess:getoutput"}}],
            [{"kind": "verifier", "params": {"function": "collapselab.curation.examples:random_scores"}}],
            [{"kind": "llm-judge", "params": {"endpoint": "http://example.com/v1"}}],
            [],
        ]
    ),
    "poison": st.sampled_from(
        [
            {"kind": "outliers", "rate": 0.5},
            {"kind": "label-flip", "rate": 0.1},
            {"kind": "shifted-cluster", "rate": 0.9},
            {"kind": "trigger-phrase", "rate": 0.1},
        ]
    ),
    "screen": st.sampled_from(
        [{"methods": ["isolation-forest"]}, {"methods": ["spectral", "loso"], "combine": "all"}, {"methods": []}]
    ),
    "sweep.cases": st.sampled_from(
        [
            [{"case": "$\\nope$", "generations": 2}],
            [{"case": "[/x]"}, {"case": "b", "data.n": 3}],
            [{}],
            [{"generations": 1}, {"generations": 5}],
        ]
    ),
}


@st.composite
def specs(draw) -> dict:
    """A valid small spec with 1 to 3 mutations: mostly plausible values at the edges, some plain hostile."""
    raw = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS))
        action = draw(st.sampled_from(["plausible"] * 6 + ["hostile", "delete"]))
        if action == "delete":
            _delete(raw, key)
        elif key.startswith("sweep.") and key != "sweep.cases":
            pool = PLAUSIBLE.get(key[6:], VALUES) if action == "plausible" else VALUES
            _set(raw, "sweep", {**(raw.get("sweep") or {}), key[6:]: draw(st.lists(pool, max_size=3))})
        else:
            value = draw(PLAUSIBLE[key] if action == "plausible" and key in PLAUSIBLE else VALUES)
            _set(raw, key, value)
    return raw


def nesting(depth: int) -> str:
    return "[" * depth + "]" * depth


# hostile file contents by the kind of file the tool expects
HOSTILE_BYTES = [
    b"",
    b"\xff\xfe\xfa invalid utf-8 \xc3\x28\n",
    b"\x00" * 100,
    b"a,b\n1,2\n" * 1,
    b"a\n",
    b"a,b\n1,inf\n2,3\n",
    b"a,b\n1,nan\n2,3\n",
    b"x,y\n1\n2,3,4\n",
    b'"unterminated\n1,2',
    b"\n\n\n",
    b"c\nred\nred\nred\n",
    b"a,b\n" + b"1,2\n" * 3,
    b"text\n" + b"word " * 20,
    nesting(1000).encode(),
    b'{"text": ' + nesting(1000).encode() + b"}\n",
    b'{"text": "ok"}\n[1, 2]\n',
    b'{"text": 5}\n',
    b'{"text": "' + b"w " * 200 + b'", "origin": {"a": 1}}\n',
    b"null\n",
    b'"just a string"\n',
    b'{"content": "x", "origin": "human", "quality": "high"}\n',
    b'{"content": "x", "origin": ["human"]}\n',
    b'{"content": "x", "origin": "human", "generation": 1.5}\n',
    b'{"content_hash": 7, "origin": "human"}\n',
    b'{"content": "x", "origin": "human", "quality": 1e999}\n',
    b'{"content": "x", "origin": "human", "verdicts": ' + nesting(900).encode() + b"}\n",
    b"\x93NUMPY\x01\x00garbage",
    b"PAR1garbagePAR1",
]


@st.composite
def hostile_files(draw) -> tuple[str, bytes | str]:
    """(suffix, content) where content is bytes, or one of the special names 'fifo', 'devzero', 'dir'."""
    suffix = draw(st.sampled_from([".csv", ".tsv", ".parquet", ".jsonl", ".txt", ".npy", ".json", ".toml", ".bin"]))
    content = draw(
        st.one_of(
            st.sampled_from(HOSTILE_BYTES),
            st.sampled_from(["fifo", "devzero", "dir"]),
            st.binary(max_size=200),
            st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        )
    )
    return suffix, content


def materialise(folder: Path, name: str, suffix: str, content) -> Path:
    path = folder / f"{name}{suffix}"
    if content == "fifo":
        os.mkfifo(path)
    elif content == "devzero":
        path.symlink_to("/dev/zero")
    elif content == "dir":
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    hung: bool = False

    def problem(self) -> str | None:
        """Why this outcome breaks the contract, or None."""
        if self.hung:
            return "hung"
        if "Traceback" in self.stderr or "internal error" in self.stderr:
            return f"traceback: {self.stderr[-600:]}"
        if self.code not in (0, 2):
            return f"exit {self.code}: {self.stderr[-400:]}"
        if self.code == 2:
            lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
            if len(lines) != 1 or not lines[0].startswith("error: "):
                return f"not one error line: {self.stderr[-400:]!r}"
        return None


class _Timeout(BaseException):  # not an Exception: nothing in collapselab may catch it as a run's failure
    pass


def run_cli(args: list[str], cwd: Path, timeout: float = 60.0, memory_mb: int = 400) -> Outcome:
    """``collapselab ARGS`` in this process (seconds, not a new interpreter per case), with an alarm for hangs."""
    from collapselab.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_cwd = os.getcwd()
    code, hung = 0, False

    def alarm(*_):
        raise _Timeout

    # a small memory limit: huge replicate or generation counts are refused at validation, as on a small machine
    old_limit = os.environ.get("COLLAPSELAB_MEMORY_LIMIT_MB")
    os.environ["COLLAPSELAB_MEMORY_LIMIT_MB"] = str(memory_mb)
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            old_argv = sys.argv
            sys.argv = ["collapselab", *args]
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            finally:
                sys.argv = old_argv
    except _Timeout:
        hung = True
    except BaseException as e:  # noqa: BLE001 - anything escaping main is a traceback a user would see
        err.write(f"Traceback (escaped main): {type(e).__name__}: {e}")
        code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(old_cwd)
        if old_limit is None:
            os.environ.pop("COLLAPSELAB_MEMORY_LIMIT_MB", None)
        else:
            os.environ["COLLAPSELAB_MEMORY_LIMIT_MB"] = old_limit
    return Outcome(code, out.getvalue(), err.getvalue(), hung)


def prepare_folder(folder: Path) -> None:
    """The files the file-reading bases name, written into a case's folder."""
    import numpy as np

    rng = np.random.default_rng(0)
    words = [f"w{int(i)}" for i in rng.zipf(1.5, 3000) % 300]
    (folder / "corpus.txt").write_text(" ".join(words) + "\n", encoding="utf-8")
    np.save(folder / "images.npy", rng.integers(0, 256, (60, 28, 28), dtype=np.uint8))


def prepare_references(folder: Path) -> dict[str, Path]:
    """Good files of every kind the audit reads, to pair with a hostile one: suffix -> path."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    out = {}
    table = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200), "c": rng.choice(["x", "y"], 200)})
    for suffix in (".csv", ".tsv", ".parquet"):
        path = folder / f"ref{suffix}"
        if suffix == ".parquet":
            table.to_parquet(path)
        else:
            table.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
        out[suffix] = path
    words = [f"w{int(i)}" for i in rng.zipf(1.5, 4000) % 300]
    (folder / "ref.txt").write_text(" ".join(words), encoding="utf-8")
    out[".txt"] = folder / "ref.txt"
    lines = [json.dumps({"text": " ".join(words[i : i + 80]), "origin": "human"}) for i in range(0, 4000, 80)]
    (folder / "ref.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out[".jsonl"] = folder / "ref.jsonl"
    np.save(folder / "ref.npy", rng.integers(0, 256, (100, 28, 28), dtype=np.uint8))
    out[".npy"] = folder / "ref.npy"
    return out


def file_commands(hostile: Path, refs: dict[str, Path]) -> list[list[str]]:
    """Every command that reads a user's file, each handed the hostile one."""
    ref = refs.get(hostile.suffix, refs[".csv"])
    h = str(hostile)
    spec_text = folder_spec(hostile)
    return [
        ["audit", "--reference", str(ref), "--candidate", h, "--no-projection", "--out", "audit1"],
        ["audit", "--reference", h, "--candidate", str(ref), "--no-projection", "--out", "audit2"],
        [
            "audit",
            "--reference",
            str(ref),
            "--candidate",
            str(ref),
            "--synthetic-examples",
            h,
            "--no-projection",
            "--out",
            "audit3",
        ],
        ["ledger", "add", h, "--db", "ledger.db"],
        ["synthesize", "--data", h, "--rows", "20", "--out", "synth.csv"],
        ["run", h, "--out", "run1", "-q", "--no-report"],
        ["run", spec_text, "--out", "run2", "-q", "--no-report"],
    ]


def folder_spec(hostile: Path) -> str:
    """A spec beside the hostile file whose source reads it (text-file, or image-file for .npy)."""
    image = hostile.suffix in (".npy", ".npz")
    raw = {
        "generations": 2,
        "replicates": 2,
        "data": {
            "source": "image-file" if image else "text-file",
            "n": 10,
            "heldout": 5,
            "params": {"path": hostile.name, **({} if image else {"block": 8})},
        },
        "model": {"family": "kde" if image else "ngram"},
    }
    path = hostile.parent / f"reads-{hostile.stem}.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return str(path)


def write_spec(folder: Path, raw: dict) -> Path:
    """The spec as TOML where TOML can hold it, else as JSON-in-TOML would fail: then None."""
    path = folder / "spec.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def toml_ok(raw: dict) -> bool:
    try:
        tomli_w.dumps(raw)
        return True
    except (TypeError, ValueError):
        return False


def dumps(raw) -> str:
    return json.dumps(raw, default=str)[:300]
