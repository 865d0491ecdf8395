"""Models: the ModelClient protocol, providers by model-id prefix, the call cache and limits."""

from deploysim.core.models._base import (
    ModelCallError,
    ModelClient,
    ModelIdError,
    ModelOutput,
    get_model,
    model_provider,
    providers,
)
from deploysim.core.models.cache import CallCache, call_key, default_cache_path
from deploysim.core.models.calls import CallStats, DeploymentCaller

__all__ = [
    "CallCache",
    "CallStats",
    "DeploymentCaller",
    "ModelCallError",
    "ModelClient",
    "ModelIdError",
    "ModelOutput",
    "call_key",
    "default_cache_path",
    "get_model",
    "model_provider",
    "providers",
]
