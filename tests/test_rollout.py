"""Rollout: every assistant turn regenerated in order, conditioned on the deployment's own turns;
logged or simulated users; openai-format output with provenance; resume; counts reconcile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from deploysim.cli.main import main
from deploysim.core.models.instant import InstantFakeModel
from deploysim.core.schema import Record
from deploysim.pipeline.config import validate_config
from deploysim.pipeline.rollout import (
    END_TOKEN,
    USER_SIMULATOR_PROMPT,
    clean_user_turn,
    cut_user_turns,
    read_rollout,
    run_rollout,
)
from deploysim.pipeline.sources import iter_inputs

FIXTURE = Path(__file__).parent / "fixtures" / "sources" / "short_chats.jsonl"
PRIVACY = {"mode": "surrogate", "presidio": False}


def _conversations(path: Path, turns: list[list[str]]) -> Path:
    """Logged conversations: alternating user/assistant texts."""
    with open(path, "wb") as handle:
        for i, texts in enumerate(turns):
            messages = [{"role": "user" if j % 2 == 0 else "assistant", "content": t} for j, t in enumerate(texts)]
            handle.write(orjson.dumps({"id": f"c{i}", "messages": messages}) + b"\n")
    return path


def _config(data: Path, model: str = "instant/echo", **extra: Any) -> Any:
    return validate_config({"data": [str(data)], "privacy": PRIVACY,
                            "deployments": [{"name": "cand", "model": model, "system_prompt": "replace",
                                             "system_prompt_text": "Be brief.",
                                             "params": {"max_tokens": 32}}], **extra})


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Every prompt the instant model is sent (a spy on the real harness model, not a fake)."""
    calls: list[list[Any]] = []
    original = InstantFakeModel.generate

    async def recording(self: InstantFakeModel, messages: list, params: Any, tools: list) -> Any:
        calls.append([self.model_id, messages])
        return await original(self, messages, params, tools)

    monkeypatch.setattr(InstantFakeModel, "generate", recording)
    return calls


def test_logged_users_every_turn_regenerated_and_conditioned(tmp_path: Path, spy: list) -> None:
    data = _conversations(tmp_path / "in.jsonl", [["hello", "LOGGED-A1", "and then?", "LOGGED-A2", "bye", "LOGGED-A3"],
                                                  ["one question", "LOGGED-B1"]])
    summary = run_rollout(_config(data, cache=False), tmp_path / "out")
    assert summary["reconciled"] and summary["conversations_written"] == 2 and summary["assistant_turns"] == 4
    rows = {r["id"]: r for r in read_rollout(tmp_path / "out" / "rollout.jsonl")}
    first = rows["c0"]["messages"]
    # the deployment's system prompt is applied to every call (summary.json records it), not logged as a turn
    assert [m["role"] for m in first] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in first if m["role"] == "user"] == ["hello", "and then?", "bye"]  # verbatim
    assert not any("LOGGED" in m["content"] for m in first)  # every assistant turn is the deployment's
    assert rows["c0"]["metadata"]["provenance"] == ["logged", "deployment:cand", "logged",
                                                    "deployment:cand", "logged", "deployment:cand"]
    # conditioning: the third call for c0 saw the deployment's own two earlier replies, not the logged ones
    prompts = [messages for _, messages in spy if messages[1].content == "hello"]
    assert len(prompts) == 3
    last = prompts[-1]
    assert [m.content for m in last if m.role == "assistant"] == [first[1]["content"], first[3]["content"]]
    assert last[0].content == "Be brief."


def test_output_is_a_source_with_provenance(tmp_path: Path) -> None:
    run_rollout(_config(FIXTURE), tmp_path / "out", max_user_turns=2)
    records = [r for r in iter_inputs([tmp_path / "out" / "rollout.jsonl"]) if isinstance(r, Record)]
    assert records and all(len(r.metadata["provenance"]) == len(r.messages) for r in records)
    assert all(sum(m.role == "user" for m in r.messages) <= 2 for r in records)
    assert all(r.metadata["rollout_users"] == "logged" for r in records)
    assert all("sampling_weight" not in r.metadata for r in records)


def test_simulated_users_follow_the_logged_intent(tmp_path: Path, spy: list) -> None:
    data = _conversations(tmp_path / "in.jsonl", [["hello", "A1", "INTENT: ask about trains", "A2"]])
    summary = run_rollout(_config(data, cache=False), tmp_path / "out", users="instant/user")
    assert summary["reconciled"] and summary["simulated_user_turns"] == 1 and summary["logged_user_turns"] == 1
    assert summary["user_simulator_prompt"] == USER_SIMULATOR_PROMPT
    row = read_rollout(tmp_path / "out" / "rollout.jsonl")[0]
    assert row["metadata"]["provenance"] == ["logged", "deployment:cand", "simulator:instant/user",
                                             "deployment:cand"]
    simulated = row["messages"][2]["content"]
    assert simulated != "INTENT: ask about trains" and simulated.startswith("[instant fake reply")
    simulator_calls = [messages for model, messages in spy if model == "instant/user"]
    assert len(simulator_calls) == 1
    system, transcript = simulator_calls[0]
    assert "INTENT: ask about trains" in system.content  # the original next turn is the intent
    assert row["messages"][1]["content"] in transcript.content  # it reacts to this deployment's reply


def test_simulator_text_cleaning_and_cuts() -> None:
    assert clean_user_turn(END_TOKEN) is None
    assert clean_user_turn(" [END] thanks") is None
    assert clean_user_turn("") is None
    assert clean_user_turn("USER: what about trains?\n\nYour next message:") == "what about trains?"
    from deploysim.core.schema import Message

    messages = [Message(role="user", content="a"), Message(role="assistant", content="b"),
                Message(role="user", content="c"), Message(role="assistant", content="d")]
    assert [m.content for m in cut_user_turns(messages, 1)] == ["a", "b"]
    assert cut_user_turns(messages, None) == messages


def test_resume_finishes_and_costs_nothing_twice(tmp_path: Path) -> None:
    config = _config(FIXTURE)
    out = tmp_path / "out"
    full = run_rollout(config, out)
    lines = (out / "rollout.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) >= 4
    (out / "rollout.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][:10])  # killed mid-line
    resumed = run_rollout(config, out, resume=True)
    assert resumed["reconciled"]
    assert resumed["conversations_skipped_done"] == 2
    assert resumed["conversations_written"] == full["conversations_written"] - 2
    assert resumed["calls"]["deployment"]["calls"] == 0  # every call was a cache hit
    assert len(read_rollout(out / "rollout.jsonl")) == full["conversations_written"]


def test_rejects_are_counted(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(FIXTURE.read_bytes() + b"not json\n" + b'{"messages": [{"role": "assistant", "content": "x"}]}\n')
    summary = run_rollout(_config(data), tmp_path / "out")
    assert summary["records_rejected"] == 2 and summary["reconciled"]
    assert len((tmp_path / "out" / "rejects.jsonl").read_text().splitlines()) == 2


def test_rollout_cli(tmp_path: Path) -> None:
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(main, ["rollout", "--data", str(FIXTURE), "--model", "instant/echo", "--no-presidio",
                                  "--max-user-turns", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "reconciled: True" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_user_turns"] == 1
    again = runner.invoke(main, ["rollout", "--data", str(FIXTURE), "--model", "instant/echo", "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(main, ["rollout", "--resume", str(out)])
    assert resumed.exit_code == 0 and json.loads((out / "summary.json").read_text())["max_user_turns"] == 1
    missing = runner.invoke(main, ["rollout", "--data", str(tmp_path / "nope.jsonl"), "--model", "instant/echo",
                                   "--out", str(tmp_path / "o2")])
    assert missing.exit_code == 2 and "nope.jsonl" in missing.output and "Traceback" not in missing.output


@pytest.mark.slow
def test_rollout_against_a_real_server_with_a_simulated_user(llama_server: str, tmp_path: Path) -> None:
    model = f"openai-compatible/smollm2@{llama_server}"
    data = _conversations(tmp_path / "in.jsonl", [["What is the capital of France?", "Paris.",
                                                   "And of Italy?", "Rome."]])
    config = _config(data, model=model)
    summary = run_rollout(config, tmp_path / "out", users=model)
    assert summary["reconciled"] and summary["conversations_errored"] == 0
    row = read_rollout(tmp_path / "out" / "rollout.jsonl")[0]
    assert row["metadata"]["provenance"][:2] == ["logged", "deployment:cand"]
    assert summary["assistant_turns"] >= 1 and summary["calls"]["deployment"]["calls"] >= 1
    again = run_rollout(config, tmp_path / "again", users=model)
    assert again["calls"]["deployment"]["calls"] == 0  # a rerun is served by the cache
    assert read_rollout(tmp_path / "again" / "rollout.jsonl")[0]["messages"] == row["messages"]
