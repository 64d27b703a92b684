import functools
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LLM_TEXT = ROOT.parent / "shared" / "data" / "llm-text"
CHROMIUM = os.environ.get("COLLAPSELAB_CHROMIUM", "/usr/bin/chromium")
# checkpoint after every generation (the default is every 10 s): the resume and kill tests cut runs at chosen
# generations; tests of the interval set it themselves. Subprocesses inherit it.
os.environ.setdefault("COLLAPSELAB_CHECKPOINT_SECONDS", "0")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run slow, opt-in tests")


@functools.cache
def _data_status() -> dict[str, str]:
    from collapselab import datasets

    status = dict(datasets.status())
    status["llm-text"] = str(LLM_TEXT) if LLM_TEXT.is_dir() else f"missing: {LLM_TEXT} is not beside this checkout"
    return status


def _importable(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _missing(item) -> str | None:
    """Why a test cannot run here (a resource its markers name is missing), or None."""
    for mark in item.iter_markers("data"):
        for name in mark.args:
            state = _data_status().get(name, f"missing: unknown data set {name!r}")
            if state.startswith("missing"):
                return f"data {name} {state} (make data)"
    if item.get_closest_marker("browser") and not (Path(CHROMIUM).exists() and _importable("playwright")):
        return f"browser: {CHROMIUM} or playwright is missing (make browser)"
    if item.get_closest_marker("neural") and not _importable("torch", "transformers"):
        return "neural: torch and transformers are not installed (pip install -e '.[neural]')"
    if item.get_closest_marker("cluster") and not _importable("distributed"):
        return "cluster: dask.distributed is not installed"
    return None


def pytest_collection_modifyitems(config, items):
    slow = not config.getoption("--runslow")
    for item in items:
        if slow and "slow" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="slow: opt in with --runslow (make test-all)"))
            continue
        why = _missing(item)
        if why is not None:
            item.add_marker(pytest.mark.skip(reason=why))


def _git_status() -> str | None:
    """The checkout's `git status --porcelain` (untracked files included), or None outside a git checkout."""
    try:
        res = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def pytest_sessionstart(session):
    session.config._git_status_before = _git_status()


def pytest_sessionfinish(session, exitstatus):
    """A test writes under its tmp_path, never into the checkout: fail the session if the tree changed."""
    before = getattr(session.config, "_git_status_before", None)
    after = _git_status()
    if before is None or after is None or after == before:
        return
    new = sorted(set(after.splitlines()) - set(before.splitlines()))
    if not new:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = "the tests changed the checkout (write under tmp_path instead):\n  " + "\n  ".join(new[:20])
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
