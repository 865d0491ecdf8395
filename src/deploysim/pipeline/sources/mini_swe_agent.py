"""mini-swe-agent trajectories (``*.traj.json``, ``trajectory_format`` ``mini-swe-agent-1`` / ``-1.1``).

Shape (mini-swe-agent docs, docs/usage/output_files.md)::

    {"info": {"exit_status", "submission", "model_stats", "config", "mini_version"},
     "messages": [...], "trajectory_format": "mini-swe-agent-1.1"}

Tool-call mode is kept as is; in text mode a message with exactly one fenced action block
(```` ```mswea_bash_command ```` or ```` ```bash ````) becomes a ``bash`` call and the next user message its
result, as mini-swe-agent runs it. A final ``role: exit`` message goes to metadata.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from deploysim.core.schema import Message, Record, RecordError, ToolCall
from deploysim.pipeline.sources._base import (
    BASH_TOOL,
    SourceContext,
    bash_call,
    dict_field,
    file_id,
    parse_openai_message,
    text_content,
)

#: mini-swe-agent's own action regexes: v2 (``mswea_bash_command``) and v1 (``bash``).
ACTION = re.compile(r"```(?:mswea_bash_command|bash)\s*\n(.*?)\n```", re.DOTALL)


class MiniSweAgent:
    name: str  # the entry-point name, set when registered
    detect_order = 14

    def matches(self, sample: Any) -> bool:
        return (isinstance(sample, dict) and isinstance(sample.get("messages"), list)
                and str(sample.get("trajectory_format", "")).startswith("mini-swe-agent"))

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        if not isinstance(value, dict):
            raise RecordError("<record>", f"expected an object, got {type(value).__name__}")
        info = dict_field(value, "info")
        record_id = str(value.get("instance_id") or file_id(ctx, (".traj.json", ".traj")))
        raw_messages = value.get("messages")
        if not isinstance(raw_messages, list):
            raise RecordError("messages", "must be a list of messages", record_id)
        messages: list[Message] = []
        pending: ToolCall | None = None  # text-mode action waiting for its observation
        meta: dict[str, Any] = {"trajectory_format": value.get("trajectory_format"),
                                "exit_status": info.get("exit_status"), "mini_version": info.get("mini_version")}
        try:
            for i, raw in enumerate(raw_messages):
                field = f"messages[{i}]"
                if isinstance(raw, dict) and raw.get("role") == "exit":
                    extra = dict_field(raw, "extra")
                    meta["exit_status"] = extra.get("exit_status") or meta["exit_status"]
                    break
                if pending is not None and isinstance(raw, dict) and raw.get("role") == "user":
                    messages.append(Message(role="tool", content=text_content(raw.get("content"), f"{field}.content"),
                                            tool_call_id=pending.id, name="bash"))
                    pending = None
                    continue
                pending = None
                message = parse_openai_message(raw, field)
                if message.role == "assistant" and not message.tool_calls:
                    actions = ACTION.findall(message.text())
                    if len(actions) == 1:
                        pending = bash_call(f"{record_id}-{i}", actions[0].strip())
                        message.tool_calls = [pending]
                messages.append(message)
        except RecordError as exc:
            exc.record_id = record_id
            raise
        model = (info.get("config") or {}).get("model") if isinstance(info.get("config"), dict) else None
        if isinstance(model, dict) and model.get("model_name"):
            meta["model"] = model["model_name"]
        if isinstance(info.get("submission"), str):
            meta["submission_chars"] = len(info["submission"])
        yield Record(id=record_id, messages=messages, tools=[BASH_TOOL],
                     metadata={k: v for k, v in meta.items() if v is not None},
                     source_file=ctx.source_file, source_line=ctx.location, format=self.name)
