"""Report, viewer and compare without a browser: escaping, self-containment, commands."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from html import escape as html_escape
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploysim.cli.main import main
from deploysim.evaluate.report.html import build_report, safe_json
from deploysim.evaluate.report.viewer import make_server
from tests.synthetic import build_run

PAYLOADS = json.loads((Path(__file__).parent / "fixtures" / "report" / "payloads.json").read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    return build_run(root / "run-a", {"over_refusal": (0.1, 0.3), "sycophancy": (0.1, 0.05)}, n_points=80,
                     payloads=PAYLOADS, seed=7)


def test_safe_json_cannot_close_a_script_block() -> None:
    text = str(safe_json({"x": "</script><script>alert(1)</script>&\u2028\u2029"}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == {"x": "</script><script>alert(1)</script>&\u2028\u2029"}


def test_report_is_self_contained_and_escaped(run: Path) -> None:
    html = build_report(run, examples_per_category=500, n_boot=200)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no external resources"
    assert "<link" not in html
    assert html.count("<script") == 2
    for payload in PAYLOADS:
        body = payload.split(" ", 1)[1]
        assert body not in html or "<" not in body, payload  # no raw markup from a payload survives
    assert "PAYLOAD-01" in html  # ... yet the payload text is there, escaped


def test_report_cli_writes_file(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(out), "--examples", "5"])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!doctype html>")


def test_compare_cli(run: Path, tmp_path: Path) -> None:
    other = build_run(tmp_path / "run-b", {"over_refusal": (0.1, 0.1), "sycophancy": (0.1, 0.05)}, n_points=80,
                      seed=8)
    result = CliRunner().invoke(main, ["compare", str(run), str(other), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    cand = next(r for r in data["rates"] if r["behaviour"] == "over_refusal" and r["deployment"] == "candidate")
    assert cand["diff"] < 0 and cand["low"] <= cand["diff"] <= cand["high"]
    assert "points: 80 -> 80" in data["differences"]
    assert CliRunner().invoke(main, ["compare", str(run), str(other)]).exit_code == 0


def test_viewer_serves_on_loopback_only(run: Path) -> None:
    server = make_server(run.parent, port=0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        index = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "/run/run-a" in index
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/run/run-a", timeout=120).read().decode()
        assert "headline-table" in page
        for bad in ("/run/..%2F..%2Fetc", "/run/nope", "/etc/passwd"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{bad}", timeout=30)
            assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_awareness_results_join_the_report_escaped(run: Path, tmp_path: Path) -> None:
    """`deploysim awareness --run RUN` leaves awareness.json; the report shows it, escaped."""
    import shutil

    target = tmp_path / "with-awareness"
    shutil.copytree(run, target)
    results = json.loads((Path(__file__).parent / "fixtures" / "report" / "awareness.json").read_text())
    results["probe"]["model"] = PAYLOADS[0]
    for example, payload in zip(results["unparseable_examples"]["real"], PAYLOADS[1:5], strict=False):
        example["text"] = payload
    (target / "awareness.json").write_text(json.dumps(results))
    html = build_report(target, n_boot=100)
    assert '<section id="awareness">' in html
    section = html[html.index('<section id="awareness">'):]
    assert "Evaluation awareness" in section
    for payload in PAYLOADS[:5]:
        assert payload not in section  # only its escaped form
    assert html_escape(PAYLOADS[0]) in section  # and it is shown
