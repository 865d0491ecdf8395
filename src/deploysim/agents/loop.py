"""One agent episode: from a user message, the candidate acts until it hands back (DESIGN rule 1)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import takewhile
from typing import Any, Literal

from deploysim.agents.toolsim.calls import infer_tool_specs
from deploysim.agents.toolsim.resolver import ToolAnswer, ToolResolver, tool_message
from deploysim.core.models import Model
from deploysim.core.schema import Message, Record

Status = Literal["handed_back", "step_limit", "errored"]
#: ``required-first``: the first step must call a tool (forced tool use), later steps choose freely;
#: ``as-logged``: forced only where the logged agent's first step called a tool (the same decision, its own call).
TOOL_CHOICES = ("auto", "required-first", "as-logged")


def agent_turn_starts(record: Record, mode: str = "first-tool") -> list[int]:
    """Indices of user messages that an agent turn follows; ``first-tool``: the first turn that calls tools."""
    msgs = record.messages
    starts = [i for i, m in enumerate(msgs) if m.role == "user" and i + 1 < len(msgs) and msgs[i + 1].role != "user"]
    if mode == "all" or not starts:
        return starts
    if mode == "first":
        return starts[:1]
    return next(([s] for s in starts if any(m.tool_calls for m in logged_turn(record, s))), starts[:1])


def logged_turn(record: Record, start: int) -> list[Message]:
    """What the logged agent did from ``start`` until the next user message."""
    return list(takewhile(lambda m: m.role != "user", record.messages[start + 1:]))


def episode_id(record: Record, start: int) -> str:
    return f"{record.id}@{start}"


@dataclass
class EpisodeResult:
    episode_id: str
    record_id: str
    start: int
    status: Status
    messages: list[Message]  # the whole conversation: logged prefix then the candidate's turn
    answers: list[ToolAnswer] = field(default_factory=list)
    steps: int = 0
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_steps: int = 0

    def by_source(self) -> dict[str, int]:
        from deploysim.agents.toolsim.resolver import SOURCES

        return dict.fromkeys(SOURCES, 0) | Counter(a.source for a in self.answers)

    def journal_row(self) -> dict[str, Any]:
        return {"episode_id": self.episode_id, "record_id": self.record_id, "start": self.start,
                "status": self.status, "error": self.error, "steps": self.steps, "tool_calls": len(self.answers),
                "tool_calls_by_source": self.by_source(),
                "tool_errors": sum(1 for a in self.answers if a.error is not None),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cached_steps": self.cached_steps}

    def transcript(self) -> dict[str, Any]:
        return {**self.journal_row(),
                "messages": [m.model_dump(exclude_defaults=True) for m in self.messages],
                "tool_answers": [{"tool_call_id": a.call.id, "tool": a.call.name, "arguments": a.call.arguments,
                                  "source": a.source, "kind": a.kind, "note": a.note, "error": a.error}
                                 for a in self.answers]}


async def run_episode(record: Record, start: int, model: Model, resolver: ToolResolver,
                      max_steps: int = 8, tool_choice: str = "auto") -> EpisodeResult:
    if tool_choice not in TOOL_CHOICES:
        raise ValueError(f"tool_choice must be one of {TOOL_CHOICES}, not {tool_choice!r}")
    tools = record.tools or infer_tool_specs(record.messages)
    first_params = model.params.model_copy(update={"tool_choice": "required"})
    logged = logged_turn(record, start)
    force_first = bool(tools) and (tool_choice == "required-first"
                                   or (tool_choice == "as-logged" and bool(logged) and bool(logged[0].tool_calls)))
    episode = resolver.start_episode(record, start)
    conversation = list(record.messages[: start + 1])
    result = EpisodeResult(episode_id(record, start), record.id, start, "step_limit", conversation)
    for step in range(max_steps):
        generation = await model.generate(conversation, first_params if force_first and step == 0 else None, tools,
                                          id=f"{result.episode_id}#{step}")
        result.steps = step + 1
        result.prompt_tokens += generation.usage.prompt_tokens
        result.completion_tokens += generation.usage.completion_tokens
        result.cached_steps += int(generation.cached)
        if generation.error is not None:
            result.status, result.error = "errored", f"candidate call failed: {generation.error}"
            break
        conversation.append(Message(role="assistant", content=generation.text, tool_calls=generation.tool_calls))
        if not generation.tool_calls:
            result.status = "handed_back"
            break
        failed = None
        for call in generation.tool_calls:  # each call sees the results of the calls before it
            answer = await resolver.resolve(episode, call, conversation)
            result.answers.append(answer)
            conversation.append(tool_message(answer))
            failed = failed or answer.error
        if failed is not None:
            result.status, result.error = "errored", f"tool simulation failed: {failed}"
            break
    result.messages = conversation
    return result
