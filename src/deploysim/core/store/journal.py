"""Append-and-flush JSONL journals and run-directory locks: the resume record (rule 4).

A final line cut short by a kill is dropped on open; the last line per key wins. Every failure is a
``JournalError`` naming the file, so a full disk stops a run before it sends calls it cannot record.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson


class JournalError(OSError):
    """A journal or run-directory file that cannot be written or read back; the message names it."""


def write_error(path: Path, exc: OSError) -> JournalError:
    """``exc`` as a JournalError naming ``path`` and the cause only (never the data)."""
    if isinstance(exc, JournalError):
        return exc
    return JournalError(exc.errno or errno.EIO, f"cannot write {path}: {exc.strerror or type(exc).__name__}")


#: Free space a run keeps in hand: no call is sent when less is left (see ``ensure_space``).
HEADROOM_BYTES = 1 << 20


def ensure_space(path: Path, headroom: int = HEADROOM_BYTES) -> None:
    """JournalError (ENOSPC) unless the file system holding ``path`` has ``headroom`` bytes free."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return  # cannot tell: the write itself will say
    if stats.f_bavail * stats.f_frsize < headroom:
        raise JournalError(errno.ENOSPC, f"cannot write {path}: less than {headroom >> 20} MiB free "
                                         f"(No space left on device)")


class JsonlJournal:
    def __init__(self, path: Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        self._handle: IO[bytes] | None = None

    def open(self) -> JsonlJournal:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair()
            self._handle = open(self.path, "ab")
        except OSError as exc:
            raise write_error(self.path, exc) from None
        return self

    @property
    def is_open(self) -> bool:
        return self._handle is not None

    def close(self) -> None:
        """Close, flushing what is buffered; a failure is raised once, after the handle is released."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as exc:
                raise write_error(self.path, exc) from None

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
        try:
            self._handle.write(orjson.dumps(row, default=str) + b"\n")
            if flush:
                self._handle.flush()
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def flush(self) -> None:
        if self._handle is not None:
            try:
                self._handle.flush()
            except OSError as exc:
                raise write_error(self.path, exc) from None

    def rows(self) -> Iterator[dict[str, Any]]:
        """Complete lines as dicts; a line that is not a JSON object with the key is a JournalError."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.endswith(b"\n"):
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    row = None
                if not isinstance(row, dict) or self.key not in row:
                    raise JournalError(
                        errno.EINVAL,
                        f"{self.path}:{number}: corrupt journal line (not a JSON object with {self.key!r}); "
                        "delete that line and resume: its call is sent again")
                yield row

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last row per key."""
        return {str(row[self.key]): row for row in self.rows()}


@contextmanager
def exclusive_lock(path: Path, error: type[Exception], message: str) -> Iterator[None]:
    """Hold an flock on ``path`` or raise ``error(message)``: two writers would corrupt a journal."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "w")
    except OSError as exc:
        raise write_error(path, exc) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise error(message) from None
        yield
