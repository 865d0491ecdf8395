"""One deployment's calls: cache, concurrency, request/token rate limits, timeout, retries.

Retries use tenacity (exponential backoff with jitter) but wait exactly as long as
the provider's Retry-After says when it says so. A call that still fails becomes an
error Generation (DESIGN rule 3); its message names the failure, never the payload.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from deploysim.core.models._base import ModelCallError, ModelClient, ModelOutput
from deploysim.core.models.cache import CallCache, call_key
from deploysim.core.schema import Deployment, Generation, GenerationParams, ReplayPoint

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


def is_empty(output: ModelOutput) -> bool:
    """An output with neither text (None, empty or only whitespace) nor tool calls."""
    return not output.tool_calls and not (output.text or "").strip()


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ModelCallError) and exc.retryable


class DeploymentCaller:
    def __init__(self, deployment: Deployment, client: ModelClient, cache: CallCache | None,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.deployment = deployment
        self.client = client
        self.cache = cache
        self.stats = CallStats()
        self.semaphore = asyncio.Semaphore(max(1, deployment.concurrency))
        rpm, tpm = deployment.requests_per_minute, deployment.tokens_per_minute
        self.request_limiter = AsyncLimiter(rpm, 60) if rpm else None
        self.token_limiter = AsyncLimiter(tpm, 60) if tpm else None
        self._backoff = wait_exponential_jitter(multiplier=backoff_initial_s, max=backoff_max_s)
        self._identity = client.cache_identity()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ModelCallError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER_S)
        return self._backoff(state)

    async def answer(self, point: ReplayPoint, sample_index: int = 0,
                     params: GenerationParams | None = None) -> Generation:
        """``params`` overrides the deployment's for this call only (an agent's first step may require a tool)."""
        deployment = self.deployment
        params = params or deployment.params
        messages = deployment.apply_system_prompt(point.prefix)
        base = {"point_id": point.point_id, "deployment": deployment.name, "sample_index": sample_index}
        key = ""
        if self.cache is not None:
            key = call_key(self._identity, messages, params, point.tools, sample_index)
            hit = self.cache.get(key)
            if hit is not None and not is_empty(hit):  # an empty answer cached by an older version: ask again
                self.stats.cache_hits += 1
                return self._generation(base, hit, latency=0.0, attempts=0, cached=True)
            self.stats.cache_misses += 1
        started = time.perf_counter()
        attempts = 1
        try:
            try:
                output, latency = await self._call_once(messages, point, params)
            except ModelCallError as first:
                # Most calls succeed first time: only failures pay for tenacity's machinery.
                if not first.retryable or deployment.max_retries == 0:
                    raise
                await asyncio.sleep(self._first_wait(first))
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(deployment.max_retries),
                    wait=self._wait,
                    retry=retry_if_exception(_is_retryable),
                    reraise=True,
                ):
                    with attempt:
                        attempts += 1
                        self.stats.retries += 1
                        output, latency = await self._call_once(messages, point, params)
        except ModelCallError as exc:
            return self._error(base, str(exc), type(exc).__name__ if exc.status is None else f"http_{exc.status}",
                               started, attempts)
        except Exception as exc:  # a provider bug must not kill the run: record it
            return self._error(base, f"{type(exc).__name__} in model client", type(exc).__name__, started, attempts)
        if is_empty(output):  # not an answer: an error row, tried again on resume, never cached
            return self._error(base, "empty reply from provider (no text and no tool calls)", "empty_reply",
                               started, attempts)
        if self.cache is not None:
            self.cache.put(key, output)
        return self._generation(base, output, latency=latency, attempts=attempts, cached=False)

    def _first_wait(self, exc: ModelCallError) -> float:
        if exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER_S)
        return min(self._backoff.multiplier + random.uniform(0, self._backoff.jitter), self._backoff.max)

    async def _call_once(self, messages: list, point: ReplayPoint,
                         params: GenerationParams) -> tuple[ModelOutput, float]:
        """One attempt; the latency is the provider's alone, not time queued behind limits."""
        deployment = self.deployment
        if self.request_limiter is not None:
            await self.request_limiter.acquire()
        if self.token_limiter is not None:
            estimate = sum(len(m.text()) for m in messages) // 4 + params.max_tokens
            await self.token_limiter.acquire(min(estimate, self.token_limiter.max_rate))
        async with self.semaphore:
            self.stats.calls += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(deployment.timeout_s):
                    output = await self.client.generate(messages, params, point.tools)
                return output, time.perf_counter() - started
            except TimeoutError:
                raise ModelCallError(f"timed out after {deployment.timeout_s:g}s", retryable=True) from None

    def _generation(self, base: dict, output: ModelOutput, latency: float, attempts: int, cached: bool) -> Generation:
        self.stats.ok += 1
        self.stats.prompt_tokens += output.usage.prompt_tokens
        self.stats.completion_tokens += output.usage.completion_tokens
        return Generation(
            **base,
            text=output.text,
            tool_calls=output.tool_calls,
            finish_reason=output.finish_reason,
            usage=output.usage,
            latency_s=round(latency, 4),
            attempts=attempts,
            cached=cached,
            prompt_truncated=output.prompt_truncated,
        )

    def _error(self, base: dict, message: str, kind: str, started: float, attempts: int) -> Generation:
        self.stats.errors += 1
        self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
        return Generation(**base, error=message, latency_s=round(time.perf_counter() - started, 4), attempts=attempts)
