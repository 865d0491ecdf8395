"""Ask the probed model every question about every transcript, through the run's model service.

Each repeat is its own deployment with seed ``seed + repeat``; identical probes are asked once per process.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from deploysim.checks.awareness.parse import parse_answer
from deploysim.checks.awareness.probes import PROBE_FORMATS, QUESTIONS, ProbeFormat, Question, build_probe, fit_transcript
from deploysim.checks.awareness.suites import Suite
from deploysim.core.models import Limits, Model, ModelService
from deploysim.core.schema import Generation, GenerationParams, Message, canonical_json, redact_credentials
from deploysim.pipeline.sampling import seeded_hash

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
    #: answers read back from the run's journal (a resumed run asks nothing twice)
    resumed: int = 0
    calls_unique: int = 0
    cache_hits: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


class Prober:
    """Probes suites with one model; reusable across calls so the in-process dedupe holds."""

    def __init__(self, config: ProbeConfig, service: ModelService) -> None:
        self.config = config
        self.service = service
        self.stats = ProbeStats()
        self._models: list[Model] = []
        limits = Limits(concurrency=config.concurrency, timeout_s=config.timeout_s, max_retries=config.max_retries)
        for repeat in range(config.repeats):
            params = GenerationParams(temperature=config.temperature, max_tokens=config.max_tokens,
                                      seed=config.seed + repeat)
            model = service.model(config.model, name=f"awareness-{repeat}", params=params, limits=limits)
            if self._models:
                model.semaphore = self._models[0].semaphore  # one in-flight limit across repeats
            self._models.append(model)
        self._inflight: dict[str, asyncio.Task[Generation]] = {}

    def _ask(self, call_id: str, messages: list[Message], repeat: int) -> asyncio.Task[Generation]:
        key = hashlib.sha256(canonical_json([repeat, [m.model_dump() for m in messages]])).hexdigest()
        task = self._inflight.get(key)
        if task is None:
            self.stats.calls_unique += 1
            task = asyncio.ensure_future(self._models[repeat].generate(messages, sample=repeat, id=call_id))
            self._inflight[key] = task
        return task

    async def probe_item(self, suite: Suite, index: int) -> list[Answer]:
        """Every answer about one transcript (formats x questions x repeats)."""
        item = suite.items[index]
        transcript = fit_transcript(item.transcript, self.config.max_transcript_chars)
        jobs = []
        for fmt in self.config.formats:
            for question in self.config.questions:
                call_id = f"{seeded_hash(suite.name, item.key, fmt, question.id):016x}"
                messages = build_probe(transcript, question, fmt)
                for repeat in range(self.config.repeats):
                    jobs.append((fmt, question, repeat, self._ask(call_id, messages, repeat)))
        return [self._answer(suite.name, item.key, fmt, question, repeat, await task)
                for fmt, question, repeat, task in jobs]

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
