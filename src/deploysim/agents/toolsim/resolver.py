"""The resolution chain: replay -> prior-call store -> connectors -> LLM simulator.

Every answer is tagged with its source. Safety (DESIGN rule 5): only ``read`` tools
get store hits or connector answers; writes and unknown tools are replayed only in
an identical world state or simulated, and their effects go to the episode overlay;
``shell`` tools never reach a connector — nothing from a trajectory runs on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from deploysim.core.schema import Message, Record, ToolCall
from deploysim.agents.toolsim.calls import LoggedCall, ToolKind, ToolPolicy, call_signature, logged_calls, tool_names
from deploysim.agents.toolsim.connectors import Connector
from deploysim.agents.toolsim.overlay import Overlay, write_state
from deploysim.agents.toolsim.simulator import LLMToolSimulator, SimulationRequest
from deploysim.agents.toolsim.edit import Entities, Neighbour, nearest, retrieve_and_edit
from deploysim.agents.toolsim.outschema import OutputSchema
from deploysim.agents.toolsim.store import PriorCallStore, task_key

Source = Literal["replay", "store", "connector", "simulator"]
SOURCES: tuple[str, ...] = ("replay", "store", "connector", "simulator")
#: What the simulator and the chain may use; ``none`` leaves the bare simulator (spec + call + write log).
#: edit: retrieval-and-edit from the nearest real output of the tool (the LLM answers only when there is
#: none); schema: validate + repair against the output schema learned from the store; state: later outputs
#: agree with the episode's earlier answers and writes; facts: outputs agree with the entities the
#: conversation so far showed.
AFFORDANCES: tuple[str, ...] = ("replay", "store", "connectors", "trajectory", "examples", "edit", "schema",
                                "state", "facts")
#: Which trajectories may answer a call: any other (none is exact replay's business), not this one, no trial of
#: this task.
HOLDOUTS: tuple[str, ...] = ("none", "trajectory", "task")


def parse_affordances(text: str | Iterable[str]) -> frozenset[str]:
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items == ["all"]:
        return frozenset(AFFORDANCES)
    if not items or items == ["none"]:
        return frozenset()
    unknown = set(items) - set(AFFORDANCES)
    if unknown:
        raise ValueError(f"unknown affordance(s) {sorted(unknown)}; known: all, none, {', '.join(AFFORDANCES)}")
    return frozenset(items)


@dataclass
class ToolAnswer:
    call: ToolCall
    output: str | None
    source: Source
    kind: ToolKind
    note: str = ""
    error: str | None = None


@dataclass
class Episode:
    """One episode's view of its logged trajectory and its own overlay."""

    record: Record
    start: int  # index of the user message the episode starts from
    overlay: Overlay = field(default_factory=Overlay)
    logged: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # signature -> [(state, output)]
    answers: list[ToolAnswer] = field(default_factory=list)
    entities: Entities = field(default_factory=Entities)  # what this episode's answers showed (``state``)

    def by_source(self) -> dict[str, int]:
        counts = dict.fromkeys(SOURCES, 0)
        for answer in self.answers:
            counts[answer.source] += 1
        return counts


class ToolResolver:
    def __init__(self, *, policy: ToolPolicy | None = None, store: PriorCallStore | None = None,
                 connectors: list[Connector] | None = None, simulator: LLMToolSimulator | None = None,
                 affordances: Iterable[str] = AFFORDANCES, leave_one_out: bool = False,
                 examples: int = 3, deid: Callable[[Record, str], str] | None = None,
                 holdout: str | None = None) -> None:
        """``holdout`` (see HOLDOUTS) wins over ``leave_one_out`` (= ``trajectory``)."""
        self.policy = policy or ToolPolicy()
        self.store = store
        self.connectors = list(connectors or [])
        self.simulator = simulator
        self.affordances = frozenset(affordances)
        self.examples = examples
        self.deid = deid  # connector answers come from a raw snapshot: de-identify like the record
        self.holdout = holdout or ("trajectory" if leave_one_out else "none")
        if self.holdout not in HOLDOUTS:
            raise ValueError(f"holdout {self.holdout!r}: expected one of {', '.join(HOLDOUTS)}")
        self.leave_one_out = self.holdout != "none"
        self._schemas: dict[tuple[str, str | None, str | None], OutputSchema] = {}

    def exclusions(self, record: Record) -> tuple[str | None, str | None]:
        """(record id, task key) the store must not answer this record's calls from."""
        if self.holdout == "none":
            return None, None
        return record.id, task_key(record) if self.holdout == "task" else None

    def schema(self, tool: str, record: Record) -> OutputSchema | None:
        if self.store is None:
            return None
        exclude, group = self.exclusions(record)
        key = (tool, exclude, group)
        if key not in self._schemas:
            self._schemas[key] = OutputSchema.learn(tool, self.store.outputs(tool, exclude, group))
        return self._schemas[key]

    def start_episode(self, record: Record, start: int) -> Episode:
        """Index the logged calls by (signature, world state) and seed the overlay with the prefix's writes."""
        episode = Episode(record=record, start=start)
        writes: list[tuple[str, str]] = []
        calls: list[LoggedCall] = logged_calls(record.messages)
        for logged in calls:
            sig = call_signature(logged.call.name, logged.call.arguments)
            if logged.output is not None:
                episode.logged.setdefault(sig, []).append((write_state(writes), logged.output))
            if self.policy.call_kind(logged.call.name, logged.call.arguments) != "read":
                writes.append((logged.call.name, logged.call.arguments))
                if logged.index < start:
                    self._apply_write(episode, logged.call, logged.output or "", "prefix")
        return episode

    def _apply_write(self, episode: Episode, call: ToolCall, output: str, source: str) -> None:
        from deploysim.agents.toolsim.calls import canonical_args

        episode.overlay.record_write(call.name, canonical_args(call.arguments), output, source)
        for connector in self.connectors:  # every connector: an undeclared write may still stale its data
            connector.apply_write(call, output, episode.overlay)

    async def resolve(self, episode: Episode, call: ToolCall, conversation: list[Message]) -> ToolAnswer:
        answer = await self._resolve(episode, call, conversation)
        if "state" in self.affordances and answer.output is not None:
            episode.entities.add(answer.output)
        if answer.kind != "read" and answer.output is not None:
            self._apply_write(episode, call, answer.output, answer.source)
        episode.answers.append(answer)
        return answer

    async def _resolve(self, episode: Episode, call: ToolCall, conversation: list[Message]) -> ToolAnswer:
        kind = self.policy.call_kind(call.name, call.arguments)
        state = episode.overlay.state()
        if "replay" in self.affordances:
            for logged_state, output in episode.logged.get(call_signature(call.name, call.arguments), []):
                if logged_state == state:  # nothing written since differs from the log: the log still holds
                    return ToolAnswer(call, output, "replay", kind)
        exclude, group = self.exclusions(episode.record)
        if "store" in self.affordances and kind == "read" and self.store is not None:
            hit = self.store.exact_hit(call.name, call.arguments, state, exclude_record=exclude, exclude_group=group)
            if hit is not None:
                output, is_raw = hit  # a raw prior output gets this episode's surrogates, like connector data
                return ToolAnswer(call, self.deid(episode.record, output) if is_raw and self.deid else output,
                                  "store", kind)
        notes: list[str] = []
        snapshot: list[str] = []
        if "connectors" in self.affordances and kind != "shell":
            for connector in self.connectors:
                if not connector.handles(call.name):
                    continue
                if kind == "read":
                    found = connector.answer(call, kind, episode.overlay)
                    if found is not None and found.output is not None:
                        output = self.deid(episode.record, found.output) if self.deid else found.output
                        return ToolAnswer(call, output, "connector", kind, note=found.note)
                    if found is not None and found.note:
                        notes.append(found.note)
                else:
                    context = connector.context(call, episode.overlay)
                    if context:
                        snapshot.append(self.deid(episode.record, context) if self.deid else context)
        return await self._simulate(episode, call, kind, conversation, snapshot + notes)

    async def _simulate(self, episode: Episode, call: ToolCall, kind: ToolKind, conversation: list[Message],
                        snapshot: list[str]) -> ToolAnswer:
        exclude, group = self.exclusions(episode.record)
        neighbours = []
        if self.store is not None and self.affordances & {"examples", "edit", "schema"}:
            neighbours = self.store.neighbours(call.name, call.arguments, self.examples, exclude_record=exclude,
                                               exclude_group=group)
        near = nearest(call.arguments, [Neighbour(n.arguments, n.output) for n in neighbours])
        edited = retrieve_and_edit(call.arguments, [near]) if near is not None else None
        notes: list[str] = []
        output: str | None
        if "edit" in self.affordances and edited is not None:
            output, error = edited, None
            notes.append("edit")
        elif self.simulator is None:
            return ToolAnswer(call, None, "simulator", kind, error="no simulator configured")
        else:
            spec = self._spec(episode.record.tools, call.name)
            request = SimulationRequest(
                call=call, spec=spec, trajectory=conversation if "trajectory" in self.affordances else [],
                examples=neighbours if "examples" in self.affordances else [], snapshot=snapshot,
                write_log=episode.overlay.write_log())
            output, error = await self.simulator.simulate(request)
        if output is not None and "schema" in self.affordances:
            schema = self.schema(call.name, episode.record)
            if schema is not None and schema.n and schema.validate(output):
                template = edited if "edit" in self.affordances else (near.output if near else None)
                repaired = schema.repair(output, template)
                if repaired is not None and repaired != output:
                    output = repaired
                    notes.append("repaired")
        if output is not None and "facts" in self.affordances:
            facts = Entities()
            for message in conversation:
                if message.role == "tool":
                    facts.add(message.text())
            output = self._consistent(output, facts, call, notes, "facts")
        if output is not None and "state" in self.affordances:
            output = self._consistent(output, episode.entities, call, notes, "state")
        return ToolAnswer(call, output, "simulator", kind, note=",".join(notes), error=error)

    @staticmethod
    def _consistent(output: str, entities: Entities, call: ToolCall, notes: list[str], name: str) -> str:
        if not len(entities):
            return output
        edited = entities.apply(output, call.arguments)
        if edited != output:
            notes.append(name)
        return edited

    @staticmethod
    def _spec(tools: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
        for tool, tool_name in zip(tools, tool_names(tools), strict=True):
            if tool_name == name:
                return tool
        return None


def tool_message(answer: ToolAnswer) -> Message:
    """The tool message an agent sees for an answer (an error is shown as the tool's error text)."""
    text = answer.output if answer.output is not None else f"Error: {answer.error or 'tool unavailable'}"
    return Message(role="tool", content=text, tool_call_id=answer.call.id, name=answer.call.name)
