"""``deploysim ingest``: sources -> sampling -> de-identification -> Parquet, once, streaming.

Sampling decides on record identity, metadata and in-memory MinHash signatures only,
so only the records that are kept pay for de-identification (Presidio is slow), and
raw text never reaches the output. The output is written to a temporary name and
renamed at the end: a killed ingest leaves no file that looks finished. Rejects go
next to it with file, line, field and reason (DESIGN rule 3), reasons de-identified.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from deploysim.core.schema import Record, Reject
from deploysim.pipeline.privacy import build_deidentifier, parse_privacy_config
from deploysim.pipeline.privacy.deidentify import Deidentifier
from deploysim.pipeline.privacy.surrogates import RecordSurrogates
from deploysim.pipeline.sampling import SamplingPlan, StreamSampler
from deploysim.pipeline.sources import DEFAULT_MAX_MESSAGE_CHARS, RECORD_COLUMN, iter_inputs, native_row

SCHEMA = pa.schema([(RECORD_COLUMN, pa.large_string())])
BATCH_ROWS = 2048


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
) -> dict[str, Any]:
    """Write the dataset and its side files; returns the summary (also written as ``*.ingest.json``)."""
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
    with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer, open(rejects_path, "wb") as rejects:
        for item in sampler:
            if isinstance(item, Reject):
                rejected += 1
                item = item.model_copy(update={"reason": scrub(item.reason)})
                rejects.write(orjson.dumps(item.model_dump()) + b"\n")
                kind = (item.field.split("[")[0] + ": " if item.field else "") + item.reason[:60]
                rejects_by_reason[kind] = rejects_by_reason.get(kind, 0) + 1
                continue
            try:  # the per-record boundary: one record that cannot be de-identified is one reject
                batch.append(native_row(deidentify(item))[RECORD_COLUMN])
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
        if batch:
            writer.write_batch(pa.record_batch([pa.array(batch, pa.large_string())], schema=SCHEMA))
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


def _reason_scrubber(deidentify: Callable[[Record], Record]) -> Callable[[str], str]:
    """Reject reasons can quote input values (pydantic does): placeholder them, never write them raw."""
    if not isinstance(deidentify, Deidentifier):
        return lambda reason: reason

    def scrub(reason: str) -> str:
        surrogates = RecordSurrogates(deidentify.fakers, b"reject", deidentify.secret, "placeholder")
        return deidentify.text(reason, surrogates)

    return scrub
