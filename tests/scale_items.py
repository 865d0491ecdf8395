"""Grade items from the bundled real ShareGPT sample, for verdict-equality tests and benchmarks."""

from __future__ import annotations

import gzip
import json

from deploysim.cli.demo import sample_path
from deploysim.core.schema import Message
from deploysim.evaluate.graders import GradeItem


def bundled_items() -> list[GradeItem]:
    """Every (user, assistant) turn pair, and each reversed (the user's text graded as a reply)."""
    data = json.loads(gzip.open(sample_path()).read())
    items: list[GradeItem] = []
    for n, conv in enumerate(data):
        turns = conv["conversations"]
        for i in range(1, len(turns)):
            a, b = turns[i - 1], turns[i]
            if a["from"] == "human" and b["from"] == "gpt":
                items.append(GradeItem(context=[Message(role="user", content=a["value"])], reply=b["value"],
                                       finish_reason="stop", point_id=f"{n}-{i}", deployment="fwd"))
                items.append(GradeItem(context=[Message(role="system", content=b["value"][:400]),
                                                Message(role="user", content=b["value"])],
                                       reply=a["value"], finish_reason=None, point_id=f"{n}-{i}", deployment="rev"))
    return items
