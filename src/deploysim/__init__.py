"""deploysim: deployment simulation for LLM releases.

Replay real production conversations against a candidate deployment, grade what it
does, and predict how each undesired behaviour's rate will move once it ships.
"""

from deploysim.config import SimConfig, load_config
from deploysim.engine import run_simulation
from deploysim.models import ModelClient, get_model, model_provider
from deploysim.replay import replay_points
from deploysim.schema import (
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
from deploysim.sources import detect_format, iter_inputs, iter_records
from deploysim.store import read_generations, read_points, read_verdicts, write_verdicts

__all__ = [
    "SCHEMA_VERSION",
    "Deployment",
    "Generation",
    "GenerationParams",
    "Message",
    "ModelClient",
    "Record",
    "Reject",
    "ReplayPoint",
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
