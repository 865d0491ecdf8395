"""OpenAI chat logs (``{"messages": [...]}``) and agent trajectories in the same message shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deploysim.core.schema import Record, RecordError
from deploysim.pipeline.sources._base import SourceContext, json_field, parse_openai_messages, scalar_metadata


def _tools(value: dict[str, Any]) -> list[dict[str, Any]]:
    tools = value.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RecordError("tools", "tools must be a list of tool specs (objects)")
    return tools


class OpenAIChat:
    """One conversation per value: ``{"id"?, "messages": [...], "tools"?, "metadata"?}``."""

    name: str  # the entry-point name, set when registered
    detect_order = 90
    messages_key = "messages"

    def matches(self, sample: Any) -> bool:
        return isinstance(sample, dict) and isinstance(sample.get(self.messages_key), (list, str))

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        if not isinstance(value, dict):
            raise RecordError("<record>", f"expected an object, got {type(value).__name__}")
        record_id = str(value.get("id") or value.get("conversation_id") or ctx.fallback_id)
        try:
            messages = parse_openai_messages(json_field(value.get(self.messages_key), self.messages_key),
                                             self.messages_key)
            tools = _tools(value)
        except RecordError as exc:
            exc.record_id = record_id
            raise
        yield Record(
            id=record_id,
            messages=messages,
            tools=tools,
            metadata=scalar_metadata(value, {"id", self.messages_key, "tools"}),
            source_file=ctx.source_file,
            source_line=ctx.location,
            format=self.name,
        )


class AgentTrajectory(OpenAIChat):
    """tau-bench style: ``{"task_id", "trial", "reward", "traj": [OpenAI tool-calling messages]}``."""

    name: str  # the entry-point name, set when registered
    detect_order = 40
    messages_key = "traj"

    def matches(self, sample: Any) -> bool:
        return isinstance(sample, dict) and isinstance(sample.get("traj"), list)

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        for record in super().parse(value, ctx):
            if "id" not in value and "task_id" in value:
                record.id = f"task{value['task_id']}-trial{value.get('trial', 0)}"
            yield record
