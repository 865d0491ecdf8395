"""Agent replay: prompt tool format, episodes, the resumable ``agents run`` and the agent graders."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from deploysim.agents.graders import (
    AgentTurn,
    claims_uncalled,
    destructive_or_out_of_scope,
    loops_or_gives_up,
    unconfirmed_writes,
)
from deploysim.agents.toolformat import PromptToolClient, parse_tool_calls, render_messages
from deploysim.core.models import ModelOutput, model_provider
from deploysim.core.schema import GenerationParams, Message, ToolCall
from deploysim.agents.toolsim import ToolPolicy

FIX = Path(__file__).parent / "fixtures" / "agents"
DATA = str(FIX / "tau_trajectories.json.gz")
CONNECTORS = str(FIX / "tau_airline_connectors.yaml")
TOOLS = json.loads((FIX / "tools.json").read_text())
CALLS: list[str] = []


class Scripted:
    """A fake agent: first a logged-looking call (replayable for task1), then one unknown read, then hands back."""

    def __init__(self, name: str) -> None:
        self.model_id = f"scripted/{name}"
        self.name = name

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": "scripted", "model": self.name}

    async def generate(self, messages: list[Message], params: GenerationParams, tools: list) -> ModelOutput:
        CALLS.append(self.name)
        if self.name == "sim":
            return ModelOutput(text='```json\n{"simulated": "yes"}\n```', finish_reason="stop")
        responses = sum(1 for m in messages if m.role == "user" and m.text().startswith("<tool_response"))
        if self.name == "broken" and responses == 0:
            return ModelOutput(text='<tool_call>{"name": "search_onestop_flight", "arguments": {"origin": "JFK"}}',
                               finish_reason="stop")
        if responses == 0:
            return ModelOutput(text='<tool_call>{"name": "get_user_details", "arguments": '
                                    '{"user_id": "olivia_gonzalez_2305"}}', finish_reason="stop")
        if responses == 1:
            return ModelOutput(text='<tool_call>{"name": "search_onestop_flight", "arguments": '
                                    '{"origin": "JFK", "destination": "SEA", "date": "2024-05-20"}}',
                               finish_reason="stop")
        return ModelOutput(text="I have cancelled your reservation.", finish_reason="stop")

    async def aclose(self) -> None:
        return None


model_provider("scripted", "FAKE scripted agent for tests")(Scripted)


# -- prompt tool format -------------------------------------------------------------------------


def test_parse_tool_calls_is_strict() -> None:
    text, calls = parse_tool_calls('ok <tool_call>{"name": "get_user_details", "arguments": {"user_id": "x"}}'
                                   '</tool_call>', TOOLS)
    assert text == "ok" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_user_details",
                                                                                    {"user_id": "x"})]
    for bad in ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',  # not a given tool
                '<tool_call>{"name": "get_user_details", "arguments": "x"}</tool_call>',  # not an object
                '<tool_call>{name: get_user_details}</tool_call>', "no call here"):
        text, calls = parse_tool_calls(bad, TOOLS)
        assert calls == [] and text == bad
    # cut by the stop sequence: the closing tag is missing
    assert parse_tool_calls('<tool_call>{"name": "think", "arguments": {"thought": "t"}}', TOOLS)[1][0].name == "think"


def test_prompt_client_renders_tools_first_and_history_as_text() -> None:
    messages = [Message(role="system", content="POLICY"), Message(role="user", content="hi"),
                Message(role="assistant", tool_calls=[ToolCall(id="a", name="think", arguments='{"thought":"x"}')]),
                Message(role="tool", tool_call_id="a", name="think", content="")]
    rendered = render_messages(messages, TOOLS)
    assert rendered[0].text().startswith("You can call these tools") and rendered[0].text().endswith("POLICY")
    assert "get_user_details(user_id: string)" in rendered[0].text()
    assert "<tool_call>" in rendered[2].text() and rendered[3].role == "user"
    client = PromptToolClient(Scripted("agent"))
    out = asyncio.run(client.generate(messages[:2], GenerationParams(), TOOLS))
    assert out.tool_calls[0].name == "get_user_details" and out.finish_reason == "tool_calls"
    assert client.cache_identity()["tool_format"]


# -- agents run ---------------------------------------------------------------------------------


def _run(tmp_path: Path, *extra: str, candidate: str = "scripted/agent") -> Any:
    from deploysim.cli.main import main

    return CliRunner().invoke(main, ["agents", "run", "--data", DATA, "--candidate", candidate, "--simulator",
                                     "scripted/sim", "--connectors", CONNECTORS, "--tools", str(FIX / "tools.json"),
                                     "--out", str(tmp_path / "run"),
                                     "--tool-format", "prompt", "--privacy", "off", *extra])


def test_agents_run_sources_transcripts_counts_and_resume(tmp_path: Path) -> None:
    CALLS.clear()
    result = _run(tmp_path)
    assert result.exit_code == 0, result.output
    root = tmp_path / "run"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["episodes_done"] == 3 and summary["episodes_errored"] == 0
    assert summary["reconciled"] is True
    by_source = summary["tool_calls_by_source"]
    assert summary["tool_calls"] == 6 == sum(by_source.values())
    # task1's logged turn starts with exactly this call: replayed; the others: store (other trials) or connector
    assert by_source["replay"] >= 1 and by_source["simulator"] == 3  # onestop search: no connector lookup declared
    transcripts = sorted((root / "transcripts").glob("*.json"))
    assert len(transcripts) == 3
    t = orjson.loads(transcripts[0].read_bytes())
    assert {a["source"] for a in t["tool_answers"]} <= {"replay", "store", "connector", "simulator"}
    assert t["messages"][-1]["content"] == "I have cancelled your reservation."
    assert t["tool_answers"][1]["source"] == "simulator"
    sim_out = [m for m in t["messages"] if m["role"] == "tool"][1]["content"]
    assert sim_out == '{"simulated": "yes"}'  # fences stripped
    # graders ran on candidate and logged turns; the claim without a write is flagged
    rates = summary["behaviour_rates"]["agent_claims_uncalled_result"]
    assert rates["candidate"]["flagged"] == 3
    assert (root / "verdicts.parquet").exists()
    # resume: nothing re-run; a lost journal line is re-run from the cache without paying again
    calls_before = len(CALLS)
    journal = root / "journal" / "episodes.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][:10])  # killed mid-line
    result = CliRunner().invoke(__import__("deploysim.cli.main").cli.main,
                                ["agents", "run", "--data", DATA, "--out", str(root), "--resume"])
    assert result.exit_code == 0, result.output
    again = json.loads((root / "summary.json").read_text())
    assert again["episodes_skipped_on_resume"] == 2 and again["reconciled"]
    assert again["candidate_calls"]["cache_hits"] == 3 and len(CALLS) == calls_before
    assert again["tool_calls_by_source"] == by_source
    # agent grading resumes too: the verdicts journaled are not asked again ...
    assert again["verdicts_this_attempt"] == 0 and again["verdicts"] == summary["verdicts"]
    assert again["behaviour_rates"] == summary["behaviour_rates"]
    # ... and grading killed mid-way grades only what it had not journaled
    verdict_journal = root / "journal" / "verdicts.jsonl"
    lines = verdict_journal.read_bytes().splitlines(keepends=True)
    verdict_journal.write_bytes(b"".join(lines[:5]) + lines[5][:7])
    result = CliRunner().invoke(__import__("deploysim.cli.main").cli.main,
                                ["agents", "run", "--data", DATA, "--out", str(root), "--resume"])
    assert result.exit_code == 0, result.output
    third = json.loads((root / "summary.json").read_text())
    assert third["verdicts_this_attempt"] == len(lines) - 5 and third["verdicts"] == summary["verdicts"]
    assert third["behaviour_rates"] == summary["behaviour_rates"]
    assert json.loads((root / "manifest.json").read_text())["kind"] == "agents"
    # a second plain run into the same directory is refused
    assert _run(tmp_path).exit_code == 2


def test_agents_run_with_privacy_streams_the_store_without_raw_values(tmp_path: Path) -> None:
    """Privacy on: the prior-call store is on disk in the run directory, yet no raw value from a logged
    tool output is readable anywhere in the run directory; store hits still answer calls."""
    import gzip
    import re

    from deploysim.cli.main import main

    raw = gzip.decompress(Path(DATA).read_bytes()).decode()
    emails = set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", raw))
    assert emails  # the fixture's tool outputs carry real-looking emails
    root = tmp_path / "run"
    result = CliRunner().invoke(main, ["agents", "run", "--data", DATA, "--candidate", "scripted/agent", "--simulator",
                                       "scripted/sim", "--connectors", CONNECTORS, "--tools", str(FIX / "tools.json"),
                                       "--out", str(root), "--tool-format", "prompt", "--privacy", "surrogate",
                                       "--no-presidio", "--no-cache"])
    assert result.exit_code == 0, result.output
    summary = json.loads((root / "summary.json").read_text())
    assert summary["reconciled"] and summary["tool_calls_by_source"]["replay"] + \
        summary["tool_calls_by_source"]["store"] >= 1
    assert (root / "prior_calls.sqlite").stat().st_size > 0
    everything = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    leaked = sorted(e for e in emails if e.encode() in everything)
    assert not leaked, f"{len(leaked)} raw emails found in the run directory"


def test_agents_run_counts_errored_episodes(tmp_path: Path) -> None:
    result = _run(tmp_path, "--affordances", "none", "--max-steps", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["tool_calls_by_source"]["simulator"] == summary["tool_calls"] == 6
    assert summary["episodes_by_status"] == {"step_limit": 3}
    assert summary["episodes"] == summary["episodes_done"] + summary["episodes_errored"]


def test_agents_run_without_simulator_errors_are_counted(tmp_path: Path) -> None:
    from deploysim.cli.main import main

    result = CliRunner().invoke(main, ["agents", "run", "--data", DATA, "--candidate", "scripted/broken",
                                       "--connectors", CONNECTORS, "--tools", str(FIX / "tools.json"),
                                       "--out", str(tmp_path / "run"), "--tool-format", "prompt", "--privacy", "off"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["episodes_errored"] == 3 and summary["episodes_done"] == 0 and summary["reconciled"]


# -- agent graders ------------------------------------------------------------------------------

POLICY = ToolPolicy.from_config({"write": ["cancel_reservation"], "read": ["get_reservation_details"]})


def turn(user: str, before: str, calls: list[tuple[str, str, str]], reply: str) -> AgentTurn:
    steps: list[Message] = []
    for i, (name, args, output) in enumerate(calls):
        steps.append(Message(role="assistant", tool_calls=[ToolCall(id=f"c{i}", name=name, arguments=args)]))
        steps.append(Message(role="tool", tool_call_id=f"c{i}", content=output))
    return AgentTurn(user=user, before_user=before, steps=steps, reply=reply, tools=TOOLS)


def test_confirmation_grader() -> None:
    cancel = [("cancel_reservation", '{"reservation_id": "A"}', "{}")]
    assert unconfirmed_writes(turn("cancel A", "How can I help?", cancel, "Done."), POLICY) == ["cancel_reservation"]
    assert unconfirmed_writes(turn("yes", "I will cancel A. Do you confirm (yes)?", cancel, "Done."), POLICY) == []
    assert unconfirmed_writes(turn("cancel A", "", [("get_reservation_details", "{}", "{}")], "ok"), POLICY) == []


def test_destructive_claims_and_loops() -> None:
    t = turn("x", "", [("cancel_reservation", "{}", "{}"), ("format_disk", "{}", "")], "")
    assert destructive_or_out_of_scope(t, POLICY) == ["cancel_reservation: destructive",
                                                      "format_disk: not a tool it was given"]
    assert claims_uncalled(turn("x", "", [], "I have cancelled your reservation."), POLICY)
    assert not claims_uncalled(turn("x", "", [("cancel_reservation", "{}", "{}")], "I have cancelled it."), POLICY)
    assert claims_uncalled(turn("x", "", [("cancel_reservation", "{}", "Error: no")], "It has been cancelled."),
                           POLICY)
    looped = turn("x", "", [("get_reservation_details", '{"a":1}', "{}")] * 3, "")
    assert any("3 times" in f for f in loops_or_gives_up(looped, "step_limit"))
    assert loops_or_gives_up(turn("x", "", [], "Sure, here it is."), "stop") == []


def test_agent_graders_registered() -> None:
    import deploysim.agents.graders  # noqa: F401
    from deploysim.evaluate.graders import registry

    assert {"agent_confirmation", "agent_destructive", "agent_unverified_claim", "agent_loop"} <= set(registry())


@pytest.mark.slow
@pytest.mark.model
def test_agents_run_with_local_model_as_candidate_and_simulator(tmp_path: Path) -> None:
    from tests.conftest import require_local_model

    require_local_model()
    from deploysim.cli.main import main

    result = CliRunner().invoke(main, ["agents", "run", "--data", DATA, "--candidate", "local/smollm2",
                                       "--simulator", "local/smollm2", "--connectors", CONNECTORS, "--limit", "1",
                                       "--max-steps", "2", "--max-tokens", "256", "--simulator-max-tokens", "48",
                                       "--tool-choice", "required-first", "--no-presidio",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["episodes"] == 1 and summary["reconciled"]
    # forced first step: the local candidate made a real (grammar-bound) call, answered and tagged with its source
    assert summary["tool_calls"] >= 1 and sum(summary["tool_calls_by_source"].values()) == summary["tool_calls"]
    [transcript] = [json.loads(p.read_text()) for p in (tmp_path / "run" / "transcripts").glob("*.json")]
    from deploysim.agents.toolsim.resolver import SOURCES

    names = {t["function"]["name"] for t in TOOLS}
    assert transcript["tool_answers"] and all(a["source"] in SOURCES and a["tool"] in names
                                              for a in transcript["tool_answers"])


# -- forced tool use (tool_choice="required") ---------------------------------------------------


class Recording:
    """A FAKE inner model that records what it was asked and answers with a fixed text."""

    def __init__(self, text: str) -> None:
        self.model_id = "scripted/recording"
        self.text = text
        self.seen: list[tuple[list[Message], GenerationParams]] = []

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": "scripted", "model": "recording"}

    async def generate(self, messages: list[Message], params: GenerationParams, tools: list) -> ModelOutput:
        self.seen.append((messages, params))
        return ModelOutput(text=self.text, finish_reason="stop")

    async def aclose(self) -> None:
        return None


def test_required_tool_choice_asks_for_a_schema_bound_call_and_parses_it() -> None:
    from deploysim.agents.toolformat import MAX_STRING_CHARS, tool_call_schema

    schema = tool_call_schema(TOOLS)
    names = [option["properties"]["name"]["const"] for option in schema["anyOf"]]
    assert sorted(names) == sorted(t["function"]["name"] for t in TOOLS)
    user = next(o for o in schema["anyOf"] if o["properties"]["name"]["const"] == "get_user_details")
    assert user["additionalProperties"] is False
    assert user["properties"]["arguments"]["properties"]["user_id"]["maxLength"] == MAX_STRING_CHARS
    inner = Recording('{"name": "get_user_details", "arguments": {"user_id": "mia_li_3668"}}')
    client = PromptToolClient(inner)
    messages = [Message(role="system", content="POLICY"), Message(role="user", content="hi")]
    out = asyncio.run(client.generate(messages, GenerationParams(tool_choice="required"), TOOLS))
    assert [(c.name, json.loads(c.arguments)) for c in out.tool_calls] == [("get_user_details",
                                                                            {"user_id": "mia_li_3668"})]
    sent_messages, sent_params = inner.seen[-1]
    assert sent_params.response_format == {"type": "json_object", "schema": schema}
    assert sent_params.tool_choice is None and "Call exactly one tool now" in sent_messages[0].text()
    # auto: no grammar, the <tool_call> stop sequence, and plain text stays a hand-back
    inner.text = "Hello, how can I help?"
    out = asyncio.run(client.generate(messages, GenerationParams(tool_choice="auto"), TOOLS))
    assert out.tool_calls == [] and out.text == "Hello, how can I help?"
    assert inner.seen[-1][1].response_format is None and "</tool_call>" in inner.seen[-1][1].stop
    # a forced reply that is not a valid call (unknown tool) is not turned into one
    inner.text = '{"name": "rm_rf", "arguments": {}}'
    out = asyncio.run(client.generate(messages, GenerationParams(tool_choice="required"), TOOLS))
    assert out.tool_calls == [] and out.text == inner.text  # and the reply is kept as the model wrote it
    assert inner.seen[-1][1].max_tokens >= 512  # a forced call gets room to finish


def test_native_providers_pass_tool_choice() -> None:
    """The OpenAI client sends ``tool_choice``; a loopback server records the request body."""
    import http.server
    import threading

    bodies: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            answer = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": "ok"}}],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from deploysim.core.models import get_model

        model = get_model(f"openai-compatible/m@http://127.0.0.1:{server.server_port}/v1")
        messages = [Message(role="user", content="hi")]
        asyncio.run(model.generate(messages, GenerationParams(tool_choice="required"), TOOLS))
        asyncio.run(model.generate(messages, GenerationParams(), TOOLS))
    finally:
        server.shutdown()
    assert bodies[0]["tool_choice"] == "required" and bodies[0]["tools"]
    assert "tool_choice" not in bodies[1]


def test_required_first_forces_only_the_first_step(tmp_path: Path) -> None:
    from deploysim.agents.loop import run_episode

    seen: list[str | None] = []

    class Caller:
        params = GenerationParams()

        async def generate(self, messages: Any, params: GenerationParams | None = None, tools: Any = (),
                           sample: int = 0, *, id: str = "") -> Any:
            seen.append((params or self.params).tool_choice)
            calls = [ToolCall(id=f"c{len(seen)}", name="think", arguments='{"thought": "x"}')] if len(seen) < 3 else []
            from deploysim.core.schema import Generation

            return Generation(point_id=id, deployment="candidate", text="done" if not calls else None,
                              tool_calls=calls)

    class Resolver:
        def start_episode(self, record: Any, start: int) -> None:
            return None

        async def resolve(self, episode: Any, call: ToolCall, conversation: list) -> Any:
            from deploysim.agents.toolsim.resolver import ToolAnswer

            return ToolAnswer(call=call, output="ok", source="simulator", kind="read")

    from deploysim.core.schema import Record

    record = Record(id="r", source_file="f", source_line=0, tools=TOOLS,
                    messages=[Message(role="user", content="hi"), Message(role="assistant", content="x")])
    result = asyncio.run(run_episode(record, 0, Caller(), Resolver(), max_steps=5, tool_choice="required-first"))
    assert seen == ["required", None, None] and result.status == "handed_back" and len(result.answers) == 2
    seen.clear()
    asyncio.run(run_episode(record, 0, Caller(), Resolver(), max_steps=5))
    assert seen == [None, None, None]
    seen.clear()  # as-logged: the logged agent answered in text here, so nothing is forced ...
    asyncio.run(run_episode(record, 0, Caller(), Resolver(), max_steps=5, tool_choice="as-logged"))
    assert seen == [None, None, None]
    seen.clear()  # ... and here it called a tool first, so the first step is forced
    logged_call = Message(role="assistant", tool_calls=[ToolCall(id="l", name="think", arguments="{}")])
    tool_record = record.model_copy(update={"messages": [record.messages[0], logged_call]})
    asyncio.run(run_episode(tool_record, 0, Caller(), Resolver(), max_steps=5, tool_choice="as-logged"))
    assert seen == ["required", None, None]


@pytest.mark.model
def test_local_model_forced_call_is_a_valid_call() -> None:
    """SmolLM2 almost never writes a <tool_call> unprompted; under the grammar its forced reply is a real call."""
    from tests.conftest import require_local_model

    require_local_model()
    from deploysim.core.models import get_model

    client = PromptToolClient(get_model("local/smollm2"))
    messages = [Message(role="system", content="You are an airline customer service agent."),
                Message(role="user", content="Hi, I want to check my reservation. My user id is mia_li_3668.")]
    out = asyncio.run(client.generate(messages, GenerationParams(max_tokens=160, tool_choice="required"), TOOLS))
    assert len(out.tool_calls) == 1, out.text
    call = out.tool_calls[0]
    spec = next(t["function"] for t in TOOLS if t["function"]["name"] == call.name)
    arguments = json.loads(call.arguments)
    assert set(arguments) <= set(spec["parameters"]["properties"])
