"""Replay points: where records are cut, and rule 1 (only the next assistant turn is regenerated)."""

from __future__ import annotations

import pytest

from deploysim.core.schema import Deployment, Message, Record, RecordError, ToolCall
from deploysim.pipeline.replay import cut_indices, replay_points


def convo(*roles: str) -> Record:
    messages = []
    for i, role in enumerate(roles):
        if role == "assistant_call":
            messages.append(Message(role="assistant", tool_calls=[ToolCall(id=f"c{i}", name="lookup")]))
        elif role == "tool":
            messages.append(Message(role="tool", content=f"result {i}", tool_call_id=f"c{i - 1}"))
        else:
            messages.append(Message(role=role, content=f"{role} {i}"))  # type: ignore[arg-type]
    return Record(id="r1", messages=messages, source_file="f.jsonl", source_line=3)


def test_last_turn_prefix_ends_at_user_and_later_turns_are_dropped() -> None:
    record = convo("system", "user", "assistant", "user", "assistant", "user")
    # the trailing user turn has no reply: the last *answered* turn is index 4
    (point,) = replay_points(record, "last")
    assert point.turn_index == 4
    assert [m.role for m in point.prefix] == ["system", "user", "assistant", "user"]
    assert point.original is not None and point.original.content == "assistant 4"
    assert all(m.content != "user 5" for m in point.prefix)  # rule 1: later user turns never replayed


def test_all_turns_and_tool_results_as_cut_points() -> None:
    record = convo("user", "assistant_call", "tool", "assistant", "user", "assistant")
    assert cut_indices(record) == [1, 3, 5]
    points = replay_points(record, "all")
    assert [p.turn_index for p in points] == [1, 3, 5]
    assert points[1].prefix[-1].role == "tool"  # an agent step may follow a tool result
    assert len({p.point_id for p in points}) == 3


def test_random_turn_is_seeded_and_order_independent() -> None:
    record = convo(*(["user", "assistant"] * 10))
    picks = {replay_points(record, "random", seed=s)[0].turn_index for s in range(30)}
    assert len(picks) > 3  # actually random across seeds
    assert replay_points(record, "random", seed=7) == replay_points(record, "random", seed=7)


def test_unanswered_request_is_one_point_without_original() -> None:
    (point,) = replay_points(convo("system", "user"), "last")
    assert point.turn_index == 2 and point.original is None


def test_nothing_to_replay_is_an_error() -> None:
    with pytest.raises(RecordError, match="no assistant turn"):
        replay_points(convo("user", "system", "assistant"), "last")


def test_point_ids_are_stable_and_differ_across_files() -> None:
    a = convo("user", "assistant")
    b = a.model_copy(update={"source_file": "other.jsonl"})
    assert replay_points(a)[0].point_id == replay_points(a.model_copy())[0].point_id
    assert replay_points(a)[0].point_id != replay_points(b)[0].point_id


def test_sampling_weight_flows_into_points() -> None:
    record = convo("user", "assistant")
    record.weight = 12.5
    assert replay_points(record)[0].weight == 12.5


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("keep", ["logged sys", "hi"]), ("replace", ["new sys", "hi"]), ("prepend", ["new sys\n\nlogged sys", "hi"])],
)
def test_system_prompt_policies(policy: str, expected: list[str]) -> None:
    prefix = [Message(role="system", content="logged sys"), Message(role="user", content="hi")]
    deployment = Deployment(name="c", model="instant/echo", system_prompt=policy, system_prompt_text="new sys")
    assert [m.content for m in deployment.apply_system_prompt(prefix)] == expected


def test_schema_round_trips_through_json() -> None:
    record = convo("user", "assistant_call", "tool", "assistant")
    record.tools = [{"type": "function", "function": {"name": "lookup"}}]
    assert Record.model_validate_json(record.model_dump_json()) == record
    point = replay_points(record, "all")[1]
    assert type(point).model_validate_json(point.model_dump_json()) == point


def test_reserved_and_invalid_deployment_names() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Deployment(name="logged", model="instant/echo")
    with pytest.raises(ValueError, match="letters, digits"):
        Deployment(name="my model", model="instant/echo")
