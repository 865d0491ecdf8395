"""deploysim: deployment simulation for LLM releases.

Replay real production conversations against a candidate deployment, grade what it
does, and predict how each undesired behaviour's rate will move once it ships.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from deploysim.core.schema import (
    SCHEMA_VERSION,
    Deployment,
    Generation,
    GenerationParams,
    Message,
    Record,
    Reject,
    ReplayPoint,
    ToolCall,
    Usage,
    Verdict,
)

#: The rest of the public API, imported on first use (the engine pulls in pyarrow and
#: numpy; a CLI command that does not need them should not wait for them).
_LAZY = {
    "SimConfig": "deploysim.pipeline.config",
    "load_config": "deploysim.pipeline.config",
    "run_simulation": "deploysim.pipeline.engine",
    "ModelClient": "deploysim.core.models",
    "get_model": "deploysim.core.models",
    "model_provider": "deploysim.core.models",
    "replay_points": "deploysim.pipeline.replay",
    "detect_format": "deploysim.pipeline.sources",
    "iter_inputs": "deploysim.pipeline.sources",
    "iter_records": "deploysim.pipeline.sources",
    "read_generations": "deploysim.core.store",
    "read_points": "deploysim.core.store",
    "read_verdicts": "deploysim.core.store",
    "write_verdicts": "deploysim.core.store",
}

__all__ = [
    "Deployment",
    "Generation",
    "GenerationParams",
    "Message",
    "ModelClient",
    "Record",
    "Reject",
    "ReplayPoint",
    "SCHEMA_VERSION",
    "SimConfig",
    "ToolCall",
    "Usage",
    "Verdict",
    "detect_format",
    "get_model",
    "iter_inputs",
    "iter_records",
    "load_config",
    "model_provider",
    "read_generations",
    "read_points",
    "read_verdicts",
    "replay_points",
    "run_simulation",
    "write_verdicts",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deploysim' has no attribute {name!r}")
