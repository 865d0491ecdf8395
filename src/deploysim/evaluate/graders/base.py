"""The Grader protocol, the registry by name, entry-point plugins and YAML configuration.

Modelled on inspect_ai's scorers: a grader is registered under a stable
name, built from keyword parameters, and grades a *batch* of replies at once (offline
classifiers vectorise, LLM judges fan out concurrently). Third-party graders live in
any installed package that declares an entry point in the group ``deploysim.graders``,
exactly as the built-ins do in deploysim's pyproject (core/registry.py).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from deploysim.core.models import ModelService
from deploysim.core.registry import DIST, REGISTRY, params_digest
from deploysim.core.schema import Message, ToolCall, Verdict

ENTRY_POINT_GROUP = "deploysim.graders"
log = logging.getLogger(__name__)


@dataclass
class GradeItem:
    """One reply in its context: what every grader sees.

    ``context`` is the replay prefix (system, user, tool messages before the reply);
    ``reply`` the graded text. ``tools`` are the tool specs the deployment was given.
    """

    context: list[Message]
    reply: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    point_id: str = ""
    deployment: str = ""
    sample_index: int = 0

    def last_user(self) -> str:
        """The latest user message: what the reply answers."""
        for message in reversed(self.context):
            if message.role == "user":
                return message.text()
        return ""

    def system(self) -> str:
        return "\n".join(m.text() for m in self.context if m.role == "system")

    def context_text(self) -> str:
        return "\n".join(m.text() for m in self.context)


@dataclass
class Decision:
    """One grader's answer for one behaviour on one reply; ``flagged`` None means undecided."""

    behaviour: str
    flagged: bool | None
    score: float | None = None
    rationale: str = ""
    error: str | None = None


@runtime_checkable
class Grader(Protocol):
    """What the runner needs: a name, a version, behaviours covered, and a batch grade call.

    ``grade`` returns, for each item in order, one Decision per behaviour in
    ``behaviours`` (a grader may cover several). It must not raise for one bad item:
    an item it cannot decide gets Decisions with ``flagged=None`` and ``error`` set.
    """

    name: str
    version: str
    behaviours: tuple[str, ...]

    async def grade(self, items: Sequence[GradeItem]) -> list[list[Decision]]: ...


class BaseGrader:
    """Convenience base: implement ``grade_one`` (sync, cheap) or override ``grade``."""

    name: str = ""
    version: str = "1"
    behaviours: tuple[str, ...] = ()

    async def grade(self, items: Sequence[GradeItem]) -> list[list[Decision]]:
        out: list[list[Decision]] = []
        for item in items:
            try:
                out.append(self.grade_one(item))
            except Exception as exc:  # one bad item must not sink the batch (rule 3)
                out.append([Decision(b, None, error=f"{type(exc).__name__}: {exc}"[:300]) for b in self.behaviours])
        return out

    def grade_one(self, item: GradeItem) -> list[Decision]:
        raise NotImplementedError


GraderFactory = Callable[..., Grader]


@dataclass
class GraderSpec:
    name: str
    factory: GraderFactory
    behaviours: tuple[str, ...]
    offline: bool
    description: str
    source: str = "builtin"


class GraderError(ValueError):
    pass


def grader(name: str, *, behaviours: Sequence[str], offline: bool = True,
           description: str = "") -> Callable[[GraderFactory], GraderFactory]:
    """Register a grader factory in-process (tests, notebooks); packages declare a
    ``deploysim.graders`` entry point instead, and the factory's class attributes
    (``behaviours``, ``offline``, ``description`` or the docstring) describe it."""

    def register(factory: GraderFactory) -> GraderFactory:
        factory.behaviours, factory.offline = tuple(behaviours), offline  # type: ignore[attr-defined]
        factory.description = description or getattr(factory, "description", "")  # type: ignore[attr-defined]
        return REGISTRY.register("grader", name, factory)

    return register


def _spec(name: str, factory: GraderFactory, source: str) -> GraderSpec:
    doc = getattr(factory, "description", "") or (factory.__doc__ or "").strip().split("\n")[0]
    behaviours = tuple(getattr(factory, "behaviours", ()) or (name,))
    return GraderSpec(name, factory, behaviours, bool(getattr(factory, "offline", True)), doc, source=source)


def registry() -> dict[str, GraderSpec]:
    """Every known grader: built-ins plus installed plugins; one that fails to load is logged and skipped."""
    specs: dict[str, GraderSpec] = {}
    for name, entry in sorted(REGISTRY.entries("grader").items()):
        try:
            specs[name] = _spec(name, REGISTRY.get("grader", name), entry.target)
        except Exception as exc:  # one broken plugin must not stop grading with the others
            if entry.origin == DIST:
                raise  # a built-in that does not load is a bug, never "unknown grader"
            log.warning("grader plugin %s (%s) failed to load: %s", name, entry.target, exc)
    return specs


def create_grader(name: str, **params: Any) -> Grader:
    """Build grader ``name``; its version gains a digest of ``params`` (minus ``operational_params``)
    so changing, say, a judge's rubric changes the version and resume grades again."""
    specs = registry()
    spec = specs.get(name)
    if spec is None:
        raise GraderError(f"unknown grader {name!r}; known: {', '.join(specs)}")
    instance = spec.factory(**params)
    if not getattr(instance, "name", ""):
        instance.name = name
    if not getattr(instance, "behaviours", ()):
        instance.behaviours = spec.behaviours
    if not isinstance(instance, Grader):
        raise GraderError(f"grader {name!r} does not implement the Grader protocol (name, version, behaviours, grade)")
    skip = {"service", *getattr(instance, "operational_params", ())}  # the run's model service is not a setting
    digest = params_digest({k: v for k, v in params.items() if k not in skip})
    if digest:
        instance.version = f"{instance.version}+{digest}"
    return instance


@dataclass
class GraderConfig:
    """One configured grader: registry name plus factory parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def parse_grader_entries(entries: Sequence[str | dict[str, Any]]) -> list[GraderConfig]:
    """Names, ``{name:, params:}`` mappings, or paths to a graders YAML file."""
    out: list[GraderConfig] = []
    for entry in entries:
        if isinstance(entry, dict):
            if "name" not in entry:
                raise GraderError(f"grader entry needs a name: {entry!r}")
            out.append(GraderConfig(str(entry["name"]), dict(entry.get("params") or {})))
        elif entry.endswith((".yaml", ".yml")):
            out.extend(load_grader_yaml(Path(entry)))
        else:
            out.append(GraderConfig(entry.strip()))
    return out


def load_grader_yaml(path: Path) -> list[GraderConfig]:
    """A YAML file: ``graders: [name | {name: ..., params: {...}}]``."""
    from deploysim.pipeline.config import read_yaml

    raw = read_yaml(path, "graders config", GraderError)
    entries = raw.get("graders") if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise GraderError(f"{path}: expected 'graders:' with a list")
    return parse_grader_entries(entries)


def build_graders(entries: Sequence[str | dict[str, Any] | GraderConfig], judge: str | None = None,
                  service: ModelService | None = None) -> list[Grader]:
    """Instantiate configured graders; ``judge`` is passed to those that take a ``model``, and the run's
    model ``service`` to those that take one (so the run's cache setting holds for their calls)."""
    configs = [e if isinstance(e, GraderConfig) else parse_grader_entries([e])[0] for e in entries]
    graders: list[Grader] = []
    specs = registry()
    for cfg in configs:
        params = dict(cfg.params)
        spec = specs.get(cfg.name)
        if spec is not None and not spec.offline and judge and "model" not in params:
            params["model"] = judge
        if spec is not None and service is not None and _takes(spec.factory, "service"):
            params.setdefault("service", service)
        graders.append(create_grader(cfg.name, **params))
    names = [g.name for g in graders]
    if len(set(names)) != len(names):
        raise GraderError(f"grader names must be unique in one run: {names}")
    return graders


def _takes(factory: GraderFactory, name: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def to_verdicts(grader_obj: Grader, item: GradeItem, decisions: list[Decision]) -> list[Verdict]:
    return [
        Verdict(point_id=item.point_id, deployment=item.deployment, sample_index=item.sample_index,
                behaviour=d.behaviour, grader=grader_obj.name, grader_version=str(grader_obj.version),
                flagged=d.flagged, score=d.score, rationale=d.rationale[:2000], error=d.error)
        for d in decisions
    ]


#: ``flagged`` values a journal row holds as they are (anything else goes through ``Verdict``)
_FLAGS = (bool, type(None))


def journal_rows(grader_obj: Grader, graded: Iterable[tuple[GradeItem, list[Decision]]]) -> list[dict[str, Any]]:
    """The journal rows of ``to_verdicts(...)`` then ``model_dump(mode="json")``, without validating each verdict.

    One row per grader is validated by ``Verdict`` (its keys, their order, the defaults) and
    copied per verdict with the per-reply values set. A value whose type is not exactly what
    ``Verdict`` holds (an int score, a numpy bool, a str subclass) takes the validated path, so
    the rows are the same as ``to_verdicts``' dumped (tests/test_graders_speed.py checks on real replies).
    """
    template = Verdict(point_id="", deployment="", behaviour="", grader=grader_obj.name,
                       grader_version=str(grader_obj.version)).model_dump(mode="json")
    rows: list[dict[str, Any]] = []
    for item, decisions in graded:
        plain = type(item.point_id) is str and type(item.deployment) is str and type(item.sample_index) is int
        for d in decisions:
            if (plain and type(d.behaviour) is str and type(d.flagged) in _FLAGS and type(d.rationale) is str
                    and (d.score is None or type(d.score) is float) and (d.error is None or type(d.error) is str)):
                row = template.copy()
                row["point_id"], row["deployment"], row["sample_index"] = item.point_id, item.deployment, item.sample_index
                row["behaviour"], row["flagged"], row["score"] = d.behaviour, d.flagged, d.score
                row["rationale"], row["error"] = d.rationale[:2000], d.error
            else:
                row = to_verdicts(grader_obj, item, [d])[0].model_dump(mode="json")
            rows.append(row)
    return rows
