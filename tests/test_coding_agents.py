"""Coding-agent replay: mini-swe-agent / SWE-agent / OpenHands trajectories through ``agents run``.

The ``bash`` tool is answered by the chain — replay of the logged call, the prior-call store,
the checkout given with ``--repo`` (read-only commands interpreted against git objects), else
the simulator — and shell commands are never executed. The candidate is a scripted FAKE agent
(this tests the harness, not a model), as in test_agents.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploysim.agents.toolsim import ToolPolicy
from deploysim.agents.toolsim.connectors import ShellRepositoryConnector
from deploysim.agents.toolsim.overlay import Overlay
from deploysim.agents.toolsim.shell import parse_read
from deploysim.core.models import ModelOutput, model_provider
from deploysim.core.schema import GenerationParams, Message, ToolCall

FIX = Path(__file__).parent / "fixtures" / "formats"
CALC = "def divide(a, b):\n    return a / b\n"
TEST = "from calc import divide\n\ndef test_divide():\n    assert divide(4, 2) == 2\n"


class ScriptedCoder:
    """A FAKE coding agent: a logged read, a read nobody logged, a write, then it hands back."""

    script: list[str] = []

    def __init__(self, name: str) -> None:
        self.model_id = f"coder/{name}"
        self.name = name

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": "coder", "model": self.name, "script": self.script}

    async def generate(self, messages: list[Message], params: GenerationParams, tools: list) -> ModelOutput:
        if self.name == "sim":
            return ModelOutput(text="<returncode>0</returncode>", finish_reason="stop")
        step = sum(1 for m in messages if m.role == "user" and m.text().startswith("<tool_response"))
        if step < len(self.script):
            # the trajectory's own shell tool, as the prompt tool format lists it in the first message
            shell = "execute_bash" if "execute_bash(" in messages[0].text() else "bash"
            call = {"name": shell, "arguments": {"command": self.script[step]}}
            return ModelOutput(text=f"<tool_call>{json.dumps(call)}</tool_call>", finish_reason="stop")
        return ModelOutput(text="divide() now returns None for b == 0.", finish_reason="stop")

    async def aclose(self) -> None:
        return None


model_provider("coder", "FAKE scripted coding agent for tests")(ScriptedCoder)


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "calc-repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "calc.py").write_text(CALC)
    (repo / "tests" / "test_calc.py").write_text(TEST)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "logged commit"], check=True)
    (repo / "calc.py").write_text("uncommitted edit\n")  # the connector reads the commit, not the work tree
    return repo


def test_read_only_commands_are_understood_and_everything_else_is_not() -> None:
    assert parse_read("cat calc.py").op == "cat"
    assert parse_read("nl -ba calc.py | sed -n '1,5p'").end == 5
    assert parse_read("cd /testbed && grep -rn divide .").cwd == "/testbed"
    for command in ("cat calc.py > out", "rm -rf /", "cat a; rm b", "cat $(id)", "python app.py", "sed -i s/a/b/ x",
                    "ls -la", "cat `id`", "grep -n x f && touch y"):
        assert parse_read(command) is None, command
    policy = ToolPolicy()
    assert policy.call_kind("bash", '{"command": "cat calc.py"}') == "read"
    assert policy.call_kind("bash", '{"command": "python -m pytest"}') == "shell"
    assert policy.call_kind("bash", "not json") == "shell"


def test_shell_connector_answers_from_git_objects(checkout: Path) -> None:
    connector = ShellRepositoryConnector({"path": str(checkout)})
    overlay = Overlay()

    def ask(command: str) -> str | None:
        call = ToolCall(id="c", name="bash", arguments=json.dumps({"command": command}))
        answer = connector.answer(call, ToolPolicy().call_kind(call.name, call.arguments), overlay)
        return None if answer is None else answer.output

    assert ask("cat calc.py") == CALC  # the commit, not the uncommitted edit
    assert ask("cat /testbed/calc.py") == CALC  # an absolute path from the log maps to the checkout
    assert ask("nl -ba calc.py | sed -n '2,2p'") == "     2\t    return a / b\n"
    assert ask("grep -rn divide .").splitlines() == [
        "./calc.py:1:def divide(a, b):", "./tests/test_calc.py:1:from calc import divide",
        "./tests/test_calc.py:3:def test_divide():", "./tests/test_calc.py:4:    assert divide(4, 2) == 2"]
    assert ask("grep -n import tests/test_calc.py") == "1:from calc import divide"
    assert ask("ls") == "calc.py\ntests" and ask("find . -name '*.py'") == "./calc.py\n./tests/test_calc.py"
    assert ask("cat ../../etc/passwd") is None and ask("cat missing.py") is None
    assert ask("python -m pytest") is None  # not a read: never answered here, never run


def test_coding_agent_trajectories_replay_with_every_tool_answer_tagged(tmp_path: Path, checkout: Path) -> None:
    from deploysim.cli.main import main

    marker = tmp_path / "executed"
    ScriptedCoder.script = [
        "cat calc.py",                               # logged in mini_swe_toolcall: replay there, store elsewhere
        "grep -n divide tests/test_calc.py",         # logged nowhere: the checkout answers
        f"sed -i 's/a \\/ b/None/' calc.py && touch {marker}",  # a write: simulated, never run
    ]
    data = ["mini_swe_toolcall.traj.json", "swe_agent_text.traj", "openhands_output.jsonl"]
    args = ["agents", "run", "--candidate", "coder/agent", "--simulator", "coder/sim", "--repo", str(checkout),
            "--turns", "first", "--tool-format", "prompt", "--privacy", "off", "--no-cache",
            "--out", str(tmp_path / "run")]
    for name in data:
        args += ["--data", str(FIX / name)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["reconciled"] and summary["episodes"] == 3 and summary["episodes_done"] == 3
    assert summary["records_rejected"] == 1  # the broken OpenHands row
    by_source = summary["tool_calls_by_source"]
    assert summary["tool_calls"] == 9 == sum(by_source.values())
    assert by_source == {"replay": 1, "store": 1, "connector": 4, "simulator": 3}
    answers = {}
    for path in (tmp_path / "run" / "transcripts").glob("*.json"):
        transcript = json.loads(path.read_text())
        answers[transcript["record_id"]] = [(a["source"], json.loads(a["arguments"])["command"].split()[0])
                                            for a in transcript["tool_answers"]]
        tool_texts = [m["content"] for m in transcript["messages"] if m["role"] == "tool"]
        assert len(tool_texts) == len(transcript["tool_answers"])  # every tool answer is tagged
    assert answers["mini_swe_toolcall"] == [("replay", "cat"), ("connector", "grep"), ("simulator", "sed")]
    assert answers["swe_agent_text"] == [("store", "cat"), ("connector", "grep"), ("simulator", "sed")]
    # OpenHands' shell tool is execute_bash: bash's logged output is another tool's, so the checkout answers
    assert answers["calc__calc-1"] == [("connector", "cat"), ("connector", "grep"), ("simulator", "sed")]
    assert not marker.exists()  # nothing from a trajectory or a candidate ran on the host
    assert (checkout / "calc.py").read_text() == "uncommitted edit\n"
    status = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout.strip() == "M calc.py"  # only our own uncommitted edit
