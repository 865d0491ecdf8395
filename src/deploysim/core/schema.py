"""The typed vocabulary every stage speaks: records in, replay points, generations out.

Every persisted row carries ``SCHEMA_VERSION`` so old run directories are migrated or refused, never misread.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

SCHEMA_VERSION = 2  # 2: run directories carry manifest.json; every kind of run saves config.yaml

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


#: The deployment name of what production actually said (the logged reply), beside replayed deployments.
LOGGED = "logged"
#: ``scheme://userinfo@`` in a URL (a model id's base URL): the userinfo holds credentials.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s]*)@")
#: A reference to an environment variable, expanded only when a client is made.
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REDACTED = "***"


def redact_credentials(text: str) -> str:
    """``text`` with credentials inside URLs replaced by ``***`` (``${ENV_VAR}`` userinfo is kept): the one scrubber."""

    def scrub(match: re.Match[str]) -> str:
        userinfo = match.group(2)
        if all(not part or _ENV_REF.fullmatch(part) for part in userinfo.split(":")):
            return match.group(0)
        return f"{match.group(1)}{REDACTED}@"

    return _URL_USERINFO.sub(scrub, text)


def expand_credentials(text: str) -> str:
    """``${ENV_VAR}``s in a URL's userinfo, expanded (KeyError if unset): for a client only, never recorded."""

    def expand_userinfo(match: re.Match[str]) -> str:
        return match.group(1) + _ENV_REF.sub(lambda ref: os.environ[ref.group(1)], match.group(2)) + "@"

    return _URL_USERINFO.sub(expand_userinfo, text)


def has_redacted_credentials(text: str) -> bool:
    return any(m.group(2) == REDACTED for m in _URL_USERINFO.finditer(text))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class ToolCall(_Model):
    """One function call the assistant asked for; ``arguments`` is the raw JSON text."""

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> Any:
        """Arguments as JSON, or the raw text when the model wrote invalid JSON."""
        try:
            return orjson.loads(self.arguments)
        except orjson.JSONDecodeError:
            return self.arguments


class Message(_Model):
    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        return self.content or ""


class Record(_Model):
    """One logged conversation or agent trajectory, normalised.

    ``weight`` is its sampling weight: how many population records it stands for (1 unless sampled).
    """

    id: str
    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source_file: str = ""
    source_line: int = 0
    format: str = ""
    weight: float = 1.0
    #: Where this record was read in this run: input file (``#N`` for its N-th repeat), line/item, and
    #: ``.K`` for the K-th record of one value. Unique per run; point ids and sampling keys use it.
    #: Not part of the record's content, so never serialised (a dataset row stays where it was read).
    origin: str = Field(default="", exclude=True)

    def key(self) -> str:
        """The record's identity in this run (origin, else source position) plus its id."""
        where = self.origin or f"{self.source_file}:{self.source_line}"
        return f"{where}\x00{self.id}"


class ReplayPoint(_Model):
    """A record cut just before one assistant turn (DESIGN rule 1: only that turn is regenerated)."""

    schema_version: int = SCHEMA_VERSION
    point_id: str
    record_id: str
    turn_index: int
    prefix: list[Message]
    original: Message | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    weight: float = 1.0


class GenerationParams(_Model):
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int | None = 0
    stop: list[str] = Field(default_factory=list)
    top_p: float | None = None
    #: OpenAI-style structured output request, passed to providers that take one (judges use it).
    response_format: dict[str, Any] | None = None
    #: Whether the model may (``auto``), must (``required``) or must not (``none``) call a tool;
    #: ``None``: the provider's default.
    tool_choice: Literal["auto", "required", "none"] | None = None


SystemPromptPolicy = Literal["keep", "replace", "prepend"]


class Deployment(_Model):
    """What answers a replay point: model + system-prompt policy + generation params."""

    name: str
    model: str
    system_prompt: SystemPromptPolicy = "keep"
    system_prompt_text: str | None = None
    params: GenerationParams = Field(default_factory=GenerationParams)
    concurrency: int = 4
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    timeout_s: float = 120.0
    max_retries: int = 4
    samples: int = 1
    #: Send this deployment's calls through the provider's batch API (half price, within 24 h).
    batch: bool = False
    #: List prices in USD per million tokens, for the summary's cost (batched calls at the batch discount).
    price_input_per_mtok: float | None = Field(default=None, ge=0)
    price_output_per_mtok: float | None = Field(default=None, ge=0)

    @field_serializer("model")
    def _model_without_credentials(self, model: str) -> str:
        """Recorded forms (config.yaml, JSON) never hold credentials written into a base URL."""
        return redact_credentials(model)

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "_-" for c in v):
            raise ValueError(f"deployment name must be letters, digits, '_' or '-': {v!r}")
        if v == LOGGED:
            raise ValueError("'logged' is reserved for what production actually said")
        return v

    def apply_system_prompt(self, prefix: list[Message]) -> list[Message]:
        """The prefix this deployment is sent, after its system-prompt policy."""
        if self.system_prompt == "keep" or self.system_prompt_text is None:
            return list(prefix)
        rest = [m for m in prefix if m.role != "system"]
        logged = [m for m in prefix if m.role == "system"]
        if self.system_prompt == "replace":
            return [Message(role="system", content=self.system_prompt_text), *rest]
        joined = "\n\n".join([self.system_prompt_text, *(m.text() for m in logged)])
        return [Message(role="system", content=joined), *rest]


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Generation(_Model):
    """One deployment's answer to one replay point, or the error that stopped it (rule 3)."""

    schema_version: int = SCHEMA_VERSION
    point_id: str
    deployment: str
    sample_index: int = 0
    text: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    error: str | None = None
    attempts: int = 1
    cached: bool = False
    prompt_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class Verdict(_Model):
    """One grader's decision on one reply; ``flagged`` None: undecided (``error`` says why), never read as "no"."""

    schema_version: int = SCHEMA_VERSION
    point_id: str
    deployment: str
    sample_index: int = 0
    behaviour: str
    grader: str
    grader_version: str = "1"
    flagged: bool | None = None
    score: float | None = None
    rationale: str = ""
    error: str | None = None


class Reject(_Model):
    """An input that could not become a record, kept so counts reconcile (rule 3)."""

    source_file: str
    line: int
    #: The archive member it came from (an Inspect ``.eval`` log's ``samples/<id>_epoch_<n>.json``).
    member: str | None = None
    record_id: str | None = None
    field: str | None = None
    reason: str


class RecordError(ValueError):
    """One input value is not a usable record; ``field`` says where inside it."""

    def __init__(self, field: str, reason: str, record_id: str | None = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.record_id = record_id


def canonical_json(value: Any) -> bytes:
    """Sorted-key compact JSON: equal content, equal bytes, equal hash."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()
