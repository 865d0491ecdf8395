"""Rule 4: a run killed with SIGKILL mid-way resumes to the same outputs without resending finished calls."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from deploysim.core.store import read_points
from tests.loopback import LoopbackProxy

pytestmark = [pytest.mark.slow, pytest.mark.model]

SHORT_CHATS = Path(__file__).parent / "fixtures" / "sources" / "short_chats.jsonl"


def deploysim(*args: str, cache: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DEPLOYSIM_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "deploysim.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run_args(model: str, out: Path) -> list[str]:
    return ["run", "--data", str(SHORT_CHATS), "--candidate", model, "--max-tokens", "12",
            "--concurrency", "2", "--out", str(out), "--quiet"]


def generations(run: Path) -> dict[tuple[str, str], str | None]:
    rows = pq.read_table(run / "generations.parquet").to_pylist()
    assert not [r for r in rows if r["error"]]
    return {(r["point_id"], r["deployment"]): r["text"] for r in rows}


def journaled_prompts(run: Path, reference: Path) -> set[str]:
    """Last user message of every point whose candidate call was journaled before the kill.

    Point ids are a function of the input, so the finished reference run maps them to prompts.
    """
    journal = (run / "journal" / "generations.jsonl").read_bytes().splitlines()
    done = {orjson.loads(line)["point_id"] for line in journal
            if line.endswith(b"}") and orjson.loads(line)["deployment"] == "candidate"}
    return {p.prefix[-1].content for p in read_points(reference) if p.point_id in done}  # type: ignore[misc]


def test_sigkill_then_resume_equals_uninterrupted_run(llama_server: str, tmp_path: Path) -> None:
    with LoopbackProxy(llama_server) as reference_proxy:
        model = f"openai-compatible/smollm2@{reference_proxy.base_url}"
        reference = deploysim(*run_args(model, tmp_path / "reference"), cache=tmp_path / "cache-ref")
        assert reference.wait(timeout=300) == 0, reference.stdout.read().decode()  # type: ignore[union-attr]

    with LoopbackProxy(llama_server) as proxy:
        model = f"openai-compatible/smollm2@{proxy.base_url}"
        run = tmp_path / "killed"
        victim = deploysim(*run_args(model, run), cache=tmp_path / "cache")
        deadline = time.time() + 300
        while sum(proxy.log.forwarded_prompts().values()) < 6 and time.time() < deadline:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        assert not (run / "summary.json").exists()  # it really died mid-way
        before_kill = proxy.log.forwarded_prompts()
        finished = journaled_prompts(run, tmp_path / "reference")
        assert 4 <= len(finished) < 16

        resumed = deploysim("run", "--resume", str(run), "--quiet", cache=tmp_path / "cache")
        output = resumed.communicate(timeout=300)[0].decode()
        assert resumed.returncode == 0, output
        after_resume = proxy.log.forwarded_prompts() - before_kill

    # no call that had completed was sent again
    assert not finished & set(after_resume), finished & set(after_resume)
    # every prompt was forwarded at most once across both processes, but for the one(s) in flight at the kill
    everything = before_kill + after_resume
    in_flight = {p for p, n in everything.items() if n > 1}
    assert len(in_flight) <= 2 and not in_flight & finished
    assert generations(run) == generations(tmp_path / "reference")
    summary = orjson.loads((run / "summary.json").read_bytes())
    assert summary["reconciles"] and summary["resumed_calls_skipped"] == len(finished)
