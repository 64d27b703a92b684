"""The HTML report: self-contained, escaped, and rendered by a real browser (Debian's Chromium)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import collapselab as cl

CHROMIUM = os.environ.get("COLLAPSELAB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"
CHROMIUM_ARGS = [  # a closed network: no background connections, no sandbox as root, no GPU
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _small(name, **over):
    spec = {
        "name": name,
        "generations": 8,
        "replicates": 200,
        "data": {"source": "gaussian", "n": 20},
        "model": {"family": "gaussian"},
        "sweep": {"policy": [{"kind": "replace"}, {"kind": "accumulate"}, {"kind": "mix", "real_fraction": 0.1}]},
    }
    spec.update(over)
    return spec


def _browse(html_path: Path, screenshot: Path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
    seen = {"errors": [], "requests": [], "dialogs": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
        page.goto(html_path.resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => ({ok: e.complete && e.naturalWidth > 0, w: e.naturalWidth, alt: e.alt}))"
        )
        text = page.inner_text("body")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return images, text, seen


@pytest.mark.browser
def test_run_report_renders_every_figure_in_chromium(tmp_path):
    result = cl.run(_small("quick"), tmp_path / "run")
    report = result.path / "report.html"
    images, text, seen = _browse(report, ARTIFACTS / "report.png")
    metrics = [m for m in result.summary.metric.unique() if not m.startswith("stage_") and m != "synthetic_share"]
    # one figure per metric, the synthetic share, and per cell a stage timeline and a snapshot strip
    assert len(images) == len(metrics) + 1 + 2 * 3
    assert all(i["ok"] and i["w"] > 100 for i in images), [i for i in images if not i["ok"]]
    assert seen["errors"] == []
    assert all(u.startswith(("file:", "data:")) for u in seen["requests"]), seen["requests"]  # works offline
    assert "Collapse stages" in text and "cell 2: policy.kind = mix, policy.real_fraction = 0.1" in text
    assert re.search(r"generation \d+ \[\d+–\d+\], \d+% of chains", text)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


@pytest.mark.browser
def test_comparison_report_of_two_runs_and_escaped_names(tmp_path):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    a = cl.run(_small(evil, description="a & b < c"), tmp_path / "a", report=False)
    b = cl.run(_small("other", generations=5), tmp_path / "b", report=False)
    res = subprocess.run(
        [sys.executable, "-m", "collapselab", "report", str(a.path), str(b.path), "--out", str(tmp_path / "cmp.html")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "cmp.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html and "a &amp; b &lt; c" in html
    images, text, seen = _browse(tmp_path / "cmp.html", ARTIFACTS / "comparison.png")
    assert seen["dialogs"] == [] and seen["errors"] == []
    assert all(i["ok"] for i in images)
    assert "Comparison at the last generation" in text
    assert "other · cell 1: policy.kind = accumulate" in text and evil in text  # shown as text, not run


@pytest.mark.parametrize(
    "data, model",
    [
        ({"source": "zipf", "n": 50, "params": {"categories": 12}}, {"family": "categorical"}),
        ({"source": "blobs", "n": 200, "params": {"means": [[0, 0], [4, 4]], "stds": 1.0}}, {"family": "gmm"}),
        ({"source": "linear", "n": 30, "params": {"dim": 3}}, {"family": "linear"}),
        ({"source": "bernoulli", "n": 30, "params": {"p": 0.3}}, {"family": "bernoulli"}),
        ({"source": "poisson", "n": 30, "params": {"rate": 2.0}}, {"family": "poisson"}),
    ],
)
def test_report_for_every_kind_of_record(tmp_path, data, model):
    r = cl.run({"name": "k", "generations": 4, "replicates": 20, "data": data, "model": model}, tmp_path / "r")
    html = (r.path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    assert "http://" not in html and "https://" not in html


def test_report_of_an_unknown_run_is_a_clear_error(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "collapselab", "report", "nope"], cwd=tmp_path, capture_output=True, text=True
    )
    assert res.returncode == 2 and res.stderr.startswith("error: no run 'nope'")


def test_phase_grid_and_frontier_on_a_known_summary():
    import pandas as pd

    from collapselab.report.phase import frontier, grids

    cells, rows = {}, []
    healthy = {  # (n, fraction) -> minimum share of healthy chains over the run
        (10, 0.0): 0.1,
        (10, 0.2): 0.4,
        (10, 0.5): 0.6,
        (10, 0.9): 0.9,
        (50, 0.0): 0.3,
        (50, 0.2): 0.7,
        (50, 0.5): 0.45,
        (50, 0.9): 0.8,  # 0.5 dips: the frontier is 0.9
        (200, 0.0): 0.6,
        (200, 0.2): 0.9,
        (200, 0.5): 0.9,
        (200, 0.9): 1.0,
    }
    for i, ((n, f), h) in enumerate(healthy.items()):
        cells[str(i)] = {"data.n": n, "policy": {"kind": "mix", "real_fraction": f}}
        rows += [(str(i), g, "stage_healthy", h if g == 2 else 1.0) for g in range(4)]
    summary = pd.DataFrame(rows, columns=["cell", "generation", "metric", "mean"])
    (grid,) = grids(cells, 4)
    assert (grid.x_key, grid.y_key) == ("policy.real_fraction", "data.n")  # policy.kind is fixed: not an axis
    assert grid.x == [0.0, 0.2, 0.5, 0.9] and grid.y == [10, 50, 200]
    assert frontier(grid, summary) == {10: 0.5, 50: 0.9, 200: 0.0}


@pytest.mark.browser
def test_phase_diagrams_of_a_two_parameter_sweep(tmp_path):
    spec = {
        "name": "phase",
        "generations": 30,
        "replicates": 300,
        "data": {"source": "gaussian", "n": 20},
        "model": {"family": "gaussian"},
        "policy": {"kind": "mix", "real_fraction": 0.0},
        "sweep": {"data.n": [10, 100], "policy.real_fraction": [0.0, 0.3, 0.9]},
    }
    r = cl.run(spec, tmp_path / "p")
    html = (r.path / "report.html").read_text()
    assert "Phase diagrams" in html and "data.n × policy.real_fraction" in html
    lines = re.findall(r"<li>data.n = (\d+): (.*?)</li>", html)
    assert [n for n, _ in lines] == ["10", "100"]
    fractions = [float(re.search(r"real_fraction = ([\d.]+) up", t).group(1)) for _, t in lines]
    assert fractions[0] >= fractions[1]  # more real samples need no larger real share
    images, text, seen = _browse(r.path / "report.html", ARTIFACTS / "phase.png")
    assert all(i["ok"] for i in images) and seen["errors"] == []
