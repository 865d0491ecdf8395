"""Stream raw JSON values out of files, one at a time, with where each came from.

Memory stays flat whatever the file size: JSONL is read line by line, JSON arrays
and OTLP exports item by item (ijson), Parquet batch by batch (pyarrow). A value
that cannot be decoded is yielded as a ``RawError`` so the caller can reject it
and carry on; nothing is skipped silently.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ijson
import orjson

#: Where in a nested OTLP/JSON export the span objects live.
OTLP_SPANS_PREFIX = "resourceSpans.item.scopeSpans.item.spans.item"


@dataclass(frozen=True)
class RawValue:
    value: Any
    location: int  # 1-based line (JSONL), item (JSON array) or row (Parquet)
    member: str | None = None  # the zip member it came from (Inspect ``.eval`` logs)


@dataclass(frozen=True)
class RawError:
    location: int
    reason: str
    member: str | None = None


class SourceError(Exception):
    """A whole input cannot be read (missing, unknown format): names the file."""


def container_kind(path: Path) -> str:
    """``jsonl``, ``json``, ``parquet`` or ``zip`` from the file name (compression stripped).

    A SWE-agent ``.traj`` file is JSON; an Inspect ``.eval`` log is a zip (read by its format).
    """
    name = path.name.lower()
    if name.endswith(".eval"):
        return "zip"
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith((".json", ".traj")):
        return "json"
    raise SourceError(
        f"{path}: unsupported file type; expected .json, .jsonl, .ndjson, .parquet (optionally .gz), "
        ".traj or .eval"
    )


def open_binary(path: Path) -> IO[bytes]:
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if not path.is_file():
        raise SourceError(f"{path}: not a regular file")
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _head(path: Path, size: int = 4096) -> bytes:
    with open_binary(path) as stream:
        return stream.read(size)


def _first_key(path: Path) -> str | None:
    """The first key of a top-level JSON object, read without loading the object."""
    with open_binary(path) as stream:
        try:
            for prefix, event, value in ijson.parse(stream):
                if prefix == "" and event == "map_key":
                    return str(value)
                if prefix == "" and event in ("end_map", "start_array"):
                    return None
        except (ijson.JSONError, UnicodeDecodeError, ValueError):
            return None
    return None


def iter_raw(path: Path) -> Iterator[RawValue | RawError]:
    """Every top-level JSON value of ``path``, lazily."""
    kind = container_kind(path)
    if kind == "zip":
        raise SourceError(f"{path}: a zip archive; only a format that knows its members reads it (pass --format)")
    if kind == "parquet":
        yield from _iter_parquet(path)
    elif kind == "jsonl":
        yield from _iter_jsonl(path)
    else:
        yield from _iter_json(path)


def _iter_jsonl(path: Path) -> Iterator[RawValue | RawError]:
    with open_binary(path) as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield RawValue(orjson.loads(line), number)
            except orjson.JSONDecodeError as exc:
                yield RawError(number, _json_problem(line, exc))


def _json_problem(line: bytes, exc: Exception) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8 (byte {bad.start} of the line)"
    return f"broken JSON: {exc}"


def _iter_json(path: Path) -> Iterator[RawValue | RawError]:
    """A JSON array streams item by item, an OTLP export span by span, else one value."""
    first = _head(path).lstrip()[:1]
    if first == b"[":
        prefix: str | None = "item"
    elif first == b"{" and _first_key(path) == "resourceSpans":
        prefix = OTLP_SPANS_PREFIX
    else:
        prefix = None
    if prefix is not None:
        yield from iter_json_items(path, prefix)
        return
    yield from iter_whole(path)


def iter_whole(path: Path) -> Iterator[RawValue | RawError]:
    """The whole file as one JSON value (a file that is one trajectory, even when it is an array)."""
    with open_binary(path) as stream:
        data = stream.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield RawError(1, f"not valid UTF-8 (byte {exc.start})")
        return
    try:
        yield RawValue(orjson.loads(data), 1)
    except orjson.JSONDecodeError as exc:
        yield RawError(1, f"broken JSON: {exc}")


def iter_json_items(path: Path, prefix: str) -> Iterator[RawValue | RawError]:
    """The values at an ijson ``prefix`` (``item``, ``samples.item``, ...) one at a time, numbered from 1."""
    with open_binary(path) as stream:
        count = 0
        try:
            for count, item in enumerate(ijson.items(stream, prefix, use_float=True), start=1):
                yield RawValue(item, count)
        except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
            yield RawError(count + 1, f"broken JSON after item {count}; the rest of the file cannot be read: {exc}")


def first_key(path: Path) -> str | None:
    """The first key of a top-level JSON object (None for anything else), read without loading it."""
    return _first_key(path)


def _iter_parquet(path: Path) -> Iterator[RawValue | RawError]:
    import pyarrow.parquet as pq

    if not path.exists():
        raise SourceError(f"{path}: no such file")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise SourceError(f"{path}: not a readable Parquet file: {exc}") from exc
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for item in batch.to_pylist():
            row += 1
            yield RawValue(item, row)


def sample_values(path: Path, limit: int = 3) -> list[Any]:
    """The first few decodable values, for format detection."""
    found: list[Any] = []
    for raw in iter_raw(path):
        if isinstance(raw, RawValue):
            found.append(raw.value)
            if len(found) >= limit:
                break
    return found
