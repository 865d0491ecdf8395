"""Issue 15, the input half: hostile files cost one located reject each, never the run or the rest of the file.

Points: 3 (one record never stops a run), 4 (reject reasons never
quote input), 6 (a JSON array resynchronises; detection votes; BOM), 7 (unique point ids), 13 (OTel events
and attributes; a lone surrogate the same in JSONL and arrays).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from deploysim.cli.main import main
from deploysim.core.schema import Record, Reject
from deploysim.core.store import read_generations, read_points
from deploysim.pipeline.config import SimConfig
from deploysim import run_simulation
from deploysim.pipeline.sources import detect_format, iter_inputs
from deploysim.pipeline.sources.native import native_row

def chat(i: int | str, **extra: object) -> dict[str, object]:
    return {"id": f"c{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                        {"role": "assistant", "content": f"answer {i}"}], **extra}


def sharegpt(i: int) -> dict[str, object]:
    return {"id": f"s{i}", "conversations": [{"from": "human", "value": f"question {i}"},
                                             {"from": "gpt", "value": f"answer {i}"}]}


def split(items: list[Record | Reject]) -> tuple[list[Record], list[Reject]]:
    return [i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Reject)]


def nested(depth: int) -> str:
    """JSON text of an object nested ``depth`` deep (built as text: json.dumps itself recurses)."""
    return '{"k": ' * depth + '"leaf"' + "}" * depth


def with_nested(record: dict[str, object], **fields: str) -> str:
    """``record`` as JSON with raw JSON text for ``fields``."""
    text = json.dumps({**record, **{k: "@" + k for k in fields}})
    for key, raw in fields.items():
        text = text.replace(json.dumps("@" + key), raw)
    return text


def sim(tmp_path: Path, data: list[Path]) -> SimConfig:
    return SimConfig(data=[str(p) for p in data], deployments=[{"name": "candidate", "model": "instant/echo"}],
                     cache_path=str(tmp_path / "cache.sqlite"), privacy={"mode": "surrogate", "presidio": False})


def check_data(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check-data", str(path), "--show", "100"])
    return result.exit_code, result.output


# --- point 3: one record never stops a run ------------------------------------------------------------

def hostile_lines() -> list[str]:
    return [
        json.dumps(chat(1)),
        json.dumps(chat("weight-str", sampling_weight="heavy")),
        json.dumps(chat("weight-null", sampling_weight=None)),
        with_nested(chat("meta-300"), metadata=nested(300)),
        with_nested(chat("tools-900"), tools=f"[{nested(900)}]"),
        json.dumps(chat(2)),
    ]


def test_hostile_records_are_rejected_by_check_data_and_run_alike(tmp_path: Path) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(line + "\n" for line in hostile_lines()))
    code, output = check_data(path)
    assert code == 0 and "records 6 = accepted 2 + rejected 4" in output, output
    summary = run_simulation(sim(tmp_path, [path]), tmp_path / "run", show_progress=False)
    assert (summary["records_read"], summary["records_accepted"], summary["records_rejected"]) == (6, 2, 4)
    assert summary["reconciles"]
    rejects = [json.loads(line) for line in (tmp_path / "run" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(2, "sampling_weight"), (3, "sampling_weight"),
                                                          (4, "metadata"), (5, "tools")]
    assert sorted(p.record_id for p in read_points(tmp_path / "run")) == ["c1", "c2"]


def test_otlp_any_value_nested_500_deep_is_a_reject(tmp_path: Path) -> None:
    value = '{"arrayValue": {"values": [' * 500 + '{"stringValue": "x"}' + "]}}" * 500
    bad = {"traceId": "t", "spanId": "bad", "name": "chat",
           "attributes": [{"key": "gen_ai.request.model", "value": "@value"}]}
    good = {"traceId": "t", "spanId": "good", "name": "chat", "attributes": [
        {"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps(chat(1)["messages"])}}]}
    path = tmp_path / "spans.json"
    path.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [bad, good]}]}]})
                    .replace('"@value"', value))
    records, rejects = split(list(iter_inputs([path], "otel")))
    assert [r.id for r in records] == ["t:good"]
    assert [(r.line, "nested deeper" in r.reason) for r in rejects] == [(1, True)]
    code, output = check_data(path)
    assert code == 0 and "accepted 1 + rejected 1" in output, output


def test_damaged_gzip_is_a_clear_error_or_a_located_reject(tmp_path: Path) -> None:
    fake = tmp_path / "plain.jsonl.gz"
    fake.write_text(json.dumps(chat(1)) + "\n")
    code, output = check_data(fake)
    assert code == 2 and "not a gzip file" in output and "Traceback" not in output
    data = gzip.compress("".join(json.dumps(chat(i)) + "\n" for i in range(2000)).encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    records, rejects = split(list(iter_inputs([cut])))
    assert len(records) > 100 and len(rejects) == 1
    assert rejects[0].line == len(records) + 1 and "truncated" in rejects[0].reason
    summary = run_simulation(sim(tmp_path, [cut]), tmp_path / "run", show_progress=False)
    assert summary["records_accepted"] == len(records) and summary["records_rejected"] == 1
    assert summary["reconciles"]


def test_a_record_failing_de_identification_is_a_reject_not_the_end_of_the_run(tmp_path: Path) -> None:
    from deploysim.pipeline.replay import prepare_points

    def broken(record: Record) -> Record:
        if record.id == "c2":
            raise RecursionError("deep")
        return record

    assert isinstance(prepare_points(Record.model_validate({**chat(1), "source_file": "f"}), deidentify=broken),
                      list)
    reject = prepare_points(Record.model_validate({**chat(2), "source_file": "f", "source_line": 7}),
                            deidentify=broken)
    assert isinstance(reject, Reject)
    assert (reject.source_file, reject.line, reject.record_id) == ("f", 7, "c2")
    assert reject.reason == "de-identification failed (RecursionError)"


# --- point 4: reasons never quote input ---------------------------------------------------------------

def test_json_array_parse_errors_never_quote_the_input(tmp_path: Path) -> None:
    secret = "jane.doe.canary@example.org"
    path = tmp_path / "pii.json"
    path.write_text(f'[{json.dumps(chat(1))}, {{"id": "x", "messages": [{{"role": "user", '
                    f'"content": "mail {secret} now" oops}}]}}, {json.dumps(chat(2))}]')
    summary = run_simulation(sim(tmp_path, [path]), tmp_path / "run", show_progress=False)
    assert summary["records_rejected"] == 1 and summary["records_accepted"] == 2
    rejects = (tmp_path / "run" / "rejects.jsonl").read_text()
    assert "broken JSON" in rejects and secret not in rejects and "jane" not in rejects


# --- point 6: no silent losses ------------------------------------------------------------------------

@pytest.mark.parametrize("bad_item", [
    b'{"id": "x", "messages": [{"role": "user", "content": "unterminated}]}',  # quote lost: scan desyncs
    b'{"id": "x", "messages": [{"role": "user", "content": "caf\xe9"}]}',  # not UTF-8
    b'{"id": "x", "n": 123456789012345678901234567890, "messages": [}',  # broken brackets
    b'{"id": "x", "messages": [{"role": "user", "content": "\\ud800 lone"}]}',  # lone surrogate
    b'{"id": "x", "messages": [{"role": "user" "content": "no comma"}]}',
    b'{"id": "x", "messages": [{"role": "user", "content": ',  # cut short
])
def test_a_bad_item_mid_array_costs_that_item_only(tmp_path: Path, bad_item: bytes) -> None:
    items = [json.dumps(chat(i)).encode() for i in range(50)]
    items.insert(10, bad_item)
    path = tmp_path / "array.json"
    path.write_bytes(b"[\n" + b",\n".join(items) + b"\n]\n")
    records, rejects = split(list(iter_inputs([path])))
    assert [r.id for r in records] == [f"c{i}" for i in range(50)]
    assert [r.line for r in rejects] == [11]
    assert len(records) + len(rejects) == 51


def test_a_30_digit_integer_is_read(tmp_path: Path) -> None:
    items = [chat(0), {**chat(1), "n": 0}, chat(2)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(items).replace('"n": 0', '"n": 123456789012345678901234567890'))
    records, rejects = split(list(iter_inputs([path])))
    assert [r.id for r in records] == ["c0", "c1", "c2"] and not rejects


def test_lone_surrogate_is_handled_the_same_in_jsonl_and_arrays(tmp_path: Path) -> None:
    bad = b'{"id": "x", "messages": [{"role": "user", "content": "\\udc00"}, {"role": "assistant", "content": "y"}]}'
    lines = [json.dumps(chat(1)).encode(), bad, json.dumps(chat(2)).encode()]
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    array = tmp_path / "s.json"
    array.write_bytes(b"[" + b",".join(lines) + b"]")
    outcomes = []
    for path in (jsonl, array):
        records, rejects = split(list(iter_inputs([path])))
        outcomes.append(([r.id for r in records], [(r.line, r.reason) for r in rejects]))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == ["c1", "c2"] and outcomes[0][1][0][0] == 2 and "surrogate" in outcomes[0][1][0][1]


def test_detection_outvotes_one_damaged_first_value(tmp_path: Path) -> None:
    path = tmp_path / "sg.json"
    items = [sharegpt(i) for i in range(10)]
    items[0] = {"id": "s0", "conversations": "damaged"}
    path.write_text(json.dumps(items))
    assert detect_format(path) == "sharegpt"
    records, rejects = split(list(iter_inputs([path])))
    assert len(records) == 9 and [r.line for r in rejects] == [1]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(chat(i)).encode() + b"\n" for i in range(3)))
    array = tmp_path / "bom.json"
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps([sharegpt(i) for i in range(3)]).encode())
    for path, count in ((jsonl, 3), (array, 3)):
        records, rejects = split(list(iter_inputs([path])))
        assert len(records) == count and not rejects


# --- point 7: unique point ids ------------------------------------------------------------------------

def test_the_same_file_twice_gives_distinct_points_and_generations(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(5)))
    summary = run_simulation(sim(tmp_path, [path, path]), tmp_path / "run", show_progress=False)
    points = list(read_points(tmp_path / "run"))
    assert len({p.point_id for p in points}) == len(points) == summary["points"] == 10
    candidate = [g for g in read_generations(tmp_path / "run") if g.deployment == "candidate"]
    assert len({g.point_id for g in candidate}) == 10
    assert summary["reconciles"]


def test_equal_ids_in_native_datasets_give_distinct_points(tmp_path: Path) -> None:
    record = Record.model_validate({**chat(1), "source_file": "logs.jsonl", "source_line": 1})
    paths = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "dataset.parquet")
        pq.write_table(pa.Table.from_pylist([native_row(record)]), paths[-1])
    summary = run_simulation(sim(tmp_path, paths), tmp_path / "run", show_progress=False)
    points = list(read_points(tmp_path / "run"))
    assert len({p.point_id for p in points}) == 2 and summary["reconciles"]


# --- point 13: OTel ---------------------------------------------------------------------------------

def test_malformed_otel_events_are_rejected_not_skipped(tmp_path: Path) -> None:
    spans = [
        {"traceId": "t", "spanId": "a", "name": "chat", "attributes": {"gen_ai.system": "openai"},
         "events": "gen_ai.user.message"},
        {"traceId": "t", "spanId": "b", "name": "chat", "attributes": {"gen_ai.system": "openai"},
         "events": [{"name": "gen_ai.user.message", "attributes": {"content": "hi"}}, 7]},
        {"traceId": "t", "spanId": "c", "name": "chat", "attributes": {"gen_ai.system": "openai"},
         "events": [{"name": "gen_ai.user.message", "attributes": {"content": "hi"}},
                    {"name": "gen_ai.choice", "attributes": {"message": {"content": "hello"}}}]},
    ]
    path = tmp_path / "spans.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in spans))
    records, rejects = split(list(iter_inputs([path], "otel")))
    assert [r.id for r in records] == ["t:c"]
    assert [(r.line, r.field) for r in rejects] == [(1, "events"), (2, "events[1]")]


def test_one_bad_otlp_attribute_is_named(tmp_path: Path) -> None:
    span = {"traceId": "t", "spanId": "a", "name": "chat", "attributes": [
        {"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps(chat(1)["messages"])}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "many"}}]}
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(span) + "\n")
    _, rejects = split(list(iter_inputs([path], "otel")))
    assert len(rejects) == 1
    assert rejects[0].field == "attributes[1](gen_ai.usage.input_tokens).value.intValue"
    assert rejects[0].record_id == "t:a"


def test_ingest_keeps_going_past_a_record_that_fails_de_identification(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from deploysim.pipeline.privacy.deidentify import Deidentifier
    from deploysim.pipeline.privacy.ingest import ingest

    real = Deidentifier._clean  # what both Deidentifier(record) and the batched path run per record

    def flaky(self: Deidentifier, record: Record, found=None):  # type: ignore[no-untyped-def]
        if record.id == "c2":
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, record, found)

    monkeypatch.setattr(Deidentifier, "_clean", flaky)
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(5)))
    summary = ingest([str(path)], tmp_path / "clean.parquet", privacy={"presidio": False})
    assert (summary["records_read"], summary["records_accepted"], summary["records_rejected"]) == (5, 4, 1)
    assert summary["records_written"] == 4 and summary["reconciles"]
    reject = json.loads((tmp_path / "clean.rejects.jsonl").read_text())
    assert (reject["line"], reject["record_id"]) == (3, "c2") and "RecursionError" in reject["reason"]
