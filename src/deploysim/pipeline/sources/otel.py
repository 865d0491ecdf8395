"""OpenTelemetry GenAI spans exported as JSON (OTLP/JSON or the SDK's flat span JSON).

Reads the current semantic conventions (``gen_ai.system_instructions``,
``gen_ai.input.messages``, ``gen_ai.output.messages`` with typed parts), the older
per-message events (``gen_ai.user.message``, ``gen_ai.choice``, ...) and the
``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*`` attributes some instrumentations emit.
A span with none of these is not an LLM call and yields no record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from deploysim.core.schema import ROLES, Message, Record, RecordError, ToolCall
from deploysim.pipeline.sources._base import SourceContext, json_field, parse_tool_calls, text_content, tool_arguments
from deploysim.pipeline.sources._io import decode_value

MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_INDEXED = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(.+)$")
METADATA_KEYS = (
    "gen_ai.system",
    "gen_ai.provider.name",
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.conversation.id",
)


def any_value(value: Any, field: str = "value") -> Any:
    """Decode an OTLP/JSON ``AnyValue`` (``{"stringValue": ...}`` etc.); plain values pass.

    Recursion is bounded: sources refuse values nested deeper than ``MAX_NESTING``.
    """
    if not isinstance(value, dict) or len(value) != 1:
        return value
    (kind, inner), = value.items()
    if kind in ("stringValue", "boolValue", "doubleValue", "bytesValue"):
        return inner
    if kind == "intValue":
        if isinstance(inner, bool) or not isinstance(inner, (int, str)):
            raise RecordError(f"{field}.intValue",
                              f"must be an integer or its decimal text, got {type(inner).__name__}")
        try:
            return int(inner)
        except ValueError:
            raise RecordError(f"{field}.intValue", "must be an integer or its decimal text") from None
    if kind in ("arrayValue", "kvlistValue"):
        values = (inner or {}).get("values", []) if isinstance(inner, dict) or inner is None else None
        if not isinstance(values, list):
            raise RecordError(f"{field}.{kind}", "must be an object with a list of values")
        if kind == "arrayValue":
            return [any_value(v, f"{field}.{kind}.values[{i}]") for i, v in enumerate(values)]
        out = {}
        for i, kv in enumerate(values):
            if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
                raise RecordError(f"{field}.{kind}.values[{i}]", "must be an object with a string key")
            out[kv["key"]] = any_value(kv.get("value"), f"{field}.{kind}.values[{i}].value")
        return out
    return value


def attributes(raw: Any, field: str = "attributes") -> dict[str, Any]:
    """OTLP attribute list ``[{"key", "value"}]`` or a plain mapping, as a dict; a bad one is named."""
    if isinstance(raw, dict):
        return dict(raw)
    if isinstance(raw, list):
        out = {}
        for i, item in enumerate(raw):
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                out[item["key"]] = any_value(item.get("value"), f"{field}[{i}]({item['key']}).value")
        return out
    return {}


def _parts_message(raw: Any, field: str) -> list[Message]:
    """One semconv message with typed parts; tool responses become one tool message each."""
    if not isinstance(raw, dict):
        raise RecordError(field, "message must be an object")
    role = raw.get("role")
    if role not in ROLES:
        raise RecordError(f"{field}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    parts = raw.get("parts")
    if parts is None and "content" in raw:  # tolerate plain OpenAI-shaped messages
        parts = [{"type": "text", "content": text_content(raw["content"], f"{field}.content")}]
    if not isinstance(parts, list):
        raise RecordError(f"{field}.parts", "parts must be a list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    responses: list[Message] = []
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("content", "")))
        elif kind == "tool_call":
            calls.append(
                ToolCall(id=str(part.get("id") or f"call_{i}"), name=str(part.get("name", "")),
                         arguments=tool_arguments(part.get("arguments")))
            )
        elif kind == "tool_call_response":
            response = part.get("response")
            content = response if isinstance(response, str) else orjson.dumps(response).decode()
            responses.append(Message(role="tool", content=content, tool_call_id=part.get("id")))
        elif kind is None:
            raise RecordError(f"{field}.parts[{i}]", "part has no type")
        else:
            texts.append(f"[{kind}]")
    messages = []
    if texts or calls or not responses:
        messages.append(
            Message(role=role, content="".join(texts) if texts or not calls else None, tool_calls=calls,
                    name=raw.get("name"))
        )
    return messages + responses


def _messages_from_semconv(attrs: dict[str, Any]) -> list[Message] | None:
    if "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs:
        return None
    messages: list[Message] = []
    system = attrs.get("gen_ai.system_instructions")
    if system is not None:
        system = json_field(system, "attributes.gen_ai.system_instructions")
        text = system if isinstance(system, str) else "".join(
            str(p.get("content", "")) for p in system if isinstance(p, dict)
        )
        messages.append(Message(role="system", content=text))
    for key in ("gen_ai.input.messages", "gen_ai.output.messages"):
        field = f"attributes.{key}"
        raw = json_field(attrs.get(key, []), field)
        if not isinstance(raw, list):
            raise RecordError(field, "must be a list of messages")
        for i, message in enumerate(raw):
            messages.extend(_parts_message(message, f"{field}[{i}]"))
    return messages


def _messages_from_events(events: Any) -> list[Message] | None:
    if events is None:
        return None
    if not isinstance(events, list):
        raise RecordError("events", f"must be a list of span events, got {type(events).__name__}")
    messages: list[Message] = []
    found = False
    for i, event in enumerate(events):
        field = f"events[{i}]"
        if not isinstance(event, dict):
            raise RecordError(field, f"span event must be an object, got {type(event).__name__}")
        name = event.get("name")
        body = attributes(event.get("attributes"), f"{field}.attributes")
        if isinstance(event.get("body"), dict):
            decoded = any_value(event["body"], f"{field}.body")
            if isinstance(decoded, dict):
                body.update(decoded)
        if name in MESSAGE_EVENTS:
            found = True
            messages.append(
                Message(
                    role=MESSAGE_EVENTS[name],  # type: ignore[arg-type]
                    content=text_content(_maybe_json(body.get("content")), f"{field}.content"),
                    tool_calls=parse_tool_calls(_maybe_json(body.get("tool_calls")), f"{field}.tool_calls"),
                    tool_call_id=body.get("id") if name == "gen_ai.tool.message" else None,
                )
            )
        elif name == "gen_ai.choice":
            found = True
            message = _maybe_json(body.get("message")) or {}
            if not isinstance(message, dict):
                raise RecordError(f"{field}.message", "choice message must be an object")
            messages.append(
                Message(
                    role="assistant",
                    content=text_content(message.get("content"), f"{field}.message.content"),
                    tool_calls=parse_tool_calls(message.get("tool_calls"), f"{field}.message.tool_calls"),
                )
            )
    return messages if found else None


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return decode_value(value)
        except ValueError:
            return value
    return value


def _messages_from_indexed(attrs: dict[str, Any]) -> list[Message] | None:
    slots: dict[tuple[int, int], dict[str, Any]] = {}
    for key, value in attrs.items():
        match = _INDEXED.match(key)
        if match:
            side = 0 if match.group(1) == "prompt" else 1
            slots.setdefault((side, int(match.group(2))), {})[match.group(3)] = value
    if not slots:
        return None
    messages = []
    for (side, index), slot in sorted(slots.items()):
        role = slot.get("role", "assistant" if side else "user")
        if role not in ROLES:
            kind = "completion" if side else "prompt"
            raise RecordError(f"attributes.gen_ai.{kind}.{index}.role", f"unknown role {role!r}")
        messages.append(Message(role=role, content=slot.get("content")))
    return messages


class OTelGenAI:
    name: str  # the entry-point name, set when registered
    detect_order = 20

    def matches(self, sample: Any) -> bool:
        if not isinstance(sample, dict):
            return False
        if "resourceSpans" in sample:
            return True
        try:
            attrs = attributes(sample.get("attributes"))
        except RecordError:
            attrs = {}
        raw_events = sample.get("events")
        events: list[Any] = raw_events if isinstance(raw_events, list) else []
        has_genai = any(k.startswith("gen_ai.") for k in attrs) or any(
            isinstance(e, dict) and str(e.get("name", "")).startswith("gen_ai.") for e in events
        )
        return has_genai and ("spanId" in sample or "span_id" in sample or "context" in sample or "name" in sample)

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        if not isinstance(value, dict):
            raise RecordError("<span>", f"expected an object, got {type(value).__name__}")
        if "resourceSpans" in value:  # a whole OTLP export on one line
            for r, resource in enumerate(value.get("resourceSpans") or []):
                for s, scope in enumerate(resource.get("scopeSpans") or []):
                    for n, span in enumerate(scope.get("spans") or []):
                        sub = SourceContext(ctx.source_file, ctx.location, f"{ctx.fallback_id}/{r}.{s}.{n}")
                        yield from self.parse(span, sub)
            return
        yield from self._span(value, ctx)

    def _span(self, span: dict[str, Any], ctx: SourceContext) -> Iterator[Record]:
        context = span.get("context")
        if not isinstance(context, dict):
            context = {}
        trace_id = span.get("traceId") or context.get("trace_id") or ""
        span_id = span.get("spanId") or context.get("span_id") or ""
        record_id = f"{trace_id}:{span_id}" if span_id else ctx.fallback_id
        try:
            attrs = attributes(span.get("attributes"))
            messages = (
                _messages_from_semconv(attrs)
                or _messages_from_events(span.get("events"))
                or _messages_from_indexed(attrs)
            )
            tools = json_field(attrs.get("gen_ai.tool.definitions", []), "attributes.gen_ai.tool.definitions")
        except RecordError as exc:
            exc.record_id = record_id
            raise
        if messages is None:
            return  # not an LLM call
        metadata = {k.removeprefix("gen_ai."): attrs[k] for k in METADATA_KEYS if k in attrs}
        metadata.update({"trace_id": trace_id, "span_name": span.get("name")})
        if isinstance(tools, list):
            tools = [t if "type" in t else {"type": "function", "function": t} for t in tools if isinstance(t, dict)]
        yield Record(
            id=record_id,
            messages=messages,
            tools=tools if isinstance(tools, list) else [],
            metadata=metadata,
            source_file=ctx.source_file,
            source_line=ctx.location,
            format=self.name,
        )
