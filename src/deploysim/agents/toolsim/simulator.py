"""The LLM tool simulator: any model id, prompted to answer as the real tool would.

It sees the tool spec and the call, and — per enabled affordance — the original
trajectory (condensed), real prior outputs of the same tool (BM25 neighbours),
snapshot data from connectors and the episode's write log. Calls go through the run's
model service (a ``Model``), so they are cached (a resumed run does not pay twice),
retried and rate-limited like any other model call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from deploysim.core.models import Model
from deploysim.core.schema import Message, ToolCall, content_hash
from deploysim.agents.toolsim.store import PriorCall

SYSTEM = (
    "You are a software tool in a live production system, not an assistant. You receive one call to the tool "
    "and reply with exactly the raw output the real tool returns: the same format as the real outputs shown "
    "(JSON when they are JSON), with concrete values consistent with the data and conversation shown. Never "
    "explain, never add code fences, never use placeholders such as <value>, 'example' or '...'."
)


@dataclass
class SimulationRequest:
    call: ToolCall
    spec: dict[str, Any] | None = None
    trajectory: list[Message] = field(default_factory=list)
    examples: list[PriorCall] = field(default_factory=list)
    snapshot: list[str] = field(default_factory=list)
    write_log: list[dict[str, str]] = field(default_factory=list)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit // 2] + " … " + text[-limit // 2:]


def condense(messages: list[Message], limit: int = 2400) -> str:
    """The conversation as short lines, newest kept: system prompts and long outputs clipped."""
    lines: list[str] = []
    for m in messages:
        if m.role == "system":
            continue
        text = _clip(m.text().replace("\n", " "), 300)
        if m.tool_calls:
            text += " " + " ".join(f"[calls {c.name}({_clip(c.arguments, 200)})]" for c in m.tool_calls)
        lines.append(f"{m.role}{'(' + m.name + ')' if m.role == 'tool' and m.name else ''}: {text}")
    out: list[str] = []
    used = 0
    for line in reversed(lines):
        if used + len(line) > limit:
            break
        out.insert(0, line)
        used += len(line) + 1
    return "\n".join(out)


def spec_text(call: ToolCall, spec: dict[str, Any] | None) -> str:
    if not spec:
        return f"{call.name} (no spec)"
    fn = spec.get("function", spec)
    params = orjson.dumps((fn.get("parameters") or {}).get("properties", {})).decode()
    description = _clip(str(fn.get("description", "")), 300)
    return f"{fn.get('name', call.name)}: {description}\nparameters: {_clip(params, 600)}"


def build_prompt(request: SimulationRequest) -> list[Message]:
    parts = [f"# Tool\n{spec_text(request.call, request.spec)}"]
    if request.trajectory:
        parts.append(f"# Conversation so far\n{condense(request.trajectory)}")
    if request.examples:
        parts.append("# Real outputs of this tool for other calls\n" + "\n".join(
            f"call {e.tool}({_clip(e.arguments, 200)}) returned:\n{_clip(e.output, 700)}" for e in request.examples))
    if request.snapshot:
        parts.append("# Data in the system now\n" + "\n".join(_clip(s, 1200) for s in request.snapshot))
    if request.write_log:
        parts.append("# Changes made earlier in this session\n" + "\n".join(
            f"{w['tool']}({_clip(w['arguments'], 200)}) -> {_clip(w['output'], 200)}" for w in request.write_log))
    parts.append(f"# Call\n{request.call.name}({request.call.arguments})\n\nReply with the tool's raw output only.")
    return [Message(role="system", content=SYSTEM), Message(role="user", content="\n\n".join(parts))]


_FENCE = re.compile(r"^```[\w-]*\n?|\n?```$")
_WRAP = re.compile(r"^\s*(?:output:|result:)?\s*(?:<tool_response[^>]*>)?\s*|\s*</tool_response>\s*$", re.I)


def clean_output(text: str | None) -> str:
    """The simulator's text without the wrappers small models add (fences, 'Output:', tags)."""
    text = (text or "").strip()
    text = _FENCE.sub("", text).strip()
    return _WRAP.sub("", text).strip()


class LLMToolSimulator:
    def __init__(self, model: Model) -> None:
        self.model = model

    async def simulate(self, request: SimulationRequest) -> tuple[str | None, str | None]:
        """(output, None) or (None, error): a failed call is an error, never an invented answer."""
        prompt = build_prompt(request)
        call_id = "toolsim-" + content_hash([m.model_dump() for m in prompt])[:24]
        generation = await self.model.generate(prompt, id=call_id)
        if generation.error is not None:
            return None, generation.error
        return clean_output(generation.text), None
