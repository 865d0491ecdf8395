"""Sources: read logged conversations in any supported format, streaming, into Records.

``iter_inputs`` yields a ``Record`` for each good input and a ``Reject`` (file,
line/item/row, field, reason) for each bad one, so callers can keep going and
account for every input (DESIGN rule 3).
"""

from __future__ import annotations

import os

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deploysim.core.registry import REGISTRY
from deploysim.core.schema import Record, RecordError, Reject
from deploysim.pipeline.replay import cut_indices
from deploysim.pipeline.sources._base import FormatParser, SourceContext
from deploysim.pipeline.sources._io import (
    MAX_NESTING,
    RawError,
    RawValue,
    SourceError,
    check_container,
    iter_raw,
    nesting_depth,
    sample_values,
)
from deploysim.pipeline.sources.native import RECORD_COLUMN, native_row

#: Input formats are ``deploysim.sources`` entry points (core/registry.py): names without importing them.
FORMATS: tuple[str, ...] = ("auto", *REGISTRY.names("source"))
DEFAULT_MAX_MESSAGE_CHARS = 1_000_000
#: A record's sampling weight, when a log carries one among its fields.
LEGACY_WEIGHT_KEY = "sampling_weight"

__all__ = ["FORMATS", "RECORD_COLUMN", "RecordError", "SkippedInputs", "SourceError", "check_paths", "detect_format",
           "input_files", "iter_file", "iter_inputs", "iter_records", "native_row", "parser", "parsers"]


def parser(name: str) -> FormatParser:
    """The parser registered as ``name`` (a class built with no arguments, named by its entry point)."""
    instance: FormatParser = REGISTRY.get("source", name)()
    instance.name = name
    return instance


def parsers() -> dict[str, FormatParser]:
    """Every parser, in detection order: the most specific shapes first (``detect_order``, default 50)."""
    built = sorted((parser(n) for n in REGISTRY.names("source")), key=lambda p: getattr(p, "detect_order", 50))
    return {p.name: p for p in built}


def detect_format(path: Path) -> str:
    """The format of ``path``: from the file itself, else by a vote of its first readable values."""
    check_container(path)
    known = parsers()
    for name, candidate in known.items():
        sniff = getattr(candidate, "sniff_file", None)
        if sniff is not None and _judged(sniff, path, (SourceError, MemoryError)):
            return name
    samples = sample_values(path)
    if not samples:
        raise SourceError(f"{path}: no readable JSON values to detect the format from; pass --format")
    votes: dict[str, int] = {}
    for sample in samples:
        match = next((n for n, candidate in known.items() if _judged(candidate.matches, sample)), None)
        if match is not None:
            votes[match] = votes.get(match, 0) + 1
    if votes:
        return max(known, key=lambda n: votes.get(n, 0))  # ties: the more specific format (earlier)
    first = samples[0]
    shape = f"an object with keys {sorted(first)[:8]}" if isinstance(first, dict) else type(first).__name__
    raise SourceError(
        f"{path}: unknown content (first value is {shape}); expected one of "
        f"{', '.join(known)} — pass --format to choose"
    )


def _judged(check: Any, value: Any, fatal: tuple[type[BaseException], ...] = (MemoryError,)) -> bool:
    """A file or value too damaged for a format's check does not match: reading it for real rejects it, located."""
    try:
        return bool(check(value))
    except fatal:
        raise
    except Exception:  # noqa: BLE001 - the boundary of one format's look at damaged input
        return False


def check_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Fail before any work if an input is missing, naming every missing one."""
    resolved = [Path(p) for p in paths]
    missing = [str(p) for p in resolved if not p.is_file()]
    if missing:
        raise SourceError(f"input file(s) not found: {', '.join(missing)}")
    for path in resolved:
        check_container(path)
    return resolved


def validate_record(record: Record, max_message_chars: int) -> None:
    """The checks every format shares: something to replay, nothing absurdly large."""
    if not record.messages:
        raise RecordError("messages", "record has no messages", record.id)
    if not any(m.role == "user" for m in record.messages):
        roles = sorted({m.role for m in record.messages})
        raise RecordError("messages", f"record has no user message to replay (roles: {', '.join(roles)})", record.id)
    if not cut_indices(record):
        raise RecordError("messages", "nothing to replay: no assistant turn follows a user or tool message",
                          record.id)
    if LEGACY_WEIGHT_KEY in record.metadata:  # a weight in the log's own fields (and files ingested before
        value = record.metadata.pop(LEGACY_WEIGHT_KEY)  # weight was a typed field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(LEGACY_WEIGHT_KEY, f"a sampling weight must be a number, got {type(value).__name__}",
                              record.id)
        record.weight = float(value)
    if not 0 < record.weight < float("inf"):
        raise RecordError("weight",
                          "a sampling weight must be a positive finite number", record.id)
    for name in ("tools", "metadata"):
        if nesting_depth(getattr(record, name)) > MAX_NESTING:
            raise RecordError(name, f"nested deeper than {MAX_NESTING} levels (the limit)", record.id)
    for i, message in enumerate(record.messages):
        size = len(message.content or "")
        if size > max_message_chars:
            raise RecordError(
                f"messages[{i}].content",
                f"message is {size:,} characters, over the limit of {max_message_chars:,} (max_message_chars)",
                record.id,
            )


@dataclass
class SkippedInputs:
    """Values that are not records at all (an OTel span of an HTTP call), counted, not rejected."""

    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


def iter_inputs(
    paths: Iterable[str | Path],
    format: str = "auto",
    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
    skipped: SkippedInputs | None = None,
) -> Iterator[Record | Reject]:
    """Every record (or reject) of every file, in order, in constant memory."""
    for path, name, origin in input_files(paths, format):
        yield from iter_file(path, name, origin, max_message_chars, skipped)


def input_files(paths: Iterable[str | Path], format: str = "auto") -> list[tuple[Path, str, str]]:
    """(file, format, origin) for each input file, in order: what ``iter_file`` reads one file by."""
    if format not in FORMATS:
        raise SourceError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    seen: dict[Path, int] = {}
    files = list(check_paths(paths))
    plan = []
    for path in files:
        name = detect_format(path) if format == "auto" else format
        # The same file given twice is read twice: its records get a distinct origin (and point ids).
        copy = seen[path.resolve()] = seen.get(path.resolve(), -1) + 1
        label = origin_label(path, files)
        plan.append((path, name, f"{label}#{copy}" if copy else label))
    return plan


def iter_file(path: Path, format: str, origin: str, max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
              skipped: SkippedInputs | None = None) -> Iterator[Record | Reject]:
    """One input file's records (or rejects), in order (``format`` is a resolved name, not ``auto``)."""
    chosen = parser(format)
    reader = getattr(chosen, "iter_values", None) or iter_raw
    for raw in _guarded(reader(path), path):
        if isinstance(raw, RawError):
            yield Reject(source_file=str(path), line=raw.location, member=raw.member, field=raw.field,
                         reason=raw.reason)
            continue
        yield from _parse_one(chosen, raw, path, origin, max_message_chars, skipped)


def origin_label(path: Path, files: list[Path]) -> str:
    """A file's name in point ids, relative to the inputs' common folder (ids survive moving the logs)."""
    parents = {str(f.resolve().parent) for f in files}
    common = Path(os.path.commonpath(sorted(parents))) if parents else path.resolve().parent
    return path.resolve().relative_to(common).as_posix()


def _guarded(values: Iterator[RawValue | RawError], path: Path) -> Iterator[RawValue | RawError]:
    """A format's reader failing part-way ends the file with one located reject, not the run."""
    last = 0
    try:
        for raw in values:
            last = raw.location
            yield raw
    except (SourceError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary of one file's reader
        yield RawError(last + 1, f"the file cannot be read after value {last} ({type(exc).__name__}); "
                                 "the rest of it is lost")


def _parse_one(parser: FormatParser, raw: RawValue, path: Path, origin: str, max_chars: int,
               skipped: SkippedInputs | None) -> Iterator[Record | Reject]:
    """One decoded value to its records, or one reject: the error boundary of parsing and validation."""
    where = f"{path.name}:{raw.member}" if raw.member else f"{path.name}:{raw.location}"
    ctx = SourceContext(str(path), raw.location, where, raw.member)
    at = partial(Reject, source_file=str(path), line=raw.location, member=raw.member)
    try:
        records = list(parser.parse(raw.value, ctx))
        for k, record in enumerate(records):
            validate_record(record, max_chars)
            record.origin = f"{origin}:{raw.location}" + (f".{k}" if k else "")
    except RecordError as exc:
        yield at(record_id=exc.record_id, field=exc.field, reason=exc.reason)
        return
    except ValidationError as exc:  # never quote the input: it may hold PII
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        yield at(field=field, reason=f"not a valid {parser.name} record: {first['msg']}")
        return
    except Exception as exc:  # any other failure costs this value only; the message may quote input
        yield at(reason=f"not a valid {parser.name} record: {type(exc).__name__}")
        return
    if not records and skipped is not None:
        skipped.add(f"{parser.name} value with no conversation in it (e.g. a non-LLM span)")
    for record in records:
        if raw.member:
            record.metadata.setdefault("source_member", raw.member)
    yield from records


def iter_records(paths: Iterable[str | Path], format: str = "auto", **kwargs: Any) -> Iterator[Record]:
    """Only the good records, for callers that do not account for rejects."""
    for item in iter_inputs(paths, format, **kwargs):
        if isinstance(item, Record):
            yield item
