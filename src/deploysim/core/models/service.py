"""The model service: every model call of a run goes through a ``Model`` from the run's ``ModelService``.

A ``Model`` is a client plus the run's call cache, limits, timeout and one tenacity retry policy; a call
that still fails is an error ``Generation`` (DESIGN rule 3) naming the failure, never the payload.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter
from tenacity import (
    DoAttempt,
    DoSleep,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from deploysim.core.models._base import ModelCallError, ModelClient, ModelOutput, get_model
from deploysim.core.models.cache import CallCache, call_key, default_cache_path, open_cache
from deploysim.core.schema import Deployment, Generation, GenerationParams, Message

MAX_RETRY_AFTER_S = 120.0


@dataclass
class CallStats:
    calls: int = 0
    retries: int = 0
    ok: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """How a model is called: in flight at once, per-minute budgets, per-attempt timeout, retries."""

    concurrency: int = 4
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    timeout_s: float = 120.0
    max_retries: int = 4

    @classmethod
    def of(cls, deployment: Deployment) -> Limits:
        return cls(deployment.concurrency, deployment.requests_per_minute, deployment.tokens_per_minute,
                   deployment.timeout_s, deployment.max_retries)


def is_empty(output: ModelOutput) -> bool:
    """An output with neither text (None, empty or only whitespace) nor tool calls."""
    return not output.tool_calls and not (output.text or "").strip()


class Model:
    """One model as a run calls it: ``generate(messages, params, tools, sample, id=...) -> Generation``."""

    def __init__(self, client: ModelClient, cache: CallCache | None, *, name: str = "model",
                 params: GenerationParams | None = None, limits: Limits = Limits(),
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.client = client
        self.cache = cache
        self.name = name
        self.params = params or GenerationParams()
        self.limits = limits
        self.stats = CallStats()
        self.semaphore = asyncio.Semaphore(max(1, limits.concurrency))
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self.request_limiter = AsyncLimiter(rpm, 60) if rpm else None
        self.token_limiter = AsyncLimiter(tpm, 60) if tpm else None
        self._backoff = wait_exponential_jitter(multiplier=backoff_initial_s, max=backoff_max_s)
        #: One tenacity policy decides every attempt, the first included. Its decisions (``iter``) are
        #: synchronous, so calls interleaving on the event loop cannot see each other's state; the
        #: loop below is AsyncRetrying's, without its per-call wrapping of every action (4x the cost).
        self._policy = Retrying(stop=stop_after_attempt(limits.max_retries + 1), wait=self._wait,
                                retry=retry_if_exception(lambda e: isinstance(e, ModelCallError) and e.retryable),
                                reraise=True)
        self._identity = client.cache_identity()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ModelCallError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER_S)
        return self._backoff(state)

    async def generate(self, messages: Sequence[Message], params: GenerationParams | None = None,
                       tools: Sequence[dict[str, Any]] = (), sample: int = 0, *, id: str = "") -> Generation:
        """One answer (from the cache when it holds one); ``params`` None means the model's defaults."""
        params = params or self.params
        messages, tools = list(messages), list(tools)
        base = {"point_id": id, "deployment": self.name, "sample_index": sample}
        key = ""
        if self.cache is not None:
            key = call_key(self._identity, messages, params, tools, sample)
            hit = self.cache.get(key)
            if hit is not None and not is_empty(hit):  # an empty answer cached by an older version: ask again
                self.stats.cache_hits += 1
                return self._generation(base, hit, latency=0.0, attempts=0, cached=True)
            self.stats.cache_misses += 1
        started = time.perf_counter()
        state = RetryCallState(self._policy, None, (), {})
        try:
            output, latency = await self._attempts(state, messages, params, tools)
        except ModelCallError as exc:
            kind = type(exc).__name__ if exc.status is None else f"http_{exc.status}"
            return self._error(base, str(exc), kind, started, state.attempt_number)
        except Exception as exc:  # a provider bug must not kill the run: record it
            return self._error(base, f"{type(exc).__name__} in model client", type(exc).__name__, started,
                               state.attempt_number)
        attempts = state.attempt_number
        self.stats.retries += attempts - 1
        if is_empty(output):  # not an answer: an error row, tried again on resume, never cached
            return self._error(base, "empty reply from provider (no text and no tool calls)", "empty_reply",
                               started, attempts)
        if self.cache is not None:
            self.cache.put(key, output)
        return self._generation(base, output, latency=latency, attempts=attempts, cached=False)

    async def _attempts(self, state: RetryCallState, messages: list[Message], params: GenerationParams,
                        tools: list[dict[str, Any]]) -> tuple[ModelOutput, float]:
        """Attempts until the policy returns the result or re-raises the last error."""
        self._policy.begin()  # its statistics (shared, unread here) must exist for the wait bookkeeping
        while True:
            do = self._policy.iter(state)
            if isinstance(do, DoAttempt):
                try:
                    result = await self._call_once(messages, params, tools)
                except Exception:
                    state.set_exception(sys.exc_info())  # type: ignore[arg-type]
                else:
                    state.set_result(result)
            elif isinstance(do, DoSleep):
                state.prepare_for_next_attempt()
                await asyncio.sleep(do)
            else:
                return do

    async def _call_once(self, messages: list[Message], params: GenerationParams,
                         tools: list[dict[str, Any]]) -> tuple[ModelOutput, float]:
        """One attempt; the latency is the provider's alone, not time queued behind limits."""
        if self.request_limiter is not None:
            await self.request_limiter.acquire()
        if self.token_limiter is not None:
            estimate = sum(len(m.text()) for m in messages) // 4 + params.max_tokens
            await self.token_limiter.acquire(min(estimate, self.token_limiter.max_rate))
        async with self.semaphore:
            self.stats.calls += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.limits.timeout_s):
                    output = await self.client.generate(messages, params, tools)
                return output, time.perf_counter() - started
            except TimeoutError:
                raise ModelCallError(f"timed out after {self.limits.timeout_s:g}s", retryable=True) from None

    def _generation(self, base: dict[str, Any], output: ModelOutput, latency: float, attempts: int,
                    cached: bool) -> Generation:
        self.stats.ok += 1
        self.stats.prompt_tokens += output.usage.prompt_tokens
        self.stats.completion_tokens += output.usage.completion_tokens
        return Generation(**base, text=output.text, tool_calls=output.tool_calls, finish_reason=output.finish_reason,
                          usage=output.usage, latency_s=round(latency, 4), attempts=attempts, cached=cached,
                          prompt_truncated=output.prompt_truncated)

    def _error(self, base: dict[str, Any], message: str, kind: str, started: float, attempts: int) -> Generation:
        self.stats.errors += 1
        self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
        return Generation(**base, error=message, latency_s=round(time.perf_counter() - started, 4), attempts=attempts)

    def flush(self) -> None:
        """Hand finished calls to the cache's writer (a caller that stops here loses none)."""
        if self.cache is not None:
            self.cache.flush()


class ModelService:
    """Hands out ``Model``s for one run: one call cache (or none), one client per model id; ``aclose`` once."""

    def __init__(self, *, cache: bool = True, cache_path: str | Path | None = None) -> None:
        self.cache_enabled = cache
        self.cache_path = Path(cache_path) if cache_path else default_cache_path()
        self._cache: CallCache | None = None
        self._opened = False
        self._clients: dict[str, ModelClient] = {}

    @property
    def cache(self) -> CallCache | None:
        """The run's cache, opened on first use; one that cannot open means uncached (with a warning)."""
        if self.cache_enabled and not self._opened:
            self._opened = True
            self._cache = open_cache(self.cache_path)
        return self._cache

    def client(self, model_id: str) -> ModelClient:
        """The run's client for ``model_id`` (shared by every Model of that id)."""
        if model_id not in self._clients:
            self._clients[model_id] = get_model(model_id)
        return self._clients[model_id]

    def model(self, model_id: str, *, name: str | None = None, params: GenerationParams | None = None,
              limits: Limits = Limits(), wrap: Callable[[ModelClient], ModelClient] | None = None) -> Model:
        """A Model for ``model_id``; ``wrap`` adapts the client (prompt tool format, structured judge output)."""
        client = self.client(model_id)
        return Model(wrap(client) if wrap else client, self.cache, name=name or model_id, params=params,
                     limits=limits)

    def deployment(self, deployment: Deployment) -> Model:
        return self.model(deployment.model, name=deployment.name, params=deployment.params,
                          limits=Limits.of(deployment))

    def flush(self) -> None:
        if self._cache is not None:
            self._cache.flush()

    async def aclose(self) -> None:
        """Close the cache (its last batch written) and every client."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()
