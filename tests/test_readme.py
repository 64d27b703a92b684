"""The README stays true: its Python examples run, and its demo table is what the quickstart prints."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", README, re.S))
def test_python_examples_run(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from collapselab.families import FAMILIES

    before = set(FAMILIES)
    try:
        exec(compile(block, "README.md", "exec"), {})
    finally:
        for name in set(FAMILIES) - before:
            FAMILIES.pop(name)


def test_demo_table_matches_the_quickstart(tmp_path):
    shown = re.search(r"What the demo shows.*?```\n(.*?)```", README, re.S).group(1)
    res = subprocess.run(
        [sys.executable, "-m", "collapselab", "run", "preset:quickstart", "--out", "o", "--show", "0,10,29"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"COLUMNS": "80", "PATH": ""},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert shown in res.stdout
    stages = re.search(r"collapse stages of each cell.*?```\n(.*?)```", README, re.S).group(1)
    assert stages in res.stdout
