"""FAKE model, named as such: ``instant/echo`` answers instantly with a digest of the prompt.

For timing the harness itself (engine, cache, journal, writers); never use it to judge a model.
"""

from __future__ import annotations

import hashlib
from typing import Any

from deploysim.core.models._base import ModelOutput
from deploysim.core.schema import GenerationParams, Message, Usage


class InstantFakeModel:
    def __init__(self, name: str) -> None:
        self.model_id = f"instant/{name}"

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": "instant", "model": self.model_id, "base_url": None}

    async def generate(
        self, messages: list[Message], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> ModelOutput:
        last = messages[-1].text() if messages else ""
        digest = hashlib.blake2b(last.encode(), digest_size=8).hexdigest()
        return ModelOutput(text=f"[instant fake reply {digest}]", finish_reason="stop",
                           usage=Usage(prompt_tokens=len(last) // 4, completion_tokens=8))

    async def aclose(self) -> None:
        return None


def provider(name: str) -> InstantFakeModel:
    """FAKE instant in-process model for measuring the harness only (instant/echo)"""
    return InstantFakeModel(name)
