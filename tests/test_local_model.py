"""The embedded default: SmolLM2 in-process through llama-cpp-python, and the offline demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploysim.pipeline.config import SimConfig
from deploysim import run_simulation
from deploysim.core.store import read_generations
from tests.conftest import require_local_model

pytestmark = [pytest.mark.slow, pytest.mark.model]


@pytest.fixture(autouse=True)
def _local_model() -> None:
    require_local_model()

SHORT_CHATS = Path(__file__).parent / "fixtures" / "sources" / "short_chats.jsonl"


def test_local_smollm2_answers_in_process(tmp_path: Path) -> None:
    config = SimConfig(
        data=[str(SHORT_CHATS)],
        sample=4,
        deployments=[{"name": "candidate", "model": "local/smollm2", "params": {"max_tokens": 8}, "concurrency": 1}],
        cache_path=str(tmp_path / "c.sqlite"),
    )
    summary = run_simulation(config, tmp_path / "run", show_progress=False)
    assert summary["reconciles"]
    candidate = summary["deployments"]["candidate"]
    assert candidate["generations_ok"] == 4 and candidate["completion_tokens"] > 0
    replies = [g for g in read_generations(tmp_path / "run") if g.deployment == "candidate"]
    assert all(g.text and g.text.strip() for g in replies)


def test_overlong_prompt_is_fitted_not_failed(tmp_path: Path) -> None:
    long_chat = tmp_path / "long.jsonl"
    long_chat.write_text(json.dumps({"id": "long", "messages": [
        {"role": "system", "content": "You summarise documents."},
        {"role": "user", "content": "Earlier question about something else entirely."},
        {"role": "assistant", "content": "Earlier answer."},
        {"role": "user", "content": "Summarise this log: " + "GET /index.html 200 OK. " * 1500},
        {"role": "assistant", "content": "It is a web log."}]}) + "\n")
    config = SimConfig(data=[str(long_chat)], cache=False,
                       deployments=[{"name": "c", "model": "local/smollm2", "params": {"max_tokens": 8}}])
    summary = run_simulation(config, tmp_path / "run", show_progress=False)
    assert summary["deployments"]["c"]["generations_ok"] == 1
    assert summary["deployments"]["c"]["prompt_truncated"] == 1


def test_demo_command_writes_a_run_with_real_generations(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "DEPLOYSIM_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "deploysim.cli.main", "demo", "--sample", "3", "--out", str(out)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"run directory: {out}" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reconciles"] and summary["records_read"] == 200 and summary["points"] == 3
    gens = list(read_generations(out))
    baseline = {g.point_id: g.text for g in gens if g.deployment == "baseline"}
    candidate = {g.point_id: g.text for g in gens if g.deployment == "candidate"}
    assert len(baseline) == len(candidate) == 3
    assert all(t and t.strip() for t in [*baseline.values(), *candidate.values()])
    assert baseline != candidate  # the two deployments really differ
    rates = summary["behaviours"]["rates"]
    assert set(rates) == {"logged", "baseline", "candidate"} and len(rates["candidate"]) >= 8
    assert "behaviour rates" in result.stdout
    check_report_in_chromium(out / "report.html", tmp_path)


def check_report_in_chromium(report: Path, tmp_path: Path) -> None:
    """The demo run's own report, opened in real headless Chromium."""
    from tests.browser import Browser
    from tests.test_report_browser import _need_browser, artifacts_dir

    _need_browser()
    with Browser() as browser:
        browser.open(report.as_uri())
        assert browser.evaluate("document.documentElement.getAttribute('data-report-ready')") == "1"
        assert browser.errors() == []
        assert browser.evaluate("document.querySelectorAll('#headline-table tbody tr').length") >= 8
        assert browser.evaluate("document.querySelectorAll('#forest-plot').length") == 1
        shot = browser.screenshot(artifacts_dir(tmp_path) / "demo-report.png")
    assert shot.stat().st_size > 10_000
