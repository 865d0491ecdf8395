"""Provider batch APIs (issue 13 item 2) through tests/batch_server.py, a loopback fake of both protocols.

Both SDKs talk to it over HTTP exactly as to the providers: files + batches (OpenAI),
message batches (Anthropic). Assertions read the server's own counters (files
uploaded, batches created, requests received), so a second submission cannot hide.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from deploysim.core.models.batch import (
    AnthropicBatchAPI,
    BatchJournal,
    BatchLimits,
    BatchResult,
    BatchRunner,
    OpenAIBatchAPI,
    Spool,
    split_at_limits,
)
from deploysim.core.models.anthropic_api import output_from_message
from deploysim.core.models.cache import CallCache
from deploysim.core.models.openai_api import output_from_completion_body
from tests.batch_server import BatchServer

SHORT_CHATS = Path(__file__).parent / "fixtures" / "sources" / "short_chats.jsonl"
PROMPTS = [f"question number {i}" for i in range(7)]


def openai_api(server: BatchServer) -> OpenAIBatchAPI:
    import openai

    return OpenAIBatchAPI(openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0),
                          output_from_completion_body)


def anthropic_api(server: BatchServer) -> AnthropicBatchAPI:
    import anthropic

    return AnthropicBatchAPI(anthropic.AsyncAnthropic(base_url=server.root, api_key="test", max_retries=0),
                             output_from_message)


def openai_body(prompt: str) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": prompt}], "max_tokens": 8}


def anthropic_body(prompt: str) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
            "max_tokens": 8}


def requests_for(provider: str) -> dict[str, dict[str, Any]]:
    body = openai_body if provider == "openai" else anthropic_body
    return {f"{i:064x}": body(p) for i, p in enumerate(PROMPTS)}


def make_api(server: BatchServer, provider: str) -> OpenAIBatchAPI | AnthropicBatchAPI:
    return openai_api(server) if provider == "openai" else anthropic_api(server)


def run_batches(server: BatchServer, provider: str, journal: Path, requests: dict[str, dict[str, Any]],
                **kw: Any) -> tuple[dict[str, BatchResult], BatchRunner]:
    """One BatchRunner run with a fresh SDK client (a client belongs to one event loop)."""
    got: dict[str, BatchResult] = {}

    def sink(result: BatchResult, cached: bool) -> None:
        assert result.custom_id not in got, "a custom_id answered twice"
        got[result.custom_id] = result

    async def go() -> BatchRunner:
        api = make_api(server, provider)
        spool = Spool(journal.with_suffix(".requests.jsonl"))
        for custom_id, body in requests.items():
            spool.add(custom_id, api.encode(custom_id, body))
        runner = BatchRunner(api, BatchJournal(journal), "candidate", poll_s=0.01, poll_max_s=0.05, **kw)
        try:
            await runner.run(spool, sink)
        finally:
            spool.close()
            await api._client.close()
        return runner

    return got, asyncio.run(go())


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_results_in_any_order_map_back_by_custom_id_and_land_in_the_cache(provider: str, tmp_path: Path) -> None:
    requests = requests_for(provider)
    cache = CallCache(tmp_path / "calls.sqlite")
    with BatchServer(polls_to_finish=3, seed=1) as server:
        got, runner = run_batches(server, provider, tmp_path / "batches.jsonl", requests, cache=cache)
        served_order = [r["custom_id"] for b in server.batches.values() for r in b.results]
        assert served_order != list(requests), "the server must shuffle results for this test to mean anything"
        assert server.batches_created == 1 and server.requests_received == len(PROMPTS)
        for i, prompt in enumerate(PROMPTS):
            result = got[f"{i:064x}"]
            assert result.error is None and result.output is not None
            assert result.output.text == f"echo: {prompt}"
            assert result.output.usage.completion_tokens == len(result.output.text.split())
        # a rerun pays nothing: every answer is in the cache under its custom_id
        again, runner2 = run_batches(server, provider, tmp_path / "batches2.jsonl", requests, cache=cache)
        assert server.batches_created == 1
        assert runner2.stats.cache_hits == len(PROMPTS)
        assert {k: r.output.text for k, r in again.items()} == {k: r.output.text for k, r in got.items()}
    cache.close()


def test_split_at_limits_by_count_and_by_bytes() -> None:
    lines = [(str(i), b"x" * 99) for i in range(10)]  # 100 bytes each with the newline
    assert [len(c) for c in split_at_limits(lines, BatchLimits(4, 10**9))] == [4, 4, 2]
    assert [len(c) for c in split_at_limits(lines, BatchLimits(10, 1000))] == [10]
    assert [len(c) for c in split_at_limits(lines, BatchLimits(100, 350))] == [3, 3, 3, 1]
    assert [c for chunk in split_at_limits(lines, BatchLimits(3, 250)) for c in chunk] == lines


def test_spool_keeps_data_on_disk_and_holds_an_id_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "r.jsonl")
    assert spool.add("a", orjson.dumps({"x": 1})) and spool.add("b", orjson.dumps({"x": "é" * 3}))
    assert not spool.add("a", orjson.dumps({"x": 2}))  # the same call again: not added
    assert list(spool) == ["a", "b"] and len(spool) == 2 and "b" in spool
    assert orjson.loads(spool.get("b")) == {"x": "ééé"}
    assert orjson.loads(spool.get("a")) == {"x": 1}
    assert (tmp_path / "r.jsonl").read_bytes().count(b"\n") == 2
    spool.close()
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_requests_are_split_at_the_limits_into_several_batches(provider: str, tmp_path: Path) -> None:
    requests = requests_for(provider)
    with BatchServer(polls_to_finish=1) as server:
        got, runner = run_batches(server, provider, tmp_path / "b.jsonl", requests, limits=BatchLimits(3, 10**9))
        assert server.batches_created == 3 and [len(b.requests) for b in server.batches.values()] == [3, 3, 1]
        assert len(got) == len(PROMPTS) and all(r.output is not None for r in got.values())
        api = make_api(server, provider)
        one = len(api.encode("0" * 64, requests[f"{0:064x}"])) + 1
        got, _ = run_batches(server, provider, tmp_path / "c.jsonl", requests, limits=BatchLimits(100, 2 * one + 5))
        assert server.batches_created == 3 + 4  # 2 + 2 + 2 + 1 by size
        assert all(r.output is not None for r in got.values())
    assert runner.limits.max_requests == 3  # lowered, never raised above the provider's
    assert runner.limits.max_bytes == api.limits.max_bytes


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_expired_batch_keeps_what_finished_and_resubmits_the_rest(provider: str, tmp_path: Path) -> None:
    requests = requests_for(provider)
    with BatchServer(polls_to_finish=1, outcome="expired", finish_first=4) as server:
        got, runner = run_batches(server, provider, tmp_path / "b.jsonl", requests, max_resubmits=1)
        assert server.batches_created == 2
        assert [len(b.requests) for b in server.batches.values()] == [7, 3]  # only the 3 undone went again
        assert runner.stats.requests_resubmitted == 3
        assert all(r.output is not None for r in got.values())
        # with no resubmission allowed, the rest are errors that say why
        got, runner = run_batches(server, provider, tmp_path / "c.jsonl", requests, max_resubmits=0)
        assert sum(r.output is not None for r in got.values()) == 4
        errors = [r.error for r in got.values() if r.output is None]
        assert len(errors) == 3 and all("expired" in (e or "") for e in errors)
        assert runner.stats.requests_undone == 3


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_failed_requests_inside_a_batch_carry_the_providers_reason(provider: str, tmp_path: Path) -> None:
    requests = requests_for(provider)
    bad = {f"{2:064x}", f"{5:064x}"}
    with BatchServer(polls_to_finish=1, error_ids=bad) as server:
        got, _ = run_batches(server, provider, tmp_path / "b.jsonl", requests)
    assert {k for k, r in got.items() if r.output is None} == bad
    assert all("max_tokens" in (got[k].error or "") for k in bad)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_batch_the_provider_rejects_gives_the_reason_and_loses_nothing(provider: str, tmp_path: Path) -> None:
    requests = requests_for(provider)
    with BatchServer(polls_to_finish=1, reject="Enqueued token limit reached for echo") as server:
        got, runner = run_batches(server, provider, tmp_path / "b.jsonl", requests)
        assert set(got) == set(requests)  # every request accounted for
        assert all(r.output is None and "Enqueued token limit reached" in (r.error or "") for r in got.values())
        assert runner.stats.batches_rejected == 1 and runner.stats.requests_rejected == len(PROMPTS)
        assert server.batches_created == 0


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_transient_server_errors_while_polling_are_retried(provider: str, tmp_path: Path) -> None:
    with BatchServer(polls_to_finish=2, fail_reads=3) as server:
        got, _ = run_batches(server, provider, tmp_path / "b.jsonl", requests_for(provider))
        assert server.fail_reads == 0 and server.batches_created == 1
    assert all(r.output is not None for r in got.values())


def test_openai_batch_that_fails_validation_is_a_rejection_with_its_reason(tmp_path: Path) -> None:
    with BatchServer(polls_to_finish=1, outcome="failed") as server:
        got, runner = run_batches(server, "openai", tmp_path / "b.jsonl", requests_for("openai"))
    assert runner.stats.batches_rejected == 1
    assert all("not supported by the Batch API" in (r.error or "") for r in got.values())


# -- through the run: config, CLI, journal, resume ------------------------------------------------


def write_config(tmp_path: Path, model: str, *, batch: bool = True, **batch_settings: Any) -> Path:
    config = {
        "data": [str(SHORT_CHATS)],
        "deployments": [{"name": "candidate", "model": model, "batch": batch, "params": {"max_tokens": 8},
                         "price_input_per_mtok": 2.0, "price_output_per_mtok": 8.0}],
        "privacy": {"mode": "off"},
        "batch": {"poll_s": 0.05, "poll_max_s": 0.2, **batch_settings},
    }
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    from deploysim.cli.main import main

    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def candidate_rows(run: Path) -> list[dict[str, Any]]:
    return [r for r in pq.read_table(run / "generations.parquet").to_pylist() if r["deployment"] == "candidate"]


@pytest.mark.parametrize("provider", ["openai", "openai-compatible", "anthropic"])
def test_cli_run_with_batch_answers_every_point_at_batch_price(provider: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with BatchServer(polls_to_finish=2) as server:
        if provider == "openai":
            model = "openai/echo"
            monkeypatch.setenv("OPENAI_API_KEY", "test")
            monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        elif provider == "anthropic":
            model = "anthropic/echo"
            monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
            monkeypatch.setenv("ANTHROPIC_BASE_URL", server.root)
        else:
            model = f"openai-compatible/echo@{server.openai_base_url}"
        config = write_config(tmp_path, model, batch=False, max_requests=5)
        out = tmp_path / "run"
        result = cli("run", "--config", str(config), "--batch", "--out", str(out), "--no-grade", "--quiet")
        assert result.exit_code == 0, result.output
        rows = candidate_rows(out)
        points = len(rows)
        assert points >= 10 and not [r for r in rows if r["error"]]
        assert all(r["text"].startswith("echo: ") for r in rows)
        assert all(r["latency_s"] > 0 for r in rows)  # submission to results, not zero
        distinct = server.requests_received
        assert server.batches_created == -(-distinct // 5)  # split at the injected limit of 5
        summary = orjson.loads((out / "summary.json").read_bytes())
        d = summary["deployments"]["candidate"]
        assert d["batch"]["batches_submitted"] == server.batches_created
        assert d["cost_usd"] == d["cost_usd_batch_price"] == pytest.approx(d["cost_usd_live_price"] / 2, abs=1e-6)
        assert d["cost_usd"] > 0
        assert "at batch price" in result.output
        assert yaml.safe_load((out / "config.yaml").read_text())["deployments"][0]["batch"] is True
        # a second run of the same calls, batched or not, pays nothing
        result = cli("run", "--config", str(config), "--batch", "--out", str(tmp_path / "again"), "--no-grade",
                     "--quiet")
        assert result.exit_code == 0, result.output
        assert server.requests_received == distinct
        assert all(r["cached"] for r in candidate_rows(tmp_path / "again"))


def test_a_batched_and_a_live_deployment_in_one_run(tmp_path: Path) -> None:
    """The executor sends the batched deployment's calls in batches and runs the other live, in one run."""
    with BatchServer(polls_to_finish=2) as server:
        config = yaml.safe_load(write_config(tmp_path, f"openai-compatible/echo@{server.openai_base_url}").read_text())
        config["deployments"].append({"name": "baseline", "model": "instant/echo", "samples": 2})
        path = tmp_path / "mixed.yaml"
        path.write_text(yaml.safe_dump(config))
        out = tmp_path / "run"
        result = cli("run", "--config", str(path), "--out", str(out), "--no-grade", "--quiet")
        assert result.exit_code == 0, result.output
        rows = pq.read_table(out / "generations.parquet").to_pylist()
        candidate = [r for r in rows if r["deployment"] == "candidate"]
        baseline = [r for r in rows if r["deployment"] == "baseline"]
        assert candidate and len(baseline) == 2 * len(candidate)
        assert not [r for r in rows if r["error"]]
        assert all(r["text"].startswith("echo: ") for r in candidate)
        assert all(r["text"].startswith("[instant fake reply") for r in baseline)
        assert server.requests_received == len({r["text"] for r in candidate})  # only the batched calls, once each
        summary = orjson.loads((out / "summary.json").read_bytes())
        assert "batch" in summary["deployments"]["candidate"] and "batch" not in summary["deployments"]["baseline"]
        assert summary["reconciles"]


def test_batch_executor_plugs_into_the_lifecycle_seam(tmp_path: Path) -> None:
    """run_workload(..., executor=BatchExecutor(...)): the lifecycle's Executor seam, no replay-specific code."""
    from deploysim.core.batching import BatchExecutor
    from deploysim.core.lifecycle import Executor, run_workload
    from deploysim.core.models.batch import BatchSettings
    from deploysim.pipeline.config import load_config
    from deploysim.pipeline.engine import ReplayWorkload

    with BatchServer(polls_to_finish=2) as server:
        config = load_config(write_config(tmp_path, f"openai-compatible/echo@{server.openai_base_url}", batch=False))
        executor = BatchExecutor({"candidate"}, BatchSettings(poll_s=0.05, max_requests=4))
        assert isinstance(executor, Executor)
        summary = run_workload(ReplayWorkload(config), tmp_path / "run", show_progress=False, executor=executor)
        assert summary["reconciles"] and summary["deployments"]["candidate"]["generations_ok"] == summary["points"]
        assert server.batches_created == -(-server.requests_received // 4)
        assert executor.stats()["candidate"]["batches_submitted"] == server.batches_created
        again = BatchExecutor({"candidate"}, BatchSettings(poll_s=0.05))
        resumed = run_workload(ReplayWorkload(config), tmp_path / "run", resume=True, show_progress=False,
                               executor=again)
        assert resumed["resumed_calls_skipped"] == summary["points"] and not again.groups  # nothing planned


@pytest.mark.parametrize("model", ["instant/echo", "local/smollm2"])
def test_batch_on_a_provider_without_a_batch_api_is_a_clear_error(model: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, model, batch=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(__import__("deploysim.cli.main", fromlist=["main"]).main,
                                ["run", "--config", str(config), "--batch", "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    assert "has no batch API" in result.output and "candidate" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing half-made


def test_batch_api_that_refuses_the_key_is_a_clear_error_with_the_resume_hint(tmp_path: Path) -> None:
    with BatchServer(unauthorized=True) as server:
        config = write_config(tmp_path, f"openai-compatible/echo@{server.openai_base_url}")
        out = tmp_path / "run"
        result = CliRunner().invoke(__import__("deploysim.cli.main", fromlist=["main"]).main,
                                    ["run", "--config", str(config), "--out", str(out), "--no-grade", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "batch API" in result.output and "HTTP 401" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output


def test_batch_rejected_in_a_run_is_counted_and_resume_sends_it_again(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with BatchServer(polls_to_finish=1, reject="Enqueued token limit reached") as server:
        config = write_config(tmp_path, f"openai-compatible/echo@{server.openai_base_url}")
        out = tmp_path / "run"
        result = cli("run", "--config", str(config), "--out", str(out), "--no-grade", "--quiet")
        assert result.exit_code == 0, result.output
        rows = candidate_rows(out)
        assert rows and all("Enqueued token limit reached" in r["error"] for r in rows)
        d = orjson.loads((out / "summary.json").read_bytes())["deployments"]["candidate"]
        assert d["batch"]["batches_rejected"] == 1 and d["batch"]["requests_rejected"] >= 1
        assert d["generations_error"] == len(rows)  # rejects are counted as errors, and reconcile
        assert "rejected" in result.output and "Enqueued token limit reached" in result.output
        server.reject = None
        result = cli("run", "--resume", str(out), "--no-grade", "--quiet")
        assert result.exit_code == 0, result.output
        assert not [r for r in candidate_rows(out) if r["error"]]
        assert server.batches_created == 1


@pytest.mark.slow
def test_sigkill_mid_poll_then_resume_reattaches_without_resubmitting(tmp_path: Path) -> None:
    with BatchServer(polls_to_finish=10**9) as server:  # in progress until the test says otherwise
        config = write_config(tmp_path, f"openai-compatible/echo@{server.openai_base_url}", max_requests=6)
        out = tmp_path / "run"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        args = [sys.executable, "-m", "deploysim.cli.main", "run", "--config", str(config), "--out", str(out),
                "--no-grade", "--quiet"]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        journal = out / "batches.jsonl"
        while time.monotonic() < deadline:
            submitted = journal.read_bytes().count(b'"submitted"') if journal.exists() else 0
            if submitted == server.batches_created > 0 and server.polls >= 3 * submitted:
                break
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached the polling stage")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        created, received = server.batches_created, server.requests_received
        assert created >= 2  # split at 6: more than one batch in flight at the kill
        server.polls_to_finish = 1  # the provider finishes them while nobody is watching
        resumed = subprocess.run([sys.executable, "-m", "deploysim.cli.main", "run", "--resume", str(out),
                                  "--no-grade", "--quiet"], env=env, capture_output=True, timeout=120)
        assert resumed.returncode == 0, resumed.stdout.decode() + resumed.stderr.decode()
        assert (server.batches_created, server.requests_received) == (created, received)  # no second submission
        rows = candidate_rows(out)
        assert rows and not [r for r in rows if r["error"]]
        summary = orjson.loads((out / "summary.json").read_bytes())
        assert summary["deployments"]["candidate"]["batch"]["batches_reattached"] == created
        assert summary["deployments"]["candidate"]["batch"]["batches_submitted"] == 0
        assert summary["reconciles"]
        assert not list((out / "batch-requests").glob("*.jsonl"))  # the spool is removed once answered
