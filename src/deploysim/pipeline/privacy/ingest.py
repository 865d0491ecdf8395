"""``deploysim ingest``: sources -> sampling -> de-identification -> Parquet, once, streaming.

Sampling decides on record identity, metadata and in-memory MinHash signatures only,
so only the records that are kept pay for de-identification (Presidio is slow), and
raw text never reaches the output. The output is written to a temporary name and
renamed at the end: a killed ingest leaves no file that looks finished. Rejects go
next to it with file, line, field and reason (DESIGN rule 3), reasons de-identified.
Kept records are de-identified in batches (Presidio's NER runs over a whole batch's
texts at once) and, with ``workers`` > 1, in forked worker processes that share the
model loaded here; the output keeps the input order.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from deploysim.core.lifecycle import default_workers
from deploysim.core.schema import Record, Reject
from deploysim.pipeline.privacy import build_deidentifier, parse_privacy_config
from deploysim.pipeline.privacy.deidentify import Deidentifier
from deploysim.pipeline.privacy.surrogates import RecordSurrogates
from deploysim.pipeline.sampling import SamplingPlan, StreamSampler
from deploysim.pipeline.sources import DEFAULT_MAX_MESSAGE_CHARS, RECORD_COLUMN, iter_inputs, native_row

SCHEMA = pa.schema([(RECORD_COLUMN, pa.large_string())])
BATCH_ROWS = 2048
#: Records de-identified together (one task for a worker process): NER sees all their texts in spaCy batches.
DEID_BATCH = 32
Cleaned = tuple[list[tuple[Record | Exception, list[tuple[str, str, str]]]], Counter[str]]


def side_paths(out: Path) -> tuple[Path, Path]:
    """Where the rejects and the summary of dataset ``out`` go."""
    stem = out.name.removesuffix(".parquet")
    return out.with_name(f"{stem}.rejects.jsonl"), out.with_name(f"{stem}.ingest.json")


def ingest(
    paths: list[str],
    out: Path,
    *,
    fmt: str = "auto",
    privacy: dict[str, Any] | None = None,
    plan: SamplingPlan | None = None,
    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
    open_inputs: Callable[[], Iterator[Record | Reject]] | None = None,
    on_record: Callable[[], None] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write the dataset and its side files; returns the summary (also written as ``*.ingest.json``).

    ``workers``: processes for de-identification (None: all cores; 1: this process only)."""
    started = time.time()
    config = parse_privacy_config(privacy or {})
    deidentify = build_deidentifier(config)
    plan = plan or SamplingPlan()
    if open_inputs is None:
        def open_inputs() -> Iterator[Record | Reject]:
            return iter_inputs(paths, fmt, max_message_chars=max_message_chars)

    sampler = StreamSampler(open_inputs, plan)
    rejects_path, summary_path = side_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    rejected = written = late = 0
    rejects_by_reason: dict[str, int] = {}
    scrub = _reason_scrubber(deidentify)
    batch: list[str] = []
    pending: list[Record] = []
    cleaner = _Cleaner(deidentify, default_workers() if workers is None else workers)
    try:
        with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer, open(rejects_path, "wb") as rejects:
            def write(done: Iterator[tuple[Record, Record | Exception]]) -> None:
                nonlocal rejected, late, written
                for item, clean in done:
                    try:  # the per-record boundary: one record that cannot be de-identified is one reject
                        if isinstance(clean, Exception):
                            raise clean
                        batch.append(native_row(clean)[RECORD_COLUMN])
                    except Exception as exc:  # noqa: BLE001 - never quote: the message may carry input
                        rejected += 1
                        late += 1
                        reject = Reject(source_file=item.source_file, line=item.source_line, record_id=item.id,
                                        reason=f"de-identification failed ({type(exc).__name__})")
                        rejects.write(orjson.dumps(reject.model_dump()) + b"\n")
                        kind = reject.reason[:60]
                        rejects_by_reason[kind] = rejects_by_reason.get(kind, 0) + 1
                        continue
                    written += 1
                    if on_record is not None:
                        on_record()
                    if len(batch) >= BATCH_ROWS:
                        writer.write_batch(pa.record_batch([pa.array(batch, pa.large_string())], schema=SCHEMA))
                        batch.clear()

            for item in sampler:
                if isinstance(item, Reject):
                    rejected += 1
                    item = item.model_copy(update={"reason": scrub(item.reason)})
                    rejects.write(orjson.dumps(item.model_dump()) + b"\n")
                    kind = (item.field.split("[")[0] + ": " if item.field else "") + item.reason[:60]
                    rejects_by_reason[kind] = rejects_by_reason.get(kind, 0) + 1
                    continue
                pending.append(item)
                if len(pending) >= DEID_BATCH:
                    write(cleaner.submit(pending))
                    pending = []
            if pending:
                write(cleaner.submit(pending))
            write(cleaner.finish())
            if batch:
                writer.write_batch(pa.record_batch([pa.array(batch, pa.large_string())], schema=SCHEMA))
    finally:
        cleaner.close()
    os.replace(tmp, out)
    counts = sampler.counts
    summary: dict[str, Any] = {
        "dataset": str(out),
        "rejects": str(rejects_path),
        "records_read": counts.accepted - late + rejected,
        "records_accepted": counts.accepted - late,
        "records_rejected": rejected,
        "duplicates_removed": counts.duplicates_removed,
        "capped_removed": counts.capped_removed,
        "sampled_out": counts.sampled_out,
        "records_written": written,
        "strata": counts.strata,
        "rejects_by_reason": rejects_by_reason,
        "privacy": {"mode": config.mode,
                    "presidio": bool(getattr(deidentify, "presidio", False)),
                    "replaced": dict(getattr(deidentify, "counts", {})),
                    "mapping_written": bool(config.mapping_path) and config.mode != "off"},
        "sampling": {"n": plan.n, "strata": plan.strata, "allocation": plan.allocation, "caps": plan.caps,
                     "dedupe": plan.dedupe, "dedupe_threshold": plan.dedupe_threshold, "seed": plan.seed},
        "seconds": round(time.time() - started, 3),
    }
    summary["reconciles"] = (
        counts.accepted - late == written + counts.duplicates_removed + counts.capped_removed + counts.sampled_out
    )
    summary_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


_WORKER: Deidentifier | None = None  # the parent's de-identifier, inherited by forked workers


def _clean_batch(records: list[Record]) -> Cleaned:
    """In a worker: the batch cleaned, and the replacement counts it added."""
    assert _WORKER is not None
    _WORKER.counts.clear()
    return _WORKER.clean_many(records), Counter(_WORKER.counts)


class _Cleaner:
    """Batches of records in, ``(record, clean record or its exception)`` out in input order.

    With ``workers`` > 1 the batches go to forked processes (started with the first batch, so a small
    ingest never forks), at most two per worker in flight; mapping lines and counts come back here.
    """

    def __init__(self, deidentify: Callable[[Record], Record], workers: int) -> None:
        self.deidentify = deidentify
        self.workers = workers if isinstance(deidentify, Deidentifier) else 1
        self.pool: Any = None
        self.pending: deque[tuple[list[Record], AsyncResult[Cleaned]]] = deque()

    def submit(self, records: list[Record]) -> Iterator[tuple[Record, Record | Exception]]:
        deid = self.deidentify
        if not isinstance(deid, Deidentifier):  # privacy off: the identity
            for record in records:
                try:
                    yield record, deid(record)
                except Exception as exc:  # noqa: BLE001 - handed back as that record's reject
                    yield record, exc
            return
        if self.workers <= 1 or (self.pool is None and len(records) < DEID_BATCH):
            yield from zip(records, deid.deidentify_many(records))
            return
        if self.pool is None:
            global _WORKER
            _WORKER = deid
            self.pool = multiprocessing.get_context("fork").Pool(self.workers)
        self.pending.append((records, self.pool.apply_async(_clean_batch, (records,))))
        while len(self.pending) > 2 * self.workers:
            yield from self._collect()

    def finish(self) -> Iterator[tuple[Record, Record | Exception]]:
        while self.pending:
            yield from self._collect()

    def _collect(self) -> Iterator[tuple[Record, Record | Exception]]:
        assert isinstance(self.deidentify, Deidentifier)
        records, result = self.pending.popleft()
        cleaned, counts = result.get()
        self.deidentify.counts.update(counts)
        for record, (clean, replaced) in zip(records, cleaned):
            if replaced:
                self.deidentify.write_mapping(record, replaced)
            yield record, clean

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


def _reason_scrubber(deidentify: Callable[[Record], Record]) -> Callable[[str], str]:
    """Reject reasons can quote input values (pydantic does): placeholder them, never write them raw."""
    if not isinstance(deidentify, Deidentifier):
        return lambda reason: reason

    def scrub(reason: str) -> str:
        surrogates = RecordSurrogates(deidentify.fakers, b"reject", deidentify.secret, "placeholder")
        return deidentify.text(reason, surrogates)

    return scrub
