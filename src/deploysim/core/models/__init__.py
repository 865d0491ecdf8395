"""Models: the ModelClient protocol, providers by model-id prefix, the call cache and limits."""

from deploysim.core.models._base import (
    ModelCallError,
    ModelClient,
    ModelIdError,
    ModelOutput,
    check_model_id,
    get_model,
    model_provider,
    providers,
)
from deploysim.core.models.cache import CallCache, call_key, default_cache_path, open_cache
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
    "check_model_id",
    "default_cache_path",
    "get_model",
    "model_provider",
    "open_cache",
    "providers",
]
