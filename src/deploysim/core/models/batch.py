"""Provider batch APIs: OpenAI (and OpenAI-compatible) files + batches, Anthropic Message Batches.

Half the price of live calls, answered within 24 hours. The narrow interface here is
"requests in (``custom_id`` -> provider request body), results out (one per
``custom_id``)"; the engine builds the bodies with the model client's own
``request_body`` and journals what comes back.

- ``custom_id`` is the call-cache key (64 hex digits: within Anthropic's 64-character
  limit), so identical calls are sent once and an answer lands in the cache under the
  key a live call would use: a rerun, batched or not, pays nothing.
- Requests are split at the provider's limits (OpenAI 50,000 requests / 200 MB per
  file, Anthropic 100,000 / 256 MB per batch).
- Every batch id goes into ``batches.jsonl`` in the run directory the moment it
  exists; ``--resume`` re-attaches to batches still in flight instead of resubmitting.
- Results come in any order and are mapped back by ``custom_id``. What a batch left
  undone (expired, cancelled, missing from the results) is resubmitted up to
  ``max_resubmits`` times, then recorded as an error with its reason. A batch the
  provider rejects is recorded, with the provider's reason, as one error per request
  (tried again on ``--resume``): nothing is lost.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

from deploysim.core.models._base import RETRYABLE_STATUS, ModelIdError, ModelOutput, split_model_id
from deploysim.core.models.cache import CallCache
from deploysim.core.models.service import is_empty

#: Providers (model-id prefixes) that offer a batch API.
BATCH_PROVIDERS = ("openai", "openai-compatible", "anthropic")

#: The provider's published price for batched calls, as a fraction of the live price.
BATCH_DISCOUNT = 0.5

REASON_CHARS = 300
MAX_REASONS = 20


class BatchUnsupportedError(ModelIdError):
    """``--batch`` (``batch: true``) on a provider without a batch API."""


def check_batch(model_id: str, deployment: str) -> None:
    """BatchUnsupportedError unless ``model_id``'s provider has a batch API; cheap (no client)."""
    prefix, _ = split_model_id(model_id)
    if prefix not in BATCH_PROVIDERS:
        raise BatchUnsupportedError(
            f"deployment {deployment!r}: provider {prefix!r} has no batch API; batch mode works with "
            f"{', '.join(p + '/' for p in BATCH_PROVIDERS)} models (drop --batch, or batch: true for this deployment)")


class BatchSettings(BaseModel):
    """How batched deployments (``batch: true`` or ``run --batch``) poll, split and retry."""

    model_config = ConfigDict(extra="forbid")

    #: first wait between status reads; doubles up to ``poll_max_s``
    poll_s: float = Field(default=10.0, gt=0)
    poll_max_s: float = Field(default=300.0, gt=0)
    #: lower the provider's per-batch limits (never raise them)
    max_requests: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)
    #: how many times requests an expired or cancelled batch left undone are sent again
    resubmits: int = Field(default=1, ge=0)

    def limits(self) -> BatchLimits | None:
        """The lowered limits, if any (the runner keeps the provider's where these are higher)."""
        if self.max_requests is None and self.max_bytes is None:
            return None
        return BatchLimits(self.max_requests or 10**9, self.max_bytes or 10**12)


@dataclass(frozen=True)
class BatchLimits:
    max_requests: int
    max_bytes: int


OPENAI_LIMITS = BatchLimits(50_000, 200 * 1024 * 1024)
ANTHROPIC_LIMITS = BatchLimits(100_000, 256 * 1024 * 1024)


@dataclass
class BatchStatus:
    state: str  # the provider's own word (validating, in_progress, ended, ...)
    ended: bool
    done: int = 0
    total: int = 0
    #: the whole batch was refused (OpenAI ``failed``): no request in it ran
    rejected: bool = False
    reason: str | None = None


@dataclass
class BatchResult:
    custom_id: str
    output: ModelOutput | None = None
    error: str | None = None
    #: expired or cancelled before it ran: may be resubmitted
    undone: bool = False
    #: seconds from the batch's submission to its results
    latency_s: float = 0.0


class BatchAPIError(RuntimeError):
    """The batch API could not be reached or refused us (auth, quota) after retries; batches stay journaled."""


def _retryable(exc: BaseException) -> bool:
    status = getattr(exc, "status_code", None)
    if status is not None:
        return status in RETRYABLE_STATUS
    return type(exc).__name__ in ("APIConnectionError", "APITimeoutError") or isinstance(exc, (OSError, TimeoutError))


class BatchRejectedError(Exception):
    """The provider refused a batch at submission; the message is its reason (no payloads)."""


class BatchAPI(Protocol):
    """One provider's batch endpoints. ``encode`` is one request as it travels (for the size limits)."""

    provider: str
    limits: BatchLimits

    def encode(self, custom_id: str, body: dict[str, Any]) -> bytes: ...

    async def submit(self, lines: list[bytes]) -> str: ...

    async def status(self, batch_id: str) -> BatchStatus: ...

    def results(self, batch_id: str) -> AsyncIterator[BatchResult]: ...


def _reason(text: Any) -> str:
    return " ".join(str(text).split())[:REASON_CHARS]


# -- OpenAI ----------------------------------------------------------------------------------------

OPENAI_ENDPOINT = "/v1/chat/completions"
_OPENAI_RUNNING = {"validating", "in_progress", "finalizing", "cancelling"}


class OpenAIBatchAPI:
    """``client.files`` + ``client.batches`` of the openai SDK: a JSONL file of requests, then a batch."""

    provider = "openai"
    limits = OPENAI_LIMITS

    def __init__(self, client: Any, parse: Callable[[dict[str, Any]], ModelOutput]) -> None:
        """``parse``: one result's chat-completion body -> ModelOutput (openai_api.output_from_completion_body)."""
        self._client = client
        self._parse = parse
        self._batches: dict[str, Any] = {}

    def encode(self, custom_id: str, body: dict[str, Any]) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": OPENAI_ENDPOINT, "body": body})

    async def submit(self, lines: list[bytes]) -> str:
        import openai

        data = b"\n".join(lines) + b"\n"
        try:
            uploaded = await self._client.files.create(file=("requests.jsonl", data, "application/jsonl"),
                                                       purpose="batch")
            batch = await self._client.batches.create(input_file_id=uploaded.id, endpoint=OPENAI_ENDPOINT,
                                                      completion_window="24h")
        except openai.APIStatusError as exc:
            if exc.status_code in (400, 403, 404, 413, 422):
                raise BatchRejectedError(f"HTTP {exc.status_code}: {_reason(_openai_message(exc))}") from None
            raise
        self._batches[batch.id] = batch
        return str(batch.id)

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._client.batches.retrieve(batch_id)
        self._batches[batch_id] = batch
        counts = batch.request_counts
        done = (counts.completed + counts.failed) if counts is not None else 0
        total = counts.total if counts is not None else 0
        if batch.status == "failed":
            errors = getattr(batch.errors, "data", None) or []
            reason = "; ".join(
                (f"line {e.line}: " if getattr(e, "line", None) else "") + f"{e.code}: {e.message}" for e in errors[:3]
            ) or "failed validation"
            return BatchStatus(batch.status, ended=True, done=done, total=total, rejected=True, reason=_reason(reason))
        return BatchStatus(batch.status, ended=batch.status not in _OPENAI_RUNNING, done=done, total=total)

    async def results(self, batch_id: str) -> AsyncIterator[BatchResult]:
        batch = self._batches.get(batch_id) or await self._client.batches.retrieve(batch_id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._client.files.content(file_id)
            for raw in content.text.splitlines():
                if not raw.strip():
                    continue
                line = orjson.loads(raw)
                custom_id = line.get("custom_id")
                if not isinstance(custom_id, str):
                    continue
                error, response = line.get("error"), line.get("response")
                if error:
                    code = error.get("code") or "error"
                    if code in ("batch_expired", "batch_cancelled"):
                        yield BatchResult(custom_id, undone=True, error=code)
                    else:
                        yield BatchResult(custom_id, error=_reason(f"{code}: {error.get('message', '')}"))
                    continue
                status = (response or {}).get("status_code")
                body = (response or {}).get("body") or {}
                if status != 200:
                    message = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else ""
                    yield BatchResult(custom_id, error=_reason(f"HTTP {status} in batch: {message}"))
                    continue
                try:
                    yield BatchResult(custom_id, output=self._parse(body))
                except (ValueError, TypeError) as exc:
                    yield BatchResult(custom_id, error=f"malformed result in batch ({type(exc).__name__})")


def _openai_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return type(exc).__name__


# -- Anthropic -------------------------------------------------------------------------------------


class AnthropicBatchAPI:
    """``client.messages.batches`` of the anthropic SDK (>= 0.41): the requests travel in one JSON body."""

    provider = "anthropic"
    limits = ANTHROPIC_LIMITS

    def __init__(self, client: Any, parse: Callable[[Any], ModelOutput]) -> None:
        """``parse``: a result's SDK Message -> ModelOutput (anthropic_api.output_from_message)."""
        self._client = client
        self._parse = parse

    def encode(self, custom_id: str, body: dict[str, Any]) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "params": body})

    async def submit(self, lines: list[bytes]) -> str:
        import anthropic

        try:
            batch = await self._client.messages.batches.create(requests=[orjson.loads(line) for line in lines])
        except anthropic.APIStatusError as exc:
            if exc.status_code in (400, 403, 404, 413, 422):
                raise BatchRejectedError(f"HTTP {exc.status_code}: {_reason(_openai_message(exc))}") from None
            raise
        return str(batch.id)

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._client.messages.batches.retrieve(batch_id)
        c = batch.request_counts
        done = c.succeeded + c.errored + c.canceled + c.expired
        return BatchStatus(batch.processing_status, ended=batch.processing_status == "ended", done=done,
                           total=done + c.processing)

    async def results(self, batch_id: str) -> AsyncIterator[BatchResult]:
        async for item in await self._client.messages.batches.results(batch_id):
            result = item.result
            if result.type == "succeeded":
                yield BatchResult(item.custom_id, output=self._parse(result.message))
            elif result.type == "errored":
                inner = getattr(result.error, "error", result.error)
                yield BatchResult(item.custom_id,
                                  error=_reason(f"{getattr(inner, 'type', 'error')}: {getattr(inner, 'message', '')}"))
            else:  # expired, canceled
                yield BatchResult(item.custom_id, undone=True, error=f"batch_{result.type}")


# -- the journal of batch ids ----------------------------------------------------------------------


class BatchJournal:
    """``batches.jsonl``: one line per batch submitted, collected or rejected, fsynced as written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _append(self, entry: dict[str, Any]) -> None:
        now = time.time()
        entry["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        entry["t"] = now
        with open(self.path, "ab") as f:
            f.write(orjson.dumps(entry) + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def submitted(self, label: str, batch_id: str, custom_ids: list[str]) -> None:
        self._append({"event": "submitted", "deployment": label, "batch_id": batch_id, "custom_ids": custom_ids})

    def collected(self, label: str, batch_id: str) -> None:
        self._append({"event": "collected", "deployment": label, "batch_id": batch_id})

    def rejected(self, label: str, reason: str, count: int) -> None:
        self._append({"event": "rejected", "deployment": label, "reason": reason, "requests": count})

    def in_flight(self, label: str) -> list[tuple[str, list[str], float]]:
        """Batches of ``label`` submitted and not yet collected, newest first (a torn last line is skipped).

        Newest first: a resubmission claims its requests before the batch it replaced.
        """
        if not self.path.exists():
            return []
        open_batches: dict[str, tuple[list[str], float]] = {}
        with open(self.path, "rb") as f:
            for raw in f:
                try:
                    entry = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if entry.get("deployment") != label:
                    continue
                if entry.get("event") == "submitted":
                    open_batches[entry["batch_id"]] = (entry["custom_ids"], entry.get("t", time.time()))
                elif entry.get("event") == "collected":
                    open_batches.pop(entry["batch_id"], None)
        return [(batch_id, ids, t) for batch_id, (ids, t) in reversed(open_batches.items())]


# -- planning and running --------------------------------------------------------------------------


def split_at_limits(lines: Iterable[tuple[str, bytes]], limits: BatchLimits) -> Iterator[list[tuple[str, bytes]]]:
    """Consecutive chunks of at most ``limits.max_requests`` lines and ``limits.max_bytes`` bytes (JSONL).

    A generator: only the chunk being filled is in memory.
    """
    chunk: list[tuple[str, bytes]] = []
    size = 0
    for custom_id, line in lines:
        n = len(line) + 1
        if chunk and (len(chunk) >= limits.max_requests or size + n > limits.max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((custom_id, line))
        size += n
    if chunk:
        yield chunk


class Spool:
    """Byte strings in a file, indexed by id: memory holds offsets, not the data.

    Request bodies (encoded as the provider wants them) and the items waiting for their
    answers are spooled, so a batched run's memory does not grow with its prompts. An id
    already there is not added again (the same call twice is sent once).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "w+b")  # noqa: SIM115 - closed by close()
        self._index: dict[str, tuple[int, int]] = {}
        self._end = 0
        self._dirty = False

    def add(self, key: str, data: bytes) -> bool:
        if key in self._index:
            return False
        self._file.write(data + b"\n")
        self._index[key] = (self._end, len(data))
        self._end += len(data) + 1
        self._dirty = True
        return True

    def get(self, key: str) -> bytes:
        if self._dirty:
            self._file.flush()
            self._dirty = False
        offset, length = self._index[key]
        return os.pread(self._file.fileno(), length, offset)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def close(self, remove: bool = True) -> None:
        self._file.close()
        if remove:
            self.path.unlink(missing_ok=True)


@dataclass
class BatchStats:
    requests: int = 0
    cache_hits: int = 0
    batches_submitted: int = 0
    batches_reattached: int = 0
    batches_rejected: int = 0
    requests_rejected: int = 0
    requests_resubmitted: int = 0
    requests_undone: int = 0
    requests_oversize: int = 0
    rejections: list[str] = field(default_factory=list)


ResultSink = Callable[[BatchResult, bool], None]


class BatchRunner:
    """Send ``requests`` through one provider's batch API and hand every result to ``on_result``.

    ``on_result(result, cached)`` is called once per ``custom_id``; ``flush`` after each
    batch's results, before the journal marks that batch collected (so a kill between
    the two re-downloads the results instead of losing them).
    """

    def __init__(self, api: BatchAPI, journal: BatchJournal, label: str, *, cache: CallCache | None = None,
                 limits: BatchLimits | None = None, poll_s: float = 10.0, poll_max_s: float = 300.0,
                 max_resubmits: int = 1, on_status: Callable[[str], None] | None = None,
                 attempts: int = 8) -> None:
        self.api = api
        self.journal = journal
        self.label = label
        self.cache = cache
        provider_limits = api.limits
        if limits is not None:  # only ever lower than the provider's
            provider_limits = BatchLimits(min(limits.max_requests, provider_limits.max_requests),
                                          min(limits.max_bytes, provider_limits.max_bytes))
        self.limits = provider_limits
        self.poll_s = poll_s
        self.poll_max_s = poll_max_s
        self.max_resubmits = max_resubmits
        self.attempts = attempts
        self.on_status = on_status or (lambda text: None)
        self.stats = BatchStats()
        self._states: dict[str, BatchStatus] = {}
        self._submitted_at: dict[str, float] = {}

    async def run(self, requests: Spool, on_result: ResultSink,
                  flush: Callable[[], None] = lambda: None) -> BatchStats:
        self._sink, self._flush = on_result, flush
        pending = dict.fromkeys(requests)
        self.stats.requests = len(pending)
        if self.cache is not None:
            for custom_id in list(pending):
                hit = self.cache.get(custom_id)
                if hit is not None and not is_empty(hit):
                    self.stats.cache_hits += 1
                    del pending[custom_id]
                    on_result(BatchResult(custom_id, output=hit), True)
            flush()
        follow: list[tuple[str, list[str], int]] = []
        for batch_id, custom_ids, submitted_at in self.journal.in_flight(self.label):
            self._submitted_at[batch_id] = submitted_at
            mine = [c for c in custom_ids if c in pending]
            for custom_id in mine:
                del pending[custom_id]
            if mine:
                self.stats.batches_reattached += 1
                follow.append((batch_id, mine, 0))
        submitted = await self._submit(requests, list(pending), 0)
        await asyncio.gather(*(self._follow(b, ids, attempt, requests) for b, ids, attempt in follow + submitted))
        return self.stats

    async def _call(self, what: str, call: Callable[[], Any]) -> Any:
        """``await call()``, tried again with backoff on transient failures (429, 5xx, no connection)."""
        delay = min(self.poll_s, 1.0)
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except BatchRejectedError:
                raise
            except Exception as exc:
                status = getattr(exc, "status_code", None)
                why = f"{type(exc).__name__}" + (f" (HTTP {status})" if status is not None else "")
                if not _retryable(exc) or attempt == self.attempts:
                    raise BatchAPIError(f"deployment {self.label!r}: {self.api.provider} batch API, {what}: {why}"
                                        f" after {attempt} attempt(s)") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.poll_max_s)

    def _lines(self, requests: Spool, custom_ids: list[str]) -> Iterator[tuple[str, bytes]]:
        for custom_id in custom_ids:
            line = requests.get(custom_id)
            if len(line) + 1 > self.limits.max_bytes:
                self.stats.requests_oversize += 1
                self._sink(BatchResult(custom_id, error=f"request of {len(line)} bytes is larger than the "
                                                        f"batch limit of {self.limits.max_bytes} bytes"), False)
                continue
            yield custom_id, line

    async def _submit(self, requests: Spool, custom_ids: list[str],
                      attempt: int) -> list[tuple[str, list[str], int]]:
        lines = self._lines(requests, custom_ids)
        out = []
        for chunk in split_at_limits(lines, self.limits):
            ids = [c for c, _ in chunk]
            try:
                batch_id = await self._call("submitting a batch",
                                            functools.partial(self.api.submit, [line for _, line in chunk]))
            except BatchRejectedError as exc:
                self._rejected(ids, str(exc))
                continue
            self._submitted_at[batch_id] = time.time()
            self.journal.submitted(self.label, batch_id, ids)
            self.stats.batches_submitted += 1
            out.append((batch_id, ids, attempt))
        return out

    def _rejected(self, custom_ids: list[str], reason: str) -> None:
        """A batch the provider refused: one error per request, with its reason (retried on --resume)."""
        self.stats.batches_rejected += 1
        self.stats.requests_rejected += len(custom_ids)
        if len(self.stats.rejections) < MAX_REASONS:  # the summary lists the first few; all are counted
            self.stats.rejections.append(reason)
        self.journal.rejected(self.label, reason, len(custom_ids))
        for custom_id in custom_ids:
            self._sink(BatchResult(custom_id, error=f"batch rejected by provider: {reason}"), False)
        self._flush()

    async def _follow(self, batch_id: str, custom_ids: list[str], attempt: int,
                      requests: Spool) -> None:
        delay = self.poll_s
        while True:
            status = await self._call(f"reading batch {batch_id}", lambda: self.api.status(batch_id))
            self._states[batch_id] = status
            self._report()
            if status.ended:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.poll_max_s)
        wanted = set(custom_ids)
        if status.rejected:
            self._rejected(custom_ids, status.reason or status.state)
            await asyncio.sleep(0)
            self.journal.collected(self.label, batch_id)
            return
        undone: dict[str, str] = {}
        results = await self._call(f"downloading results of batch {batch_id}", lambda: self._download(batch_id))
        for result in results:
            if result.custom_id not in wanted:
                continue  # not ours, or a duplicate line
            wanted.discard(result.custom_id)
            if result.undone:
                undone[result.custom_id] = result.error or "batch_expired"
                continue
            result.latency_s = time.time() - self._submitted_at.get(batch_id, time.time())
            if result.output is not None and self.cache is not None:
                self.cache.put(result.custom_id, result.output)
            self._sink(result, False)
        for custom_id in wanted:  # not in the results at all: never ran
            undone[custom_id] = f"batch_{status.state}: no result"
        again = [c for c in undone if c in requests]
        if again and attempt < self.max_resubmits:
            self.stats.requests_resubmitted += len(again)
            followers = await self._submit(requests, again, attempt + 1)
        else:
            followers = []
            for custom_id, why in undone.items():
                self.stats.requests_undone += 1
                self._sink(BatchResult(custom_id, error=f"{why}: the batch ended before this request ran "
                                                        f"(submitted {attempt + 1} times)"), False)
        self._flush()
        await asyncio.sleep(0)  # journal writes scheduled for this loop turn land before "collected" does
        self.journal.collected(self.label, batch_id)
        await asyncio.gather(*(self._follow(b, ids, n, requests) for b, ids, n in followers))

    async def _download(self, batch_id: str) -> list[BatchResult]:
        """All of a batch's results (a failed download is tried again whole)."""
        return [result async for result in self.api.results(batch_id)]

    def _report(self) -> None:
        states = list(self._states.values())
        done = sum(s.done for s in states)
        total = sum(s.total for s in states)
        words = sorted({s.state for s in states if not s.ended})
        ended = sum(s.ended for s in states)
        self.on_status(f"{len(states)} batch(es): {ended} ended, {' '.join(words) or '-'}; {done}/{total} at provider")
