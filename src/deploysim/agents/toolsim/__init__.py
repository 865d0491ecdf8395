"""Tool simulation for agent replay: replay -> prior-call store -> read-only connectors -> LLM simulator.

Nothing here touches a live system (DESIGN rule 5): connectors read snapshots,
writes go to a per-episode overlay, shell-like tools are only ever simulated.
"""

from deploysim.agents.toolsim.calls import (
    LoggedCall,
    ToolPolicy,
    call_signature,
    canonical_args,
    infer_tool_specs,
    logged_calls,
)
from deploysim.agents.toolsim.connectors import (
    ConnectorAnswer,
    ConnectorError,
    JsonDocumentConnector,
    RepositoryConnector,
    build_connectors,
    safe_relpath,
)
from deploysim.agents.toolsim.overlay import Overlay, write_state
from deploysim.agents.toolsim.resolver import (
    AFFORDANCES,
    SOURCES,
    Episode,
    ToolAnswer,
    ToolResolver,
    parse_affordances,
    tool_message,
)
from deploysim.agents.toolsim.simulator import LLMToolSimulator, SimulationRequest, build_prompt, clean_output
from deploysim.agents.toolsim.store import PriorCall, PriorCallStore, RawSealer

__all__ = [
    "AFFORDANCES",
    "SOURCES",
    "ConnectorAnswer",
    "ConnectorError",
    "Episode",
    "JsonDocumentConnector",
    "LLMToolSimulator",
    "LoggedCall",
    "Overlay",
    "PriorCall",
    "PriorCallStore",
    "RawSealer",
    "RawSealer",
    "RepositoryConnector",
    "SimulationRequest",
    "ToolAnswer",
    "ToolPolicy",
    "ToolResolver",
    "build_connectors",
    "build_prompt",
    "call_signature",
    "canonical_args",
    "clean_output",
    "infer_tool_specs",
    "logged_calls",
    "parse_affordances",
    "safe_relpath",
    "tool_message",
    "write_state",
]
