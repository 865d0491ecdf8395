"""Append-and-flush JSONL journals and run-directory locks: the resume record (rule 4).

A line is written and flushed as soon as its unit finishes (a generation, an agent
episode, a simulated tool output); a final line cut short by a kill is dropped on
open; the last line per key wins. One process at a time may write a run directory.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
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

    def append(self, row: dict[str, Any], flush: bool = True) -> None:
        """``flush=False`` lets a caller coalesce flushes (see ``flush``)."""
        assert self._handle is not None, "journal not open"
        self._handle.write(orjson.dumps(row, default=str) + b"\n")
        if flush:
            self._handle.flush()

    def flush(self) -> None:
        if self._handle is not None:
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


@contextmanager
def exclusive_lock(path: Path, error: type[Exception], message: str) -> Iterator[None]:
    """Hold an flock on ``path`` or raise ``error(message)``: two writers would corrupt a journal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise error(message) from None
        yield
