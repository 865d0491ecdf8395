"""The OpenAI-compatible provider against a real llama_cpp.server on 127.0.0.1: calls, cache, faults."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from deploysim.pipeline.config import SimConfig
from deploysim import run_simulation
from tests.loopback import LoopbackProxy

pytestmark = [pytest.mark.slow, pytest.mark.model]

SHORT_CHATS = Path(__file__).parent / "fixtures" / "sources" / "short_chats.jsonl"


def config(model: str, cache_path: Path, n: int | None = None, **deployment: object) -> SimConfig:
    data = SHORT_CHATS
    return SimConfig(
        data=[str(data)],
        sample=n,
        deployments=[{"name": "candidate", "model": model, "params": {"max_tokens": 8, "temperature": 0},
                      "concurrency": 2, **deployment}],
        cache_path=str(cache_path),
    )


def test_real_server_answers_and_second_run_is_all_cache(llama_server: str, tmp_path: Path) -> None:
    with LoopbackProxy(llama_server) as proxy:
        model = f"openai-compatible/smollm2@{proxy.base_url}"
        first = run_simulation(config(model, tmp_path / "c.sqlite", n=4), tmp_path / "run1", show_progress=False)
        assert first["reconciles"]
        candidate = first["deployments"]["candidate"]
        assert candidate["generations_ok"] == 4 and candidate["completion_tokens"] > 0
        texts = pq.read_table(tmp_path / "run1" / "generations.parquet").to_pylist()
        replies = [r["text"] for r in texts if r["deployment"] == "candidate"]
        assert all(isinstance(t, str) and t.strip() for t in replies)  # real model text
        assert sum(proxy.log.outcomes().values()) == 4
        second = run_simulation(config(model, tmp_path / "c.sqlite", n=4), tmp_path / "run2", show_progress=False)
        assert second["deployments"]["candidate"]["served_from_cache"] == 4
        assert sum(proxy.log.outcomes().values()) == 4  # not one more request
        replies2 = [r["text"] for r in pq.read_table(tmp_path / "run2" / "generations.parquet").to_pylist()
                    if r["deployment"] == "candidate"]
        assert sorted(replies2) == sorted(replies)


FAULT_CYCLE = ("429", "500", "slow", "broken_json")
ALWAYS_FAILS = "what is the best crm for gmail?"


def fault_rule(body: dict, attempt: int) -> str | None:
    """First attempt of each prompt gets one fault kind (by prompt); one prompt always fails with 500."""
    prompt = body["messages"][-1]["content"]
    if prompt == ALWAYS_FAILS:
        return "500"
    if attempt == 1:
        return FAULT_CYCLE[sum(map(ord, prompt)) % len(FAULT_CYCLE)]
    return None


def test_faults_are_retried_or_recorded_and_counts_reconcile(llama_server: str, tmp_path: Path) -> None:
    with LoopbackProxy(llama_server, rule=fault_rule, slow_s=4.0) as proxy:
        model = f"openai-compatible/smollm2@{proxy.base_url}"
        cfg = config(model, tmp_path / "c.sqlite", timeout_s=2.0, max_retries=2)
        summary = run_simulation(cfg, tmp_path / "run", show_progress=False)
        outcomes = proxy.log.outcomes()
    assert set(FAULT_CYCLE) <= set(outcomes)  # every kind of fault was actually injected
    assert summary["reconciles"]
    candidate = summary["deployments"]["candidate"]
    assert summary["points"] == 16
    assert candidate["generations_ok"] == 15 and candidate["generations_error"] == 1
    assert candidate["errors_by_message"] == {"HTTP 500 from provider (InternalServerError)": 1}
    rows = pq.read_table(tmp_path / "run" / "generations.parquet").to_pylist()
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and failed[0]["attempts"] == 3  # 1 try + 2 retries, then recorded
    retried_ok = [r for r in rows if r["deployment"] == "candidate" and not r["error"]]
    assert all(r["attempts"] == 2 for r in retried_ok)  # every other call failed once, then succeeded
    # Retry-After: 1 was honoured: the retry of a 429'd request came at least a second later
    seen = proxy.log.seen
    for first in (s for s in seen if s.outcome == "429"):
        retry = next(s for s in seen if s.body_hash == first.body_hash and s.attempt == 2)
        assert retry.at - first.at >= 0.95
    rejects = (tmp_path / "run" / "rejects.jsonl").read_text()
    assert rejects == ""
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["reconciles"]
