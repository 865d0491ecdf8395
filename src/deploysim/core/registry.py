"""One registry for everything pluggable: providers, sources, graders, connectors, CLI commands (docs/extending.md).

Entries are ``deploysim.<kind>s`` entry points, loaded lazily; the same name twice in a kind is an error.
``params_digest`` makes an object's parameters part of its version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

KINDS = ("provider", "source", "grader", "connector", "command")
GROUPS = {f"deploysim.{kind}s": kind for kind in KINDS}
DIST = "deploysim"


class RegistryError(ValueError):
    """An unknown name, a duplicate name or a plugin that does not load."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    target: str  # "module:attribute"
    origin: str  # the distribution that declared it ("runtime" for in-process registration)

    def load(self) -> Any:
        try:
            return importlib.metadata.EntryPoint(self.name, self.target, f"deploysim.{self.kind}s").load()
        except (ImportError, AttributeError) as exc:
            if isinstance(exc, ImportError) and exc.name and not self.target.startswith(exc.name):
                raise  # a dependency of the plugin is missing: its own message says what to install
            raise RegistryError(f"{self.kind} {self.name!r} from {self.origin} ({self.target}) does not load: "
                                f"{type(exc).__name__}: {exc}") from exc


def _declared() -> list[Entry]:
    """Every ``deploysim.*`` entry point; a source checkout's own come from its pyproject, not stale metadata."""
    out: list[Entry] = []
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text()).get("project", {}) if pyproject.is_file() else {}
    own_from_source = project.get("name") == DIST
    for group, eps in project.get("entry-points", {}).items() if own_from_source else ():
        out += [Entry(GROUPS[group], name, target, DIST) for name, target in eps.items() if group in GROUPS]
    for dist in importlib.metadata.distributions():
        eps = [ep for ep in dist.entry_points if ep.group in GROUPS]
        origin = (dist.metadata["Name"] or "?") if eps else ""  # METADATA is read only for plugins: --help stays fast
        if eps and not (own_from_source and origin == DIST):
            out += [Entry(GROUPS[ep.group], ep.name, ep.value, origin) for ep in eps]
    return out


class Registry:
    """Entries by kind and name, read from entry points on first use."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] | None = None
        self._loaded: dict[tuple[str, str], Any] = {}
        self._runtime: dict[tuple[str, str], Any] = {}

    def _all(self) -> dict[str, dict[str, Entry]]:
        if self._entries is None:
            entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
            runtime = [_runtime_entry(kind, name, obj) for (kind, name), obj in self._runtime.items()]
            for entry in [*_declared(), *runtime]:
                old = entries[entry.kind].get(entry.name)
                if old is not None and old != entry:  # the same dist seen twice on sys.path is one entry
                    raise RegistryError(f"{entry.kind} {entry.name!r} is declared twice: by {old.origin} "
                                        f"({old.target}) and by {entry.origin} ({entry.target}); uninstall or "
                                        "rename one")
                entries[entry.kind][entry.name] = entry
            self._entries = entries
            self._loaded.update(self._runtime)
        return self._entries

    def reload(self) -> None:
        """Read entry points again (after installing a plugin, or putting one on ``sys.path``, in-process)."""
        self._entries = None
        self._loaded = {}

    def entries(self, kind: str) -> dict[str, Entry]:
        if kind not in KINDS:
            raise RegistryError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        return dict(self._all()[kind])

    def names(self, kind: str) -> list[str]:
        return list(self.entries(kind))

    def get(self, kind: str, name: str) -> Any:
        """The registered object (imported on first use); a clear error names the known ones."""
        if (kind, name) not in self._loaded:
            entry = self.entries(kind).get(name)
            if entry is None:
                raise RegistryError(f"unknown {kind} {name!r}; known: {', '.join(sorted(self.names(kind)))}")
            self._loaded[(kind, name)] = entry.load()
        return self._loaded[(kind, name)]

    def register(self, kind: str, name: str, obj: Any) -> Any:
        """Register an object in-process (tests, notebooks); a name already taken is an error."""
        table = self._all()[kind]
        if name in table and self._loaded.get((kind, name)) is not obj:
            raise RegistryError(f"{kind} {name!r} is already registered by {table[name].origin} "
                                f"({table[name].target})")
        table[name] = _runtime_entry(kind, name, obj)
        self._loaded[(kind, name)] = self._runtime[(kind, name)] = obj
        return obj

    def unregister(self, kind: str, name: str) -> None:
        """Drop an in-process registration (test clean-up)."""
        if self._runtime.pop((kind, name), None) is not None:
            self._loaded.pop((kind, name), None)
            self._all()[kind].pop(name, None)


def _runtime_entry(kind: str, name: str, obj: Any) -> Entry:
    return Entry(kind, name, f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}", "runtime")


REGISTRY = Registry()


def params_digest(params: dict[str, Any]) -> str:
    """A short stable hash of parameters ('' for none): part of an object's version."""
    if not params:
        return ""
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:10]
