"""The model service: one retry policy for every attempt, Retry-After honoured, errors as rows, one cache."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from deploysim.core.models import Limits, Model, ModelCallError, ModelOutput, ModelService, model_provider
from deploysim.core.schema import GenerationParams, Message, Usage

HI = [Message(role="user", content="hi")]


class Flaky:
    """FAKE client (named as such): fails ``failures`` times with ``error``, then answers."""

    model_id = "flaky/x"

    def __init__(self, failures: int, error: ModelCallError) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": "flaky", "model": "x", "base_url": None}

    async def generate(self, messages: list[Message], params: GenerationParams, tools: list) -> ModelOutput:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise self.error
        return ModelOutput(text="ok", finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=1))

    async def aclose(self) -> None:
        return None


def test_every_attempt_follows_one_policy_and_retry_after_is_honoured() -> None:
    client = Flaky(2, ModelCallError("HTTP 429", retryable=True, retry_after=0.2, status=429))
    model = Model(client, None, name="m", limits=Limits(max_retries=3))
    generation = asyncio.run(model.generate(HI, id="p1"))
    assert generation.ok and generation.text == "ok" and generation.attempts == 3
    assert (generation.point_id, generation.deployment) == ("p1", "m")
    assert model.stats.retries == 2 and model.stats.calls == 3
    assert all(b - a >= 0.19 for a, b in zip(client.calls, client.calls[1:], strict=False))  # waited as told


def test_final_and_exhausted_failures_become_error_rows() -> None:
    final = Model(Flaky(5, ModelCallError("HTTP 400", retryable=False, status=400)), None, limits=Limits(max_retries=3))
    row = asyncio.run(final.generate(HI))
    assert row.error == "HTTP 400" and row.attempts == 1 and final.stats.errors_by_kind == {"http_400": 1}
    client = Flaky(5, ModelCallError("HTTP 503", retryable=True, retry_after=0.0, status=503))
    exhausted = Model(client, None, limits=Limits(max_retries=2))
    row = asyncio.run(exhausted.generate(HI))
    assert row.error == "HTTP 503" and row.attempts == 3 and len(client.calls) == 3


def test_the_service_shares_one_cache_and_honours_no_cache(tmp_path: Path) -> None:
    model_provider("flaky", "FAKE flaky client for tests")(lambda rest: Flaky(0, ModelCallError("x", retryable=False)))

    async def twice(service: ModelService) -> tuple[Any, Any]:
        first = await service.model("flaky/x", name="a").generate(HI)
        second = await service.model("flaky/x", name="b").generate(HI)  # another role, same call
        await service.aclose()
        return first, second

    first, second = asyncio.run(twice(ModelService(cache_path=tmp_path / "c.sqlite")))
    assert not first.cached and second.cached and (tmp_path / "c.sqlite").exists()
    first, second = asyncio.run(twice(ModelService(cache=False, cache_path=tmp_path / "none.sqlite")))
    assert not first.cached and not second.cached and not (tmp_path / "none.sqlite").exists()
