"""Read-only connectors against a time-matched snapshot, with the episode's writes from an overlay.

* ``JsonDocumentConnector``: JSON documents (a database dump) answered by lookups the
  user declares in config (``get`` by key, ``search`` by field equality) — no domain
  code here. Write tools declare which document key their output replaces.
* ``RepositoryConnector``: a git checkout read at a commit through git plumbing
  (``ls-tree`` / ``cat-file``; the working tree is never touched) or a plain directory;
  paths with ``..``, absolute paths and symlinks are refused.

Connectors never write: writes land in the episode's ``Overlay``. A connector that
cannot answer safely returns ``None`` and the call falls through to the simulator.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import orjson

from deploysim.agents.toolsim.calls import ToolKind
from deploysim.agents.toolsim.overlay import DELETED, Overlay
from deploysim.core.registry import REGISTRY, RegistryError
from deploysim.core.schema import ToolCall


class ConnectorError(ValueError):
    """A config or a request a connector refuses (bad path, unknown document)."""


@dataclass
class ConnectorAnswer:
    output: str | None  # None: nothing safe to return; ``note`` goes to the simulator instead
    note: str = ""


class Connector(Protocol):
    name: str

    def handles(self, tool: str) -> bool: ...

    def answer(self, call: ToolCall, kind: ToolKind, overlay: Overlay) -> ConnectorAnswer | None:
        """Answer a read from the snapshot seen through the overlay; None when out of scope."""

    def context(self, call: ToolCall, overlay: Overlay) -> str:
        """Snapshot data a simulator needs to answer this (write) call realistically."""

    def apply_write(self, call: ToolCall, output: str, overlay: Overlay) -> None:
        """Record the effect of an answered write in the overlay (never in the snapshot)."""


# -- JSON documents --------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return orjson.loads(handle.read())


_FIELD = re.compile(r"\{(\w+)\}")


def _fill(template: str, args: Mapping[str, Any]) -> str | None:
    """``"{user_id}"`` with the call's arguments; None when an argument is missing or not a scalar."""
    missing = False

    def sub(match: re.Match[str]) -> str:
        nonlocal missing
        value = args.get(match.group(1))
        if value is None or isinstance(value, (dict, list)):
            missing = True
            return ""
        return str(value)

    out = _FIELD.sub(sub, template)
    return None if missing else out


def _walk(value: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def python_json(value: Any) -> str:
    """JSON as Python's ``json.dumps`` writes it (key order kept, ``", "`` and ``": "``): what
    tools written in Python return."""
    return json.dumps(value, ensure_ascii=False)


class JsonDocumentConnector:
    """Config::

        documents: {users: db_users.json.gz, ...}          # paths relative to base_dir
        tools:
          get_user_details: {get: {document: users, key: "{user_id}"}, missing: "Error: user not found"}
          search_direct_flight:
            search: {document: flights, where: {origin: "{origin}", "dates.{date}.status": available},
                     drop: [dates], merge: "dates.{date}"}
          cancel_reservation: {writes: {document: reservations, key: "{reservation_id}"}}
          book_reservation: {writes: {document: reservations, key_from_output: reservation_id}}
          transfer_to_human_agents: {writes: none}
    """

    name = "json"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], base_dir: str | Path, metadata: Mapping[str, Any]) -> Connector:
        return cls(config, base_dir)

    def __init__(self, config: Mapping[str, Any], base_dir: str | Path = ".") -> None:
        base = Path(base_dir)
        self.documents: dict[str, Any] = {}
        for doc, rel in (config.get("documents") or {}).items():
            path = Path(rel) if Path(rel).is_absolute() else base / rel
            if not path.is_file():
                raise ConnectorError(f"connectors.json.documents.{doc}: no such file {str(path)!r}")
            self.documents[doc] = _load_json(path)
        self.tools: dict[str, dict[str, Any]] = dict(config.get("tools") or {})
        for tool, spec in self.tools.items():
            for op in ("get", "search"):
                if op in spec and spec[op].get("document") not in self.documents:
                    raise ConnectorError(f"connectors.json.tools.{tool}.{op}.document: unknown document "
                                         f"{spec[op].get('document')!r} (not in connectors.json.documents)")

    def handles(self, tool: str) -> bool:
        return tool in self.tools

    # reads ------------------------------------------------------------------------------

    def _dirty(self, document: str, overlay: Overlay) -> bool:
        return (document, "*") in overlay.documents

    def _value(self, document: str, key: str, overlay: Overlay) -> Any:
        if (document, key) in overlay.documents:
            value = overlay.documents[(document, key)]
            return None if value is DELETED else value
        data = self.documents[document]
        if isinstance(data, dict):
            return data.get(key)
        return None

    def _items(self, document: str, overlay: Overlay) -> list[Any]:
        data = self.documents[document]
        if isinstance(data, dict):
            keys = list(data) + [k for (d, k) in overlay.documents if d == document and k not in data and k != "*"]
            values = [self._value(document, k, overlay) for k in keys]
            return [v for v in values if v is not None]
        return list(data) if isinstance(data, list) else []

    def answer(self, call: ToolCall, kind: ToolKind, overlay: Overlay) -> ConnectorAnswer | None:
        spec = self.tools.get(call.name)
        if spec is None or kind != "read":
            return None
        args = call.parsed_arguments()
        if not isinstance(args, dict):
            return None
        if "get" in spec:
            get = spec["get"]
            if self._dirty(get["document"], overlay):
                return ConnectorAnswer(None, f"{get['document']} changed in this episode in a way not tracked")
            key = _fill(str(get["key"]), args)
            if key is None:
                return None
            value = self._value(get["document"], key, overlay)
            if value is None:
                missing = spec.get("missing")
                return ConnectorAnswer(_fill(missing, args) if missing else None, f"no {get['document']} {key!r}")
            return ConnectorAnswer(python_json(_walk(value, get.get("select", "")) if get.get("select") else value))
        if "search" in spec:
            search = spec["search"]
            if self._dirty(search["document"], overlay):
                return ConnectorAnswer(None, f"{search['document']} changed in this episode in a way not tracked")
            where: dict[str, str] = {}
            for path, expected in (search.get("where") or {}).items():
                filled_path, filled_value = _fill(str(path), args), _fill(str(expected), args)
                if filled_path is None or filled_value is None:
                    return None
                where[filled_path] = filled_value
            merge = _fill(str(search.get("merge", "")), args) if search.get("merge") else None
            results = []
            for item in self._items(search["document"], overlay):
                if all(str(_walk(item, p)) == v for p, v in where.items()):
                    row = {k: v for k, v in item.items() if k not in set(search.get("drop") or ())} \
                        if isinstance(item, dict) else item
                    if merge and isinstance(row, dict) and isinstance(_walk(item, merge), dict):
                        row = {**row, **_walk(item, merge)}
                    results.append(row)
            return ConnectorAnswer(python_json(results))
        return None

    def context(self, call: ToolCall, overlay: Overlay) -> str:
        """For a declared write: the current value of the key it changes, so the simulator can edit it."""
        spec = (self.tools.get(call.name) or {}).get("writes")
        args = call.parsed_arguments()
        if not isinstance(spec, dict) or not isinstance(args, dict) or "key" not in spec:
            return ""
        key = _fill(str(spec["key"]), args)
        if key is None or spec.get("document") not in self.documents:
            return ""
        value = self._value(spec["document"], key, overlay)
        return f"current {spec['document']} {key}: {python_json(value)}" if value is not None else ""

    def apply_write(self, call: ToolCall, output: str, overlay: Overlay) -> None:
        spec = (self.tools.get(call.name) or {}).get("writes", "unknown") if call.name in self.tools else "unknown"
        if spec == "none":
            return
        if not isinstance(spec, dict):  # an undeclared write may have changed anything: stop trusting reads
            for doc in self.documents:
                overlay.documents[(doc, "*")] = DELETED
            return
        document = spec.get("document", "")
        try:
            value = orjson.loads(output)
        except orjson.JSONDecodeError:
            return  # an error message: the tool changed nothing
        args = call.parsed_arguments()
        key = None
        if "key" in spec and isinstance(args, dict):
            key = _fill(str(spec["key"]), args)
        elif "key_from_output" in spec and isinstance(value, dict):
            key = str(value.get(spec["key_from_output"])) if spec["key_from_output"] in value else None
        if key is None or not isinstance(value, dict):
            overlay.documents[(document, "*")] = DELETED
            return
        overlay.documents[(document, key)] = value


# -- repository ------------------------------------------------------------------------------


def safe_relpath(path: Any) -> str:
    """A repository-relative POSIX path, or ConnectorError for absolute paths and ``..``."""
    if not isinstance(path, str) or "\x00" in path:
        raise ConnectorError("path must be a string")
    text = path.replace("\\", "/").strip()
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text) or text.startswith("~"):
        raise ConnectorError(f"absolute path refused: {path!r}")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if ".." in parts:
        raise ConnectorError(f"path traversal refused: {path!r}")
    return "/".join(parts)


#: Tree mode of a FIFO, socket or device in a plain directory: listed, never opened.
SPECIAL = "special"


def _file_mode(path: str) -> str:
    """A git-like mode for a directory entry: link, regular file, or SPECIAL (FIFO, socket, device)."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "120000"
    return "100644" if stat.S_ISREG(mode) else SPECIAL


def _read_regular(path: Path, limit: int, rel: str) -> bytes:
    """Up to ``limit`` bytes of a regular file; anything else is refused before it can block a read.

    The lstat check refuses FIFOs, sockets and devices without opening them; the
    non-blocking, no-follow open and fstat catch one swapped in since.
    """
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise ConnectorError(f"not a regular file, refused: {rel!r}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConnectorError(f"not a regular file, refused: {rel!r}")
        return handle.read(limit)


class RepositoryConnector:
    """Config::

        path: /checkouts/myrepo        # a git repository (or a plain directory when commit is absent)
        commit: 3f2a...                # or commit_field: the record metadata key naming it
        tools:
          read_file: {op: read, path: path}
          list_dir: {op: list, path: path}
          grep: {op: search, pattern: query}
          write_file: {op: write, path: path, content: content}
          delete_file: {op: delete, path: path}
    """

    name = "repo"
    MAX_READ = 200_000
    MAX_MATCHES = 50

    @classmethod
    def from_config(cls, config: Mapping[str, Any], base_dir: str | Path, metadata: Mapping[str, Any]) -> Connector:
        commit = config.get("commit") or metadata.get(config.get("commit_field", "commit"))
        return cls(config, commit=str(commit) if commit else None)

    def __init__(self, config: Mapping[str, Any], commit: str | None = None) -> None:
        self.root = Path(config["path"]).resolve()
        self.commit = commit or config.get("commit")
        self.tools: dict[str, dict[str, Any]] = dict(config.get("tools") or {})
        self._tree: dict[str, tuple[str, str]] | None = None  # path -> (mode, blob sha)
        if not self.root.is_dir():
            raise ConnectorError(f"repository connector: {self.root} is not a directory")

    def handles(self, tool: str) -> bool:
        return tool in self.tools

    def _git(self, *args: str) -> bytes:
        # Fixed argv, no shell, read-only plumbing; the call's text is only ever data.
        return subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, check=True,
                              timeout=60, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout

    def tree(self) -> dict[str, tuple[str, str]]:
        if self._tree is None:
            if self.commit:
                if not re.fullmatch(r"[0-9A-Za-z._/-]+", self.commit) or self.commit.startswith("-"):
                    raise ConnectorError(f"bad commit name {self.commit!r}")
                out = self._git("ls-tree", "-r", "-z", "--full-tree", self.commit)
                tree = {}
                for entry in out.split(b"\x00"):
                    if entry:
                        meta, _, name = entry.partition(b"\t")
                        mode, _type, sha = meta.decode().split()
                        tree[name.decode("utf-8", "surrogateescape")] = (mode, sha)
                self._tree = tree
            else:
                self._tree = self._walk_dir()
        return self._tree

    def _walk_dir(self) -> dict[str, tuple[str, str]]:
        tree: dict[str, tuple[str, str]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            rel_dir = Path(dirpath).relative_to(self.root)
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                full = os.path.join(dirpath, name)
                tree[(rel_dir / name).as_posix()] = (_file_mode(full), full)
        return tree

    def _read(self, rel: str, overlay: Overlay) -> str | None:
        if rel in overlay.files:
            return overlay.files[rel]
        entry = self.tree().get(rel)
        if entry is None:
            return None
        mode, ref = entry
        if mode == "120000":
            raise ConnectorError(f"symlink refused: {rel!r}")
        if mode == SPECIAL:
            raise ConnectorError(f"not a regular file, refused: {rel!r}")
        if mode == "160000":
            return None
        if self.commit:
            data = self._git("cat-file", "blob", ref)
        else:
            # Every component must be a real directory/file under root, never a link.
            current = self.root
            for part in PurePosixPath(rel).parts:
                current = current / part
                if stat.S_ISLNK(os.lstat(current).st_mode):
                    raise ConnectorError(f"symlink refused: {rel!r}")
            data = _read_regular(Path(ref), self.MAX_READ, rel)
        return data[: self.MAX_READ].decode("utf-8", "replace")

    def _files(self, overlay: Overlay) -> list[str]:
        names = {p for p, (mode, _) in self.tree().items() if mode not in ("120000", "160000", SPECIAL)}
        names |= {p for p, v in overlay.files.items() if v is not None}
        return sorted(n for n in names if overlay.files.get(n, "") is not None)

    def answer(self, call: ToolCall, kind: ToolKind, overlay: Overlay) -> ConnectorAnswer | None:
        spec = self.tools.get(call.name)
        if spec is None or kind == "shell":
            return None
        args = call.parsed_arguments()
        if not isinstance(args, dict):
            return None
        op = spec.get("op")
        try:
            if op == "read":
                rel = safe_relpath(args.get(spec.get("path", "path"), ""))
                text = self._read(rel, overlay)
                return ConnectorAnswer(text, "" if text is not None else f"{rel} does not exist at this commit")
            if op == "list":
                rel = safe_relpath(args.get(spec.get("path", "path"), "") or ".")
                self._check_no_link(rel)
                prefix = f"{rel}/" if rel else ""
                entries = sorted({p[len(prefix):].split("/")[0] + ("/" if "/" in p[len(prefix):] else "")
                                  for p in self._files(overlay) if p.startswith(prefix)})
                return ConnectorAnswer("\n".join(entries) if entries else None,
                                       "" if entries else f"{rel} is not a directory at this commit")
            if op == "search":
                pattern = str(args.get(spec.get("pattern", "pattern"), ""))
                if not pattern:
                    return None
                hits: list[str] = []
                for rel in self._files(overlay):
                    text = self._read(rel, overlay) or ""
                    for n, line in enumerate(text.splitlines(), 1):
                        if pattern in line:  # fixed string: no regex from a trajectory runs here
                            hits.append(f"{rel}:{n}:{line[:300]}")
                    if len(hits) >= self.MAX_MATCHES:
                        break
                return ConnectorAnswer("\n".join(hits[: self.MAX_MATCHES]))
        except ConnectorError as exc:
            return ConnectorAnswer(None, f"refused: {exc}")
        return None  # writes and unknown ops: not the connector's to answer

    def _check_no_link(self, rel: str) -> None:
        parts = rel.split("/") if rel else []
        for i in range(1, len(parts) + 1):
            entry = self.tree().get("/".join(parts[:i]))
            if entry is not None and entry[0] == "120000":
                raise ConnectorError(f"symlink refused: {rel!r}")

    def context(self, call: ToolCall, overlay: Overlay) -> str:
        spec = self.tools.get(call.name) or {}
        args = call.parsed_arguments()
        if spec.get("op") not in ("write", "delete", "edit") or not isinstance(args, dict):
            return ""
        try:
            rel = safe_relpath(args.get(spec.get("path", "path"), ""))
            text = self._read(rel, overlay)
        except ConnectorError as exc:
            return f"refused: {exc}"
        return f"current {rel}:\n{text[:4000]}" if text is not None else f"{rel} does not exist yet"

    def apply_write(self, call: ToolCall, output: str, overlay: Overlay) -> None:
        spec = self.tools.get(call.name) or {}
        args = call.parsed_arguments()
        if not isinstance(args, dict):
            return
        try:
            rel = safe_relpath(args.get(spec.get("path", "path"), ""))
        except ConnectorError:
            return  # a refused path changes nothing, even in the overlay
        if spec.get("op") == "write":
            overlay.files[rel] = str(args.get(spec.get("content", "content"), ""))
        elif spec.get("op") == "delete":
            overlay.files[rel] = None


class ShellRepositoryConnector(RepositoryConnector):
    """A checkout answering coding agents' read-only shell commands (``cat``, ``nl -ba | sed -n``,
    ``grep``, ``ls``, ``find``, ``str_replace_editor view``, ... — see ``shell.py``) by reading
    git objects: the command is interpreted, never run. Absolute paths in the log (``/testbed/x.py``,
    ``/workspace/x.py``) map to the longest suffix that exists in the checkout; ``..`` is refused.
    Config: ``{path, commit?}`` (``commit`` defaults to ``HEAD`` in a git repository, so uncommitted
    edits in the checkout are never read).
    """

    name = "repo-shell"
    MAX_OUTPUT = 20_000

    @classmethod
    def from_config(cls, config: Mapping[str, Any], base_dir: str | Path, metadata: Mapping[str, Any]) -> Connector:
        return cls(config)

    def __init__(self, config: Mapping[str, Any], commit: str | None = None) -> None:
        root = Path(config["path"])
        if commit is None and config.get("commit") is None and (root / ".git").exists():
            commit = "HEAD"
        super().__init__({**config, "tools": {}}, commit=commit)

    def handles(self, tool: str) -> bool:
        from deploysim.agents.toolsim.shell import EDITOR_TOOLS, SHELL_TOOLS

        return tool in SHELL_TOOLS or tool in EDITOR_TOOLS

    def _path(self, raw: str, cwd: str | None, overlay: Overlay) -> str:
        """A repository path for what the agent wrote, relative to its ``cd``, suffix-matched when absolute."""
        text = raw if raw.startswith("/") or not cwd else f"{cwd.rstrip('/')}/{raw}"
        if not text.startswith("/"):
            return safe_relpath(text)
        parts = [p for p in PurePosixPath(text).parts[1:] if p not in ("", ".")]
        if ".." in parts:
            raise ConnectorError(f"path traversal refused: {raw!r}")
        files = self._files(overlay)
        dirs = {"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)}
        for i in range(len(parts) + 1):
            candidate = "/".join(parts[i:])
            if candidate in files or candidate in dirs or (i == len(parts)):
                return candidate
        return "/".join(parts)

    def answer(self, call: ToolCall, kind: ToolKind, overlay: Overlay) -> ConnectorAnswer | None:
        from deploysim.agents.toolsim.shell import call_read

        if kind != "read":
            return None
        read = call_read(call.name, call.parsed_arguments())
        if read is None:
            return None
        try:
            output = self._run(read, overlay)
        except ConnectorError as exc:
            return ConnectorAnswer(None, f"refused: {exc}")
        if output is None:
            return ConnectorAnswer(None, f"{', '.join(read.paths)}: not found at this commit")
        return ConnectorAnswer(output[: self.MAX_OUTPUT])

    def _text(self, raw: str, cwd: str | None, overlay: Overlay) -> str | None:
        rel = self._path(raw, cwd, overlay)
        self._check_no_link(rel)
        return self._read(rel, overlay)

    def _run(self, read: Any, overlay: Overlay) -> str | None:
        import fnmatch

        op, cwd = read.op, read.cwd
        if op in ("cat", "head", "tail", "lines", "nl", "wc", "view"):
            texts = []
            for raw in read.paths:
                text = self._text(raw, cwd, overlay)
                if text is None:
                    return None
                texts.append((raw, text))
            if op == "cat":
                return "".join(t for _, t in texts)
            if op == "wc":
                return "\n".join(f"{t.count(chr(10))} {raw}" for raw, t in texts)
            (raw, text), = texts
            lines = text.splitlines(keepends=True)
            if op == "head":
                return "".join(lines[: read.count])
            if op == "tail":
                return "".join(lines[-read.count:]) if read.count else ""
            first, last = (read.start or 1), (read.end or len(lines))
            chosen = list(enumerate(lines, 1))[first - 1: last]
            if op == "lines":
                return "".join(line for _, line in chosen)
            if op == "view":
                numbered = "".join(f"{n:6}\t{line}" for n, line in chosen)
                return f"Here's the result of running `cat -n` on {raw}:\n{numbered}"
            return "".join(f"{n:6}\t{line}" for n, line in chosen)  # nl -ba
        rel = self._path(read.paths[0], cwd, overlay) if read.paths[0] not in (".", "./") or cwd else ""
        self._check_no_link(rel)
        prefix = f"{rel}/" if rel else ""
        files = [f for f in self._files(overlay) if f.startswith(prefix) or f == rel]
        if op == "ls":
            if rel in files:
                return read.paths[0]
            names = sorted({f[len(prefix):].split("/")[0] for f in files})
            if not names:
                return None
            return "\n".join(n for n in names if "a" in read.flags or "A" in read.flags or not n.startswith("."))
        if op == "find":
            shown = read.paths[0].rstrip("/") or "."
            found = set()
            for f in files:
                parts = f[len(prefix):].split("/")
                for i in range(1, len(parts) + 1):
                    is_file = i == len(parts)
                    if read.flags and (("f" in read.flags) != is_file):
                        continue
                    name = parts[i - 1]
                    if read.pattern is None or fnmatch.fnmatchcase(name, read.pattern):
                        found.add(f"{shown}/{'/'.join(parts[:i])}")
            return "\n".join(sorted(found))
        if op == "grep":
            pattern = read.pattern or ""
            fold = "i" in read.flags
            hits = []
            many = len(files) > 1 or "r" in read.flags
            for f in files:
                if not ("r" in read.flags or f == rel):
                    continue
                text = self._read(f, overlay) or ""
                for n, line in enumerate(text.splitlines(), 1):
                    if (pattern.lower() in line.lower()) if fold else (pattern in line):  # fixed string, no regex
                        shown = f"./{f}" if read.paths[0] in (".", "./") else f  # as grep prints it
                        where = (f"{shown}:" if many else "") + (f"{n}:" if "n" in read.flags else "")
                        hits.append(f"{where}{line[:300]}")
                if len(hits) >= self.MAX_MATCHES:
                    break
            return "\n".join(hits[: self.MAX_MATCHES])
        return None


def build_connectors(config: Mapping[str, Any] | None, base_dir: str | Path = ".",
                     metadata: Mapping[str, Any] | None = None) -> list[Connector]:
    """Connectors from the ``connectors:`` config: one section per ``deploysim.connectors`` entry point
    (built-in: ``json:``, ``repository:``); each class builds itself with ``from_config``."""
    out: list[Connector] = []
    for name, section in (config or {}).items():
        if not section:
            continue
        try:
            cls = REGISTRY.get("connector", name)
        except RegistryError as exc:
            raise ConnectorError(f"connectors: {exc}") from None
        out.append(cls.from_config(section, base_dir, metadata or {}))
    return out
