"""Content-addressed call cache in SQLite (WAL): a completed call is never paid for twice.

Only successful answers are stored; the run journal, not the cache, guarantees a killed run resends nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from deploysim.core.models._base import ModelOutput
from deploysim.core.schema import GenerationParams, Message, ToolCall, Usage, canonical_json

log = logging.getLogger("deploysim.cache")

COMMIT_EVERY = 1024
COMMIT_SECONDS = 1.0


def default_cache_path() -> Path:
    root = os.environ.get("DEPLOYSIM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "deploysim")
    return Path(root) / "calls.sqlite"


_MESSAGES = TypeAdapter(list[Message])


def call_key(identity: dict[str, Any], messages: list[Message], params: GenerationParams,
             tools: list[dict[str, Any]], sample_index: int) -> str:
    """sha256 over canonical JSON of everything that decides the answer."""
    digest = hashlib.sha256(canonical_json([identity, params.model_dump(), tools, sample_index]))
    digest.update(b"\x00")
    digest.update(_MESSAGES.dump_json(messages))
    return digest.hexdigest()


class CallCache:
    """Reads hit the database or a pending batch; one thread writes batches. A cache failure never fails a run."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = self._connect()
        self._db.execute("CREATE TABLE IF NOT EXISTS calls "
                         "(key TEXT PRIMARY KEY, output BLOB NOT NULL, created REAL NOT NULL)")
        self._writer_db: sqlite3.Connection | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploysim-cache")
        self._writing: Future[None] | None = None
        self._pending: dict[str, bytes] = {}
        self._in_flight: dict[str, bytes] = {}
        self._last_flush = time.monotonic()
        self.hits = 0
        self.misses = 0
        self.failures = 0

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def get(self, key: str) -> ModelOutput | None:
        blob = self._pending.get(key) or self._in_flight.get(key)
        if blob is None:
            try:
                row = self._db.execute("SELECT output FROM calls WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error:
                self.failures += 1
                row = None
            blob = row[0] if row else None
        if blob is None:
            self.misses += 1
            return None
        self.hits += 1
        data = orjson.loads(blob)
        return ModelOutput(text=data["text"], tool_calls=[ToolCall(**c) for c in data["tool_calls"]],
                           finish_reason=data["finish_reason"], usage=Usage(**data["usage"]),
                           prompt_truncated=data.get("prompt_truncated", False))

    def put(self, key: str, output: ModelOutput) -> None:
        self._pending[key] = orjson.dumps({
            "text": output.text, "tool_calls": [c.model_dump() for c in output.tool_calls],
            "finish_reason": output.finish_reason, "prompt_truncated": output.prompt_truncated, "usage": {
                "prompt_tokens": output.usage.prompt_tokens, "completion_tokens": output.usage.completion_tokens}})
        if len(self._pending) >= COMMIT_EVERY or time.monotonic() - self._last_flush > COMMIT_SECONDS:
            self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        """Hand the pending batch to the writer thread; ``wait=True`` returns once it is in the database."""
        if self._writing is not None:
            self._writing.result()
            self._writing = None
            self._in_flight = {}
        if self._pending:
            self._in_flight, self._pending = self._pending, {}
            self._writing = self._writer.submit(self._write, self._in_flight)
            self._last_flush = time.monotonic()
        if wait and self._writing is not None:
            self._writing.result()
            self._writing = None
            self._in_flight = {}

    def _write(self, batch: dict[str, bytes]) -> None:
        now = time.time()
        try:
            if self._writer_db is None:
                self._writer_db = self._connect()
            with self._writer_db:  # one short transaction
                self._writer_db.execute("BEGIN IMMEDIATE")
                self._writer_db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?, ?)",
                                            [(k, v, now) for k, v in batch.items()])
        except sqlite3.Error:
            self.failures += 1

    def close(self) -> None:
        self.flush(wait=True)
        self._writer.submit(self._close_writer).result()
        self._writer.shutdown()
        self._db.close()

    def _close_writer(self) -> None:
        if self._writer_db is not None:
            self._writer_db.close()


def open_cache(path: Path | None = None) -> CallCache | None:
    """The call cache at ``path`` (default: ``default_cache_path()``), or None with a warning (run uncached)."""
    path = Path(path) if path is not None else default_cache_path()
    try:
        return CallCache(path)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        log.warning("warning: call cache %s cannot be used (%s); running uncached", path, reason)
        return None
