"""Agentic replay: the candidate acts from a user message until it hands back; toolsim answers its calls."""

from deploysim.agents.loop import EpisodeResult, agent_turn_starts, logged_turn, run_episode
from deploysim.agents.toolformat import PromptToolClient, parse_tool_calls, wrap_for_tools

__all__ = ["EpisodeResult", "PromptToolClient", "agent_turn_starts", "logged_turn", "parse_tool_calls",
           "run_episode", "wrap_for_tools"]
