"""The ModelClient protocol every provider implements, and the registry of providers by prefix.

A model id is ``<provider>/<name>``; a provider is a ``deploysim.providers`` entry point named by its
prefix, imported when first used (optional SDKs only when a client is built).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from deploysim.core.registry import REGISTRY, RegistryError
from deploysim.core.schema import (
    GenerationParams,
    Message,
    ToolCall,
    Usage,
    expand_credentials,
    has_redacted_credentials,
    redact_credentials,
)


#: HTTP statuses worth another try (rate limits, overload, server errors)
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


@dataclass
class ModelOutput:
    text: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    prompt_truncated: bool = False


class ModelCallError(Exception):
    """A failed call, classified so the engine knows whether to retry and how long to wait."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


@runtime_checkable
class ModelClient(Protocol):
    model_id: str

    def cache_identity(self) -> dict[str, Any]:
        """What, besides the request, decides the answer: provider, model, base URL."""

    async def generate(
        self, messages: list[Message], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> ModelOutput: ...

    async def aclose(self) -> None: ...


ProviderFactory = Callable[[str], ModelClient]


def model_provider(prefix: str, help: str = "") -> Callable[[ProviderFactory], ProviderFactory]:
    """Register a provider factory in-process (tests, notebooks); packages declare an entry point."""

    def register(factory: ProviderFactory) -> ProviderFactory:
        if help:
            factory.__doc__ = help
        return REGISTRY.register("provider", prefix, factory)

    return register


class ModelIdError(ValueError):
    pass


def _known() -> str:
    return ", ".join(sorted(REGISTRY.names("provider")))


def split_model_id(model_id: str) -> tuple[str, str]:
    prefix, sep, rest = model_id.partition("/")
    if not sep or not rest:
        raise ModelIdError(
            f"model id {redact_credentials(model_id)!r} must look like <provider>/<model>; providers: {_known()}")
    return prefix, rest


def check_model_id(model_id: str) -> None:
    """ModelIdError unless ``model_id`` names a known provider and can be given its credentials (no client made)."""
    prefix, _ = split_model_id(model_id)
    if prefix not in REGISTRY.names("provider"):
        raise ModelIdError(f"unknown model provider {prefix!r} in {redact_credentials(model_id)!r}; known: {_known()}")
    if has_redacted_credentials(model_id):
        raise ModelIdError(
            f"{redact_credentials(model_id)}: the credentials in this base URL were never recorded; "
            "write them as ${ENV_VAR} references (http://${USER_VAR}:${PASSWORD_VAR}@host/v1) "
            "in config.yaml and set those variables")
    try:
        expand_credentials(model_id)
    except KeyError as exc:
        raise ModelIdError(f"{redact_credentials(model_id)}: environment variable {exc.args[0]} is not set") from None


def get_model(model_id: str) -> ModelClient:
    """A client for ``model_id`` (base-URL ``${ENV_VAR}``s expanded for the client only); errors name the providers."""
    check_model_id(model_id)
    prefix, rest = split_model_id(expand_credentials(model_id))
    try:
        factory: ProviderFactory = REGISTRY.get("provider", prefix)
    except RegistryError as exc:
        raise ModelIdError(str(exc)) from exc
    return factory(rest)


def providers() -> dict[str, str]:
    """Provider prefix -> one line of help (the factory's docstring)."""
    out = {}
    for prefix in sorted(REGISTRY.names("provider")):
        try:
            out[prefix] = (REGISTRY.get("provider", prefix).__doc__ or "").strip().split("\n")[0]
        except (RegistryError, ImportError) as exc:
            out[prefix] = f"(does not load: {exc})"
    return out


def missing_extra(package: str, extra: str) -> ImportError:
    return ImportError(f"{package} is not installed: pip install 'deploysim[{extra}]' (or pip install {package})")
