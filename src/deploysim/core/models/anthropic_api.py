"""Claude through the ``anthropic`` SDK, imported only when an ``anthropic/...`` model is used."""

from __future__ import annotations

import os
from typing import Any

import orjson

from deploysim.core.models._base import RETRYABLE_STATUS, ModelCallError, ModelIdError, ModelOutput, missing_extra
from deploysim.core.models.openai_api import retry_after_seconds
from deploysim.core.schema import GenerationParams, Message, ToolCall, Usage


def to_anthropic(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """System text apart; tool calls as tool_use blocks; tool results as user tool_result blocks."""
    system = "\n\n".join(m.text() for m in messages if m.role == "system") or None
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.text()}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        blocks: list[dict[str, Any]] = [{"type": "text", "text": m.text()}] if m.text() else []
        for call in m.tool_calls:
            args = call.parsed_arguments()
            blocks.append({"type": "tool_use", "id": call.id, "name": call.name,
                           "input": args if isinstance(args, dict) else {"_raw": args}})
        out.append({"role": m.role, "content": blocks or [{"type": "text", "text": ""}]})
    return system, out


def to_anthropic_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": fn["name"], "description": fn.get("description", ""),
             "input_schema": fn.get("parameters", {"type": "object", "properties": {}})}
            for fn in (tool.get("function", tool) for tool in tools)]


class AnthropicModel:
    def __init__(self, model: str) -> None:
        try:
            import anthropic
        except ImportError:
            raise missing_extra("anthropic", "anthropic") from None
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ModelIdError(f"anthropic/{model} needs ANTHROPIC_API_KEY in the environment")
        self._sdk = anthropic
        self.model = model
        self.model_id = f"anthropic/{model}"
        self._client = anthropic.AsyncAnthropic(api_key=key, max_retries=0,
                                                base_url=os.environ.get("ANTHROPIC_BASE_URL"))

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": "anthropic", "model": self.model, "base_url": os.environ.get("ANTHROPIC_BASE_URL")}

    def request_body(self, messages: list[Message], params: GenerationParams,
                     tools: list[dict[str, Any]]) -> dict[str, Any]:
        """The Messages API request (also one request's ``params`` in a message batch)."""
        system, converted = to_anthropic(messages)
        kwargs: dict[str, Any] = {"model": self.model, "messages": converted, "max_tokens": params.max_tokens,
                                  "temperature": params.temperature}
        if system:
            kwargs["system"] = system
        if params.stop:
            kwargs["stop_sequences"] = params.stop
        if tools:
            kwargs["tools"] = to_anthropic_tools(tools)
            if params.tool_choice is not None:  # Anthropic says "any" for OpenAI's "required"
                kwargs["tool_choice"] = {"type": {"required": "any"}.get(params.tool_choice, params.tool_choice)}
        return kwargs

    async def generate(
        self, messages: list[Message], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> ModelOutput:
        sdk = self._sdk
        try:
            response = await self._client.messages.create(**self.request_body(messages, params, tools))
        except sdk.APIStatusError as exc:
            raise ModelCallError(f"HTTP {exc.status_code} from provider ({type(exc).__name__})",
                                 retryable=exc.status_code in RETRYABLE_STATUS,
                                 retry_after=retry_after_seconds(exc.response.headers),
                                 status=exc.status_code) from None
        except (sdk.APITimeoutError, sdk.APIConnectionError) as exc:
            raise ModelCallError(f"{type(exc).__name__}: no answer from provider", retryable=True) from None
        return output_from_message(response)

    def batch_api(self) -> Any:
        """The Message Batches API (``client.messages.batches``, anthropic >= 0.41; core/models/batch.py)."""
        from deploysim.core.models.batch import AnthropicBatchAPI

        return AnthropicBatchAPI(self._client, output_from_message)

    async def aclose(self) -> None:
        await self._client.close()


def output_from_message(response: Any) -> ModelOutput:
    """An Anthropic Message (from ``messages.create`` or a batch result) as a ModelOutput."""
    texts = [b.text for b in response.content if b.type == "text"]
    calls = [ToolCall(id=b.id, name=b.name, arguments=orjson.dumps(b.input).decode()) for b in response.content
             if b.type == "tool_use"]
    return ModelOutput(text="".join(texts) if texts else None, tool_calls=calls, finish_reason=response.stop_reason,
                       usage=Usage(prompt_tokens=response.usage.input_tokens,
                                   completion_tokens=response.usage.output_tokens))


def provider(name: str) -> AnthropicModel:
    """Anthropic API; key from ANTHROPIC_API_KEY (pip install 'deploysim[anthropic]')"""
    return AnthropicModel(name)
