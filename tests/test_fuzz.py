"""Property-based fuzzing (Hypothesis): mutated specs through the CLI and the API, hostile files through every
command that reads one. A small budget runs in `make test`; `pytest --runslow -k fuzz` runs the large one
(COLLAPSELAB_FUZZ_SPECS / COLLAPSELAB_FUZZ_FILES examples, default 500 and 200).

The contract: exit 0 with complete results, or exit 2 with one line starting with "error:" and nothing written;
never a traceback, a hang, another exit status, or a half-written run folder.
"""

import json
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import pytest
from fuzzing import (
    file_commands,
    hostile_files,
    materialise,
    prepare_folder,
    prepare_references,
    run_cli,
    specs,
    toml_ok,
    write_spec,
)
from hypothesis import HealthCheck, given, settings

import collapselab as cl

# what the campaign saw, for the closing line of a large run: (what, outcome) -> count
TALLY: Counter = Counter()

SMALL = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
LARGE_SPECS = int(os.environ.get("COLLAPSELAB_FUZZ_SPECS", "500"))
LARGE_FILES = int(os.environ.get("COLLAPSELAB_FUZZ_FILES", "200"))


def check_spec_through_the_cli(raw: dict) -> None:
    if not toml_ok(raw):  # TOML cannot hold it (None, mixed arrays): the API test covers such dicts
        return
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        prepare_folder(d)
        write_spec(d, raw)
        got = run_cli(["run", "spec.toml", "--out", "out", "-q", "--no-report"], d)
        TALLY["spec via CLI", "ran" if got.code == 0 else f"exit {got.code}"] += 1
        assert got.problem() is None, (got.problem(), json.dumps(raw, default=str)[:500])
        if got.code != 0:
            assert not (d / "out").exists(), (
                f"a refused spec left files: {sorted(p.name for p in (d / 'out').iterdir())}"
            )
            return
        assert (d / "out" / "summary.csv").is_file() and not (d / "out" / ".checkpoints").exists()
        shown = run_cli(["show", "out"], d)
        assert shown.code == 0 and shown.problem() is None, shown.stderr[-500:]
        as_json = run_cli(["run", "spec.toml", "--out", "again", "--json"], d)
        assert as_json.code == 0 and as_json.problem() is None, (as_json.problem(), as_json.stderr[-500:])
        json.loads(as_json.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in --json output"))
        assert (d / "again" / "report.html").is_file(), as_json.stderr[-500:]


def check_spec_through_the_api(raw: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            spec = cl.load_spec(raw)
            cells = cl.expand(spec)
        except cl.SpecError:
            TALLY["spec dict via API", "SpecError"] += 1
            return
    TALLY["spec dict via API", "valid"] += 1
    assert cells  # any other exception fails the test with its traceback


def check_hostile_file(suffix: str, content) -> None:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        refs = prepare_references(d)
        hostile = materialise(d, "hostile", suffix, content)
        for args in file_commands(hostile, refs):
            got = run_cli(args, d, timeout=60)
            TALLY[f"hostile file via {args[0]}", "ok" if got.code == 0 else f"exit {got.code}"] += 1
            assert got.problem() is None, (args, got.problem())
            out = {"audit": args[-1], "run": args[args.index("--out") + 1] if "--out" in args else None}.get(args[0])
            if got.code != 0 and out:
                assert not (d / out).exists(), f"{args}: a refused input left {out}/ behind"


@settings(max_examples=40, **SMALL)
@given(specs())
def test_fuzzed_specs_through_the_cli(raw):
    check_spec_through_the_cli(raw)


@settings(max_examples=150, **SMALL)
@given(specs())
def test_fuzzed_spec_dicts_through_the_api(raw):
    check_spec_through_the_api(raw)


@settings(max_examples=15, **SMALL)
@given(hostile_files())
def test_hostile_files(case):
    check_hostile_file(*case)


@pytest.mark.slow  # a sixth more examples: the few that TOML cannot hold (None) are left to the API test
@settings(
    max_examples=LARGE_SPECS + LARGE_SPECS // 6, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
@given(specs())
def test_fuzz_large_specs_through_the_cli(raw):
    check_spec_through_the_cli(raw)


@pytest.mark.slow
@settings(max_examples=LARGE_SPECS, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(specs())
def test_fuzz_large_spec_dicts_through_the_api(raw):
    check_spec_through_the_api(raw)


@pytest.mark.slow
@settings(max_examples=LARGE_FILES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(hostile_files())
def test_fuzz_large_hostile_files(case):
    check_hostile_file(*case)


@pytest.fixture(scope="module", autouse=True)
def _report_tally():
    """Print what the campaign saw (run with -s to read it)."""
    yield
    if TALLY:
        print("\nfuzz tally: " + "; ".join(f"{what}: {outcome} x{n}" for (what, outcome), n in sorted(TALLY.items())))
