"""Texts for the discriminator: tool outputs keyed by (trajectory, call index).

A ``simulate-tools`` JSONL gives its ``real`` or ``simulated`` column; trajectory
files (any source format) give their logged outputs, de-identified like the
simulation's inputs so that surrogates do not become a tell.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from deploysim.core.schema import Record
from deploysim.agents.toolsim import logged_calls

Key = tuple[str, int]


def unit_text(tool: str, arguments: str, output: str) -> str:
    return f"{tool} {arguments}\n{output}"


def _is_sim_jsonl(path: Path) -> bool:
    if path.suffix != ".jsonl":
        return False
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        row = orjson.loads(first) if first.strip() else {}
    except orjson.JSONDecodeError:
        return False
    return isinstance(row, dict) and "simulated" in row and "call_index" in row


def load_outputs(path: str | Path, column: str, deid: Callable[[Record], Record] | None = None) -> dict[Key, str]:
    path = Path(path)
    out: dict[Key, str] = {}
    if _is_sim_jsonl(path):
        with open(path, "rb") as handle:
            for line in handle:
                row = orjson.loads(line)
                if row.get(column) is not None:
                    out[(row["record_id"], row["call_index"])] = unit_text(row["tool"], row["arguments"], row[column])
        return out
    if column != "real":
        raise ValueError(f"{path}: simulated outputs must be a simulate-tools JSONL")
    from deploysim.pipeline.sources import iter_records

    for record in iter_records([path]):
        record = deid(record) if deid is not None else record
        for n, logged in enumerate(logged_calls(record.messages)):
            if logged.output is not None:
                out[(record.id, n)] = unit_text(logged.call.name, logged.call.arguments, logged.output)
    return out


def load_calls(path: str | Path,
               deid: Callable[[Record], Record] | None = None) -> dict[Key, tuple[str, str, str, str]]:
    """(tool, arguments, output, task) of every answered logged call of a trajectory file, keyed like
    ``load_outputs``."""
    from deploysim.agents.toolsim.store import task_key
    from deploysim.pipeline.sources import iter_records

    out: dict[Key, tuple[str, str, str, str]] = {}
    for record in iter_records([Path(path)]):
        record = deid(record) if deid is not None else record
        for n, logged in enumerate(logged_calls(record.messages)):
            if logged.output is not None:
                out[(record.id, n)] = (logged.call.name, logged.call.arguments, logged.output, task_key(record))
    return out
