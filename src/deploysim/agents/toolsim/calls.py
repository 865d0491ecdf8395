"""Canonical tool-call arguments and the safety class of a tool.

Two calls are "the same call" when their tool names match and their arguments are
equal as JSON values: key order and whitespace never matter (sorted-key JSON, the
same canonical form as ``schema.canonical_json``). The safety class decides what may
answer a call: only ``read`` tools get store hits and connector answers; ``shell``
tools are always simulated, never run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from deploysim.core.schema import Message, ToolCall, canonical_json

ToolKind = Literal["read", "write", "shell"]

_READ = re.compile(r"^(get|list|search|find|read|fetch|lookup|query|show|describe|view|check|count|calculate|think"
                   r"|cat|ls|grep|glob|stat|head|tail)(_|$)|^(think|calculate)$", re.I)
#: A tool name is shell-like when one of its words is a shell, an interpreter or "run code"
#: (``BashTool``, ``python3``, ``ipython``, ``execShell``), or two neighbouring words
#: are (``runCommand``, ``shell-exec``, ``os.system``, ``code_interpreter``).
_SHELL_WORDS = frozenset({
    "bash", "sh", "zsh", "ksh", "csh", "tcsh", "shell", "powershell", "pwsh", "cmd", "terminal", "console",
    "exec", "execute", "subprocess", "popen", "eval", "python", "ipython", "jupyter", "repl", "nodejs",
    "ruby", "perl", "php", "lua", "deno", "osascript", "applescript",
})
_SHELL_PAIRS = frozenset({
    ("run", "command"), ("run", "cmd"), ("run", "code"), ("run", "script"), ("run", "program"),
    ("code", "interpreter"), ("os", "system"), ("system", "command"), ("command", "line"),
    ("code", "exec"), ("exec", "code"),
})
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def name_words(name: str) -> list[str]:
    """A tool name as lower-case words: camelCase, PascalCase, ``-``, ``_``, ``.``, ``/`` and trailing
    version digits all split (``BashTool`` -> bash tool; ``python3`` -> python; ``os.system`` -> os system)."""
    return [w.lower() for w in _WORD.findall(name) if not w.isdigit()]


def is_shell_like(name: str) -> bool:
    """Whether a tool name says it runs commands or code (see _SHELL_WORDS and _SHELL_PAIRS)."""
    words = name_words(name)
    return any(w in _SHELL_WORDS for w in words) or any(pair in _SHELL_PAIRS for pair in zip(words, words[1:]))


def canonical_args(arguments: str | Any) -> str:
    """Sorted-key compact JSON of the arguments; invalid JSON text is kept, stripped, as a JSON string."""
    if isinstance(arguments, str):
        try:
            value = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            value = arguments.strip()
    else:
        value = arguments
    return canonical_json(value).decode()


def call_signature(name: str, arguments: str | Any) -> str:
    return f"{name}\x1f{canonical_args(arguments)}"


@dataclass(frozen=True)
class ToolPolicy:
    """Which tools read, write or run commands: declared in config, else judged from the name.

    Unknown tools count as writes (the safe side): they never get store hits or
    connector answers, only replay under an identical write history or simulation.
    """

    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    shell: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Iterable[str]] | None) -> ToolPolicy:
        cfg = cfg or {}
        return cls(*(frozenset(cfg.get(k) or ()) for k in ("read", "write", "shell")))

    def kind(self, name: str) -> ToolKind:
        if name in self.shell or is_shell_like(name):
            return "shell"  # a declaration never turns a shell-like tool into something we run
        if name in self.read:
            return "read"
        if name in self.write:
            return "write"
        return "read" if _READ.search(name) else "write"

    def call_kind(self, name: str, arguments: str | Any) -> ToolKind:
        """The class of one call: a shell or editor call that only reads files (``cat x``,
        ``str_replace_editor view``) is a ``read`` — understood, never run — else ``kind(name)``."""
        from deploysim.agents.toolsim.shell import call_read

        kind = self.kind(name)
        if kind == "read" or name in self.write:
            return kind
        try:
            args = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            return kind
        return "read" if call_read(name, args) is not None else kind


@dataclass(frozen=True)
class LoggedCall:
    """One call of a logged trajectory with its output and position."""

    index: int  # index of the assistant message that made it
    call: ToolCall
    output: str | None


def logged_calls(messages: list[Message]) -> list[LoggedCall]:
    """Every tool call in order with its answer, paired by id within the following tool block.

    Ids are matched only inside the block of tool messages right after the call, so
    a log that reuses ids across turns still pairs each call with its own answer.
    """
    out: list[LoggedCall] = []
    for i, message in enumerate(messages):
        if message.role != "assistant" or not message.tool_calls:
            continue
        block: list[Message] = []
        for follower in messages[i + 1:]:
            if follower.role != "tool":
                break
            block.append(follower)
        by_id = {m.tool_call_id: m.text() for m in block if m.tool_call_id}
        for j, call in enumerate(message.tool_calls):
            output = by_id.get(call.id)
            if output is None and j < len(block) and not block[j].tool_call_id:
                output = block[j].text()
            out.append(LoggedCall(i, call, output))
    return out


def infer_tool_specs(messages: list[Message]) -> list[dict[str, Any]]:
    """OpenAI tool specs guessed from logged calls, for records that carry none."""
    props: dict[str, dict[str, Any]] = {}
    for message in messages:
        for call in message.tool_calls:
            args = call.parsed_arguments()
            entry = props.setdefault(call.name, {})
            if isinstance(args, dict):
                for key, value in args.items():
                    entry.setdefault(key, {"type": _json_type(value)})
    return [{"type": "function", "function": {"name": name, "description": "",
                                              "parameters": {"type": "object", "properties": p}}}
            for name, p in props.items()]


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), "string")


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    return [str((t.get("function") or t).get("name", "")) for t in tools]
