"""Stream raw JSON values out of files, one at a time, with where each came from, in flat memory.

A value that cannot be decoded is a ``RawError``, never skipped silently. ``decode_value`` holds the limits
(``MAX_VALUE_BYTES``, ``MAX_NESTING``), which the array scanner also applies while streaming. Reasons never
quote the input (it may hold personal data).
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

#: Deepest nesting accepted in one value. Real records nest < 20; orjson writes at most 254 levels
#: and de-identification recurses, so this keeps every later stage safe.
MAX_NESTING = 100
#: Largest JSON text of one value (a line, an array item, a span, a JSON-in-a-string field).
MAX_VALUE_BYTES = 64 * 1024 * 1024
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
#: Reading errors of a damaged container (a truncated or corrupt .gz); the rest of the file is lost.
_STREAM_ERRORS = (EOFError, OSError, zlib.error)


@dataclass(frozen=True)
class RawValue:
    value: Any
    location: int  # 1-based line (JSONL), item (JSON array), span (OTLP export) or row (Parquet)
    member: str | None = None  # the zip member it came from (Inspect ``.eval`` logs)


@dataclass(frozen=True)
class RawError:
    location: int
    reason: str
    member: str | None = None
    field: str | None = None  # the top-level field over a limit, when one is


class SourceError(Exception):
    """A whole input cannot be read (missing, unknown format): names the file."""


def container_kind(path: Path) -> str:
    """``jsonl``, ``json`` (``.traj`` too), ``parquet`` or ``zip`` (``.eval``) by file name, compression stripped."""
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


def check_container(path: Path) -> None:
    """File-level problems found before any work: a ``.gz`` that is not gzip at all."""
    container_kind(path)
    if path.name.lower().endswith(".gz") and path.is_file():
        with open(path, "rb") as raw:
            if raw.read(2) != GZIP_MAGIC:
                raise SourceError(f"{path}: not a gzip file (the name ends in .gz); decompress or rename it")


def open_binary(path: Path) -> IO[bytes]:
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if not path.is_file():
        raise SourceError(f"{path}: not a regular file")
    check_container(path)
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


# --- the limits, in one place -------------------------------------------------------------------------


def nesting_depth(value: Any, limit: int = MAX_NESTING) -> int:
    """Nesting depth of a decoded value (a scalar is 0), counted without recursion; stops past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children if isinstance(child, (dict, list, tuple)))
    return deepest


class LimitError(ValueError):
    """A value over a limit; ``field`` names the top-level field that holds the excess, when one does."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.field = field


def check_limits(value: Any) -> None:
    """``LimitError`` when a decoded value nests deeper than ``MAX_NESTING``."""
    if nesting_depth(value) <= MAX_NESTING:
        return
    field = None
    if isinstance(value, dict):
        field = next((str(k) for k, v in value.items() if nesting_depth(v) >= MAX_NESTING), None)
    raise LimitError(f"nested deeper than {MAX_NESTING} levels (the limit)", field)


def decode_value(data: bytes | str, depth: int | None = None) -> Any:
    """JSON text to a value within the limits (``depth``: already known from a byte scan); reasons never quote it."""
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(f"{len(data):,} bytes of JSON, over the limit of {MAX_VALUE_BYTES:,}")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(_json_problem(data, exc)) from None
    if depth is None and isinstance(data, bytes) and data.count(b"[") + data.count(b"{") <= MAX_NESTING:
        depth = MAX_NESTING  # fewer brackets than the limit: cannot nest deeper (counted in C)
    if depth is None or depth > MAX_NESTING:
        check_limits(value)
    return value


def _json_problem(data: bytes | str, exc: orjson.JSONDecodeError) -> str:
    if isinstance(data, bytes):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            return f"not valid UTF-8 (byte {bad.start} of the value)"
    if "depth limit" in exc.msg or "recursion" in exc.msg:
        return f"nested deeper than {MAX_NESTING} levels (the limit)"
    # orjson's message names the problem and its position, never the surrounding text
    return f"broken JSON: {exc.msg} at character {exc.pos}"


def _decoded(data: bytes, location: int, depth: int | None = None) -> RawValue | RawError:
    try:
        return RawValue(decode_value(data, depth), location)
    except LimitError as exc:
        return RawError(location, str(exc), field=exc.field)
    except ValueError as exc:
        return RawError(location, str(exc))


# --- containers ---------------------------------------------------------------------------------------


def _head(path: Path, size: int = 4096) -> bytes:
    with open_binary(path) as stream:
        try:
            return stream.read(size).removeprefix(BOM)
        except _STREAM_ERRORS:
            return b""


def iter_raw(path: Path) -> Iterator[RawValue | RawError]:
    """Every top-level JSON value of ``path``, lazily; a damaged container ends in one located RawError."""
    kind = container_kind(path)
    if kind == "zip":
        raise SourceError(f"{path}: a zip archive; only a format that knows its members reads it (pass --format)")
    if kind == "parquet":
        yield from _iter_parquet(path)
        return
    inner = _iter_jsonl(path) if kind == "jsonl" else _iter_json(path)
    last = 0
    try:
        for raw in inner:
            last = raw.location
            yield raw
    except _STREAM_ERRORS as exc:
        yield RawError(last + 1, f"the file is damaged or truncated after value {last} ({type(exc).__name__}); "
                                 "the rest of it cannot be read")


def _iter_jsonl(path: Path) -> Iterator[RawValue | RawError]:
    with open_binary(path) as stream:
        number = 0
        while True:
            line = stream.readline(MAX_VALUE_BYTES + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_VALUE_BYTES and not line.endswith(b"\n"):
                size = len(line)
                while line and not line.endswith(b"\n"):  # skip the rest of the line, never holding it
                    line = stream.readline(_CHUNK)
                    size += len(line)
                yield RawError(number, f"line of {size:,} bytes, over the limit of {MAX_VALUE_BYTES:,}")
                continue
            if number == 1:
                line = line.removeprefix(BOM)
            if line.strip():
                yield _decoded(line, number)


def _iter_json(path: Path) -> Iterator[RawValue | RawError]:
    """A JSON array streams item by item, an OTLP export span by span, else one value."""
    head = _head(path).lstrip()
    if head[:1] == b"[":
        with open_binary(path) as stream:
            yield from ArrayItems(stream)
        return
    if head[:1] == b"{" and re.match(rb'\{\s*"resourceSpans"\s*:', head):
        with open_binary(path) as stream:
            yield from ArrayItems(stream, ArrayItems.OTLP_SPANS, many=True)
        return
    yield from iter_whole(path)


def iter_whole(path: Path) -> Iterator[RawValue | RawError]:
    """The whole file as one JSON value (a file that is one trajectory, even when it is an array)."""
    with open_binary(path) as stream:
        data = stream.read(MAX_VALUE_BYTES + 1)
    yield _decoded(data.removeprefix(BOM), 1)


def iter_json_items(path: Path, prefix: str) -> Iterator[RawValue | RawError]:
    """The values at an ijson-style ``prefix`` (``item``, ``KEY.item``, ``KEY``), numbered from 1."""
    with open_binary(path) as stream:
        if prefix == "item":
            yield from ArrayItems(stream)
            return
        key, dot, rest = prefix.partition(".")
        if dot and rest == "item" and key:
            opener = re.compile(rb'(?<!\\)"' + re.escape(key.encode()) + rb'"\s*:\s*\[')
            yield from ArrayItems(stream, opener, many=True)
            return
        if "." not in prefix:  # the value of one top-level key
            opener = re.compile(rb'(?<!\\)"' + re.escape(prefix.encode()) + rb'"\s*:')
            yield from ArrayItems(stream, opener, single=True)
            return
    raise ValueError(f"unsupported prefix {prefix!r}: expected item, KEY.item or KEY")


_OBJECT_FIRST_KEY = re.compile(rb'\A\s*\{\s*("(?:[^"\\]|\\.){0,256}")\s*:')


def first_key(path: Path) -> str | None:
    """The first key of a top-level JSON object, from the file's head (not ijson: quadratic on a nesting bomb)."""
    match = _OBJECT_FIRST_KEY.match(_head(path))
    if match is None:
        return None
    try:
        key = orjson.loads(match.group(1))
    except orjson.JSONDecodeError:
        return None
    return key if isinstance(key, str) else None


class ArrayItems:
    """Items of JSON arrays, split by a byte scanner (strings, escapes, brackets) and decoded one by one.

    ``opener`` finds where items begin (a top-level ``[``, or each OTLP ``"spans": [`` with ``many``). A broken
    item is a located ``RawError``; the scan resumes inside it at ``,`` ``{`` with the broken item's first key.
    """

    _STRUCT = re.compile(rb'["\[\]{},]')
    _OPEN_RUN = re.compile(rb"[\[{]*")
    _CLOSE_RUN = re.compile(rb"[\]}]*")
    ARRAY = re.compile(rb"\[")
    OTLP_SPANS = re.compile(rb'"spans"\s*:\s*\[')

    def __init__(self, stream: IO[bytes], opener: re.Pattern[bytes] = ARRAY, many: bool = False,
                 single: bool = False) -> None:
        self.stream = stream
        self.opener = opener
        self.many = many
        self.single = single  # the opener precedes one value (``"eval": {...}``), not an array
        self.pending: list[bytes] = []  # bytes to scan before reading on (a stack)
        self.count = 0
        self._started = False
        self._first_key: bytes | None = None  # the first key of the last good object item, for resync

    def _next_chunk(self) -> bytes:
        if self.pending:
            return self.pending.pop()
        chunk = self.stream.read(_CHUNK)
        if not self._started:
            self._started = True
            chunk = chunk.removeprefix(BOM)
        return chunk

    def __iter__(self) -> Iterator[RawValue | RawError]:
        opened = seen_array = False
        carry = b""  # the end of the previous chunk, while looking for an opener that may straddle chunks
        item = bytearray()
        size = depth = deepest = 0
        in_string = escape = False
        while True:
            chunk = self._next_chunk()
            if not chunk:  # the end of the file
                if not seen_array and not self.many and not self.single:
                    self.count += 1
                    yield RawError(self.count, "not a JSON array: no opening [")
                    return
                if not opened:
                    return
                # the file ended inside an array (truncated): what is left is one more item
                resync = yield from self._finish(item, size, deepest)
                if resync is None:
                    return
                self.pending.append(resync)
                item.clear()
                size = depth = deepest = 0
                in_string = escape = False
                continue
            pos = 0
            if not opened:
                chunk = carry + chunk
                found = self.opener.search(chunk)
                if found is None:
                    if not self.many and not self.single and chunk.strip():
                        self.count += 1
                        yield RawError(self.count, "not a JSON array: no opening [")
                        return
                    carry = chunk[-64:]
                    continue
                opened = seen_array = True
                carry, pos = b"", found.end()
            end, mark = len(chunk), pos  # chunk[mark:] belongs to the current item, not yet buffered
            while pos < end:
                if escape:
                    escape, nxt = False, pos + 1
                elif in_string:
                    close = _string_end(chunk, pos)
                    if close is not None:
                        nxt, in_string = close, False
                    else:
                        nxt, escape = end, _odd_backslashes(chunk, pos)
                else:
                    match = self._STRUCT.search(chunk, pos)
                    if match is None:
                        pos = end
                        break
                    at = match.start()
                    nxt = at + 1
                    byte = chunk[at]
                    if byte == 0x22:  # a string: skip to its end (memchr speed), or on into the next chunk
                        close = _string_end(chunk, nxt)
                        if close is not None:
                            nxt = close
                        else:
                            in_string, escape, nxt = True, _odd_backslashes(chunk, nxt), end
                    elif byte == 0x5B or byte == 0x7B:  # a run of openers at once (a nesting bomb is one run)
                        run = self._OPEN_RUN.match(chunk, nxt)
                        if run is not None and run.end() > nxt:
                            depth += run.end() - nxt
                            nxt = run.end()
                        depth += 1
                        if depth > deepest:
                            deepest = depth
                    elif (byte == 0x5D or byte == 0x7D) and depth > 0:
                        if depth > 2:
                            run = self._CLOSE_RUN.match(chunk, nxt)
                            extra = min(run.end() - nxt, depth - 2) if run is not None else 0
                            depth -= extra  # leave the last closers of a run to the item-level checks
                            nxt += extra
                        depth -= 1
                    elif depth == 0 and (byte == 0x2C or byte == 0x5D or (self.single and byte == 0x7D)):
                        # the end of an item, or of the array (or of the one value after a key)
                        if byte == 0x5D and not self.single:
                            chunk = self._lookahead(chunk, nxt)
                            end = len(chunk)
                            if self._premature_end(chunk, nxt):  # a broken item closed early: read on
                                pos = nxt
                                continue
                        size = self._keep(item, chunk[mark:at], size)
                        resync = yield from self._finish(item, size, deepest)
                        item.clear()
                        size = depth = deepest = 0
                        mark = nxt
                        if self.single:
                            return
                        if resync is not None:  # scan from the next item's start, then this separator on
                            self.pending.append(chunk[at:])
                            self.pending.append(resync)
                            break
                        if byte == 0x5D:
                            if self.many:  # look for the next array
                                opened = False
                                self.pending.append(chunk[nxt:])
                                break
                            return
                pos = nxt
            else:
                size = self._keep(item, chunk[mark:], size)
                continue
            if pos >= end and opened:  # the loop ran off the chunk without a break
                size = self._keep(item, chunk[mark:], size)

    def _lookahead(self, chunk: bytes, at: int, need: int = 64) -> bytes:
        """``chunk`` extended from the stream until ``need`` non-blank bytes follow ``at`` (or the file ends)."""
        while len(chunk) - at < 4 * need and len(chunk[at:at + 4 * need].lstrip()) < need:
            more = self._next_chunk()
            if not more:
                break
            chunk += more
        return chunk

    def _premature_end(self, chunk: bytes, at: int) -> bool:
        """Whether a ``]`` at item level cannot be the array's end, judged by what follows it."""
        rest = chunk[at:at + 256].lstrip()
        if not self.many:
            return bool(rest)
        return rest[:1] == b"," and rest[1:].lstrip()[:1] == b"{"

    @staticmethod
    def _keep(item: bytearray, piece: bytes, size: int) -> int:
        """Buffer ``piece`` up to the size limit; the running size either way."""
        if size <= MAX_VALUE_BYTES:
            item += piece[: MAX_VALUE_BYTES + 1 - size]
        return size + len(piece)

    def _finish(self, item: bytearray, size: int, deepest: int) -> Generator[RawValue | RawError, None, bytes | None]:
        """Decode one item; returns bytes to scan again when a broken item holds the start of the next one."""
        data = bytes(item).strip()
        if not data:
            return None
        self.count += 1
        if size > MAX_VALUE_BYTES:
            outcome: RawValue | RawError = RawError(
                self.count, f"item of {size:,} bytes, over the limit of {MAX_VALUE_BYTES:,}")
        elif deepest > MAX_NESTING:  # never handed to a parser
            outcome = RawError(self.count, f"nested deeper than {MAX_NESTING} levels (the limit)")
        else:
            outcome = _decoded(data, self.count, deepest)
        yield outcome
        if isinstance(outcome, RawError):
            cut = _next_item_start(data, self._first_key)
            if cut is not None:
                return data[cut:]
        elif isinstance(outcome.value, dict) and outcome.value:
            key = _FIRST_KEY.match(data)
            self._first_key = key.group(1) if key else self._first_key
        return None


def _string_end(chunk: bytes, start: int) -> int | None:
    """The index after the quote that closes a string whose text begins at ``start``; None past the chunk."""
    quote = chunk.find(b'"', start)
    while quote != -1:
        k = quote
        while k > start and chunk[k - 1] == 0x5C:
            k -= 1
        if (quote - k) % 2 == 0:  # not escaped
            return quote + 1
        quote = chunk.find(b'"', quote + 1)
    return None


def _odd_backslashes(chunk: bytes, start: int) -> bool:
    """Whether the string text in ``chunk[start:]`` ends in an escape still open (an odd run of backslashes)."""
    k = len(chunk)
    while k > start and chunk[k - 1] == 0x5C:
        k -= 1
    return (len(chunk) - k) % 2 == 1


_FIRST_KEY = re.compile(rb'\A\s*\{\s*("(?:[^"\\]|\\.)*")\s*:')


def _next_item_start(data: bytes, learned: bytes | None = None) -> int | None:
    """Where the next item starts inside a broken one: ``,`` ``{`` and its (or the last good item's) first key."""
    match = _FIRST_KEY.match(data)
    key = match.group(1) if match else learned
    if key is None:
        return None
    pattern = re.compile(rb",\s*(\{\s*" + re.escape(key) + rb"\s*:)")
    found = pattern.search(data, 1)
    return found.start(1) if found else None


def _iter_parquet(path: Path) -> Iterator[RawValue | RawError]:
    import pyarrow.parquet as pq

    if not path.exists():
        raise SourceError(f"{path}: no such file")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise SourceError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from exc
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for item in batch.to_pylist():
            row += 1
            try:
                check_limits(item)
            except LimitError as exc:
                yield RawError(row, str(exc), field=exc.field)
                continue
            yield RawValue(item, row)


def sample_values(path: Path, limit: int = 20) -> list[Any]:
    """The first few decodable values, for format detection."""
    found: list[Any] = []
    for raw in iter_raw(path):
        if isinstance(raw, RawValue):
            found.append(raw.value)
            if len(found) >= limit:
                break
    return found
