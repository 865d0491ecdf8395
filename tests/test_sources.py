"""Every input format, auto-detection, and every kind of bad input the spine promises to handle."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deploysim.core.schema import Record, Reject
from deploysim.pipeline.sources import SkippedInputs, SourceError, detect_format, iter_inputs
from deploysim.pipeline.sources import native_row

SOURCES = Path(__file__).parent / "fixtures" / "sources"


def split(items: list) -> tuple[list[Record], list[Reject]]:
    return [i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Reject)]


def test_openai_chat_with_tool_calls_and_content_parts() -> None:
    records, rejects = split(list(iter_inputs([SOURCES / "openai_chat.jsonl"])))
    assert not rejects
    assert [r.id for r in records] == ["chat-001", "chat-002", "chat-003"]
    first, tools, parts = records
    assert [m.role for m in first.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert first.metadata == {"surface": "web", "language": "en"}
    assert first.source_line == 1 and first.format == "openai"
    call = tools.messages[1].tool_calls[0]
    assert (call.id, call.name, call.parsed_arguments()) == ("call_a1", "get_weather", {"city": "Lisbon"})
    assert tools.messages[2].role == "tool" and tools.messages[2].tool_call_id == "call_a1"
    assert tools.tools[0]["function"]["name"] == "get_weather"
    assert parts.messages[0].role == "system"  # "developer" is the newer name for system
    assert parts.messages[1].content == "How do I say good morning?"


def test_sharegpt_roles_html_and_chunk_ids() -> None:
    records, rejects = split(list(iter_inputs([SOURCES / "sharegpt.json"])))
    assert not rejects and len(records) == 3
    assert [m.role for m in records[0].messages] == ["user", "assistant", "user", "assistant"]
    assert records[0].metadata["conversation_id"] == "QWJhcnQ"  # chunks of one chat cluster together
    assert records[1].messages[0].role == "system"
    assert records[1].messages[1].content == "<p>explain recursion to a 5 year old</p>"  # kept verbatim
    assert records[2].source_line == 3  # item index in the array


def test_otel_otlp_export_semconv_messages_and_non_llm_spans() -> None:
    skipped = SkippedInputs()
    records, rejects = split(list(iter_inputs([SOURCES / "otel_otlp.json"], skipped=skipped)))
    assert not rejects
    assert [r.id for r in records] == [
        "5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174",
        "0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331",
    ]
    chat = records[0]
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert chat.messages[0].content == "You are a support agent for a bike shop."
    assert chat.messages[2].tool_calls[0].name == "order_status"
    assert json.loads(chat.messages[2].tool_calls[0].arguments) == {"order_id": 8812}
    assert chat.messages[3].tool_call_id == "call_9" and json.loads(chat.messages[3].content)["carrier"] == "DHL"
    assert chat.messages[4].content == "Yes, order 8812 shipped with DHL."
    assert chat.metadata["request.model"] == "gpt-4.1"
    assert records[1].messages[-1].role == "user"  # request logged without its reply
    assert sum(skipped.by_reason.values()) == 1  # the HTTP span is counted, not lost


def test_otel_flat_spans_with_events_and_indexed_attributes() -> None:
    records, rejects = split(list(iter_inputs([SOURCES / "otel_spans.jsonl"])))
    assert not rejects
    events, indexed = records
    assert [(m.role, m.content) for m in events.messages] == [
        ("system", "Be brief."), ("user", "Name a prime number above 100."), ("assistant", "101")]
    assert [(m.role, m.content) for m in indexed.messages] == [
        ("user", "Translate 'cat' to German."), ("assistant", "Katze")]


def test_agent_trajectory_keeps_tool_calls_and_task_ids() -> None:
    records, _ = split(list(iter_inputs([SOURCES / "trajectory.json"])))
    (record,) = records
    assert record.id == "task7-trial0" and record.format == "trajectory"
    assert record.metadata["reward"] == 1.0
    assert record.messages[4].tool_calls[0].name == "get_reservation_details"
    assert record.messages[5].role == "tool"


def test_gzip_and_parquet_containers(tmp_path: Path) -> None:
    gz = tmp_path / "chat.jsonl.gz"
    gz.write_bytes(gzip.compress((SOURCES / "openai_chat.jsonl").read_bytes()))
    records = [r for r in iter_inputs([gz]) if isinstance(r, Record)]
    assert len(records) == 3
    flat = tmp_path / "chat.parquet"
    rows = [json.loads(line) for line in (SOURCES / "openai_chat.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist([{"id": r["id"], "messages": json.dumps(r["messages"])} for r in rows]),
                   flat)
    # tables often hold messages as a JSON string column
    assert [r.id for r in iter_inputs([flat])] == ["chat-001", "chat-002", "chat-003"]
    native = tmp_path / "records.parquet"
    pq.write_table(pa.Table.from_pylist([native_row(r) for r in records]), native)
    assert detect_format(native) == "deploysim"
    again = [r for r in iter_inputs([native]) if isinstance(r, Record)]
    assert [r.model_dump() for r in again] == [r.model_dump() for r in records]


def test_nested_parquet_openai_messages(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (SOURCES / "openai_chat.jsonl").read_text().splitlines()][:1]
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": r["id"], "messages": r["messages"]} for r in rows]), path)
    (record,) = list(iter_inputs([path]))
    assert isinstance(record, Record) and record.messages[1].role == "user"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("openai_chat.jsonl", "openai"), ("sharegpt.json", "sharegpt"), ("otel_otlp.json", "otel"),
     ("otel_spans.jsonl", "otel"), ("trajectory.json", "trajectory")],
)
def test_auto_detection(name: str, expected: str) -> None:
    assert detect_format(SOURCES / name) == expected


def test_unknown_content_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "weird.jsonl"
    path.write_text('{"question": "2+2?", "answer": "4"}\n')
    with pytest.raises(SourceError, match=r"weird\.jsonl: unknown content.*'answer', 'question'"):
        list(iter_inputs([path]))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SourceError, match="unsupported file type"):
        list(iter_inputs([text]))


def test_missing_file_names_every_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"not found: .*nope1\.jsonl, .*nope2\.json"):
        list(iter_inputs([tmp_path / "nope1.jsonl", SOURCES / "sharegpt.json", tmp_path / "nope2.json"]))


GOOD = {"id": "good", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_every_bad_input_is_rejected_with_file_line_field_and_reason(tmp_path: Path) -> None:
    huge = "x" * 5_000_001
    lines = [
        json.dumps(GOOD).encode(),
        b'{"id": "broken", "messages": [{"role": "user", "content": "unterminated',
        json.dumps({"id": "badrole", "messages": [{"role": "wizard", "content": "hi"}]}).encode(),
        json.dumps({"id": "empty", "messages": []}).encode(),
        json.dumps({"id": "asst", "messages": [{"role": "assistant", "content": "I speak alone"}]}).encode(),
        b'{"id": "latin1", "messages": [{"role": "user", "content": "caf\xe9"}]}',
        json.dumps({"id": "huge", "messages": [{"role": "user", "content": huge}]}).encode(),
        json.dumps({**GOOD, "id": "good2"}).encode(),
    ]
    path = write_lines(tmp_path / "bad.jsonl", lines)
    records, rejects = split(list(iter_inputs([path])))
    assert [r.id for r in records] == ["good", "good2"]  # good records still come through
    by_line = {r.line: r for r in rejects}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7]
    assert all(r.source_file == str(path) for r in rejects)
    assert "broken JSON" in by_line[2].reason
    assert by_line[3].record_id == "badrole" and by_line[3].field == "messages[0].role"
    assert "unknown role 'wizard'" in by_line[3].reason
    assert by_line[4].field == "messages" and "no messages" in by_line[4].reason
    assert "no user message" in by_line[5].reason
    assert "UTF-8" in by_line[6].reason
    assert by_line[7].field == "messages[0].content" and "5,000,001 characters" in by_line[7].reason
    assert huge not in by_line[7].model_dump_json()  # a reject never carries the content


def test_sharegpt_unknown_speaker_and_broken_array(tmp_path: Path) -> None:
    path = tmp_path / "sg.json"
    path.write_text(json.dumps([
        {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
        {"id": "b", "conversations": [{"from": "narrator", "value": "meanwhile"}]},
    ]))
    records, rejects = split(list(iter_inputs([path])))
    assert [r.id for r in records] == ["a"]
    assert rejects[0].line == 2 and rejects[0].field == "conversations[0].from"
    truncated = tmp_path / "cut.json"
    truncated.write_text(path.read_text()[:-40])
    records, rejects = split(list(iter_inputs([truncated], "sharegpt")))
    assert [r.id for r in records] == ["a"]
    assert rejects[-1].line == 2 and "broken JSON" in rejects[-1].reason


def test_reading_is_lazy_for_large_arrays(tmp_path: Path) -> None:
    """The first record arrives before the whole (gzipped) array is parsed."""
    path = tmp_path / "big.json.gz"
    convo = {"conversations": [{"from": "human", "value": "q" * 100}, {"from": "gpt", "value": "a" * 100}]}
    with gzip.open(path, "wt") as handle:
        handle.write("[" + ",".join(json.dumps({**convo, "id": f"c{i}"}) for i in range(20000)) + "]")
    stream = iter_inputs([path])
    first = next(stream)
    assert isinstance(first, Record) and first.id == "c0"
