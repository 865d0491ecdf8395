"""LangSmith run exports (``client.list_runs``, dataset/trace exports): one run per value.

Shape (LangSmith ``Run`` schema)::

    {"id", "name", "run_type": "llm"|"chain"|"tool"|..., "trace_id", "parent_run_id", "start_time",
     "inputs": {"messages": [[message, ...]] | [message, ...], "prompts"?: [...]},
     "outputs": {"generations": [[{"text", "message"?}]]} | {"choices": [{"message"}]},
     "extra": {"invocation_params": {"tools"?: [...], "model"?}, "metadata": {"thread_id"?, ...}}}

Messages may be LangChain-serialized, ``messages_to_dict`` form, LangChain plain dicts or OpenAI-style.
Only ``llm`` runs are records; ``conversation_id`` is the thread / session id, else the trace id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deploysim.core.schema import Message, Record, RecordError, Role, ToolCall
from deploysim.pipeline.sources._base import (
    SourceContext,
    dict_field,
    json_field,
    parse_openai_message,
    parse_tool_calls,
    text_content,
    tool_arguments,
)
from deploysim.pipeline.sources.langfuse import reply_message

#: LangChain message types (class names and ``type`` values) -> roles.
LC_ROLES: dict[str, Role] = {"human": "user", "HumanMessage": "user", "HumanMessageChunk": "user",
            "ai": "assistant", "AIMessage": "assistant", "AIMessageChunk": "assistant",
            "system": "system", "SystemMessage": "system", "tool": "tool", "ToolMessage": "tool",
            "function": "tool", "FunctionMessage": "tool", "chat": "user", "ChatMessage": "user"}


def langchain_message(raw: Any, field: str) -> Message:
    """Any of LangChain's serialized message forms, or an OpenAI-style message."""
    if not isinstance(raw, dict):
        raise RecordError(field, f"message must be an object, got {type(raw).__name__}")
    if "role" in raw and "lc" not in raw:
        return parse_openai_message(raw, field)
    if raw.get("lc") and isinstance(raw.get("kwargs"), dict):
        kind = (raw.get("id") or [""])[-1]
        body = raw["kwargs"]
    elif isinstance(raw.get("data"), dict):
        kind, body = raw.get("type", ""), raw["data"]
    else:
        kind, body = raw.get("type", ""), raw
    role = LC_ROLES.get(kind) or LC_ROLES.get(str(body.get("type", "")))
    if role is None:
        raise RecordError(f"{field}.type", f"unknown LangChain message type {kind!r}")
    calls: list[ToolCall] = []
    for j, call in enumerate(body.get("tool_calls") or []):
        if isinstance(call, dict) and "args" in call:  # LangChain's own: {"name", "args", "id"}
            if not call.get("name"):
                raise RecordError(f"{field}.tool_calls[{j}].name", "tool call has no name")
            calls.append(ToolCall(id=str(call.get("id") or f"call_{j}"), name=str(call["name"]),
                                  arguments=tool_arguments(call.get("args"))))
    if not calls:
        extra = dict_field(body, "additional_kwargs")
        calls = parse_tool_calls(extra.get("tool_calls"), f"{field}.additional_kwargs.tool_calls")
    return Message(role=role, content=text_content(body.get("content"), f"{field}.content"), tool_calls=calls,
                   tool_call_id=body.get("tool_call_id"), name=body.get("name") if role == "tool" else None)


class LangSmith:
    name: str  # the entry-point name, set when registered
    detect_order = 18

    def matches(self, sample: Any) -> bool:
        return isinstance(sample, dict) and "run_type" in sample and "inputs" in sample

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        if not isinstance(value, dict):
            raise RecordError("<record>", f"expected a run object, got {type(value).__name__}")
        if value.get("run_type") != "llm":
            return
        record_id = str(value.get("id") or ctx.fallback_id)
        try:
            inputs = json_field(value.get("inputs"), "inputs")
            if not isinstance(inputs, dict):
                raise RecordError("inputs", "inputs must be an object")
            raw = inputs.get("messages")
            if isinstance(raw, list) and raw and isinstance(raw[0], list):
                raw = raw[0]  # one prompt of a batch call
            if isinstance(raw, list):
                messages = [langchain_message(m, f"inputs.messages[{i}]") for i, m in enumerate(raw)]
            elif isinstance(inputs.get("prompts"), list) and inputs["prompts"]:
                messages = [Message(role="user", content=str(inputs["prompts"][0]))]
            else:
                raise RecordError("inputs.messages", "llm run has neither messages nor prompts")
            reply = self._reply(json_field(value.get("outputs"), "outputs"))
        except RecordError as exc:
            exc.record_id = record_id
            raise
        extra = dict_field(value, "extra")
        params = dict_field(extra, "invocation_params")
        run_meta = dict_field(extra, "metadata")
        tools = [t for t in params.get("tools") or [] if isinstance(t, dict)]
        conversation = run_meta.get("thread_id") or run_meta.get("session_id") or value.get("trace_id")
        meta = {"trace_id": value.get("trace_id"), "conversation_id": conversation, "run_name": value.get("name"),
                "parent_run_id": value.get("parent_run_id"), "start_time": value.get("start_time"),
                "model": run_meta.get("ls_model_name") or params.get("model") or params.get("model_name")}
        yield Record(id=record_id, messages=[*messages, reply], tools=tools,
                     metadata={k: str(v) for k, v in meta.items() if v is not None},
                     source_file=ctx.source_file, source_line=ctx.location, format=self.name)

    @staticmethod
    def _reply(outputs: Any) -> Message:
        if not isinstance(outputs, dict):
            raise RecordError("outputs", "llm run has no outputs (still running, or failed)")
        generations = outputs.get("generations")
        if isinstance(generations, list) and generations:
            first = generations[0][0] if isinstance(generations[0], list) and generations[0] else generations[0]
            if not isinstance(first, dict):
                raise RecordError("outputs.generations[0]", "generation must be an object")
            if isinstance(first.get("message"), dict):
                message = langchain_message(first["message"], "outputs.generations[0][0].message")
                message.role = "assistant"
                return message
            return Message(role="assistant", content=str(first.get("text", "")))
        reply = reply_message(outputs, "outputs")
        if reply is None:
            raise RecordError("outputs", "llm run has no reply")
        return reply
