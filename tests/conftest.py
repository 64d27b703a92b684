import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run slow, opt-in tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: opt in with --runslow (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _git_status() -> str | None:
    """The checkout's `git status --porcelain` (untracked files included), or None outside a git checkout."""
    try:
        res = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
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
