"""Sources: read logged conversations in any supported format, streaming, into Records.

``iter_inputs`` yields a ``Record`` for each good input and a ``Reject`` (file,
line/item/row, field, reason) for each bad one, so callers can keep going and
account for every input (DESIGN rule 3).
"""

from __future__ import annotations

import os

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deploysim.pipeline.replay import WEIGHT_KEY, cut_indices
from deploysim.core.schema import Record, RecordError, Reject
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
from deploysim.pipeline.sources.inspect_log import InspectLog
from deploysim.pipeline.sources.langfuse import Langfuse
from deploysim.pipeline.sources.langsmith import LangSmith
from deploysim.pipeline.sources.mini_swe_agent import MiniSweAgent
from deploysim.pipeline.sources.native import NativeRecords
from deploysim.pipeline.sources.openai_chat import AgentTrajectory, OpenAIChat
from deploysim.pipeline.sources.openhands import OpenHands
from deploysim.pipeline.sources.openinference import OpenInference
from deploysim.pipeline.sources.otel import OTelGenAI
from deploysim.pipeline.sources.sharegpt import ShareGPT
from deploysim.pipeline.sources.swe_agent import SWEAgent

#: Detection order matters: the most specific shapes first (OpenInference before OTel GenAI,
#: the coding agents before plain OpenAI chat, which also has ``messages``).
PARSERS: dict[str, FormatParser] = {
    p.name: p for p in (NativeRecords(), InspectLog(), MiniSweAgent(), SWEAgent(), OpenHands(), Langfuse(),
                        LangSmith(), OpenInference(), OTelGenAI(), ShareGPT(), AgentTrajectory(), OpenAIChat())
}
FORMATS: tuple[str, ...] = ("auto", *PARSERS)
DEFAULT_MAX_MESSAGE_CHARS = 1_000_000

__all__ = [
    "FORMATS",
    "RecordError",
    "SkippedInputs",
    "SourceError",
    "check_paths",
    "detect_format",
    "iter_inputs",
    "iter_records",
]


def detect_format(path: Path) -> str:
    """The format of ``path``: judged from the file itself (zip members, a log header), else by a vote
    of its first readable values — one damaged value must not refuse a file of good ones."""
    check_container(path)
    for name, parser in PARSERS.items():
        sniff = getattr(parser, "sniff_file", None)
        if sniff is not None and _sniffs(sniff, path):
            return name
    samples = sample_values(path)
    if not samples:
        raise SourceError(f"{path}: no readable JSON values to detect the format from; pass --format")
    votes: dict[str, int] = {}
    for sample in samples:
        name = next((n for n, parser in PARSERS.items() if _matches(parser, sample)), None)
        if name is not None:
            votes[name] = votes.get(name, 0) + 1
    if votes:
        return max(PARSERS, key=lambda n: votes.get(n, 0))  # ties: the more specific format (earlier)
    first = samples[0]
    shape = f"an object with keys {sorted(first)[:8]}" if isinstance(first, dict) else type(first).__name__
    raise SourceError(
        f"{path}: unknown content (first value is {shape}); expected one of "
        f"{', '.join(PARSERS)} — pass --format to choose"
    )


def _sniffs(sniff: Any, path: Path) -> bool:
    """A file too damaged for a format's own look at it is left to the value vote."""
    try:
        return bool(sniff(path))
    except (SourceError, MemoryError):
        raise
    except Exception:  # noqa: BLE001 - reading it for real reports the damage, located
        return False


def _matches(parser: FormatParser, sample: Any) -> bool:
    """A damaged value never stops detection: a matcher that fails on it does not match."""
    try:
        return bool(parser.matches(sample))
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - the value is judged again, with a located reject, when read
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
    if WEIGHT_KEY in record.metadata:
        weight = record.metadata[WEIGHT_KEY]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
            shown = type(weight).__name__ if not isinstance(weight, (int, float)) else "not a positive finite number"
            raise RecordError(WEIGHT_KEY, f"a sampling weight must be a positive number ({shown})", record.id)
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
    if format not in FORMATS:
        raise SourceError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    seen: dict[Path, int] = {}
    files = list(check_paths(paths))
    for path in files:
        name = detect_format(path) if format == "auto" else format
        parser = PARSERS[name]
        # The same file given twice is read twice: its records get a distinct origin (and point ids).
        copy = seen[path.resolve()] = seen.get(path.resolve(), -1) + 1
        label = origin_label(path, files)
        origin = f"{label}#{copy}" if copy else label
        reader = getattr(parser, "iter_values", None) or iter_raw
        for raw in _guarded(reader(path), path):
            if isinstance(raw, RawError):
                yield Reject(source_file=str(path), line=raw.location, member=raw.member, field=raw.field,
                             reason=raw.reason)
                continue
            yield from _parse_one(parser, raw, path, origin, max_message_chars, skipped)


def origin_label(path: Path, files: list[Path]) -> str:
    """A file's name in point ids: relative to the inputs' common folder, so ids and seeded samples do
    not change when the logs (or a checkout) move, yet two files with one name in two folders differ."""
    parents = {str(f.resolve().parent) for f in files}
    common = Path(os.path.commonpath(sorted(parents))) if parents else path.resolve().parent
    return path.resolve().relative_to(common).as_posix()


def _guarded(values: Iterator[RawValue | RawError], path: Path) -> Iterator[RawValue | RawError]:
    """A format's own reader failing part-way (a corrupt archive member) ends the file with one located
    reject instead of the run: what it read before stays read."""
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
    at = {"source_file": str(path), "line": raw.location, "member": raw.member}
    try:
        records = list(parser.parse(raw.value, ctx))
        for k, record in enumerate(records):
            validate_record(record, max_chars)
            record.origin = f"{origin}:{raw.location}" + (f".{k}" if k else "")
    except RecordError as exc:
        yield Reject(**at, record_id=exc.record_id, field=exc.field, reason=exc.reason)
        return
    except ValidationError as exc:  # never quote the input: it may hold PII
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        yield Reject(**at, field=field, reason=f"not a valid {parser.name} record: {first['msg']}")
        return
    except Exception as exc:  # any other failure costs this value only; the message may quote input
        yield Reject(**at, reason=f"not a valid {parser.name} record: {type(exc).__name__}")
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
