"""The per-episode overlay: every write an episode makes lands here, never in a snapshot.

Connectors read through it (a file written earlier in the episode reads back as
written; a deleted one is gone), and its write log is the episode's "world state":
a logged output may be replayed only while the episode's writes equal the writes
the logged trajectory had made before that call (DESIGN rule 5).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from deploysim.agents.toolsim.calls import call_signature

DELETED = object()


@dataclass
class WriteEntry:
    tool: str
    arguments: str
    output: str
    source: str


@dataclass
class Overlay:
    files: dict[str, str | None] = field(default_factory=dict)  # None: deleted in this episode
    documents: dict[tuple[str, str], Any] = field(default_factory=dict)  # (document, key) -> value or DELETED
    writes: list[WriteEntry] = field(default_factory=list)

    def record_write(self, tool: str, arguments: str, output: str, source: str) -> None:
        self.writes.append(WriteEntry(tool, arguments, output, source))

    def state(self) -> str:
        return write_state([(w.tool, w.arguments) for w in self.writes])

    def write_log(self, limit: int = 20) -> list[dict[str, str]]:
        return [{"tool": w.tool, "arguments": w.arguments, "output": w.output[:400]} for w in self.writes[-limit:]]


def write_state(writes: list[tuple[str, str]]) -> str:
    """A digest of the ordered writes (tool + canonical arguments): equal history, equal state."""
    digest = hashlib.sha256()
    for tool, arguments in writes:
        digest.update(call_signature(tool, arguments).encode() + b"\x1e")
    return digest.hexdigest()[:32]


