"""The backtest page in real headless Chromium: no errors, no script at all, the scatter with its
y = x line and 1.5x band, the direction table and the baselines side by side; hostile names stay text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from deploysim.checks.backtest import Release, build_cells
from deploysim.evaluate.report.backtest_page import build_backtest_page, scatter_svg
from deploysim.evaluate.stats.forecast_error import jeffreys, summarise
from tests.browser import Browser
from tests.test_report_browser import HOOK, PAYLOADS, _need_browser, artifacts_dir


def _rate(k: int, n: int) -> dict:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, method="wilson")
    return {"rate": k / n, "low": float(low), "high": float(high), "n": n, "n_eff": n, "flagged": k,
            "smoothed": jeffreys(k, n), "grader": "g"}


def synthetic_result() -> dict:
    releases = [Release(name=f"v{i}", deployment={"model": "instant/echo"}) for i in range(3)]
    behaviours = ["over_refusal", "excessive_verbosity", PAYLOADS[0], PAYLOADS[1]]
    counts = {"v0": [5, 80, 0, 10], "v1": [20, 30, 1, 10], "v2": [4, 60, 0, 40]}
    production = {r: {b: _rate(k, 200) for b, k in zip(behaviours, ks, strict=True)} for r, ks in counts.items()}
    predicted = {}
    for a, b in (("v0", "v1"), ("v1", "v2")):
        predicted[f"{a}->{b}"] = {
            "predicted": {beh: _rate(max(0, round(k * 0.4 + 3)), 100) for beh, k in zip(behaviours, counts[b],
                                                                                       strict=True)},
            "logged": {beh: _rate(round(k / 2), 100) for beh, k in zip(behaviours, counts[a], strict=True)}}
    suite = {r: {b: _rate(k // 2 + 1, 50) for b, k in zip(behaviours, ks, strict=True)} for r, ks in counts.items()}
    cells = build_cells([(releases[0], releases[1]), (releases[1], releases[2])], production, predicted, suite)
    return {"history": "history.yaml", "pairs": ["v0->v1", "v1->v2"], "min_change": 1.5,
            "smoothing": "jeffreys", "confidence": 0.95, "cells": cells,
            "metrics": summarise([c["scores"]["deploysim"] for c in cells], n_boot=200),
            "baselines": {m: summarise([c["scores"][m] for c in cells], n_boot=200) for m in ("previous", "suite")}}


def test_scatter_geometry() -> None:
    result = synthetic_result()
    svg = str(scatter_svg(result["cells"]))
    assert svg.count('class="cell"') == len(result["cells"]) == 8
    assert 'class="identity"' in svg and 'class="band"' in svg
    # the y = x line runs corner to corner of the square plot
    line = svg.split('class="identity"')[1]
    coords = [float(line.split(f'{k}="')[1].split('"')[0]) for k in ("x1", "y1", "x2", "y2")]
    assert math.isclose(coords[0], 520 - coords[1]) and math.isclose(coords[2], 520 - coords[3])


@pytest.fixture(scope="module")
def browser() -> Browser:
    _need_browser()
    with Browser() as b:
        b.send("Page.addScriptToEvaluateOnNewDocument", source=HOOK)
        yield b


def test_backtest_page_in_chromium(browser: Browser, tmp_path: Path) -> None:
    result = synthetic_result()
    page = tmp_path / "backtest.html"
    page.write_text(build_backtest_page(json.loads(json.dumps(result))), encoding="utf-8")
    browser.events.clear()
    browser.open(page.as_uri())
    browser.evaluate("new Promise(r => setTimeout(r, 300))")
    assert browser.errors() == []
    assert browser.evaluate("window.__pwnedCalls || []") == []
    assert browser.evaluate("document.scripts.length") == 0  # the page needs none, and the CSP allows none
    csp = browser.evaluate("document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content")
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert browser.evaluate("document.querySelectorAll('#scatter circle.cell').length") == len(result["cells"])
    assert browser.evaluate("document.querySelectorAll('#scatter line.identity').length") == 1
    assert browser.evaluate("document.querySelectorAll('#scatter polygon.band').length") == 1
    # the scatter is drawn, not just present: it has a size on the page
    assert browser.evaluate("document.getElementById('scatter').getBoundingClientRect().width") > 300
    methods = browser.evaluate("[...document.querySelectorAll('#methods tbody tr')].map(r => r.dataset.method)")
    assert methods == ["deploysim", "previous", "suite"]
    judged = [c for c in result["cells"] if c["direction_cell"]]
    assert judged
    assert browser.evaluate("document.querySelectorAll('#direction tbody tr').length") == len(judged)
    text = browser.evaluate("document.body.innerText")
    assert PAYLOADS[0][:10] in text and PAYLOADS[1][:10] in text  # hostile behaviour names shown as text
    shot = browser.screenshot(artifacts_dir(tmp_path) / "backtest.png")
    assert shot.stat().st_size > 10_000
