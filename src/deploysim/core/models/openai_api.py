"""Every OpenAI-compatible endpoint (OpenAI, Azure, vLLM, SGLang, llama.cpp server, Ollama, ...)."""

from __future__ import annotations

import os
from typing import Any

from deploysim.core.models._base import ModelCallError, ModelIdError, ModelOutput, model_provider
from deploysim.core.schema import GenerationParams, Message, ToolCall, Usage, redact_credentials

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


def to_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        if m.tool_call_id:
            item["tool_call_id"] = m.tool_call_id
        if m.name and m.role != "tool":
            item["name"] = m.name
        out.append(item)
    return out


def retry_after_seconds(headers: Any) -> float | None:
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def classify_openai_error(exc: Exception) -> ModelCallError:
    """Map SDK exceptions to retryable or final, keeping Retry-After; messages hold no payloads."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return ModelCallError(
            f"HTTP {status} from provider ({type(exc).__name__})",
            retryable=status in RETRYABLE_STATUS,
            retry_after=retry_after_seconds(exc.response.headers),
            status=status,
        )
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return ModelCallError(f"{type(exc).__name__}: no answer from provider", retryable=True)
    if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
        return ModelCallError(f"malformed response from provider ({type(exc).__name__})", retryable=True)
    return ModelCallError(f"{type(exc).__name__} calling provider", retryable=False)


class OpenAICompatibleModel:
    #: The ``response_format`` form tried first by structured-output callers (the judge).
    structured_output = "json_schema"

    def __init__(self, model: str, base_url: str | None, api_key: str | None, provider: str) -> None:
        self.model = model
        self.base_url = base_url
        self.provider = provider
        #: recorded forms (ids, cache identity) never hold credentials from the base URL
        self.model_id = redact_credentials(
            f"{provider}/{model}" + (f"@{base_url}" if provider == "openai-compatible" else ""))
        import openai  # imported on first use: it costs a second at start-up

        # Retries are the engine's (uniform across providers, counted, honouring Retry-After).
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0)

    def cache_identity(self) -> dict[str, Any]:
        base_url = redact_credentials(self.base_url) if self.base_url else None
        return {"provider": self.provider, "model": self.model, "base_url": base_url}

    async def generate(
        self, messages: list[Message], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> ModelOutput:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(messages),
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        }
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.stop:
            kwargs["stop"] = params.stop
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.response_format is not None:
            kwargs["response_format"] = params.response_format
        if tools:
            kwargs["tools"] = tools
            if params.tool_choice is not None:
                kwargs["tool_choice"] = params.tool_choice
        try:
            response = await self._client.chat.completions.create(**kwargs)
            if not getattr(response, "choices", None):
                raise ValueError("response has no choices")
            choice = response.choices[0]
        except ModelCallError:
            raise
        except Exception as exc:
            raise classify_openai_error(exc) from None
        message = choice.message
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
            for c in (message.tool_calls or [])
            if getattr(c, "function", None) is not None
        ]
        usage = response.usage
        return ModelOutput(
            text=message.content,
            tool_calls=calls,
            finish_reason=choice.finish_reason,
            usage=Usage(
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            ),
        )

    async def aclose(self) -> None:
        await self._client.close()


@model_provider("openai", "OpenAI API; key from OPENAI_API_KEY, base URL from OPENAI_BASE_URL")
def _openai(name: str) -> OpenAICompatibleModel:
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise ModelIdError(f"openai/{name} needs OPENAI_API_KEY in the environment")
    return OpenAICompatibleModel(name, os.environ.get("OPENAI_BASE_URL"), key, "openai")


@model_provider(
    "openai-compatible",
    "openai-compatible/<model>@<base-url>; key from DEPLOYSIM_API_KEY (or OPENAI_API_KEY), optional",
)
def _compatible(rest: str) -> OpenAICompatibleModel:
    name, sep, base_url = rest.partition("@")
    if not sep or not base_url.startswith(("http://", "https://")):
        raise ModelIdError(
            f"openai-compatible/{redact_credentials(rest)}: expected openai-compatible/<model>@http://host:port/v1"
        )
    key = os.environ.get("DEPLOYSIM_API_KEY") or os.environ.get("OPENAI_API_KEY")
    return OpenAICompatibleModel(name, base_url, key, "openai-compatible")
