"""The report in real headless Chromium: no console errors, tables and plots present, a screenshot,
and 50 injection payloads planted in the conversations never execute."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.browser import Browser, find_chromium
from deploysim.evaluate.report.html import build_report
from tests.synthetic import build_run

PAYLOADS = json.loads((Path(__file__).parent / "fixtures" / "report" / "payloads.json").read_text())
HOOK = "window.__pwned = function (n) { (window.__pwnedCalls = window.__pwnedCalls || []).push(n); };"


def _need_browser() -> None:
    missing = [what for what, ok in (("chromium (apt-get install chromium)", find_chromium()),
                                     ("websocket-client", _has_websocket())) if not ok]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")


def _has_websocket() -> bool:
    import importlib.util

    return importlib.util.find_spec("websocket") is not None


@pytest.fixture(scope="module")
def browser() -> Browser:
    _need_browser()
    with Browser() as b:
        b.send("Page.addScriptToEvaluateOnNewDocument", source=HOOK)  # runs before any page script, CSP or not
        yield b


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real bundled conversations, with every payload planted in prompts, replies, rationales, metadata
    and one behaviour name; small enough that every point is shown as an example."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    behaviours = {"over_refusal": (0.2, 0.45), "sycophancy": (0.15, 0.05), PAYLOADS[1]: (0.1, 0.1)}
    return build_run(run, behaviours, n_points=60, points_per_conversation=2, payloads=PAYLOADS, seed=5)


def artifacts_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("DEPLOYSIM_TEST_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_hook_detects_execution(browser: Browser, tmp_path: Path) -> None:
    """Positive control: the hook sees a payload that does run, so silence below means something."""
    page = tmp_path / "control.html"
    page.write_text(f"<!doctype html><body>{PAYLOADS[0]}{PAYLOADS[1]}</body>")
    browser.open(page.as_uri())
    browser.evaluate("new Promise(r => setTimeout(r, 200))")
    assert browser.evaluate("window.__pwnedCalls || []") == [1, 2]


@pytest.mark.parametrize("csp", [True, False], ids=["with-csp", "escaping-only"])
def test_report_in_chromium(browser: Browser, hostile_run: Path, tmp_path: Path, csp: bool) -> None:
    html = build_report(hostile_run, examples_per_category=500, csp=csp, n_boot=300)
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    browser.events.clear()
    browser.open(page.as_uri() + "#all")
    assert browser.evaluate("document.documentElement.getAttribute('data-report-ready')") == "1"
    # Poke what a reader would: every filter, a search, focus and click on everything clickable.
    browser.evaluate("""(async () => {
        for (const id of ['f-behaviour', 'f-category', 'f-segment']) {
            const s = document.getElementById(id);
            for (const o of s.options) { s.value = o.value; s.dispatchEvent(new Event('change')); }
            s.value = ''; s.dispatchEvent(new Event('change'));
        }
        const q = document.getElementById('f-search');
        q.value = 'PAYLOAD'; q.dispatchEvent(new Event('input'));
        q.value = ''; q.dispatchEvent(new Event('input'));
        document.querySelectorAll('a, button, details, input, [onclick]').forEach(e => {
            try { e.click(); } catch (x) {}
        });
        await new Promise(r => setTimeout(r, 500));
    })()""")
    assert browser.evaluate("window.__pwnedCalls || []") == []
    assert browser.errors() == []
    # Content: table, plots, segments and examples are there.
    n_behaviours = 3
    assert browser.evaluate("document.querySelectorAll('#headline-table tbody tr').length") == n_behaviours
    assert browser.evaluate("document.querySelectorAll('#forest-plot circle.point').length") >= 2
    assert browser.evaluate("document.querySelectorAll('#forest-plot line.ci-line').length") >= 2
    assert browser.evaluate("document.querySelectorAll('.segment-table').length") >= 2
    shown = browser.evaluate("document.querySelectorAll('#examples .example').length")
    assert shown >= 60
    # Every payload was rendered, as text: its marker is visible and no element it names was created.
    text = browser.evaluate("document.body.innerText")
    missing = [p[:10] for p in PAYLOADS if p[:10] not in text]
    assert not missing, missing
    scripts = browser.evaluate("document.scripts.length")
    assert scripts == 2  # the JSON data block and the report's own script, nothing planted
    planted = browser.evaluate(
        "document.querySelectorAll('iframe, object, embed, img, video, audio, marquee, form, base, "
        "meta[http-equiv=refresh], svg animate, details, input:not(#f-search), textarea, link, math').length")
    assert planted == 0
    browser.evaluate("window.scrollTo(0, 0)")
    shot = browser.screenshot(artifacts_dir(tmp_path) / f"report-{'csp' if csp else 'nocsp'}.png")
    assert shot.stat().st_size > 10_000
