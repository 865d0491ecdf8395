"""Cut records into replay points: the prefix up to one assistant turn, plus that turn.

DESIGN rule 1: only the next assistant turn is regenerated; later user turns were
written in reply to the old model and are never replayed against a new reply.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Literal

from deploysim.core.schema import Record, RecordError, Reject, ReplayPoint
from deploysim.core.store import POINTS

TurnChoice = Literal["last", "random", "all"]
TURN_CHOICES: tuple[str, ...] = ("last", "random", "all")


def cut_indices(record: Record) -> list[int]:
    """Indices of assistant turns that answer a user or tool message.

    A record that ends on a user/tool message with no such turn at all (a logged
    request whose reply was not captured) yields one cut at its end.
    """
    messages = record.messages
    cuts = [
        i
        for i, message in enumerate(messages)
        if message.role == "assistant" and i > 0 and messages[i - 1].role in ("user", "tool")
    ]
    if not cuts and messages and messages[-1].role in ("user", "tool"):
        cuts = [len(messages)]
    return cuts


def point_id(record: Record, turn_index: int) -> str:
    """Stable across runs for the same input; distinct for equal record ids in different files, in one
    file read twice, or in native datasets made from files of the same name (``Record.key``)."""
    key = f"{record.key()}\x00{turn_index}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def replay_points(record: Record, turn: TurnChoice = "last", seed: int = 0) -> list[ReplayPoint]:
    cuts = cut_indices(record)
    if not cuts:
        raise RecordError("messages", "no assistant turn follows a user or tool message", record.id)
    if turn == "last":
        chosen = [cuts[-1]]
    elif turn == "random":
        # Seeded per record, so the choice does not depend on input order or resume.
        chosen = [random.Random(f"{seed}:{record.key()}").choice(cuts)]
    elif turn == "all":
        chosen = cuts
    else:
        raise ValueError(f"unknown turn choice {turn!r}; expected one of {', '.join(TURN_CHOICES)}")
    metadata = {**record.metadata, "source_format": record.format}
    return [
        ReplayPoint(
            point_id=point_id(record, index),
            record_id=record.id,
            turn_index=index,
            prefix=record.messages[:index],
            original=record.messages[index] if index < len(record.messages) else None,
            tools=record.tools,
            metadata=metadata,
            weight=record.weight,
        )
        for index in chosen
    ]


def deidentify_record(record: Record, deidentify: Callable[[Record], Record] | None) -> Record | Reject:
    """De-identification alone as a per-record error boundary (a workload that cuts no points)."""
    if deidentify is None:
        return record
    try:
        return deidentify(record)
    except Exception as exc:  # noqa: BLE001 - the boundary: one record, never the run
        return Reject(source_file=record.source_file, line=record.source_line, record_id=record.id,
                      reason=f"de-identification failed ({type(exc).__name__})")


def prepare_points(record: Record, turn: TurnChoice = "last", seed: int = 0,
                   deidentify: Callable[[Record], Record] | None = None) -> list[ReplayPoint] | Reject:
    """The per-record stages after parsing, as one error boundary: de-identify, cut, and encode the rows
    the run directory will write. A record that fails any of them becomes a located ``Reject`` (its
    reason names the stage and the error type, never the data); the run goes on with the others."""
    stage = "de-identification"
    try:
        clean = deidentify(record) if deidentify is not None else record
        stage = "cutting into replay points"
        points = replay_points(clean, turn, seed)
        stage = "encoding the replay point"
        for point in points:
            POINTS.row(point)
        return points
    except RecordError as exc:
        field, reason = exc.field, f"{stage}: {exc.reason}"
    except Exception as exc:  # noqa: BLE001 - the boundary: one record, never the run
        field, reason = None, f"{stage} failed ({type(exc).__name__})"
    return Reject(source_file=record.source_file, line=record.source_line, record_id=record.id, field=field,
                  reason=reason)
