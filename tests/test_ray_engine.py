"""The Ray engine (``--engine ray``, issue 13 item 1): same outputs as the local engine, cache, kill + resume, bad input.

One local Ray (``ray.init(num_cpus=2)``) is shared by the whole module; ``run_simulation`` sees it
already started and joins it. The OpenAI-compatible tests go through ``tests.loopback.LoopbackProxy``
in front of a real ``llama_cpp.server`` (SmolLM2), so every request is counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from deploysim.cli.main import main
from deploysim.pipeline.config import SimConfig
from deploysim import run_simulation
from tests.conftest import free_port
from tests.loopback import LoopbackProxy

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
SHORT_CHATS = FIXTURES / "short_chats.jsonl"
INPUTS = [str(FIXTURES / "sharegpt.json"), str(SHORT_CHATS), str(FIXTURES / "openai_chat.jsonl")]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def config(engine: str, cache: Path, deployments: list[dict[str, Any]], **extra: Any) -> SimConfig:
    return SimConfig(data=extra.pop("data", INPUTS), engine=engine, deployments=deployments, cache_path=str(cache),
                     **extra)


def rows(run: Path, name: str) -> list[str]:
    """The file's rows as sorted JSON, less what differs between any two runs (latency)."""
    table = pq.read_table(run / name).to_pylist()
    return sorted(json.dumps({k: v for k, v in r.items() if k != "latency_s"}, sort_keys=True, default=str)
                  for r in table)


COUNTS = ("records_read", "records_accepted", "records_rejected", "records_sampled", "points", "reconciles",
          "rejects_by_reason", "inputs_skipped", "logged")


def same_runs(local: Path, on_ray: Path) -> None:
    for name in ("points.parquet", "generations.parquet"):
        assert rows(local, name) == rows(on_ray, name), name
    a, b = (json.loads((run / "summary.json").read_text()) for run in (local, on_ray))
    assert {k: a[k] for k in COUNTS} == {k: b[k] for k in COUNTS}
    assert b["engine"] == "ray" and b["reconciles"]
    for name, deployment in a["deployments"].items():
        mine = b["deployments"][name]
        for key in ("expected", "generations_ok", "generations_error", "completion_tokens", "this_attempt"):
            assert deployment[key] == mine[key], (name, key)
    assert sorted((local / "rejects.jsonl").read_text().splitlines()) == \
        sorted((on_ray / "rejects.jsonl").read_text().splitlines())


INSTANT = [{"name": "baseline", "model": "instant/base"},
           {"name": "candidate", "model": "instant/echo", "samples": 2, "params": {"seed": 7}}]


def with_rejects(tmp_path: Path) -> list[str]:
    """The inputs plus a file with a line that is not JSON and a record with no assistant turn to replay."""
    bad = tmp_path / "bad.jsonl"
    lines = SHORT_CHATS.read_text().splitlines()[:3]
    bad.write_text("\n".join([lines[0], "{not json", json.dumps({"id": "q", "messages": [
        {"role": "system", "content": "only a system prompt"}]}), *lines[1:]]) + "\n")
    return [*INPUTS, str(bad)]


@pytest.mark.parametrize("sample", [None, 5])
def test_same_outputs_as_local_engine_with_the_instant_model(tmp_path: Path, sample: int | None) -> None:
    extra = {"sample": sample, "turn": "all", "graders": ["refusal"], "data": with_rejects(tmp_path)}
    local = run_simulation(config("local", tmp_path / "a.sqlite", INSTANT, **extra), tmp_path / "local",
                           show_progress=False)
    on_ray = run_simulation(config("ray", tmp_path / "b.sqlite", INSTANT, **extra), tmp_path / "ray",
                            show_progress=False)
    assert on_ray["points"] == local["points"] > 0
    assert on_ray["records_rejected"] >= (2 if sample is None else 1)  # both kinds of reject, counted alike
    same_runs(tmp_path / "local", tmp_path / "ray")
    graded = [{k: v for k, v in run["behaviours"].items() if k not in ("duration_s", "verdicts_this_attempt")}
              for run in (local, on_ray)]
    assert graded[0] == graded[1]  # graded the same: stats, report and gate read it alike
    assert rows(tmp_path / "local", "verdicts.parquet") == rows(tmp_path / "ray", "verdicts.parquet")
    # graded in the stream (a map_batches stage): the closing grade_run found every verdict journaled
    assert on_ray["behaviours"]["verdicts_this_attempt"] == 0 < local["behaviours"]["verdicts_this_attempt"]


def test_call_cache_is_shared_with_the_local_engine(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    deployments = [{"name": "candidate", "model": "instant/echo"}]
    run_simulation(config("local", cache, deployments), tmp_path / "local", show_progress=False)
    again = run_simulation(config("ray", cache, deployments), tmp_path / "ray", show_progress=False)
    candidate = again["deployments"]["candidate"]
    assert candidate["served_from_cache"] == candidate["expected"] == again["points"] > 0
    assert candidate["this_attempt"]["calls_sent"] == 0


@pytest.mark.model
def test_openai_compatible_server_same_outputs_cache_and_failures(llama_server: str, tmp_path: Path) -> None:
    always_fails = "what is the best crm for gmail?"

    def rule(body: dict, attempt: int) -> str | None:
        prompt = body["messages"][-1]["content"]
        if prompt == always_fails:
            return "500"
        return ("429", "broken_json", None)[sum(map(ord, prompt)) % 3] if attempt == 1 else None

    def deployments(url: str) -> list[dict[str, Any]]:
        return [{"name": "candidate", "model": f"openai-compatible/smollm2@{url}", "max_retries": 2,
                 "params": {"max_tokens": 8, "temperature": 0}, "concurrency": 2}]

    extra = {"data": [str(SHORT_CHATS)], "sample": 6}
    with LoopbackProxy(llama_server) as proxy:
        run_simulation(config("local", tmp_path / "a.sqlite", deployments(proxy.base_url), **extra),
                       tmp_path / "local", show_progress=False)
    with LoopbackProxy(llama_server, rule=rule) as proxy:
        first = run_simulation(config("ray", tmp_path / "b.sqlite", deployments(proxy.base_url), **extra),
                               tmp_path / "ray", show_progress=False)
        outcomes = proxy.log.outcomes()
        again = run_simulation(config("ray", tmp_path / "b.sqlite", deployments(proxy.base_url), **extra),
                               tmp_path / "ray2", show_progress=False)
        assert proxy.log.outcomes() - outcomes == {"500": 3}  # only the failed call is tried again (3 attempts)
    assert first["reconciles"] and again["reconciles"]
    candidate = first["deployments"]["candidate"]
    assert candidate["generations_error"] == 1 and candidate["errors_by_message"] == {"HTTP 500 from provider": 1}
    assert candidate["generations_ok"] == 5 and candidate["this_attempt"]["retries"] >= 3
    assert outcomes["ok"] == 5 and outcomes["500"] == 3  # the first attempt + max_retries, then an error row
    texts = {r["point_id"]: r["text"] for r in pq.read_table(tmp_path / "ray" / "generations.parquet").to_pylist()
             if r["deployment"] == "candidate" and not r["error"]}
    local = {r["point_id"]: r["text"] for r in pq.read_table(tmp_path / "local" / "generations.parquet").to_pylist()
             if r["deployment"] == "candidate"}
    assert len(texts) == 5 and all(texts[p] == local[p] for p in texts)  # the same real model text
    assert again["deployments"]["candidate"]["served_from_cache"] == 5


def deploysim(*args: str, cache: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DEPLOYSIM_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "deploysim.cli.main", *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.model
def test_killed_ray_run_resumes_without_paying_twice(llama_server: str, tmp_path: Path) -> None:
    with LoopbackProxy(llama_server) as proxy:
        model = f"openai-compatible/smollm2@{proxy.base_url}"
        run = tmp_path / "killed"
        victim = deploysim("run", "--engine", "ray", "--data", str(SHORT_CHATS), "--candidate", model,
                           "--max-tokens", "12", "--concurrency", "2", "--out", str(run), "--quiet", "--no-grade",
                           cache=tmp_path / "cache")
        deadline = time.time() + 300
        while sum(proxy.log.forwarded_prompts().values()) < 5 and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(victim.pid, signal.SIGKILL)  # the driver and the local Ray it started
        victim.wait(timeout=30)
        assert not (run / "summary.json").exists()  # it really died mid-way
        before_kill = proxy.log.forwarded_prompts()
        assert 5 <= sum(before_kill.values()) < 16

        resumed = deploysim("run", "--resume", str(run), "--quiet", cache=tmp_path / "cache")
        output = resumed.communicate(timeout=300)[0].decode()
        assert resumed.returncode == 0, output
        after_resume = proxy.log.forwarded_prompts() - before_kill
    everything = before_kill + after_resume
    assert set(everything) and len(everything) == 16  # every prompt answered
    paid_twice = {p for p, n in everything.items() if n > 1}
    assert len(paid_twice) <= 2, paid_twice  # at most the calls in flight at the kill (the stage's 2 actors)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["reconciles"] and summary["deployments"]["candidate"]["generations_ok"] == 16
    served = summary["deployments"]["candidate"]["this_attempt"]
    assert summary["resumed_calls_skipped"] + served["cache_hits"] >= sum(before_kill.values()) - len(paid_twice)


def test_unreachable_cluster_address_is_a_clear_error_within_30s(tmp_path: Path) -> None:
    started = time.time()
    result = CliRunner().invoke(main, ["run", "--data", str(SHORT_CHATS), "--candidate", "instant/echo",
                                       "--ray-address", f"127.0.0.1:{free_port()}", "--out", str(tmp_path / "r")])
    assert time.time() - started < 30
    assert result.exit_code == 2, result.output
    assert "Ray cluster at 127.0.0.1" in result.output and "does not answer" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_engine_ray_without_the_extra_gives_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    result = CliRunner().invoke(main, ["run", "--data", str(SHORT_CHATS), "--candidate", "instant/echo",
                                       "--engine", "ray", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "pip install 'deploysim[ray]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_ray_address_with_engine_local_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--data", str(SHORT_CHATS), "--candidate", "instant/echo",
                                       "--engine", "local", "--ray-address", "127.0.0.1:6379",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "cannot go with --engine local" in result.output
    assert not (tmp_path / "r").exists()


def test_batch_api_with_engine_ray_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--data", str(SHORT_CHATS), "--candidate",
                                       "openai-compatible/m@http://127.0.0.1:9/v1", "--batch", "--engine", "ray",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "batch API" in result.output and "drop --engine ray" in result.output
    assert not (tmp_path / "r").exists()
