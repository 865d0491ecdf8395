"""Models: the ModelClient protocol, providers by model-id prefix, the call cache, and the model service
(``ModelService`` hands out ``Model``s: client + cache + limits + retries, one per run)."""

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
from deploysim.core.models.service import CallStats, Limits, Model, ModelService

__all__ = ["CallCache", "CallStats", "Limits", "Model", "ModelCallError", "ModelClient", "ModelIdError", "ModelOutput",
           "ModelService", "call_key", "check_model_id", "default_cache_path", "get_model", "model_provider",
           "open_cache", "providers"]
