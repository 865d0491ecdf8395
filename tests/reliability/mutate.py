"""Mutated input files built from the bundled real data, and the accounting that judges reading them.

Every file holds pristine records and mutated ones at known positions, in one of five formats
(OpenAI chat JSONL, ShareGPT JSON array, tau-bench trajectories JSON array, OTel flat spans JSONL,
an OTLP/JSON export). Mutations are value-level (wrong types, deep nesting, odd weights, 30-digit
integers, damaged OTel attributes and events) and byte-level (truncation, a flipped or invalid
byte, a lone surrogate, a lost quote or bracket, a BOM). Each record carries a canary address;
no reject may quote it.

``judge_file`` reads one file with ``iter_inputs`` and returns what happened: a crash is any
exception but a clear ``SourceError``; a loss is a pristine record that was not accepted and
that no reject covers; an unlocated reject is one without the file or a line inside it.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHAREGPT = ROOT / "src" / "deploysim" / "data" / "sharegpt_sample.json.gz"
TAU = ROOT / "tests" / "fixtures" / "agents" / "tau_trajectories.json.gz"
SOURCES = ROOT / "tests" / "fixtures" / "sources"
FORMATS = ("openai", "sharegpt", "trajectory", "otel", "otlp")
CANARY = "fuzz.canary.{}@example.org"
#: Reasons that say the rest of a file could not be read: records after it are counted, not silently lost.
REST_LOST = "the rest of"


def _clip(text: Any, limit: int = 600) -> Any:
    return text[:limit] if isinstance(text, str) else text


def conversations() -> list[list[dict[str, str]]]:
    """The bundled real ShareGPT conversations as OpenAI-style message lists (texts clipped)."""
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    out = []
    for item in json.loads(gzip.decompress(SHAREGPT.read_bytes())):
        messages = [{"role": roles.get(t["from"], "user"), "content": _clip(t["value"])}
                    for t in item["conversations"] if t.get("from") in roles][:6]
        if any(m["role"] == "user" for m in messages) and any(m["role"] == "assistant" for m in messages):
            out.append(messages)
    return out


def trajectories() -> list[dict[str, Any]]:
    items = json.loads(gzip.decompress(TAU.read_bytes())) if TAU.exists() else []
    items += json.loads((SOURCES / "trajectory.json").read_text())
    for item in items:
        for message in item.get("traj", []):
            message["content"] = _clip(message.get("content"))
    return [i for i in items if isinstance(i, dict) and isinstance(i.get("traj"), list)]


@dataclass
class Corpus:
    chats: list[list[dict[str, str]]]
    trajs: list[dict[str, Any]]

    @classmethod
    def load(cls) -> Corpus:
        return cls(conversations(), trajectories())


def make_record(fmt: str, corpus: Corpus, rng: random.Random, i: int) -> dict[str, Any]:
    """One well-formed record of ``fmt``, with id ``r{i}`` and a canary in its first user turn."""
    if fmt == "trajectory" and corpus.trajs:
        record = json.loads(json.dumps(rng.choice(corpus.trajs)))
        record["id"] = f"r{i}"
        first_user = next(m for m in record["traj"] if m.get("role") == "user")
        first_user["content"] = f"{first_user.get('content') or ''} {CANARY.format(i)}"
        return record
    messages = json.loads(json.dumps(rng.choice(corpus.chats)))
    first_user = next(m for m in messages if m["role"] == "user")
    first_user["content"] += f" {CANARY.format(i)}"
    if fmt == "sharegpt":
        names = {"user": "human", "assistant": "gpt", "system": "system"}
        return {"id": f"r{i}", "conversations": [{"from": names[m["role"]], "value": m["content"]}
                                                 for m in messages]}
    if fmt in ("otel", "otlp"):
        system = [m for m in messages if m["role"] == "system"]
        rest = [m for m in messages if m["role"] != "system"]
        parts = [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in rest]
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                 "gen_ai.request.model": "gpt-4.1", "gen_ai.input.messages": json.dumps(parts[:-1]),
                 "gen_ai.output.messages": json.dumps(parts[-1:])}
        if system:
            attrs["gen_ai.system_instructions"] = json.dumps([{"type": "text", "content": system[0]["content"]}])
        if fmt == "otel":
            return {"name": "chat gpt-4.1", "context": {"trace_id": "t", "span_id": f"r{i}"}, "attributes": attrs}
        return {"traceId": "t", "spanId": f"r{i}", "name": "chat gpt-4.1",
                "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]}
    return {"id": f"r{i}", "messages": messages, "metadata": {"user_id": f"u{i % 7}"}}


def record_id(fmt: str, i: int) -> str:
    return f"t:r{i}" if fmt in ("otel", "otlp") else f"r{i}"


# --- mutations ------------------------------------------------------------------------------------------

ValueMutation = Callable[[dict[str, Any], random.Random], None]


def _deep(depth: int) -> str:
    return '{"k": ' * depth + "1" + "}" * depth


def _any_key(record: dict[str, Any], rng: random.Random) -> str:
    return rng.choice(sorted(record))


def _set_wrong_type(record: dict[str, Any], rng: random.Random) -> None:
    record[_any_key(record, rng)] = rng.choice([None, 0, -1, 1.5, True, "x", [], {}, [None], [[]], {"a": []}])


def _drop_key(record: dict[str, Any], rng: random.Random) -> None:
    del record[_any_key(record, rng)]


def _weight(record: dict[str, Any], rng: random.Random) -> None:
    record["sampling_weight"] = rng.choice(["heavy", None, "1e3", [], {}, True, -2, 0])


def _messages_list(record: dict[str, Any]) -> list[Any] | None:
    for key in ("messages", "conversations", "traj"):
        if isinstance(record.get(key), list):
            return record[key]
    return None


def _bad_message(record: dict[str, Any], rng: random.Random) -> None:
    messages = _messages_list(record)
    if not messages:
        return _set_wrong_type(record, rng)
    i = rng.randrange(len(messages))
    messages[i] = rng.choice([None, "text", 7, [], {"role": "wizard", "content": "x"}, {"from": "nobody"},
                              {"role": "user", "content": 5}, {"role": "user", "content": [1, 2]},
                              {"role": "assistant", "tool_calls": "call"},
                              {"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}])


def _empty_messages(record: dict[str, Any], rng: random.Random) -> None:
    messages = _messages_list(record)
    if messages is None:
        return _drop_key(record, rng)
    keep = rng.choice(["none", "assistant-only", "system-only"])
    messages[:] = [] if keep == "none" else [m for m in messages if isinstance(m, dict)
                                              and m.get("role", m.get("from")) in (("assistant", "gpt")
                                              if keep == "assistant-only" else ("system",))]


def _otel_attribute(record: dict[str, Any], rng: random.Random) -> None:
    attrs = record.get("attributes")
    if isinstance(attrs, list) and attrs:
        attrs[rng.randrange(len(attrs))]["value"] = rng.choice(
            [{"intValue": "many"}, {"arrayValue": "x"}, {"kvlistValue": {"values": [{"key": 1}]}},
             {"stringValue": "[{\"role\": \"ghost\"}]"}])
    elif isinstance(attrs, dict) and attrs:
        attrs[rng.choice(sorted(attrs))] = rng.choice(["[{\"role\": \"ghost\"}]", "{broken", 7, None])
    else:
        _set_wrong_type(record, rng)


def _otel_events(record: dict[str, Any], rng: random.Random) -> None:
    if "attributes" not in record:
        return _drop_key(record, rng)
    record.pop("attributes", None)
    record["attributes"] = {"gen_ai.system": "openai"}
    record["events"] = rng.choice(["gen_ai.user.message", 5, [7], [{"name": "gen_ai.user.message", "attributes": 3}],
                                   [{"name": "gen_ai.choice", "attributes": {"message": "[1]"}}]])


def _big_int(record: dict[str, Any], rng: random.Random) -> None:
    record["n"] = "@BIGINT@"


VALUE_MUTATIONS: dict[str, ValueMutation] = {
    "wrong type": _set_wrong_type,
    "dropped key": _drop_key,
    "bad sampling weight": _weight,
    "bad message": _bad_message,
    "nothing to replay": _empty_messages,
    "bad otel attribute": _otel_attribute,
    "bad otel events": _otel_events,
    "30-digit integer": _big_int,
}


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(1, max(2, len(data) - 1))]


def _flip(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]


def _invalid_utf8(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(1, len(data))
    return data[:i] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]) + data[i:]


def _lone_surrogate(data: bytes, rng: random.Random) -> bytes:
    at = data.find(b"fuzz.canary")
    return data[:at] + rb"\ud800" + data[at:] if at > 0 else data + rb"\udc00"


def _lose_structural(data: bytes, rng: random.Random) -> bytes:
    spots = [i for i, b in enumerate(data) if b in b'"{}[],:']
    i = rng.choice(spots) if spots else 0
    return data[:i] + data[i + 1:]


def _deep_nesting(data: bytes, rng: random.Random) -> bytes:
    depth = rng.choice([150, 400, 1200, 5000])
    at = data.find(b"{") + 1
    return data[:at] + f'"deep": {_deep(depth)}, '.encode() + data[at:]


BYTE_MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "truncated": _truncate,
    "flipped bit": _flip,
    "invalid UTF-8": _invalid_utf8,
    "lone surrogate": _lone_surrogate,
    "lost quote or bracket": _lose_structural,
    "deep nesting": _deep_nesting,
}
MUTATIONS = (*VALUE_MUTATIONS, *BYTE_MUTATIONS)


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode().replace(b'"@BIGINT@"', b"123456789012345678901234567890")


@dataclass
class FuzzFile:
    path: Path
    fmt: str
    pristine: dict[int, str]  # position (1-based item/line/span) -> record id
    mutated: dict[int, str]  # position -> mutation name
    items: int


def write_file(directory: Path, fmt: str, corpus: Corpus, rng: random.Random, n: int, mutated_share: float,
               serial: int) -> FuzzFile:
    """One file of ``n`` records, about ``mutated_share`` of them mutated (one mutation each)."""
    pristine: dict[int, str] = {}
    mutated: dict[int, str] = {}
    chunks: list[bytes] = []
    for position in range(1, n + 1):
        i = serial * 10_000 + position
        record = make_record(fmt, corpus, rng, i)
        if rng.random() < mutated_share:
            name = rng.choice(MUTATIONS)
            if name in VALUE_MUTATIONS:
                VALUE_MUTATIONS[name](record, rng)
                data = encode(record)
            else:
                data = BYTE_MUTATIONS[name](encode(record), rng)
            mutated[position] = name
        else:
            data = encode(record)
            pristine[position] = record_id(fmt, i)
        chunks.append(data)
    bom = b"\xef\xbb\xbf" if rng.random() < 0.1 else b""
    if fmt in ("openai", "otel"):
        # a byte mutation may add a newline inside a line: that line's item is then two lines (both counted)
        body = b"\n".join(c.replace(b"\n", b" ") for c in chunks) + b"\n"
        path = directory / f"f{serial}-{fmt}.jsonl"
    elif fmt == "otlp":
        body = (b'{"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "fuzz"}, '
                b'"spans": [\n' + b",\n".join(chunks) + b"\n]}]}]}\n")
        path = directory / f"f{serial}-{fmt}.json"
    else:
        body = b"[\n" + b",\n".join(chunks) + b"\n]\n"
        path = directory / f"f{serial}-{fmt}.json"
    if rng.random() < 0.2:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(bom + body, mtime=0))
    else:
        path.write_bytes(bom + body)
    return FuzzFile(path, fmt, pristine, mutated, n)


# --- judging -----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    files: int = 0
    records: int = 0
    mutated: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: list[str] = field(default_factory=list)
    refused_files: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)  # pristine records neither accepted nor covered by a reject
    lost_after_damage: int = 0  # pristine records after a counted "rest of the file cannot be read" reject
    unlocated: list[str] = field(default_factory=list)
    quoted: list[str] = field(default_factory=list)
    unreconciled: list[str] = field(default_factory=list)
    by_mutation: Counter[str] = field(default_factory=Counter)
    mutated_accepted: Counter[str] = field(default_factory=Counter)

    def add(self, other: Outcome) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(mine, Counter):
                mine.update(value)
            elif isinstance(mine, list):
                mine.extend(value)
            else:
                setattr(self, name, mine + value)


def judge_file(fuzz: FuzzFile, fmt: str = "auto") -> Outcome:
    from deploysim.core.schema import Record
    from deploysim.pipeline.sources import SourceError, iter_inputs

    out = Outcome(files=1, records=fuzz.items, mutated=len(fuzz.mutated))
    out.by_mutation.update(fuzz.mutated.values())
    name = fuzz.path.name
    try:
        items = list(iter_inputs([fuzz.path], fmt))
    except SourceError as exc:
        out.refused_files.append(f"{name}: {exc}")
        return out
    except Exception as exc:  # noqa: BLE001 - this is what the suite counts
        out.crashes.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
        return out
    records = [i for i in items if isinstance(i, Record)]
    rejects = [i for i in items if not isinstance(i, Record)]
    out.accepted, out.rejected = len(records), len(rejects)
    if len(records) + len(rejects) != len(items):
        out.unreconciled.append(name)
    accepted_ids = {r.id for r in records}
    rest_lost_from = min((r.line for r in rejects if REST_LOST in r.reason), default=None)
    for position, rid in fuzz.pristine.items():
        if rid in accepted_ids:
            continue
        if rest_lost_from is not None and position >= rest_lost_from - 1:
            out.lost_after_damage += 1
            continue
        out.losses.append(f"{name}: pristine record {rid} at {position}")
    serial = int(name[1:].split("-")[0])
    for position in fuzz.mutated:
        rid = record_id(fuzz.fmt, serial * 10_000 + position)
        if rid in accepted_ids:
            out.mutated_accepted[fuzz.mutated[position]] += 1
    # A structural break can split one item into fragments that the reader numbers on: a location is
    # good when it names this file and a position in the reader's own sequence.
    limit = max(fuzz.items, len(items)) + 1
    for reject in rejects:
        if reject.source_file != str(fuzz.path) or not 1 <= reject.line <= limit:
            out.unlocated.append(f"{name}: {reject.source_file}:{reject.line}")
        if "canary" in reject.model_dump_json():
            out.quoted.append(f"{name}:{reject.line}")
    return out


def build_files(directory: Path, mutated_target: int, seed: int = 0, per_file: int = 40,
                mutated_share: float = 0.3) -> list[FuzzFile]:
    """Files in every format, round robin, until at least ``mutated_target`` records are mutated."""
    rng = random.Random(seed)
    corpus = Corpus.load()
    directory.mkdir(parents=True, exist_ok=True)
    files: list[FuzzFile] = []
    total = serial = 0
    while total < mutated_target:
        fmt = FORMATS[serial % len(FORMATS)]
        serial += 1
        fuzz = write_file(directory, fmt, corpus, rng, per_file, mutated_share, serial)
        files.append(fuzz)
        total += len(fuzz.mutated)
    return files
