"""Simulation configuration: one pydantic model, loadable from YAML, saved resolved in each run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deploysim.pipeline.replay import TurnChoice
from deploysim.core.models.batch import BatchSettings
from deploysim.core.schema import Deployment
from deploysim.pipeline.sources import DEFAULT_MAX_MESSAGE_CHARS


class ConfigError(ValueError):
    pass


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[str]
    format: str = "auto"
    sample: int | None = Field(default=None, ge=1)
    turn: TurnChoice = "last"
    seed: int = 0
    deployments: list[Deployment]
    cache: bool = True
    cache_path: str | None = None
    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS
    queue_size: int = 256
    #: De-identification before anything leaves the process (DESIGN rule 2); see deploysim.pipeline.privacy.
    privacy: dict[str, Any] = Field(default_factory=lambda: {"mode": "surrogate"})
    #: Grader names to run on every deployment's replies (``logged`` included); None = none.
    graders: list[str] | None = None
    #: Model id for LLM-judge graders.
    judge: str | None = None
    batch: BatchSettings = Field(default_factory=BatchSettings)
    #: ``local`` (the asyncio pipeline) or ``ray`` (Ray Data operators, the ``[ray]`` extra; docs/ray.md).
    engine: Literal["local", "ray"] = "local"
    #: The Ray cluster to join (``ray://host:10001``, ``host:6379`` or ``auto``); None = a local Ray.
    ray_address: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> SimConfig:
        names = [d.name for d in self.deployments]
        if not names:
            raise ValueError("at least one deployment is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names must be unique: {names}")
        return self


def read_yaml(path: Path, what: str, error: type[Exception]) -> Any:
    """A YAML file's content, or ``error`` naming the file and what it was meant to be."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: {what} is not valid YAML: {exc}") from None


def read_text(path: Path, where: str, error: type[Exception]) -> str:
    """A text file's content, or ``error`` naming ``where`` it was asked for and why it cannot be read."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise error(f"{where}: {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise error(f"{where}: cannot read {path}: {reason}") from None


def validation_problems(exc: ValidationError, prefix: str = "") -> str:
    """Pydantic errors as ``field.path: message; ...`` without the offending input (it may be PII)."""
    return "; ".join(
        f"{prefix}{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )


def load_config(path: Path) -> SimConfig:
    """YAML -> SimConfig; relative data paths and system-prompt files resolve against the file."""
    raw = read_yaml(path, "config file", ConfigError)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = Path(path).parent
    raw["data"] = [str(base / p) if not Path(p).is_absolute() else p for p in _as_list(raw.get("data"))]
    for index, dep in enumerate(raw.get("deployments") or []):
        if isinstance(dep, dict) and "system_prompt_file" in dep:
            prompt = base / str(dep.pop("system_prompt_file"))
            where = f"{path}: deployments[{index}].system_prompt_file"
            dep["system_prompt_text"] = read_text(prompt, where, ConfigError)
            dep.setdefault("system_prompt", "replace")
    return validate_config(raw, str(path))


def validate_config(raw: dict[str, Any], where: str = "config") -> SimConfig:
    try:
        return SimConfig.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise ConfigError(f"{where}: {problems}") from None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def dump_config(config: SimConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
