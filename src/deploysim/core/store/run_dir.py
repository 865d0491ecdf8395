"""The run directory: config, journal, rejects, Parquet outputs and the reconciled summary.

Layout::

    config.yaml                resolved configuration (what --resume re-reads)
    rejects.jsonl              bad inputs with file, line, field, reason (derived, rewritten)
    journal/generations.jsonl  one line per finished call, appended and flushed (the resume journal)
    points.parquet             final replay points
    generations.parquet        final generations, one row per (point, deployment, sample)
    summary.json               counts that reconcile, tokens, cache, timings

Points and rejects are a pure function of the inputs and config, so a resumed run
rewrites them (points go straight to Parquet, column by column); only generations
cost money, so only they are journaled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from pydantic import TypeAdapter

from deploysim.core.schema import Generation, Message, Reject, ReplayPoint, Usage, Verdict
from deploysim.core.store.journal import JournalError, JsonlJournal, ensure_space, write_error

BATCH_ROWS = 4096

POINT_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("point_id", pa.string()),
        ("record_id", pa.string()),
        ("turn_index", pa.int32()),
        ("prefix_json", pa.large_string()),
        ("original_json", pa.large_string()),
        ("tools_json", pa.string()),
        ("metadata_json", pa.string()),
        ("weight", pa.float64()),
    ]
)
GENERATION_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("point_id", pa.string()),
        ("deployment", pa.string()),
        ("sample_index", pa.int32()),
        ("text", pa.large_string()),
        ("tool_calls_json", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("error", pa.string()),
        ("attempts", pa.int32()),
        ("cached", pa.bool_()),
        ("prompt_truncated", pa.bool_()),
    ]
)
VERDICT_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("point_id", pa.string()),
        ("deployment", pa.string()),
        ("sample_index", pa.int32()),
        ("behaviour", pa.string()),
        ("grader", pa.string()),
        ("grader_version", pa.string()),
        ("flagged", pa.bool_()),
        ("score", pa.float64()),
        ("rationale", pa.large_string()),
        ("error", pa.string()),
    ]
)


class RunDirError(Exception):
    pass


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OSError while writing under ``path`` -> JournalError naming it (a full or read-only disk)."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc) from None


def generation_key(point_id: str, deployment: str, sample_index: int) -> str:
    return f"{point_id}|{deployment}|{sample_index}"


_MESSAGES = TypeAdapter(list[Message])


def _messages_json(messages: list[Message]) -> str:
    return _MESSAGES.dump_json(messages, exclude_defaults=True).decode()


def point_row(point: ReplayPoint) -> dict[str, Any]:
    """A replay point as one row of POINT_SCHEMA (also the line format of points.jsonl)."""
    return {
        "schema_version": point.schema_version,
        "point_id": point.point_id,
        "record_id": point.record_id,
        "turn_index": point.turn_index,
        "prefix_json": _messages_json(point.prefix),
        "original_json": orjson.dumps(point.original.model_dump(exclude_defaults=True)).decode()
        if point.original
        else None,
        "tools_json": orjson.dumps(point.tools).decode(),
        "metadata_json": orjson.dumps(point.metadata, default=str).decode(),
        "weight": point.weight,
    }


def generation_row(generation: Generation) -> dict[str, Any]:
    """A generation as one row of GENERATION_SCHEMA (also the journal's line format)."""
    return {
        "schema_version": generation.schema_version,
        "point_id": generation.point_id,
        "deployment": generation.deployment,
        "sample_index": generation.sample_index,
        "text": generation.text,
        "tool_calls_json": orjson.dumps([c.model_dump() for c in generation.tool_calls]).decode(),
        "finish_reason": generation.finish_reason,
        "prompt_tokens": generation.usage.prompt_tokens,
        "completion_tokens": generation.usage.completion_tokens,
        "latency_s": generation.latency_s,
        "error": generation.error,
        "attempts": generation.attempts,
        "cached": generation.cached,
        "prompt_truncated": generation.prompt_truncated,
    }


def _jsonl_batches(path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """JSONL whose lines are rows of ``schema``, parsed by Arrow in C++, block by block."""
    if not path.exists() or path.stat().st_size == 0:
        return
    reader = pa_json.open_json(
        path,
        read_options=pa_json.ReadOptions(block_size=1 << 20),  # larger blocks: RSS grew with size
        parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )
    for batch in reader:
        yield batch.select(schema.names)


class _ColumnBatches:
    """Rows gathered column by column and written to a _ParquetOut every ``BATCH_ROWS``."""

    def __init__(self, out: _ParquetOut) -> None:
        self.out = out
        self.columns: dict[str, list[Any]] = {name: [] for name in out.schema.names}

    def add(self, row: dict[str, Any]) -> None:
        for name, values in self.columns.items():
            values.append(row[name])
        if len(values) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        schema = self.out.schema
        if self.columns[schema.names[0]]:
            arrays = [pa.array(self.columns[f.name], type=f.type) for f in schema]
            self.out.write(pa.RecordBatch.from_arrays(arrays, schema=schema))
            self.columns = {name: [] for name in schema.names}

    def close(self) -> int:
        self.flush()
        return self.out.close()


class _ParquetOut:
    """Batches to a Parquet file under a temp name, renamed into place when complete."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.tmp = path.with_suffix(".parquet.tmp")
        self.schema = schema
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.count = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            self.writer.write_table(table.cast(self.schema))
            self.count += batch.num_rows

    def close(self) -> int:
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.count


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.journal_path = self.root / "journal" / "generations.jsonl"
        self.rejects_path = self.root / "rejects.jsonl"
        self._points: _ColumnBatches | None = None
        self._rejects: IO[bytes] | None = None
        self._journal = JsonlJournal(self.journal_path, key="point_id")
        #: a first attempt writes generations.parquet as it goes; a resumed one rebuilds it
        self._generations: _ColumnBatches | None = None
        self._generations_final = False
        #: whether the journal may hold error rows (set by journal() and done_keys())
        self.journal_has_errors = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def open_attempt(self) -> None:
        """Start (or restart) writing: derived files anew, the journal appended to."""
        with _writing(self.root):
            (self.root / "journal").mkdir(parents=True, exist_ok=True)
            self._points = _ColumnBatches(_ParquetOut(self.root / "points.parquet", POINT_SCHEMA))
            fresh = not self.journal_path.exists() or self.journal_path.stat().st_size == 0
            if fresh:  # each call is answered once per attempt: the journal's rows are final as written
                self._generations = _ColumnBatches(_ParquetOut(self.root / "generations.parquet", GENERATION_SCHEMA))
            self._generations_final = False
            self._rejects = open(self.rejects_path, "wb")
        self._journal.open()  # drops a final line cut short by a kill

    def close_attempt(self) -> int:
        """Close the attempt's files; returns the number of points written.

        Every file is closed even when one fails; the first failure is raised after.
        """
        points = 0
        failure: JournalError | None = None
        closers = [("points", self._points), ("generations", self._generations),
                   ("journal", self._journal), ("rejects", self._rejects)]
        self._points = self._generations = None
        self._rejects = None
        for name, part in closers:
            if part is None:
                continue
            try:
                with _writing(self.root):
                    closed = part.close()
                if name == "points":
                    points = closed or 0
                elif name == "generations":
                    self._generations_final = True
            except JournalError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return points

    def ensure_space(self) -> None:
        """JournalError (ENOSPC) when the run directory's disk has too little room to journal a call."""
        ensure_space(self.root)

    # -- writing ---------------------------------------------------------------------------

    def write_point(self, point: ReplayPoint) -> None:
        assert self._points is not None
        with _writing(self.root / "points.parquet"):
            self._points.add(point_row(point))

    def write_reject(self, reject: Reject) -> None:
        assert self._rejects is not None
        with _writing(self.rejects_path):
            self._rejects.write(reject.model_dump_json().encode() + b"\n")
            self._rejects.flush()

    def journal(self, generation: Generation, flush: bool = True) -> None:
        """Append one finished call, flushed to the OS so a SIGKILL after the flush loses nothing.

        ``flush=False`` lets an event loop coalesce the flushes of the calls that finished
        in one iteration (see ``flush_journal``).
        """
        if generation.error is not None:
            self.journal_has_errors = True
        row = generation_row(generation)
        self._journal.append(row, flush=flush)
        if self._generations is not None:
            with _writing(self.root / "generations.parquet"):
                self._generations.add(row)

    def flush_journal(self) -> None:
        self._journal.flush()

    # -- resume ----------------------------------------------------------------------------

    def iter_journal(self) -> Iterator[dict[str, Any]]:
        return self._journal.rows()

    def done_keys(self) -> set[str]:
        """Calls that finished well in an earlier attempt; errors are tried again on resume."""
        done: set[str] = set()
        for row in self.iter_journal():
            key = generation_key(row["point_id"], row["deployment"], row.get("sample_index", 0))
            if row.get("error") is None:
                done.add(key)
            else:
                self.journal_has_errors = True
                done.discard(key)
        return done

    # -- final outputs ---------------------------------------------------------------------

    def write_parquet(self) -> None:
        """generations.parquet: as written by a first attempt, else rebuilt from the journal.

        In the rebuild the last journal line per call wins (a call that failed in an
        earlier attempt and was retried on resume appears twice).
        """
        if self._generations_final:
            return
        with _writing(self.root / "generations.parquet"):
            self._rebuild_generations()

    def _rebuild_generations(self) -> None:
        # Only calls that errored can appear twice (retried on resume): set just those aside.
        errored = {
            generation_key(row["point_id"], row["deployment"], row.get("sample_index", 0))
            for row in self.iter_journal()
            if row.get("error") is not None
        } if self.journal_has_errors else set()
        generations = _ParquetOut(self.root / "generations.parquet", GENERATION_SCHEMA)
        last: dict[str, dict[str, Any]] = {}
        for batch in _jsonl_batches(self.journal_path, GENERATION_SCHEMA):
            if not errored:
                generations.write(batch)
                continue
            rows = batch.to_pylist()
            keep = []
            for row in rows:
                key = generation_key(row["point_id"], row["deployment"], row["sample_index"])
                if key in errored:
                    last[key] = row
                else:
                    keep.append(row)
            generations.write(pa.Table.from_pylist(keep, schema=GENERATION_SCHEMA))
        generations.write(pa.Table.from_pylist(list(last.values()), schema=GENERATION_SCHEMA))
        generations.close()

    def write_json(self, name: str, data: Any) -> None:
        tmp = self.root / f".{name}.tmp"
        with _writing(self.root / name):
            tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str))
            os.replace(tmp, self.root / name)


def read_points(run_dir: Path) -> Iterator[ReplayPoint]:
    """Replay points of a finished run, streamed from points.parquet."""
    for row in _iter_parquet(Path(run_dir) / "points.parquet"):
        original = orjson.loads(row["original_json"]) if row["original_json"] else None
        yield ReplayPoint(
            schema_version=row["schema_version"],
            point_id=row["point_id"],
            record_id=row["record_id"],
            turn_index=row["turn_index"],
            prefix=[Message.model_validate(m) for m in orjson.loads(row["prefix_json"])],
            original=Message.model_validate(original) if original else None,
            tools=orjson.loads(row["tools_json"]),
            metadata=orjson.loads(row["metadata_json"]),
            weight=row["weight"],
        )


def read_generations(run_dir: Path) -> Iterator[Generation]:
    for row in _iter_parquet(Path(run_dir) / "generations.parquet"):
        yield Generation(
            schema_version=row["schema_version"],
            point_id=row["point_id"],
            deployment=row["deployment"],
            sample_index=row["sample_index"],
            text=row["text"],
            tool_calls=orjson.loads(row["tool_calls_json"]),
            finish_reason=row["finish_reason"],
            usage=Usage(prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"]),
            latency_s=row["latency_s"],
            error=row["error"],
            attempts=row["attempts"],
            cached=row["cached"],
            prompt_truncated=row["prompt_truncated"],
        )


def write_verdicts(run_dir: Path, verdicts: Iterable[Verdict], name: str = "verdicts.parquet") -> int:
    """Verdicts to ``verdicts.parquet`` in batches (atomic rename); returns the row count."""
    out = _ParquetOut(Path(run_dir) / name, VERDICT_SCHEMA)
    rows: list[dict[str, Any]] = []
    for verdict in verdicts:
        rows.append(verdict.model_dump())
        if len(rows) >= BATCH_ROWS:
            out.write(pa.Table.from_pylist(rows, schema=VERDICT_SCHEMA))
            rows = []
    out.write(pa.Table.from_pylist(rows, schema=VERDICT_SCHEMA))
    return out.close()


def read_verdicts(run_dir: Path, name: str = "verdicts.parquet") -> Iterator[Verdict]:
    for row in _iter_parquet(Path(run_dir) / name):
        yield Verdict.model_validate(row)


def _iter_parquet(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        raise RunDirError(f"{path}: missing; is this a finished run directory?")
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        yield from batch.to_pylist()
