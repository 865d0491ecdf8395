"""Read-only shell commands of coding agents, understood (never run) so a checkout can answer them.

Coding agents (mini-swe-agent, SWE-agent, OpenHands) act through one ``bash`` tool. Nothing a
trajectory asks for is ever executed (DESIGN rule 5). This module only *reads* a command: when
it is one of a small set of file reads — ``cat``, ``head``, ``tail``, ``nl``, ``sed -n 'A,Bp'``,
``wc -l``, ``ls``, ``grep`` (fixed strings), ``find -name``, one optional ``nl -ba F | sed -n 'A,Bp'``
pipe, an optional leading ``cd DIR &&`` — it is a ``read`` that the prior-call store and the
repository connector may answer (the connector interprets it against ``git ls-tree``/``cat-file``).
Anything else — redirections, ``;``, command substitution, variables, other programs, options
not listed — is not understood and stays a ``shell`` call for the simulator.

``str_replace_editor`` / ``view`` (SWE-agent, OpenHands) is read the same way.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

SHELL_TOOLS = ("bash", "execute_bash", "run_command", "shell")
EDITOR_TOOLS = ("str_replace_editor", "str_replace_based_edit_tool")
_UNSAFE = re.compile(r"[;`<>$\n&|(){}\\]|\|\||&&")
_RANGE = re.compile(r"^(\d+)(?:,(\d+))?p$")


@dataclass(frozen=True)
class ShellRead:
    """One understood read: ``op`` on ``paths`` (repository paths as the agent wrote them)."""

    op: str  # cat | head | tail | lines | nl | wc | ls | grep | find | view
    paths: tuple[str, ...] = ()
    start: int | None = None  # 1-based first line (lines, head/tail count in ``count``)
    end: int | None = None
    count: int | None = None
    pattern: str | None = None
    flags: frozenset[str] = field(default_factory=frozenset)
    cwd: str | None = None


def _split(command: str) -> list[str] | None:
    try:
        return shlex.split(command, posix=True)
    except ValueError:
        return None


def _simple(words: list[str], cwd: str | None) -> ShellRead | None:
    if not words:
        return None
    prog, args = words[0], words[1:]
    opts = [a for a in args if a.startswith("-")]
    files = tuple(a for a in args if not a.startswith("-"))
    if prog == "cat" and files and not opts:
        return ShellRead("cat", files, cwd=cwd)
    if prog in ("head", "tail"):
        count = 10
        rest = list(args)
        if rest[:1] == ["-n"] and len(rest) >= 2 and rest[1].isdigit():
            count, rest = int(rest[1]), rest[2:]
        elif rest and re.fullmatch(r"-n?\d+", rest[0]):
            count, rest = int(rest[0].lstrip("-n")), rest[1:]
        if len(rest) == 1 and not rest[0].startswith("-"):
            return ShellRead(prog, (rest[0],), count=count, cwd=cwd)
        return None
    if prog == "sed" and len(args) == 3 and args[0] == "-n" and (m := _RANGE.match(args[1])):
        start = int(m.group(1))
        return ShellRead("lines", (args[2],), start=start, end=int(m.group(2) or start), cwd=cwd)
    if prog == "nl" and opts in ([], ["-ba"]) and len(files) == 1:
        return ShellRead("nl", files, cwd=cwd)
    if prog == "wc" and opts == ["-l"] and files:
        return ShellRead("wc", files, cwd=cwd)
    if prog == "ls" and all(re.fullmatch(r"-[1aAF]+", o) for o in opts) and len(files) <= 1:
        return ShellRead("ls", files or (".",), flags=frozenset("".join(opts)), cwd=cwd)
    if prog == "grep":
        flags = frozenset("".join(o.lstrip("-") for o in opts))
        if not flags <= set("nrFiIl") or not files:
            return None
        return ShellRead("grep", files[1:] or (".",), pattern=files[0], flags=flags, cwd=cwd)
    if prog == "find" and len(args) in (1, 3, 5):
        root, rest = args[0], args[1:]
        pattern, kind = None, None
        while rest:
            if rest[0] == "-name" and len(rest) >= 2:
                pattern, rest = rest[1], rest[2:]
            elif rest[0] == "-type" and len(rest) >= 2 and rest[1] in ("f", "d"):
                kind, rest = rest[1], rest[2:]
            else:
                return None
        return ShellRead("find", (root,), pattern=pattern, flags=frozenset(kind or ""), cwd=cwd)
    return None


def parse_read(command: str) -> ShellRead | None:
    """The read a shell command stands for, or None when it is anything else."""
    text = command.strip()
    cwd = None
    if m := re.match(r"^cd\s+(\S+)\s*&&\s*(.+)$", text, re.DOTALL):
        cwd, text = m.group(1), m.group(2).strip()
    pipe = re.fullmatch(r"nl\s+-ba\s+(\S+)\s*\|\s*sed\s+-n\s+(['\"]?)(\d+(?:,\d+)?p)\2", text)
    if pipe and (range_ := _RANGE.match(pipe.group(3))):
        start = int(range_.group(1))
        path = _split(pipe.group(1))
        if path and len(path) == 1 and not _UNSAFE.search(path[0]):
            return ShellRead("nl", (path[0],), start=start, end=int(range_.group(2) or start), cwd=cwd)
        return None
    words = _split(text)
    if words is None or any(_UNSAFE.search(w) for w in words) or _UNSAFE.search(text.replace("'", "").replace('"', "")
                                                                               .replace("\\", "")):
        return None
    if cwd is not None and _UNSAFE.search(cwd):
        return None
    return _simple(words, cwd)


def call_read(name: str, arguments: Any) -> ShellRead | None:
    """The read a shell or editor tool call stands for (``bash {"command": "cat x"}``), else None."""
    if not isinstance(arguments, dict):
        return None
    if name in EDITOR_TOOLS:
        path = arguments.get("path")
        if arguments.get("command") == "view" and isinstance(path, str) and not arguments.get("view_range"):
            return ShellRead("view", (path,))
        return None
    command = arguments.get("command", arguments.get("cmd"))
    return parse_read(command) if isinstance(command, str) else None
