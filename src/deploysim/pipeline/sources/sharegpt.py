"""ShareGPT: ``{"id", "conversations": [{"from": "human"|"gpt"|..., "value": "..."}]}``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deploysim.core.schema import Message, Record, RecordError
from deploysim.pipeline.sources._base import SourceContext, scalar_metadata

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "assistant": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}


class ShareGPT:
    name: str  # the entry-point name, set when registered
    detect_order = 30

    def matches(self, sample: Any) -> bool:
        return isinstance(sample, dict) and isinstance(sample.get("conversations"), list)

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        if not isinstance(value, dict):
            raise RecordError("<record>", f"expected an object, got {type(value).__name__}")
        record_id = str(value.get("id") or ctx.fallback_id)
        turns = value.get("conversations")
        if not isinstance(turns, list):
            raise RecordError("conversations", "must be a list of turns", record_id)
        messages = []
        for i, turn in enumerate(turns):
            field = f"conversations[{i}]"
            if not isinstance(turn, dict):
                raise RecordError(field, "turn must be an object", record_id)
            speaker = turn.get("from")
            role = SHAREGPT_ROLES.get(str(speaker).lower()) if speaker is not None else None
            if role is None:
                raise RecordError(
                    f"{field}.from",
                    f"unknown speaker {speaker!r}; expected one of {', '.join(sorted(SHAREGPT_ROLES))}",
                    record_id,
                )
            text = turn.get("value")
            if text is not None and not isinstance(text, str):
                raise RecordError(f"{field}.value", "value must be a string", record_id)
            messages.append(Message(role=role, content=text or ""))  # type: ignore[arg-type]
        meta = scalar_metadata(value, {"id", "conversations"})
        # ShareGPT ids "X_N" are chunks of one chat: keep the chat id for clustering.
        base, _, chunk = record_id.rpartition("_")
        if base and chunk.isdigit():
            meta.setdefault("conversation_id", base)
        yield Record(
            id=record_id,
            messages=messages,
            metadata=meta,
            source_file=ctx.source_file,
            source_line=ctx.location,
            format=self.name,
        )
