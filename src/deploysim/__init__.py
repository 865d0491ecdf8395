"""deploysim: deployment simulation for LLM releases.

Replay real production conversations against a candidate deployment, grade what it
does, and predict how each undesired behaviour's rate will move once it ships.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Everything is imported on first use: ``import deploysim`` costs nothing, so the CLI
#: can take over Ctrl-C before the heavy imports start (deploysim.cli).
_LAZY = {
    "SCHEMA_VERSION": "deploysim.core.schema",
    "Deployment": "deploysim.core.schema",
    "Generation": "deploysim.core.schema",
    "GenerationParams": "deploysim.core.schema",
    "Message": "deploysim.core.schema",
    "Record": "deploysim.core.schema",
    "Reject": "deploysim.core.schema",
    "ReplayPoint": "deploysim.core.schema",
    "ToolCall": "deploysim.core.schema",
    "Usage": "deploysim.core.schema",
    "Verdict": "deploysim.core.schema",
    "SimConfig": "deploysim.pipeline.config",
    "load_config": "deploysim.pipeline.config",
    "run_simulation": "deploysim.evaluate.simulate",
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
