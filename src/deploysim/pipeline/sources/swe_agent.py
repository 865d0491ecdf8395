"""SWE-agent trajectories (``<instance_id>.traj``, JSON).

Shape (SWE-agent docs, docs/usage/trajectories.md; ``sweagent/types.py``)::

    {"environment": ..., "info": {"exit_status", "submission", "model_stats"},
     "history": [{"role", "content", "agent", "message_type", "is_demo"?, "thought"?, "action"?,
                  "tool_calls"?, "tool_call_ids"?}],
     "trajectory": [{"response", "thought", "action", "observation", "state", "query"?}]}

``history`` without demonstrations, main agent only; text-mode actions become ``bash`` calls with the
next user message as the result. Without ``history`` the ``trajectory`` steps are the fallback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deploysim.core.schema import Message, Record, RecordError
from deploysim.pipeline.sources._base import (
    BASH_TOOL,
    SourceContext,
    bash_call,
    dict_field,
    file_id,
    parse_openai_message,
    parse_tool_calls,
    text_content,
)


class SWEAgent:
    name: str  # the entry-point name, set when registered
    detect_order = 15

    def matches(self, sample: Any) -> bool:
        if not isinstance(sample, dict):
            return False
        history = sample.get("history")
        if isinstance(history, list) and history and isinstance(history[0], dict) and "role" in history[0]:
            return "info" in sample or "trajectory" in sample or "agent" in history[0]
        steps = sample.get("trajectory")
        return (isinstance(steps, list) and bool(steps) and isinstance(steps[0], dict)
                and "action" in steps[0] and "observation" in steps[0])

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        if not isinstance(value, dict):
            raise RecordError("<record>", f"expected an object, got {type(value).__name__}")
        record_id = str(value.get("instance_id") or file_id(ctx, (".traj",)))
        info = dict_field(value, "info")
        try:
            if isinstance(value.get("history"), list) and value["history"]:
                messages, source = self._history(value["history"], record_id), "history"
            elif isinstance(value.get("trajectory"), list):
                messages, source = self._steps(value["trajectory"], record_id), "trajectory"
            else:
                raise RecordError("history", "neither a history nor trajectory steps to read")
        except RecordError as exc:
            exc.record_id = record_id
            raise
        tools = [BASH_TOOL] if any(c.name == "bash" for m in messages for c in m.tool_calls) else []
        meta = {"exit_status": info.get("exit_status"), "read_from": source}
        yield Record(id=record_id, messages=messages, tools=tools, metadata={k: v for k, v in meta.items() if v},
                     source_file=ctx.source_file, source_line=ctx.location, format=self.name)

    @staticmethod
    def _history(history: list[Any], record_id: str) -> list[Message]:
        live = [(i, h) for i, h in enumerate(history) if isinstance(h, dict) and not h.get("is_demo")]
        main_agent = next((h.get("agent") for _, h in live if h.get("agent")), "primary")
        messages: list[Message] = []
        pending: str | None = None  # id of a text-mode action waiting for its observation
        for i, item in live:
            if item.get("agent", main_agent) != main_agent:
                continue
            field = f"history[{i}]"
            role = item.get("role")
            content = text_content(item.get("content"), f"{field}.content")
            if role == "tool":
                ids = item.get("tool_call_ids") or [item.get("tool_call_id")]
                messages.append(Message(role="tool", content=content, tool_call_id=ids[0] if ids else None))
                pending = None
                continue
            if role == "user" and pending is not None:
                messages.append(Message(role="tool", content=content, tool_call_id=pending, name="bash"))
                pending = None
                continue
            pending = None
            if role == "assistant":
                calls = parse_tool_calls(item.get("tool_calls"), f"{field}.tool_calls")
                action = item.get("action")
                if not calls and isinstance(action, str) and action.strip():
                    calls = [bash_call(f"{record_id}-{i}", action.strip())]
                    pending = calls[0].id
                messages.append(Message(role="assistant", content=content, tool_calls=calls))
                continue
            messages.append(parse_openai_message({"role": role, "content": content}, field))
        return messages

    @staticmethod
    def _steps(steps: list[Any], record_id: str) -> list[Message]:
        messages: list[Message] = []
        first = steps[0] if steps and isinstance(steps[0], dict) else {}
        for j, raw in enumerate(first.get("query") or []):
            if isinstance(raw, dict) and raw.get("role") in ("system", "user") and not raw.get("is_demo"):
                messages.append(parse_openai_message({"role": raw["role"], "content": raw.get("content")},
                                                     f"trajectory[0].query[{j}]"))
            elif isinstance(raw, dict) and raw.get("role") not in ("system", "user"):
                break  # the task prompt ends where the first step's history begins
        for i, step in enumerate(steps):
            field = f"trajectory[{i}]"
            if not isinstance(step, dict):
                raise RecordError(field, "step must be an object")
            action = step.get("action")
            if not isinstance(action, str):
                raise RecordError(f"{field}.action", "step has no action text")
            call = bash_call(f"{record_id}-step{i}", action.strip())
            messages.append(Message(role="assistant", content=str(step.get("thought") or ""), tool_calls=[call]))
            messages.append(Message(role="tool", content=str(step.get("observation") or ""), tool_call_id=call.id,
                                    name="bash"))
        return messages
