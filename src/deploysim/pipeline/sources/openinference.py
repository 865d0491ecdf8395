"""OpenInference spans (Arize Phoenix, OpenInference instrumentations), as OTel span JSON.

Attributes (OpenInference semantic conventions, ``openinference-semantic-conventions``)::

    openinference.span.kind = "LLM"
    llm.input_messages.<i>.message.role / .content / .name / .tool_call_id
    llm.input_messages.<i>.message.contents.<j>.message_content.type / .text
    llm.input_messages.<i>.message.tool_calls.<k>.tool_call.id
                                               .tool_call.function.name / .arguments
    llm.output_messages.<i>.message.*            (the reply, same keys)
    llm.tools.<i>.tool.json_schema               (a tool spec, JSON text)
    llm.model_name, llm.provider, llm.system, session.id

OTLP/JSON, the SDK's flat span JSON and Phoenix's nested or ``attributes.<key>`` exports are all
flattened to these keys. Non-LLM spans are counted as skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from deploysim.core.schema import ROLES, Message, Record, RecordError, ToolCall
from deploysim.pipeline.sources._base import SourceContext, dict_field, flatten, json_field, tool_arguments
from deploysim.pipeline.sources.otel import attributes

_MESSAGE = re.compile(r"^llm\.(input|output)_messages\.(\d+)\.message\.(.+)$")
_CALL = re.compile(r"^tool_calls\.(\d+)\.tool_call\.(id|function\.name|function\.arguments)$")
_PART = re.compile(r"^contents\.(\d+)\.message_content\.(type|text)$")
_TOOL = re.compile(r"^llm\.tools\.(\d+)\.tool\.json_schema$")


def span_attributes(span: dict[str, Any]) -> dict[str, Any]:
    """Every attribute of a span as a flat dotted key, whatever the export's nesting."""
    attrs = flatten(attributes(span.get("attributes")))
    for key, value in span.items():  # Phoenix dataframe exports: "attributes.llm.input_messages" columns
        if key.startswith("attributes."):
            attrs.update(flatten(value, f"{key.removeprefix('attributes.')}."))
    return attrs


class OpenInference:
    name: str  # the entry-point name, set when registered
    detect_order = 19

    def matches(self, sample: Any) -> bool:
        if not isinstance(sample, dict):
            return False
        attrs = span_attributes(sample)
        return "openinference.span.kind" in attrs or any(k.startswith("llm.input_messages.") for k in attrs)

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        if not isinstance(value, dict):
            raise RecordError("<span>", f"expected a span object, got {type(value).__name__}")
        attrs = span_attributes(value)
        kind = str(attrs.get("openinference.span.kind", "LLM")).upper()
        if kind != "LLM":
            return
        context = dict_field(value, "context")
        trace_id = value.get("traceId") or context.get("trace_id") or value.get("context.trace_id") or ""
        span_id = value.get("spanId") or context.get("span_id") or value.get("context.span_id") or ""
        record_id = f"{trace_id}:{span_id}" if span_id else ctx.fallback_id
        try:
            sides: dict[str, dict[int, dict[str, Any]]] = {"input": {}, "output": {}}
            for key, item in attrs.items():
                match = _MESSAGE.match(key)
                if match:
                    sides[match.group(1)].setdefault(int(match.group(2)), {})[match.group(3)] = item
            if not sides["input"]:
                return  # an LLM span that recorded no messages: nothing to replay
            messages = [self._message(fields, f"attributes.llm.input_messages.{i}")
                        for i, fields in sorted(sides["input"].items())]
            messages += [self._message(fields, f"attributes.llm.output_messages.{i}")
                         for i, fields in sorted(sides["output"].items())]
            tools = []
            for _, key in sorted((int(m.group(1)), k) for k in attrs if (m := _TOOL.match(k))):
                spec = json_field(attrs[key], f"attributes.{key}")
                if isinstance(spec, dict):
                    tools.append(spec if "type" in spec else {"type": "function", "function": spec})
        except RecordError as exc:
            exc.record_id = record_id
            raise
        meta = {"trace_id": trace_id, "span_name": value.get("name"), "model": attrs.get("llm.model_name"),
                "provider": attrs.get("llm.provider") or attrs.get("llm.system"),
                "conversation_id": attrs.get("session.id") or trace_id or None}
        yield Record(id=record_id, messages=messages, tools=tools,
                     metadata={k: v for k, v in meta.items() if v not in (None, "")},
                     source_file=ctx.source_file, source_line=ctx.location, format=self.name)

    @staticmethod
    def _message(fields: dict[str, Any], field: str) -> Message:
        role = fields.get("role")
        if role == "model":
            role = "assistant"
        if role not in ROLES:
            raise RecordError(f"{field}.message.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        content = fields.get("content")
        parts: dict[int, dict[str, Any]] = {}
        calls: dict[int, dict[str, Any]] = {}
        for key, item in fields.items():
            if match := _PART.match(key):
                parts.setdefault(int(match.group(1)), {})[match.group(2)] = item
            elif match := _CALL.match(key):
                calls.setdefault(int(match.group(1)), {})[match.group(2)] = item
        if content is None and parts:
            content = "".join(str(p.get("text", "")) if p.get("type", "text") == "text" else f"[{p.get('type')}]"
                              for _, p in sorted(parts.items()))
        if content is not None and not isinstance(content, str):
            raise RecordError(f"{field}.message.content", f"content must be text, got {type(content).__name__}")
        tool_calls = []
        for k, call in sorted(calls.items()):
            if not call.get("function.name"):
                raise RecordError(f"{field}.message.tool_calls.{k}.tool_call.function.name", "tool call has no name")
            tool_calls.append(ToolCall(id=str(call.get("id") or f"call_{k}"), name=str(call["function.name"]),
                                       arguments=tool_arguments(call.get("function.arguments"))))
        return Message(role=role, content=content, tool_calls=tool_calls, tool_call_id=fields.get("tool_call_id"),
                       name=fields.get("name"))
