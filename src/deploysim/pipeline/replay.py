"""Cut records into replay points: the prefix up to one assistant turn, plus that turn.

DESIGN rule 1: only the next assistant turn is regenerated; later user turns were
written in reply to the old model and are never replayed against a new reply.
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal

from deploysim.core.schema import Record, RecordError, ReplayPoint

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
    """Stable across runs for the same input, distinct for equal record ids in different files."""
    key = f"{record.source_file}\x00{record.source_line}\x00{record.id}\x00{turn_index}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def replay_points(record: Record, turn: TurnChoice = "last", seed: int = 0) -> list[ReplayPoint]:
    cuts = cut_indices(record)
    if not cuts:
        raise RecordError("messages", "no assistant turn follows a user or tool message", record.id)
    if turn == "last":
        chosen = [cuts[-1]]
    elif turn == "random":
        # Seeded per record, so the choice does not depend on input order or resume.
        chosen = [random.Random(f"{seed}:{record.source_file}:{record.id}").choice(cuts)]
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
