"""The log formats people have: coding-agent trajectories, Inspect logs, observability exports.

Every fixture's shape comes from the format's own docs or writer (tests/fixtures/formats/README.md).
For each format: auto-detection, messages, tool calls with their ids, rejects located (file,
line / member, field), and a ``deploysim run`` with the instant FAKE model whose counts reconcile.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from deploysim.core.schema import Record, Reject
from deploysim.pipeline.sources import SkippedInputs, detect_format, iter_inputs

FIX = Path(__file__).parent / "fixtures" / "formats"


def read(path: Path) -> tuple[list[Record], list[Reject], SkippedInputs]:
    skipped = SkippedInputs()
    items = list(iter_inputs([path], skipped=skipped))
    return ([i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Reject)], skipped)


def calls(record: Record) -> list[tuple[str, str, dict]]:
    return [(c.id, c.name, json.loads(c.arguments)) for m in record.messages for c in m.tool_calls]


def answers(record: Record) -> dict[str, str]:
    return {m.tool_call_id: m.text() for m in record.messages if m.role == "tool"}


needs_zstd = pytest.mark.skipif(__import__("importlib").util.find_spec("zstandard") is None,
                                reason="Inspect .eval members are zstd: pip install 'deploysim[inspect]'")

DETECTED = {
    "mini_swe_toolcall.traj.json": "mini-swe-agent", "mini_swe_text.traj.json": "mini-swe-agent",
    "mini_swe_v1.traj.json": "mini-swe-agent", "swe_agent_text.traj": "swe-agent", "swe_agent_fc.traj": "swe-agent",
    "swe_agent_steps.traj": "swe-agent", "openhands_events.json": "openhands", "openhands_output.jsonl": "openhands",
    "inspect_log.json": "inspect", "langfuse_observations.jsonl": "langfuse", "langfuse_api_page.json": "langfuse",
    "langsmith_runs.jsonl": "langsmith", "openinference_spans.jsonl": "openinference",
}


@pytest.mark.parametrize("name", sorted(DETECTED))
def test_auto_detection(name: str) -> None:
    assert detect_format(FIX / name) == DETECTED[name]
    records, _, _ = read(FIX / name)
    assert records and all(r.format == DETECTED[name] for r in records)


@needs_zstd
def test_auto_detection_of_an_eval_zip() -> None:
    assert detect_format(FIX / "inspect_log.eval") == "inspect"


# -- coding agents ---------------------------------------------------------------------------


def test_mini_swe_agent_tool_call_mode_keeps_ids_and_drops_the_exit_message() -> None:
    (r,), rejects, _ = read(FIX / "mini_swe_toolcall.traj.json")
    assert not rejects and r.id == "mini_swe_toolcall"
    assert [m.role for m in r.messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert [c[:2] for c in calls(r)] == [("call_ls_01", "bash"), ("call_sed_02", "bash"), ("call_done_03", "bash")]
    assert calls(r)[0][2] == {"command": "cat calc.py"}
    assert answers(r)["call_ls_01"].startswith("<returncode>0</returncode>")
    assert r.tools[0]["function"]["name"] == "bash"
    assert r.metadata["exit_status"] == "Submitted" and r.metadata["model"] == "openai/gpt-5-mini"


def test_mini_swe_agent_text_mode_actions_become_bash_calls_and_format_errors_stay_user_turns() -> None:
    (r,), _, _ = read(FIX / "mini_swe_text.traj.json")
    assert [m.role for m in r.messages] == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]
    (first_id, name, args), (last_id, _, last_args) = calls(r)
    assert name == "bash" and args == {"command": "nl -ba calc.py | sed -n '1,5p'"}
    assert answers(r)[first_id].startswith("<returncode>0")
    assert r.messages[4].tool_calls == []  # two blocks: mini-swe-agent ran neither
    assert r.messages[5].text().startswith("Please always provide EXACTLY ONE action")
    assert last_args == {"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"} and last_id not in answers(r)
    (v1,), _, _ = read(FIX / "mini_swe_v1.traj.json")  # v1: ```bash blocks
    assert [c[2]["command"] for c in calls(v1)] == ["cat calc.py", "echo MINI_SWE_AGENT_FINAL_OUTPUT"]
    assert v1.metadata["trajectory_format"] == "mini-swe-agent-1"


def test_swe_agent_history_drops_demos_and_maps_actions() -> None:
    (r,), _, _ = read(FIX / "swe_agent_text.traj")
    assert r.metadata["read_from"] == "history"
    assert not any("demonstration" in m.text() for m in r.messages)
    assert [c[2]["command"] for c in calls(r)] == ['find_file "calc.py"', "open calc.py", "submit"]
    assert answers(r)[calls(r)[1][0]].startswith("[File: /repo/calc.py")
    (fc,), _, _ = read(FIX / "swe_agent_fc.traj")
    assert [c[:2] for c in calls(fc)] == [("toolu_01A", "str_replace_editor"), ("toolu_01B", "bash")]
    assert answers(fc) == {
        "toolu_01A": "Here's the result of running `cat -n` on /repo/calc.py:\n     1\tdef divide(a, b):",
        "toolu_01B": "1 failed"}
    (steps,), _, _ = read(FIX / "swe_agent_steps.traj")
    assert steps.metadata["read_from"] == "trajectory" and [m.role for m in steps.messages][:2] == ["system", "user"]
    assert [c[2]["command"] for c in calls(steps)] == ["ls", "cat calc.py"]


def test_openhands_events_pair_on_tool_call_id_and_cause() -> None:
    (r,), _, _ = read(FIX / "openhands_events.json")
    assert [m.role for m in r.messages] == ["system", "user", "assistant", "tool", "tool", "assistant", "tool",
                                            "assistant"]
    assert r.messages[2].text() == "Let me look."  # both calls of one model response, one assistant message
    assert [c[:2] for c in calls(r)] == [("toolu_bash_1", "execute_bash"), ("toolu_bash_2", "execute_bash"),
                                         ("toolu_edit_3", "str_replace_editor")]
    # the second observation has no tool_call_metadata: paired on its cause
    assert answers(r) == {"toolu_bash_1": "def divide(a, b):\n    return a / b", "toolu_bash_2": "test_calc.py",
                          "toolu_edit_3": "The file /workspace/calc.py has been edited."}
    assert r.tools[0]["function"]["name"] == "execute_bash"
    assert r.messages[-1].text() == "divide() now returns None for a zero divisor."
    assert r.metadata["events_skipped"] == 4  # recall, its observation, two state changes
    records, rejects, _ = read(FIX / "openhands_output.jsonl")
    assert [x.id for x in records] == ["calc__calc-1"]
    assert calls(records[0])[0][:2] == ("event-1", "execute_bash")
    assert answers(records[0]) == {"event-1": "ZeroDivisionError: division by zero"}
    (bad,) = rejects
    assert (bad.line, bad.record_id, bad.field) == (2, "calc__calc-2", "history[1]")


# -- Inspect ---------------------------------------------------------------------------------


def _inspect_checks(records: list[Record]) -> None:
    by_id = {r.id: r for r in records}
    assert set(by_id) == {"fixture_task/div-1/epoch1", "fixture_task/2/epoch1", "fixture_task/2/epoch2"}
    tool = by_id["fixture_task/div-1/epoch1"]
    assert calls(tool) == [("call_run_1", "bash", {"cmd": "python app.py"})]
    assert answers(tool)["call_run_1"].startswith("Traceback (most recent call last)")  # attachment resolved
    assert tool.metadata["scores"] == {"includes": "C"} and tool.metadata["sample_id"] == "div-1"
    assert tool.metadata["inspect_task"] == "fixture_task" and tool.metadata["inspect_model"] == "mockllm/model"
    assert by_id["fixture_task/2/epoch2"].metadata["epoch"] == 2
    assert by_id["fixture_task/2/epoch2"].metadata["scores"] == {"match": "I"}
    assert by_id["fixture_task/2/epoch2"].metadata["conversation_id"] == "2"


def test_inspect_json_log_streams_samples() -> None:
    records, rejects, _ = read(FIX / "inspect_log.json")
    assert not rejects
    _inspect_checks(records)


@needs_zstd
def test_inspect_eval_zip_reads_zstd_members_and_names_them() -> None:
    records, rejects, _ = read(FIX / "inspect_log.eval")
    assert not rejects
    _inspect_checks(records)
    assert {r.metadata["source_member"] for r in records} == {
        "samples/div-1_epoch_1.json", "samples/2_epoch_1.json", "samples/2_epoch_2.json"}


def test_inspect_rejects_name_the_zip_member_and_field(tmp_path: Path) -> None:
    sample = json.loads((FIX / "inspect_log.json").read_text())["samples"][0]
    wizard = sample | {"id": 3, "messages": [{"role": "wizard", "content": "hi"}]}
    dangling = sample | {"id": 4, "messages": [{"role": "user", "content": "attachment://missing"}]}
    path = tmp_path / "broken.eval"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("header.json", json.dumps({"version": 2, "eval": {"task": "t"}}))
        zf.writestr("samples/1_epoch_1.json", json.dumps(sample))
        zf.writestr("samples/2_epoch_1.json", b"{not json")
        zf.writestr("samples/3_epoch_1.json", json.dumps(wizard))
        zf.writestr("samples/4_epoch_1.json", json.dumps(dangling))
    assert detect_format(path) == "inspect"
    records, rejects, _ = read(path)
    assert len(records) == 1 and records[0].metadata["source_member"] == "samples/1_epoch_1.json"
    assert [(r.line, r.member, r.field) for r in rejects] == [
        (2, "samples/2_epoch_1.json", None), (3, "samples/3_epoch_1.json", "messages[0].role"),
        (4, "samples/4_epoch_1.json", "messages[0].content")]
    assert "broken JSON" in rejects[0].reason and "attachment" in rejects[2].reason


# -- observability exports -------------------------------------------------------------------


def test_langfuse_generations_group_by_trace_and_skip_other_observations() -> None:
    records, rejects, skipped = read(FIX / "langfuse_observations.jsonl")
    assert [r.id for r in records] == ["obs-gen-1", "obs-gen-2"]
    first = records[0]
    assert calls(first) == [("call_w1", "get_weather", {"city": "Paris"})]
    assert answers(first) == {"call_w1": '{"temp_c": 12}'} and first.messages[-1].text() == "It is 12°C in Paris."
    assert first.tools[0]["function"]["name"] == "get_weather"
    assert first.metadata["conversation_id"] == "trace-a" and first.metadata["model"] == "gpt-4.1-mini"
    assert records[1].metadata["conversation_id"] == "trace-b" and records[1].metadata["session_id"] == "session-7"
    assert sum(skipped.by_reason.values()) == 1  # the SPAN
    (bad,) = rejects
    assert (bad.line, bad.record_id, bad.field) == (4, "obs-gen-3", "input[0].role")
    page, _, page_skipped = read(FIX / "langfuse_api_page.json")
    assert [(r.id, r.source_line, r.messages[-1].text()) for r in page] == [("obs-gen-9", 1, "4")]
    assert sum(page_skipped.by_reason.values()) == 1  # the EVENT


def test_langsmith_llm_runs_with_langchain_serialized_messages() -> None:
    records, rejects, skipped = read(FIX / "langsmith_runs.jsonl")
    assert [r.id for r in records] == ["run-llm-1", "run-llm-2", "run-llm-3"]
    first = records[0]
    assert [m.role for m in first.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert calls(first) == [("call_ls_1", "get_weather", {"city": "Paris"})]
    assert answers(first) == {"call_ls_1": '{"temp_c": 12}'} and first.messages[-1].text() == "It is 12°C."
    assert first.metadata["conversation_id"] == "thread-42" and first.tools
    assert records[1].messages[-1].text() == "Hi!" and records[2].messages[-1].text() == "Pong"
    assert sum(skipped.by_reason.values()) == 1  # the chain run
    (bad,) = rejects
    assert (bad.line, bad.record_id, bad.field) == (5, "run-llm-4", "inputs.messages[0].type")


def test_openinference_spans_flat_and_nested_attributes() -> None:
    records, rejects, skipped = read(FIX / "openinference_spans.jsonl")
    assert [r.id for r in records] == ["0xabc1:0x01", "0xdef2:0x02"]
    first = records[0]
    assert calls(first) == [("call_oi_1", "get_weather", {"city": "Paris"})]
    assert answers(first) == {"call_oi_1": '{"temp_c": 12}'}
    assert first.tools[0]["function"]["name"] == "get_weather" and first.metadata["conversation_id"] == "sess-1"
    assert [(m.role, m.text()) for m in records[1].messages] == [("user", "Say hi"), ("assistant", "Hi!")]
    assert sum(skipped.by_reason.values()) == 1  # the CHAIN span
    (bad,) = rejects
    assert bad.line == 4 and bad.field.endswith("tool_calls.0.tool_call.function.name")


def test_broken_files_are_rejected_with_their_location(tmp_path: Path) -> None:
    broken = tmp_path / "broken.traj.json"
    broken.write_text('{"trajectory_format": "mini-swe-agent-1.1", "messages": [{"role": "user", "content": "x"}, '
                      '{"role": "ghost"}]}')
    (reject,) = read(broken)[1]
    assert (reject.line, reject.record_id, reject.field) == (1, "broken", "messages[1].role")
    cut = tmp_path / "cut.traj"
    cut.write_bytes((FIX / "swe_agent_text.traj").read_bytes()[:200])
    with pytest.raises(Exception, match="unknown content|no readable JSON"):
        detect_format(cut)
    (reject,) = list(iter_inputs([cut], "swe-agent"))
    assert isinstance(reject, Reject) and reject.line == 1 and "broken JSON" in reject.reason


# -- end to end: deploysim run reconciles, per format -------------------------------------------


RUN_FILES = ["mini_swe_toolcall.traj.json", "mini_swe_text.traj.json", "swe_agent_text.traj", "swe_agent_fc.traj",
             "openhands_events.json", "openhands_output.jsonl", "inspect_log.json", "langfuse_observations.jsonl",
             "langsmith_runs.jsonl", "openinference_spans.jsonl", pytest.param("inspect_log.eval", marks=needs_zstd)]


@pytest.mark.parametrize("name", RUN_FILES)
def test_deploysim_run_with_the_instant_model_reconciles(tmp_path: Path, name: str) -> None:
    from deploysim.cli.main import main

    records, rejects, _ = read(FIX / name)
    result = CliRunner().invoke(main, ["run", "--data", str(FIX / name), "--candidate", "instant/echo", "--baseline",
                                       "instant/echo", "--turn", "all", "--no-cache", "--quiet",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["reconciles"] and all(summary["checks"].values())
    assert (summary["records_read"], summary["records_accepted"], summary["records_rejected"]) == (
        len(records) + len(rejects), len(records), len(rejects))
    assert summary["points"] > 0
    lines = (tmp_path / "run" / "rejects.jsonl").read_text().splitlines()
    assert [(orjson.loads(x)["line"], orjson.loads(x)["field"]) for x in lines] == [(r.line, r.field) for r in rejects]
