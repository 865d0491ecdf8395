"""Langfuse exports: observations (``GET /api/public/observations`` pages, UI/SDK exports) and traces.

Shapes (Langfuse public API, OpenAPI ``Observation`` / ``TraceWithFullDetails``)::

    observation: {"id", "traceId", "type": "GENERATION"|"SPAN"|"EVENT"|..., "name", "startTime",
                  "model", "modelParameters", "input", "output", "usage", "metadata",
                  "parentObservationId", "level", "statusMessage"}
    trace:       {"id", "sessionId", "name", "observations": [observation, ...], ...}
    API page:    {"data": [observation | trace, ...], "meta": {...}}

Each GENERATION is one record (``conversation_id`` = ``traceId``); other types are counted as skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deploysim.core.schema import Message, Record, RecordError
from deploysim.pipeline.sources._base import SourceContext, json_field, parse_openai_message, parse_openai_messages
from deploysim.pipeline.sources._io import (
    RawError,
    RawValue,
    container_kind,
    first_key,
    iter_json_items,
    iter_raw,
    open_binary,
)


def reply_message(output: Any, field: str) -> Message | None:
    """An LLM call's output as the assistant message (OpenAI message, choices, or text)."""
    output = json_field(output, field) if isinstance(output, str) and output[:1] in "[{" else output
    if output is None:
        return None
    if isinstance(output, str):
        return Message(role="assistant", content=output)
    if isinstance(output, dict) and isinstance(output.get("choices"), list) and output["choices"]:
        choice = output["choices"][0]
        return reply_message(choice.get("message") if isinstance(choice, dict) else None, f"{field}.choices[0]")
    if isinstance(output, dict):
        return parse_openai_message({"role": "assistant", **output}, field)
    if isinstance(output, list) and output and isinstance(output[-1], dict):
        return parse_openai_message({"role": "assistant", **output[-1]}, f"{field}[{len(output) - 1}]")
    raise RecordError(field, f"output must be a message, choices or text, got {type(output).__name__}")


class Langfuse:
    name: str  # the entry-point name, set when registered
    detect_order = 17

    def matches(self, sample: Any) -> bool:
        if not isinstance(sample, dict):
            return False
        if "traceId" in sample and "type" in sample and ("input" in sample or "output" in sample):
            return True
        return isinstance(sample.get("observations"), list) and "id" in sample

    def sniff_file(self, path: Path) -> bool:
        """An API page (``{"data": [observations], "meta"}``), recognised without loading it."""
        if container_kind(path) != "json" or first_key(path) != "data":
            return False
        with open_binary(path) as stream:
            head = stream.read(8192)
        return b'"traceId"' in head and b'"type"' in head

    def iter_values(self, path: Path) -> Iterator[RawValue | RawError]:
        """An API page ``{"data": [...]}`` streams item by item; anything else as usual."""
        if container_kind(path) == "json" and first_key(path) == "data":
            yield from iter_json_items(path, "data.item")
        else:
            yield from iter_raw(path)

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        if not isinstance(value, dict):
            raise RecordError("<record>", f"expected an observation or a trace, got {type(value).__name__}")
        if isinstance(value.get("observations"), list):  # a trace with its observations
            for i, obs in enumerate(value["observations"]):
                if isinstance(obs, dict):
                    obs = {"traceId": value.get("id"), **obs}
                yield from self._generation(obs, ctx, f"observations[{i}].", value.get("sessionId"))
            return
        yield from self._generation(value, ctx, "", None)

    def _generation(self, obs: Any, ctx: SourceContext, at: str, session: Any) -> Iterator[Record]:
        if not isinstance(obs, dict):
            raise RecordError(at.rstrip(".") or "<record>", "observation must be an object")
        if obs.get("type") != "GENERATION":
            return
        record_id = str(obs.get("id") or ctx.fallback_id)
        try:
            raw_input = json_field(obs.get("input"), f"{at}input")
            tools: list[dict[str, Any]] = []
            if isinstance(raw_input, dict) and "messages" in raw_input:
                tools = [t for t in raw_input.get("tools") or [] if isinstance(t, dict)]
                raw_input = raw_input["messages"]
            if isinstance(raw_input, str):
                messages = [Message(role="user", content=raw_input)]
            else:
                messages = parse_openai_messages(raw_input, f"{at}input")
            reply = reply_message(obs.get("output"), f"{at}output")
            if reply is None:
                raise RecordError(f"{at}output", "generation has no output (still running, or failed)")
        except RecordError as exc:
            exc.record_id = record_id
            raise
        meta = {"trace_id": obs.get("traceId"), "conversation_id": obs.get("traceId"), "observation": obs.get("name"),
                "model": obs.get("model"), "start_time": obs.get("startTime"), "session_id": session,
                "level": obs.get("level")}
        yield Record(id=record_id, messages=[*messages, reply], tools=tools,
                     metadata={k: v for k, v in meta.items() if v is not None},
                     source_file=ctx.source_file, source_line=ctx.location, format=self.name)
