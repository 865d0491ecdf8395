"""Content-addressed call cache in SQLite (WAL): a completed call is never paid for twice.

The key is a canonical hash of everything that decides the answer: provider, model,
base URL, messages, params, tools and the sample index. Only successful answers are
stored. Writes are committed in small batches; the run journal, not the cache, is
what guarantees a killed run does not resend a finished call.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from deploysim.models._base import ModelOutput
from deploysim.models.openai_api import to_openai_messages
from deploysim.schema import GenerationParams, Message, ToolCall, Usage, content_hash

COMMIT_EVERY = 64
COMMIT_SECONDS = 0.5


def default_cache_path() -> Path:
    root = os.environ.get("DEPLOYSIM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "deploysim"
    )
    return Path(root) / "calls.sqlite"


def call_key(identity: dict[str, Any], messages: list[Message], params: GenerationParams,
             tools: list[dict[str, Any]], sample_index: int) -> str:
    return content_hash(
        {
            "identity": identity,
            "messages": to_openai_messages(messages),
            "params": params.model_dump(),
            "tools": tools,
            "sample": sample_index,
        }
    )


class CallCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, output BLOB NOT NULL, created REAL NOT NULL)"
        )
        self._pending = 0
        self._last_commit = time.monotonic()
        self._db.execute("BEGIN")
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ModelOutput | None:
        row = self._db.execute("SELECT output FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        data = orjson.loads(row[0])
        return ModelOutput(
            text=data["text"],
            tool_calls=[ToolCall(**c) for c in data["tool_calls"]],
            finish_reason=data["finish_reason"],
            usage=Usage(**data["usage"]),
            prompt_truncated=data.get("prompt_truncated", False),
        )

    def put(self, key: str, output: ModelOutput) -> None:
        blob = orjson.dumps(
            {
                "text": output.text,
                "tool_calls": [c.model_dump() for c in output.tool_calls],
                "finish_reason": output.finish_reason,
                "usage": output.usage.model_dump(),
                "prompt_truncated": output.prompt_truncated,
            }
        )
        self._db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?)", (key, blob, time.time()))
        self._pending += 1
        if self._pending >= COMMIT_EVERY or time.monotonic() - self._last_commit > COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self._pending = 0
        self._last_commit = time.monotonic()

    def close(self) -> None:
        self._db.execute("COMMIT")
        self._db.close()
