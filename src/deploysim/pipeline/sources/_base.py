"""What every format parser shares: the error type and OpenAI-style message parsing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from deploysim.core.schema import ROLES, Message, Record, RecordError, ToolCall
from deploysim.pipeline.sources._io import decode_value


@dataclass(frozen=True)
class SourceContext:
    source_file: str
    location: int
    fallback_id: str
    member: str | None = None  # zip member (Inspect ``.eval``)


class FormatParser(Protocol):
    """A format. Optional hooks, for formats whose files are not a stream of values:

    * ``sniff_file(path) -> bool``: recognise the file itself (a zip's members, a log's header)
      before any value is decoded; tried before ``matches`` by ``--format auto``;
    * ``iter_values(path) -> Iterator[RawValue | RawError]``: the values to parse, instead of the
      shared reader's (Inspect samples in a zip, a whole OpenHands event array as one value).
    """

    name: str

    def matches(self, sample: Any) -> bool:
        """Whether a decoded value looks like this format (for ``--format auto``)."""

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        """Records in one decoded value; raises ``RecordError`` for a bad one."""


def text_content(content: Any, field: str) -> str | None:
    """OpenAI content: a string, null, or a list of parts whose text parts are joined."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                if part.get("type") in ("text", "input_text", "output_text") or "text" in part:
                    texts.append(str(part.get("text", part.get("content", ""))))
                else:
                    texts.append(f"[{part.get('type', 'part')}]")
            else:
                raise RecordError(f"{field}[{i}]", f"content part must be an object, got {type(part).__name__}")
        return "".join(texts)
    raise RecordError(field, f"content must be a string, a list of parts or null, got {type(content).__name__}")


def dict_field(value: dict[str, Any], key: str) -> dict[str, Any]:
    """``value[key]`` when it is an object, else an empty one (optional nested metadata)."""
    found = value.get(key)
    return found if isinstance(found, dict) else {}


def json_field(value: Any, field: str) -> Any:
    """A field that may hold JSON as text (tables, OTel attributes): decoded, or a RecordError."""
    if isinstance(value, str):
        try:
            return decode_value(value)
        except ValueError as exc:
            raise RecordError(field, f"text here must be valid JSON: {exc}") from None
    return value


def tool_arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments if arguments is not None else {}).decode()


def parse_tool_calls(calls: Any, field: str) -> list[ToolCall]:
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise RecordError(field, "tool_calls must be a list")
    parsed = []
    for i, call in enumerate(calls):
        if not isinstance(call, dict):
            raise RecordError(f"{field}[{i}]", "tool call must be an object")
        function = call.get("function", call)
        name = function.get("name") if isinstance(function, dict) else None
        if not name:
            raise RecordError(f"{field}[{i}].function.name", "tool call has no function name")
        parsed.append(
            ToolCall(
                id=str(call.get("id") or f"call_{i}"),
                name=str(name),
                arguments=tool_arguments(function.get("arguments")),
            )
        )
    return parsed


def parse_openai_message(raw: Any, field: str) -> Message:
    if not isinstance(raw, dict):
        raise RecordError(field, f"message must be an object, got {type(raw).__name__}")
    role = raw.get("role")
    if role == "developer":
        role = "system"
    if role == "function":
        role = "tool"
    if role not in ROLES:
        raise RecordError(f"{field}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return Message(
        role=role,
        content=text_content(raw.get("content"), f"{field}.content"),
        tool_calls=parse_tool_calls(raw.get("tool_calls"), f"{field}.tool_calls"),
        tool_call_id=raw.get("tool_call_id"),
        name=raw.get("name"),
    )


def parse_openai_messages(raw: Any, field: str) -> list[Message]:
    if not isinstance(raw, list):
        raise RecordError(field, f"must be a list of messages, got {type(raw).__name__}")
    return [parse_openai_message(m, f"{field}[{i}]") for i, m in enumerate(raw)]


def scalar_metadata(value: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    """Top-level scalar fields and an explicit ``metadata`` object become record metadata."""
    meta = {key: item for key, item in value.items()
            if key not in skip and (item is None or isinstance(item, (str, int, float, bool)))}
    extra = value.get("metadata")
    if isinstance(extra, dict):
        meta.update(extra)
    return meta


#: The one tool of shell-driven coding agents (mini-swe-agent's own spec; SWE-agent and OpenHands
#: text actions are commands for the same shell).
BASH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Execute a bash command",
        "parameters": {"type": "object", "properties": {"command": {"type": "string",
                                                                    "description": "The bash command to execute"}},
                       "required": ["command"]},
    },
}


def bash_call(call_id: str, command: str) -> ToolCall:
    """A logged shell action as a call of the ``bash`` tool (never run: the chain answers it)."""
    return ToolCall(id=call_id, name="bash", arguments=orjson.dumps({"command": command}).decode())


def file_id(ctx: SourceContext, suffixes: tuple[str, ...] = ()) -> str:
    """A record id from the file name when one file is one trajectory (``django-1.traj`` -> ``django-1``)."""
    from pathlib import Path

    name = Path(ctx.source_file).name
    for suffix in (*suffixes, ".gz", ".json", ".jsonl"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name if ctx.location == 1 else f"{name}:{ctx.location}"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested objects and lists as dotted keys (``a.0.b``), the shape of flat span attributes."""
    if isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        return {prefix[:-1]: value}
    return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
