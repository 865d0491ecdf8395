"""A generic append-and-flush JSONL journal: one line per finished unit, the resume record (rule 4).

The same discipline as ``RunStore``'s generation journal, for units that are not
single generations (agent episodes, simulated tool outputs): a line is written and
flushed as soon as its unit finishes; a final line cut short by a kill is dropped on
open; the last line per key wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson


class JsonlJournal:
    def __init__(self, path: Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        self._handle: IO[bytes] | None = None

    def open(self) -> JsonlJournal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._handle = open(self.path, "ab")
        return self

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> JsonlJournal:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repair(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, row: dict[str, Any]) -> None:
        assert self._handle is not None, "journal not open"
        self._handle.write(orjson.dumps(row, default=str) + b"\n")
        self._handle.flush()

    def rows(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    yield orjson.loads(line)

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last row per key."""
        return {str(row[self.key]): row for row in self.rows()}
