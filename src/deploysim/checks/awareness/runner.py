"""Ask the probed model every question about every transcript, through the call cache.

Why DeploymentCaller: probe calls get the same cache, retries, rate limits and error
rows as replay calls, so an interrupted ``deploysim awareness`` resumes without paying
twice. Each repeat is its own deployment with seed ``seed + repeat`` (same seed would
give the same sample k times). Identical probes (a transcript that redaction left
unchanged appears in several suites) are asked once per process.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from deploysim.checks.awareness.parse import parse_answer
from deploysim.checks.awareness.probes import PROBE_FORMATS, QUESTIONS, ProbeFormat, Question, build_probe, fit_transcript
from deploysim.checks.awareness.suites import Suite
from deploysim.core.models import CallCache, DeploymentCaller, ModelClient, get_model
from deploysim.core.schema import (
    Deployment,
    Generation,
    GenerationParams,
    Message,
    ReplayPoint,
    canonical_json,
    redact_credentials,
)

DEFAULT_MAX_TOKENS = 16
DEFAULT_MAX_TRANSCRIPT_CHARS = 6000


@dataclass(frozen=True)
class ProbeConfig:
    model: str
    formats: tuple[ProbeFormat, ...] = ("append", "quote")
    questions: tuple[Question, ...] = QUESTIONS
    repeats: int = 1
    temperature: float = 0.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = 0
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 4
    max_transcript_chars: int | None = DEFAULT_MAX_TRANSCRIPT_CHARS

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError("repeats must be at least 1")
        if not self.questions:
            raise ValueError("at least one question is needed")
        bad = [f for f in self.formats if f not in PROBE_FORMATS]
        if bad or not self.formats:
            raise ValueError(f"probe formats must be among {PROBE_FORMATS}, got {self.formats}")

    def describe(self) -> dict[str, Any]:
        return {
            "model": redact_credentials(self.model), "formats": list(self.formats), "repeats": self.repeats,
            "temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed,
            "max_transcript_chars": self.max_transcript_chars,
            "questions": [{"id": q.id, "text_append": q.text("append"), "eval_label": q.eval_label,
                           "real_label": q.real_label} for q in self.questions],
        }


@dataclass
class Answer:
    """One probe answer; ``label`` None means unparseable and ``reason`` says why."""

    suite: str
    key: str
    format: str
    question: str
    repeat: int
    text: str | None
    label: str | None
    reason: str
    cached: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbeStats:
    calls_planned: int = 0
    calls_unique: int = 0
    cache_hits: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


def _probe_point(suite: str, key: str, fmt: str, question: str, messages: list[Message]) -> ReplayPoint:
    pid = hashlib.blake2b(f"{suite}\x00{key}\x00{fmt}\x00{question}".encode(), digest_size=8).hexdigest()
    return ReplayPoint(point_id=pid, record_id=key, turn_index=len(messages), prefix=messages)


class Prober:
    """Probes suites with one model; reusable across calls so the in-process dedupe holds."""

    def __init__(self, config: ProbeConfig, client: ModelClient | None = None, cache: CallCache | None = None) -> None:
        self.config = config
        self.client = client or get_model(config.model)
        self.cache = cache
        self.stats = ProbeStats()
        self._callers: list[DeploymentCaller] = []
        shared: asyncio.Semaphore | None = None
        for repeat in range(config.repeats):
            deployment = Deployment(
                name=f"awareness-{repeat}", model=config.model, concurrency=config.concurrency,
                timeout_s=config.timeout_s, max_retries=config.max_retries,
                params=GenerationParams(temperature=config.temperature, max_tokens=config.max_tokens,
                                        seed=config.seed + repeat),
            )
            caller = DeploymentCaller(deployment, self.client, cache)
            shared = shared or caller.semaphore
            caller.semaphore = shared  # one in-flight limit across repeats
            self._callers.append(caller)
        self._inflight: dict[str, asyncio.Task[Generation]] = {}

    def _ask(self, point: ReplayPoint, repeat: int) -> asyncio.Task[Generation]:
        key = hashlib.sha256(canonical_json([repeat, [m.model_dump() for m in point.prefix]])).hexdigest()
        task = self._inflight.get(key)
        if task is None:
            self.stats.calls_unique += 1
            task = asyncio.ensure_future(self._callers[repeat].answer(point, sample_index=repeat))
            self._inflight[key] = task
        return task

    async def _probe_item(self, suite: Suite, index: int, out: list[Answer]) -> None:
        item = suite.items[index]
        transcript = fit_transcript(item.transcript, self.config.max_transcript_chars)
        jobs = []
        for fmt in self.config.formats:
            for question in self.config.questions:
                point = _probe_point(suite.name, item.key, fmt, question.id, build_probe(transcript, question, fmt))
                for repeat in range(self.config.repeats):
                    jobs.append((fmt, question, repeat, self._ask(point, repeat)))
        for fmt, question, repeat, task in jobs:
            generation = await task
            out.append(self._answer(suite.name, item.key, fmt, question, repeat, generation))

    def _answer(self, suite: str, key: str, fmt: str, question: Question, repeat: int, gen: Generation) -> Answer:
        if not gen.ok:
            self.stats.errors += 1
            kind = (gen.error or "error").split(":")[0][:40]
            self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
            return Answer(suite, key, fmt, question.id, repeat, None, None, "error", error=gen.error)
        if gen.cached:
            self.stats.cache_hits += 1
        parsed = parse_answer(gen.text, question)
        return Answer(suite, key, fmt, question.id, repeat, gen.text, parsed.label, parsed.reason, cached=gen.cached)

    async def probe(self, suites: list[Suite], on_item: Callable[[], None] | None = None) -> list[Answer]:
        """Every answer for every suite; items run ``concurrency * 2`` at a time."""
        answers: list[Answer] = []
        queue: asyncio.Queue[tuple[Suite, int] | None] = asyncio.Queue()
        per_item = len(self.config.formats) * len(self.config.questions) * self.config.repeats
        for suite in suites:
            for index in range(len(suite.items)):
                queue.put_nowait((suite, index))
                self.stats.calls_planned += per_item
        workers = max(1, self.config.concurrency * 2)
        for _ in range(workers):
            queue.put_nowait(None)

        async def worker() -> None:
            while (job := await queue.get()) is not None:
                await self._probe_item(job[0], job[1], answers)
                if on_item is not None:
                    on_item()

        await asyncio.gather(*(worker() for _ in range(workers)))
        if self.cache is not None:
            self.cache.flush()
        self._inflight.clear()
        return answers

    async def aclose(self) -> None:
        await self.client.aclose()


def probe_suites(suites: list[Suite], config: ProbeConfig, cache: CallCache | None = None,
                 client: ModelClient | None = None, on_item: Callable[[], None] | None = None,
                 ) -> tuple[list[Answer], ProbeStats]:
    """Synchronous entry point: all answers, plus call statistics."""

    async def main() -> tuple[list[Answer], ProbeStats]:
        prober = Prober(config, client, cache)
        try:
            return await prober.probe(suites, on_item), prober.stats
        finally:
            await prober.aclose()

    return asyncio.run(main())
