"""The run directory's owner and the run lifecycle: manifests, migration, refusal, the judge's cache.

``tests/fixtures/runs`` holds directories written before manifests existed (run schema 1,
see its README): they must open, migrated, and resume; a directory written by a newer
schema must be refused with a clear message (exit 2), never misread.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploysim import run_simulation
from deploysim.cli.main import main
from deploysim.core.models import ModelOutput, model_provider
from deploysim.core.schema import SCHEMA_VERSION, GenerationParams, Message, Usage
from deploysim.core.store import (
    GENERATIONS,
    POINTS,
    RunDirError,
    RunVersionError,
    read_config,
    read_generations,
    read_manifest,
    read_points,
    read_verdicts,
)
from deploysim.pipeline.config import SimConfig
from deploysim.pipeline.engine import ReplayWorkload

FIXTURES = Path(__file__).parent / "fixtures"


def old_run(tmp_path: Path, name: str) -> Path:
    """A copy of a schema-1 fixture with its input paths pointing at this checkout's fixtures."""
    root = tmp_path / name
    shutil.copytree(FIXTURES / "runs" / name, root)
    for config in root.glob("config.*"):
        config.write_text(config.read_text().replace("FIXTURES_DIR", str(FIXTURES)))
    return root


def test_tables_are_derived_from_the_models_and_round_trip() -> None:
    assert GENERATIONS.schema.names[:5] == ["schema_version", "point_id", "deployment", "sample_index", "text"]
    assert {"tool_calls_json", "prompt_tokens", "completion_tokens"} <= set(GENERATIONS.schema.names)
    assert {"prefix_json", "original_json", "tools_json", "metadata_json", "weight"} <= set(POINTS.schema.names)
    point = next(read_points(FIXTURES / "runs" / "v1-chat"))
    assert POINTS.parse(POINTS.row(point)) == point


def test_a_chat_run_from_before_manifests_opens_migrated_and_resumes(tmp_path: Path) -> None:
    root = old_run(tmp_path, "v1-chat")
    manifest = read_manifest(root)
    assert (manifest.kind, manifest.schema_version, manifest.migrated_from) == ("chat", SCHEMA_VERSION, 1)
    assert not (root / "manifest.json").exists()  # reading does not write
    points, generations, verdicts = list(read_points(root)), list(read_generations(root)), list(read_verdicts(root))
    assert len(points) == 3 and {p.record_id for p in points} == {"chat-001", "chat-002", "chat-003"}
    assert len(generations) == 6 and {g.deployment for g in generations} == {"candidate", "logged"}
    assert all(g.text and g.text.startswith("[instant fake reply") for g in generations if g.deployment == "candidate")
    assert len(verdicts) == 12 and {v.grader for v in verdicts} == {"refusal", "verbosity"}
    before = json.loads((root / "summary.json").read_text())
    result = CliRunner().invoke(main, ["run", "--resume", str(root), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((root / "summary.json").read_text())
    assert summary["resumed_calls_skipped"] == 3 and summary["reconciles"]  # nothing asked twice
    assert summary["behaviours"]["verdicts_this_attempt"] == 0
    assert summary["behaviours"]["rates"] == before["behaviours"]["rates"]
    written = json.loads((root / "manifest.json").read_text())
    assert written["kind"] == "chat" and written["schema_version"] == SCHEMA_VERSION and written["migrated_from"] == 1


def test_an_agent_run_from_before_manifests_resumes_with_config_yaml(tmp_path: Path) -> None:
    from deploysim.agents.run import AgentRunConfig, run_agents

    root = old_run(tmp_path, "v1-agents")
    assert read_manifest(root).kind == "agents"
    assert read_config(root)["candidate"] == "instant/echo"  # read from the old config.json
    before = json.loads((root / "summary.json").read_text())
    summary = run_agents(AgentRunConfig(data=[], candidate="ignored"), root, resume=True)
    assert summary["episodes_skipped_on_resume"] == 2 and summary["reconciled"]
    assert summary["verdicts"] == before["verdicts"] and summary["behaviour_rates"] == before["behaviour_rates"]
    assert (root / "config.yaml").is_file() and not (root / "config.json").exists()
    assert json.loads((root / "manifest.json").read_text())["kind"] == "agents"


def test_a_run_from_a_newer_schema_is_refused_never_misread(tmp_path: Path) -> None:
    root = old_run(tmp_path, "v1-chat")
    (root / "manifest.json").write_text(json.dumps({"kind": "chat", "schema_version": SCHEMA_VERSION + 1}))
    for read in (read_points, read_generations, read_verdicts, read_config):
        with pytest.raises(RunVersionError, match="newer deploysim"):
            list(read(root))  # type: ignore[call-overload]
    for args in (["run", "--resume", str(root)], ["report", str(root), "--out", str(tmp_path / "r.html")],
                 ["grade", str(root), "--quiet"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert "newer deploysim" in result.output.replace("\n", " ")
        assert "Traceback" not in result.output


class CountingJudge:
    """FAKE judge (named as such): always the same valid verdict; counts the requests it gets."""

    calls = 0

    def __init__(self, name: str) -> None:
        self.model_id = f"rundir-judge/{name}"

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": "rundir-judge", "model": self.model_id, "base_url": None}

    async def generate(self, messages: list[Message], params: GenerationParams, tools: list) -> ModelOutput:
        CountingJudge.calls += 1
        return ModelOutput(text='{"rationale": "fine", "flagged": false, "score": 0.1}', finish_reason="stop",
                           usage=Usage())

    async def aclose(self) -> None:
        return None


model_provider("rundir-judge", "FAKE counting judge for tests")(CountingJudge)


def _judged(tmp_path: Path, out: str, cache: bool) -> dict[str, Any]:
    graders = tmp_path / "graders.yaml"
    graders.write_text("graders:\n- name: judge\n  params: {behaviours: [over_refusal]}\n")
    config = SimConfig(data=[str(FIXTURES / "sources" / "openai_chat.jsonl")], privacy={"mode": "off"},
                       deployments=[{"name": "candidate", "model": "instant/echo"}], cache=cache,
                       cache_path=str(tmp_path / "calls.sqlite"),
                       graders=[str(graders)], judge="rundir-judge/x")
    return run_simulation(config, tmp_path / out, show_progress=False)


def _cached_judge_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM calls").fetchone()[0]


def test_the_judge_honours_no_cache(tmp_path: Path) -> None:
    """--no-cache holds for the judge's calls: nothing written to the run's cache, every verdict asked again."""
    CountingJudge.calls = 0
    first = _judged(tmp_path, "a", cache=False)
    replies = first["behaviours"]["replies_graded"]
    assert replies == 6 and CountingJudge.calls == replies  # candidate and logged, 3 points each
    _judged(tmp_path, "b", cache=False)
    assert CountingJudge.calls == 2 * replies  # re-called: no cache read
    assert _cached_judge_rows(tmp_path / "calls.sqlite") == 0  # and none written
    # with the cache, the run's cache_path holds for the judge: a second run asks nothing
    _judged(tmp_path, "c", cache=True)
    assert CountingJudge.calls == 3 * replies and _cached_judge_rows(tmp_path / "calls.sqlite") == 2 * 3 + 3
    _judged(tmp_path, "d", cache=True)
    assert CountingJudge.calls == 3 * replies
    # standalone grading follows the run's setting, or --no-cache
    result = CliRunner().invoke(main, ["grade", str(tmp_path / "a"), "--graders", str(tmp_path / "graders.yaml"),
                                       "--judge", "rundir-judge/y", "--quiet"])
    assert result.exit_code == 0, result.output
    assert CountingJudge.calls == 4 * replies and _cached_judge_rows(tmp_path / "calls.sqlite") == 2 * 3 + 3


def test_a_new_workload_plugs_in_and_resumes_without_redoing_finished_items(tmp_path: Path) -> None:
    """The lifecycle does the rest: config snapshot, manifest, journal, resume, summary, exit code."""
    from pydantic import BaseModel

    from deploysim.core.lifecycle import Executed, Run, Workload, exit_code, run_workload

    class Config(BaseModel):
        n: int
        cache: bool = False

    seen: list[int] = []

    class Squares(Workload[Config, int]):
        kind = "squares"
        fail_on: set[int] = {3}

        def items(self, run: Run) -> Any:
            return ((str(i), i) for i in range(self.config.n))

        def concurrency(self) -> int:
            return 4

        async def process(self, item: int, run: Run) -> dict[str, Any]:
            seen.append(item)
            if item in self.fail_on:
                return {"key": str(item), "error": "flaky"}
            return {"key": str(item), "square": item * item, "error": None}

        def summarise(self, run: Run, executed: Executed) -> dict[str, Any]:
            ok = [r for r in executed.rows.values() if r["error"] is None]
            return {"squares": sorted(r["square"] for r in ok), "skipped": executed.skipped,
                    "reconciles": len(ok) == executed.wanted}

    out = tmp_path / "run"
    first = run_workload(Squares(Config(n=6)), out)
    assert first["squares"] == [0, 1, 4, 16, 25] and exit_code(first) == 1 and sorted(seen) == list(range(6))
    assert json.loads((out / "manifest.json").read_text())["kind"] == "squares"
    assert "n: 6" in (out / "config.yaml").read_text()
    seen.clear()
    Squares.fail_on = set()
    again = run_workload(Squares(Config(n=6)), out, resume=True)
    assert seen == [3] and again["skipped"] == 5 and again["squares"] == [0, 1, 4, 9, 16, 25]
    assert exit_code(again) == 0 and again["kind"] == "squares" and again["status"] == "complete"
    with pytest.raises(RunDirError, match="already holds a run"):
        run_workload(Squares(Config(n=6)), out)
    with pytest.raises(RunDirError, match="not a chat run"):
        run_workload(ReplayWorkload(SimConfig(data=[], deployments=[{"name": "c", "model": "instant/echo"}])),
                     out, resume=True)


class BatchExecutor:
    """A test executor in the shape of a provider-batch one: it takes each item's ``call``, sends the
    calls in batches (here: concurrently, through the call's model) and hands answers to ``finish``."""

    def __init__(self, batch: int = 4) -> None:
        self.batch = batch
        self.sent = 0

    async def execute(self, workload: Any, run: Any) -> Any:
        import asyncio

        done, wanted, skipped, pending = workload.done(run), set(), 0, []

        async def send(items: list[tuple[str, Any]]) -> None:
            calls = [workload.call(item, run) for _, item in items]
            answers = await asyncio.gather(*(c.model.generate(c.messages, c.params, c.tools, c.sample, id=c.id)
                                             for c in calls))
            self.sent += len(calls)
            for (key, item), generation in zip(items, answers, strict=True):
                workload.record(key, workload.finish(item, generation, run), run)

        for key, item in workload.items(run):
            wanted.add(key)
            if key in done:
                skipped += 1
                continue
            pending.append((key, item))
            if len(pending) == self.batch:
                await send(pending)
                pending = []
        if pending:
            await send(pending)
        return workload.executed(run, wanted, skipped)


def test_the_replay_workload_runs_under_another_executor_with_the_same_result(tmp_path: Path) -> None:
    """The executor seam: run_workload(..., executor=) runs the replay's calls its own way; rows,
    counts, summary and resume are the lifecycle's, identical to the built-in queue executor's."""
    from deploysim.core.lifecycle import Executor, LocalExecutor, run_workload

    def config() -> SimConfig:
        return SimConfig(data=[str(FIXTURES / "sources" / "sharegpt.json"),
                               str(FIXTURES / "sources" / "openai_chat.jsonl")],
                         deployments=[{"name": "a", "model": "instant/echo", "samples": 2},
                                      {"name": "b", "model": "instant/echo"}], cache=False)

    def texts(root: Path) -> dict[tuple[str, str, int], str | None]:
        return {(g.point_id, g.deployment, g.sample_index): g.text for g in read_generations(root)}

    builtin = run_workload(ReplayWorkload(config()), tmp_path / "builtin", show_progress=False)
    batch = BatchExecutor()
    assert isinstance(batch, Executor)
    other = run_workload(ReplayWorkload(config()), tmp_path / "batch", show_progress=False, executor=batch)
    local = run_workload(ReplayWorkload(config()), tmp_path / "local", show_progress=False, executor=LocalExecutor())
    points = builtin["points"]
    assert points > 3 and batch.sent == points * 3
    for summary in (other, local):
        assert summary["reconciles"] and summary["points"] == points
        assert summary["deployments"]["a"]["generations_ok"] == 2 * points
    assert texts(tmp_path / "batch") == texts(tmp_path / "builtin") == texts(tmp_path / "local")
    assert len(texts(tmp_path / "builtin")) == points * 4  # a (2 samples), b and the logged replies
    # resume under the other executor: nothing finished is sent again
    again = BatchExecutor()
    resumed = run_workload(ReplayWorkload(config()), tmp_path / "batch", resume=True, show_progress=False,
                           executor=again)
    assert again.sent == 0 and resumed["reconciles"] and resumed["resumed_calls_skipped"] == points * 3
