"""Every OpenAI-compatible endpoint (OpenAI, Azure, vLLM, SGLang, llama.cpp server, Ollama, ...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deploysim.core.models._base import RETRYABLE_STATUS, ModelCallError, ModelIdError, ModelOutput
from deploysim.core.schema import GenerationParams, Message, ToolCall, Usage, redact_credentials


def to_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [{"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls]
        if m.tool_call_id:
            item["tool_call_id"] = m.tool_call_id
        if m.name and m.role != "tool":
            item["name"] = m.name
        out.append(item)
    return out


def output_from_completion(response: Any) -> ModelOutput:
    """A ChatCompletion (the SDK's object, or a batch result's body validated into one) as a ModelOutput."""
    if not getattr(response, "choices", None):
        raise ValueError("response has no choices")
    choice = response.choices[0]
    message = choice.message
    calls = [ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
             for c in (message.tool_calls or []) if getattr(c, "function", None) is not None]
    usage = response.usage
    return ModelOutput(text=message.content, tool_calls=calls, finish_reason=choice.finish_reason,
                       usage=Usage(prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                                   completion_tokens=getattr(usage, "completion_tokens", 0) or 0))


def output_from_completion_body(body: dict[str, Any]) -> ModelOutput:
    """A chat-completion response body (one line of a batch's output file) as a ModelOutput."""
    from openai.types.chat import ChatCompletion

    return output_from_completion(ChatCompletion.model_validate(body))


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
        return ModelCallError(f"HTTP {status} from provider ({type(exc).__name__})",
                              retryable=status in RETRYABLE_STATUS,
                              retry_after=retry_after_seconds(exc.response.headers), status=status)
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return ModelCallError(f"{type(exc).__name__}: no answer from provider", retryable=True)
    if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
        return ModelCallError(f"malformed response from provider ({type(exc).__name__})", retryable=True)
    return ModelCallError(f"{type(exc).__name__} calling provider", retryable=False)


def chat_request(model: str, messages: list[Message], params: GenerationParams,
                 tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of one chat-completions request (the SDK's keyword arguments, or raw JSON for an HTTP stage)."""
    body: dict[str, Any] = {"model": model, "messages": to_openai_messages(messages),
                            "temperature": params.temperature, "max_tokens": params.max_tokens}
    optional = {"seed": params.seed, "stop": params.stop or None, "top_p": params.top_p,
                "response_format": params.response_format}
    body |= {key: value for key, value in optional.items() if value is not None}
    if tools:
        body["tools"] = tools
        if params.tool_choice is not None:
            body["tool_choice"] = params.tool_choice
    return body


class OpenAICompatibleModel:
    #: The ``response_format`` form tried first by structured-output callers (the judge).
    structured_output = "json_schema"

    def __init__(self, model: str, base_url: str | None, api_key: str | None, provider: str) -> None:
        self.model = model
        self.base_url = base_url
        self.provider = provider
        self._api_key = api_key
        #: recorded forms (ids, cache identity) never hold credentials from the base URL
        self.model_id = redact_credentials(
            f"{provider}/{model}" + (f"@{base_url}" if provider == "openai-compatible" else ""))
        import openai  # imported on first use: it costs a second at start-up

        # Retries are the engine's (uniform across providers, counted, honouring Retry-After).
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0)

    def http_target(self) -> tuple[str, dict[str, str]]:
        """The chat-completions URL and headers (with the API key: never log them), for the Ray engine's HTTP stage."""
        base = self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return base.rstrip("/") + "/chat/completions", headers

    def cache_identity(self) -> dict[str, Any]:
        base_url = redact_credentials(self.base_url) if self.base_url else None
        return {"provider": self.provider, "model": self.model, "base_url": base_url}

    def request_body(self, messages: list[Message], params: GenerationParams,
                     tools: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat-completions request body (also one line's ``body`` in a batch file)."""
        return chat_request(self.model, messages, params, tools)

    async def generate(
        self, messages: list[Message], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> ModelOutput:
        try:
            response = await self._client.chat.completions.create(**self.request_body(messages, params, tools))
            return output_from_completion(response)
        except ModelCallError:
            raise
        except Exception as exc:
            raise classify_openai_error(exc) from None

    def batch_api(self) -> Any:
        """This endpoint's files + batches API (core/models/batch.py)."""
        from deploysim.core.models.batch import OpenAIBatchAPI

        return OpenAIBatchAPI(self._client, output_from_completion_body)

    async def target_logprobs(self, messages: list[Message], targets: list[str]) -> list[float]:
        """log P(reply starts with each target); one completions request per target (see ``target_logprob``)."""
        return [await self.target_logprob(messages, t) for t in targets]

    async def target_logprob(self, messages: list[Message], target: str) -> float:
        """log P(reply starts with ``target``) via the completions route with ``echo`` + ``logprobs`` (llama.cpp)."""
        prompt = render_chat_prompt(messages)
        try:
            response = await self._client.completions.create(
                model=self.model, prompt=prompt + target, echo=True, logprobs=1, max_tokens=1, temperature=0)
            choice = response.choices[0]
            logprobs = choice.logprobs
            if logprobs is None or not logprobs.token_logprobs or not logprobs.tokens:
                raise ModelCallError(f"{self.model_id} returned no prompt log-probabilities: it cannot score a "
                                     "target prefix (use --samples K instead)", retryable=False)
        except ModelCallError:
            raise
        except Exception as exc:
            error = classify_openai_error(exc)
            if error.status in (400, 404, 405, 422, 501):
                raise ModelCallError(f"{self.model_id} does not offer completions with echo and logprobs "
                                     f"(HTTP {error.status}): it cannot score a target prefix; use --samples K",
                                     retryable=False, status=error.status) from None
            raise error from None
        generated = getattr(response.usage, "completion_tokens", None)
        return _target_tail_logprob(list(logprobs.tokens), list(logprobs.token_logprobs), choice.text or "",
                                    prompt + target, target, self.model_id, generated)

    async def aclose(self) -> None:
        await self._client.close()


def _target_tail_logprob(tokens: list[str], values: list[float | None], text: str, scored: str, target: str,
                         model_id: str, generated_tokens: int | None = None) -> float:
    """Sum the log-probabilities of the tokens that spell ``target`` just before the generated tail (by token text)."""
    generated = text[len(scored):] if text.startswith(scored) else ""
    if generated_tokens is not None:
        end = max(len(tokens) - generated_tokens, 0)
        tail = generated = "".join(tokens[end:])
    else:
        end, tail = len(tokens), ""
        while end > 0 and len(tail) < len(generated):  # the completion's own token(s)
            end -= 1
            tail = tokens[end] + tail
    total, spelled, i = 0.0, "", end
    while i > 0 and len(spelled) < len(target):
        i -= 1
        spelled = tokens[i] + spelled
        value = values[i]
        if value is None:
            break
        total += float(value)
    if spelled != target or tail != generated:
        raise ModelCallError(f"{model_id}: the server's tokens do not separate the target from the prompt "
                             "(it merges them into one token); choose a target that starts a new token",
                             retryable=False)
    return total


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def render_chat_prompt(messages: list[Message]) -> str:
    """The raw prompt for a chat: ChatML, or the Jinja chat template file in ``$DEPLOYSIM_CHAT_TEMPLATE``."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    path = os.environ.get("DEPLOYSIM_CHAT_TEMPLATE")
    template = Path(path).read_text() if path else CHATML
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=to_openai_messages(messages), add_generation_prompt=True,
                                            bos_token="", eos_token="")


def openai_provider(name: str) -> OpenAICompatibleModel:
    """OpenAI API; key from OPENAI_API_KEY, base URL from OPENAI_BASE_URL"""
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise ModelIdError(f"openai/{name} needs OPENAI_API_KEY in the environment")
    return OpenAICompatibleModel(name, os.environ.get("OPENAI_BASE_URL"), key, "openai")


def compatible_provider(rest: str) -> OpenAICompatibleModel:
    """openai-compatible/<model>@<base-url>; key from DEPLOYSIM_API_KEY (or OPENAI_API_KEY), optional"""
    name, sep, base_url = rest.partition("@")
    if not sep or not base_url.startswith(("http://", "https://")):
        raise ModelIdError(f"openai-compatible/{redact_credentials(rest)}: "
                           "expected openai-compatible/<model>@http://host:port/v1")
    key = os.environ.get("DEPLOYSIM_API_KEY") or os.environ.get("OPENAI_API_KEY")
    return OpenAICompatibleModel(name, base_url, key, "openai-compatible")
