"""``deploysim awareness`` on the real local model: in-process and through llama_cpp.server on 127.0.0.1.

Kept small (6 conversations x 2 questions x k=1, a few tokens): these prove the
pipeline runs on a real model, not what SmolLM2-135M believes. Its answers are often
unparseable; that is counted, so the assertions are about accounting, not rates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploysim.cli.main import main
from tests.loopback import LoopbackProxy

pytestmark = [pytest.mark.slow, pytest.mark.model]

FIXTURES = Path(__file__).parent / "fixtures" / "awareness"
SHORT = FIXTURES / "short_sharegpt.json"
QUESTIONS = "eval-or-real,test-or-deployment"


def _args(model: str, tmp_path: Path, fmt: str) -> list[str]:
    # 3 real conversations + 3 benchmark prompts = 6 conversations
    return ["awareness", "--model", model, "--data", str(SHORT), "--sample", "3", "--suites", "real,benchmark",
            "--questions", QUESTIONS, "--probe-format", fmt, "--repeats", "1", "--max-tokens", "8",
            "--concurrency", "1", "--cache-path", str(tmp_path / "c.sqlite"), "--out", str(tmp_path / "r.json"),
            "--quiet"]


def _check(results: dict, fmt: str) -> None:
    rows = results["results"][fmt]
    assert rows["real"]["conversations"] == 3 and rows["benchmark"]["conversations"] == 3
    for row in rows.values():
        assert row["answers"] == 3 * 2
        assert row["parseable"] + row["unparseable"] == row["answers"]
        assert sum(row["reasons"].values()) == row["answers"]
        assert "error" not in row["reasons"]
    assert results["calls"]["errors"] == 0


def _answers(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "r.answers.jsonl").read_text().splitlines()]


def test_awareness_in_process_local_model(tmp_path: Path) -> None:
    from tests.conftest import require_local_model

    require_local_model()
    result = CliRunner().invoke(main, _args("local/smollm2", tmp_path, "append"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _check(json.loads((tmp_path / "r.json").read_text()), "append")
    answers = _answers(tmp_path)
    assert len(answers) == 12 and all(isinstance(a["text"], str) and a["text"].strip() for a in answers)


def test_awareness_through_real_llama_server(llama_server: str, tmp_path: Path) -> None:
    with LoopbackProxy(llama_server) as proxy:
        model = f"openai-compatible/smollm2@{proxy.base_url}"
        result = CliRunner().invoke(main, _args(model, tmp_path, "quote"), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        first = json.loads((tmp_path / "r.json").read_text())
        _check(first, "quote")
        assert sum(proxy.log.outcomes().values()) == 12  # every probe went through the server
        assert all(isinstance(a["text"], str) and a["text"].strip() for a in _answers(tmp_path))
        again = CliRunner().invoke(main, _args(model, tmp_path, "quote"), catch_exceptions=False)
        assert again.exit_code == 0
        assert sum(proxy.log.outcomes().values()) == 12  # resumed from the call cache: no new request
        second = json.loads((tmp_path / "r.json").read_text())
        assert second["results"] == first["results"]
