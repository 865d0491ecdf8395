"""Prior-call store: every logged (tool, canonical arguments, output) pair, in SQLite with FTS5.

Exact hits answer read-only calls made in the same world state (the same write
history); BM25 neighbours (SQLite FTS5, no extra dependency) give the simulator real
examples of the tool's output format. ``exclude_record`` keeps a trajectory from
answering itself in leave-one-out measurements; ``exclude_group`` keeps every trajectory
of the same task (``task_key``: other trials of one task) out too, so that a hit is
never another trial's copy of the answer (``--holdout task``).

Privacy: ``output`` is the de-identified text (what prompts may show). With
``raw=`` at ingest, exact hits return the *raw* output instead, so the resolver can
de-identify it in the asking episode's own record context: another trajectory's
surrogates (a different fake address for the same customer) would otherwise leak into
the episode — inconsistent within the record (DESIGN rule 2) and a tell. Raw outputs
are PII: a store on disk holds them only sealed by a ``RawSealer``, whose key never
leaves the process, so the store can stream to disk at any size and nothing readable
outlives the run.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deploysim.core.schema import Record
from deploysim.agents.toolsim.calls import ToolPolicy, canonical_args, logged_calls
from deploysim.agents.toolsim.overlay import write_state

#: Metadata fields that name a record's task, first found wins (tau-bench: ``task_id``).
TASK_FIELDS = ("task_id", "task", "instance_id", "problem_id", "sample_id")


def task_key(record: Record) -> str:
    """The task a trajectory is a trial of: a task field of its metadata, else its first user message.

    Trials of one task share it; ``--holdout task`` keeps every trajectory with the asking
    record's key out of the store, the examples and the neighbours.
    """
    for name in TASK_FIELDS:
        value = record.metadata.get(name)
        if value is not None and str(value) != "":
            return f"{name}={value}"
    first = next((m.text() for m in record.messages if m.role == "user"), "")
    return "user=" + hashlib.blake2b(first.strip().encode(), digest_size=8).hexdigest()

_WORD = re.compile(r"[A-Za-z0-9_]+")


class RawSealer:
    """Deterministic authenticated encryption (AES-SIV) under a key made here and kept in memory only.

    Deterministic on purpose: equal raw outputs seal to equal bytes, so the store can still
    count how often each output was logged. Equality is all the sealed column reveals.
    """

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESSIV

        self._siv = AESSIV(AESSIV.generate_key(512))

    def seal(self, text: str) -> bytes:
        return self._siv.encrypt(text.encode("utf-8"), None)

    def unseal(self, blob: bytes) -> str:
        return self._siv.decrypt(blob, None).decode("utf-8")


@dataclass(frozen=True)
class PriorCall:
    tool: str
    arguments: str
    output: str
    record_id: str


class PriorCallStore:
    def __init__(self, path: str | Path = ":memory:", sealer: RawSealer | None = None) -> None:
        """``sealer``: how raw outputs are kept; required for raw outputs in a store on disk."""
        self.on_disk = str(path) != ":memory:"
        self.sealer = sealer
        if self.on_disk:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS calls (
                id INTEGER PRIMARY KEY, tool TEXT NOT NULL, args TEXT NOT NULL, output TEXT NOT NULL,
                state TEXT NOT NULL, record_id TEXT NOT NULL, context TEXT NOT NULL, raw_output TEXT,
                grp TEXT NOT NULL DEFAULT '',
                UNIQUE (record_id, tool, args, state));
            CREATE INDEX IF NOT EXISTS calls_exact ON calls (tool, args, state);
            CREATE VIRTUAL TABLE IF NOT EXISTS calls_fts USING fts5(
                tool, args, context, content='calls', content_rowid='id');
            CREATE TRIGGER IF NOT EXISTS calls_ai AFTER INSERT ON calls BEGIN
                INSERT INTO calls_fts(rowid, tool, args, context) VALUES (new.id, new.tool, new.args, new.context);
            END;
            """
        )

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM calls").fetchone()[0]

    def add_record(self, record: Record, policy: ToolPolicy, raw: Record | None = None) -> int:
        """Ingest every answered call of a trajectory, each with the write history before it.

        ``raw``: the same trajectory before de-identification; its outputs answer exact hits.
        Each row carries the record's task (``task_key``) for ``exclude_group``.
        """
        group = task_key(record)
        writes: list[tuple[str, str]] = []
        rows = []
        last_user = ""
        calls = logged_calls(record.messages)
        raw_calls = logged_calls(raw.messages) if raw is not None else []
        if raw is not None and [c.index for c in raw_calls] != [c.index for c in calls]:
            raise ValueError(f"{record.id}: raw and de-identified trajectories differ in structure")
        if raw is not None and self.on_disk and self.sealer is None:
            raise ValueError("raw tool outputs are PII: a prior-call store on disk needs a RawSealer")
        raw_outputs: list[str | bytes | None] = [None] * len(calls)
        if raw is not None:
            raw_outputs = [c.output if self.sealer is None or c.output is None else self.sealer.seal(c.output)
                           for c in raw_calls]
        by_index: dict[int, str] = {}
        for i, message in enumerate(record.messages):
            if message.role == "user":
                last_user = message.text()
            by_index[i] = last_user
        for logged, raw_output in zip(calls, raw_outputs, strict=True):
            args = canonical_args(logged.call.arguments)
            if logged.output is not None:
                rows.append((logged.call.name, args, logged.output, write_state(writes), record.id,
                             by_index.get(logged.index, "")[:500], raw_output, group))
            if policy.call_kind(logged.call.name, logged.call.arguments) != "read":
                writes.append((logged.call.name, args))
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO calls (tool, args, output, state, record_id, context, raw_output, grp) "
                "VALUES (?,?,?,?,?,?,?,?)",
                rows)
        return len(rows)

    def add_records(self, records: Iterable[Record | tuple[Record, Record]], policy: ToolPolicy) -> int:
        """Records, or (de-identified, raw) pairs of the same record."""
        return sum(self.add_record(r[0], policy, raw=r[1]) if isinstance(r, tuple) else self.add_record(r, policy)
                   for r in records)

    def exact_hit(self, tool: str, arguments: str, state: str, exclude_record: str | None = None,
                  exclude_group: str | None = None) -> tuple[str, bool] | None:
        """(output, is_raw): the most frequent logged output of this exact call in this state, or None.

        ``is_raw``: the output is the raw text (ingested with ``raw=``) and must be de-identified
        by the caller; otherwise it is the de-identified text of the trajectory it came from.
        """
        row = self.db.execute(
            "SELECT coalesce(raw_output, output), raw_output IS NOT NULL, count(*) AS n FROM calls "
            "WHERE tool = ? AND args = ? AND state = ? AND record_id != ? AND (? = '' OR grp != ?) "
            "GROUP BY 1, 2 ORDER BY n DESC, min(id) LIMIT 1",
            (tool, canonical_args(arguments), state, exclude_record or "", exclude_group or "", exclude_group or ""),
        ).fetchone()
        if row is None:
            return None
        output, is_raw = row[0], bool(row[1])
        if is_raw and isinstance(output, bytes):
            if self.sealer is None:
                raise ValueError("sealed raw output and no RawSealer to open it")
            output = self.sealer.unseal(output)
        return output, is_raw

    def exact(self, tool: str, arguments: str, state: str, exclude_record: str | None = None,
              exclude_group: str | None = None) -> str | None:
        """The most frequent logged output of this exact call in this world state, or None (see ``exact_hit``)."""
        hit = self.exact_hit(tool, arguments, state, exclude_record, exclude_group)
        return hit[0] if hit else None

    def neighbours(self, tool: str, arguments: str, k: int = 3, exclude_record: str | None = None,
                   context: str = "", exclude_group: str | None = None) -> list[PriorCall]:
        """Up to ``k`` prior calls of the same tool, nearest by BM25 over arguments and context."""
        words = _WORD.findall(canonical_args(arguments) + " " + context)[:40]
        rows: list[tuple[str, str, str, str]] = []
        if words:
            query = " OR ".join('"' + w.replace('"', "") + '"' for w in dict.fromkeys(words))
            rows = self.db.execute(
                "SELECT c.tool, c.args, c.output, c.record_id FROM calls_fts f JOIN calls c ON c.id = f.rowid "
                "WHERE calls_fts MATCH ? AND c.tool = ? AND c.record_id != ? AND (? = '' OR c.grp != ?) "
                "ORDER BY bm25(calls_fts) LIMIT ?",
                (query, tool, exclude_record or "", exclude_group or "", exclude_group or "", k * 3),
            ).fetchall()
        if len(rows) < k:  # no word overlap: any examples of the tool still teach its format
            rows += self.db.execute(
                "SELECT tool, args, output, record_id FROM calls WHERE tool = ? AND record_id != ? "
                "AND (? = '' OR grp != ?) LIMIT ?",
                (tool, exclude_record or "", exclude_group or "", exclude_group or "", k * 3)).fetchall()
        seen: set[tuple[str, str]] = set()
        out: list[PriorCall] = []
        for row in rows:
            if (row[1], row[2]) in seen:
                continue
            seen.add((row[1], row[2]))
            out.append(PriorCall(*row))
            if len(out) == k:
                break
        return out

    def outputs(self, tool: str, exclude_record: str | None = None, exclude_group: str | None = None,
                limit: int = 300) -> list[str]:
        """Up to ``limit`` logged (de-identified) outputs of a tool, held-out records excluded."""
        rows = self.db.execute(
            "SELECT output FROM calls WHERE tool = ? AND record_id != ? AND (? = '' OR grp != ?) ORDER BY id LIMIT ?",
            (tool, exclude_record or "", exclude_group or "", exclude_group or "", limit)).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self.db.close()
