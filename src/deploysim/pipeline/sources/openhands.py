"""OpenHands event streams: a trajectory export (a JSON array of events) or evaluation output
rows (``{"instance_id", "instruction", "history": [events], ...}``, one per JSONL line).

Event shape (OpenHands ``events/serialization/event.py`` ``event_to_dict``)::

    action:      {"id", "timestamp", "source": "agent"|"user", "message", "action": "run"|"message"|...,
                  "args": {...}, "tool_call_metadata"?: {"function_name", "tool_call_id",
                  "model_response": {"id", "choices": [{"message": {"content", "tool_calls"}}]},
                  "total_calls_in_response"}}
    observation: {"id", "timestamp", "source", "message", "observation": "run"|..., "content",
                  "extras": {...}, "cause": <action id>, "tool_call_metadata"?: {...}}

Agent actions become tool calls (from ``tool_call_metadata``, else named after the action), grouped
by model response; observations answer by ``tool_call_id``, else ``cause``. Events that answer no
logged call are left out and counted in metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from deploysim.core.schema import Message, Record, RecordError, Role, ToolCall
from deploysim.pipeline.sources._base import SourceContext, dict_field, file_id, text_content, tool_arguments
from deploysim.pipeline.sources._io import RawError, RawValue, iter_raw, iter_whole, open_binary

#: Actions logged without tool-call metadata (older runs, user-issued commands): their tool's name.
ACTION_TOOLS = {"run": "execute_bash", "run_ipython": "execute_ipython_cell", "edit": "str_replace_editor",
                "read": "str_replace_editor", "write": "str_replace_editor", "browse": "browser",
                "browse_interactive": "browser", "think": "think", "delegate": "delegate"}
SKIPPED_ACTIONS = {"recall", "change_agent_state", "condensation", "condensation_request", "null", "reject"}
NOISE_ARGS = {"thought", "security_risk", "confirmation_state", "is_confirmed", "blocking", "hidden",
              "is_input", "image_urls", "file_urls", "wait_for_response", "activated_microagents"}


def is_event(value: Any) -> bool:
    return (isinstance(value, dict) and value.get("source") in ("agent", "user", "environment")
            and ("action" in value or "observation" in value))


class OpenHands:
    name: str  # the entry-point name, set when registered
    detect_order = 16

    def matches(self, sample: Any) -> bool:
        if is_event(sample):
            return True
        history = sample.get("history") if isinstance(sample, dict) else None
        return isinstance(history, list) and bool(history) and is_event(history[0])

    def iter_values(self, path: Path) -> Iterator[RawValue | RawError]:
        """An array of events is one trajectory (read whole); anything else streams as usual."""
        with open_binary(path) as stream:
            head = stream.read(64).lstrip()
        if path.name.lower().removesuffix(".gz").endswith(".json") and head.startswith(b"["):
            yield from iter_whole(path)
        else:
            yield from iter_raw(path)

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        meta: dict[str, Any] = {}
        if isinstance(value, list):
            events, field, record_id = value, "", file_id(ctx)
        elif isinstance(value, dict) and isinstance(value.get("history"), list):
            events, field = value["history"], "history"
            record_id = str(value.get("instance_id") or value.get("id") or ctx.fallback_id)
            meta = {k: v for k, v in value.items() if k in ("instance_id", "instruction") and isinstance(v, str)}
            meta.pop("instruction", None)
        elif is_event(value):
            raise RecordError("<record>", "a single OpenHands event, not a trajectory: give the whole event "
                                          "array as one JSON file (or rows with a history)")
        else:
            raise RecordError("<record>", f"expected an event array or an object with a history, got "
                                          f"{type(value).__name__}")
        try:
            messages, tools, counts = self._events(events, field)
        except RecordError as exc:
            exc.record_id = record_id
            raise
        meta.update({k: v for k, v in counts.items() if v})
        yield Record(id=record_id, messages=messages, tools=tools, metadata=meta, source_file=ctx.source_file,
                     source_line=ctx.location, format=self.name)

    def _events(self, events: list[Any], field: str) -> tuple[list[Message], list[dict[str, Any]], dict[str, int]]:
        messages: list[Message] = []
        tools: list[dict[str, Any]] = []
        calls_by_event: dict[Any, ToolCall] = {}
        call_ids: set[str] = set()
        response_of_last: str | None = None
        counts = {"events_skipped": 0, "observations_unpaired": 0}
        for i, event in enumerate(events):
            where = f"{field}[{i}]" if field else f"[{i}]"
            if not isinstance(event, dict):
                raise RecordError(where, f"event must be an object, got {type(event).__name__}")
            source = event.get("source")
            args = dict_field(event, "args")
            meta = event.get("tool_call_metadata") if isinstance(event.get("tool_call_metadata"), dict) else None
            if "observation" in event:
                call = None
                if meta and meta.get("tool_call_id") in call_ids:
                    call = next(c for c in calls_by_event.values() if c.id == meta["tool_call_id"])
                elif event.get("cause") in calls_by_event:
                    call = calls_by_event[event["cause"]]
                if call is None:
                    counts["events_skipped" if event.get("observation") in ("agent_state_changed", "recall",
                                                                              "null") else
                           "observations_unpaired"] += 1
                    continue
                content = text_content(event.get("content"), f"{where}.content")
                messages.append(Message(role="tool", content=content, tool_call_id=call.id, name=call.name))
                response_of_last = None
                continue
            action = event.get("action")
            if not isinstance(action, str):
                raise RecordError(f"{where}.action", "event has neither an action nor an observation kind")
            if source == "environment" or action in SKIPPED_ACTIONS:
                counts["events_skipped"] += 1
                continue
            if action == "system":
                messages.append(Message(role="system", content=str(args.get("content") or event.get("message") or "")))
                if isinstance(args.get("tools"), list):
                    tools = [t for t in args["tools"] if isinstance(t, dict)]
                continue
            if action == "message" or (action == "finish" and source == "agent"):
                role: Role = "user" if source == "user" else "assistant"
                text = args.get("content") if action == "message" else (
                    args.get("final_thought") or args.get("message") or event.get("message"))
                messages.append(Message(role=role, content=text_content(text, f"{where}.args.content")))
                response_of_last = None
                continue
            if source != "agent":
                counts["events_skipped"] += 1
                continue
            call, thought, response_id = self._call(event, action, args, meta, i)
            calls_by_event[event.get("id", i)] = call
            call_ids.add(call.id)
            last = messages[-1] if messages else None
            if (response_id is not None and response_id == response_of_last and last is not None
                    and last.role == "assistant"):
                last.tool_calls.append(call)  # the same model response called several tools
            else:
                messages.append(Message(role="assistant", content=thought, tool_calls=[call]))
            response_of_last = response_id
        return messages, tools, counts

    @staticmethod
    def _call(event: dict[str, Any], action: str, args: dict[str, Any], meta: dict[str, Any] | None,
              index: int) -> tuple[ToolCall, str | None, str | None]:
        thought = args.get("thought") if isinstance(args.get("thought"), str) else None
        if meta and meta.get("tool_call_id") and meta.get("function_name"):
            response = dict_field(meta, "model_response")
            arguments: Any = None
            choices = response.get("choices") or []
            message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
            if isinstance(message, dict):
                for logged in message.get("tool_calls") or []:
                    if isinstance(logged, dict) and logged.get("id") == meta["tool_call_id"]:
                        arguments = (logged.get("function") or {}).get("arguments")
                if isinstance(message.get("content"), str) and message["content"].strip():
                    thought = message["content"]
            if arguments is None:
                arguments = {k: v for k, v in args.items() if k not in NOISE_ARGS}
            return (ToolCall(id=str(meta["tool_call_id"]), name=str(meta["function_name"]),
                             arguments=tool_arguments(arguments)), thought, response.get("id"))
        arguments = {k: v for k, v in args.items() if k not in NOISE_ARGS}
        name = ACTION_TOOLS.get(action, action)
        return ToolCall(id=f"event-{event.get('id', index)}", name=name,
                        arguments=orjson.dumps(arguments).decode()), thought, None
