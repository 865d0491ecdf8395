"""``manifest.json``: what kind of run a directory holds and which schema wrote it.

An older schema is migrated (before manifests: schema 1, an agent run with ``config.json``), a newer
one refused — never misread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from deploysim.core.schema import SCHEMA_VERSION
from deploysim.core.store.tables import RunDirError

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
LEGACY_AGENT_CONFIG = "config.json"


class RunVersionError(RunDirError):
    """The directory was written by a newer deploysim than this one."""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str
    schema_version: int
    created: str = ""
    #: the schema the directory was written with, when it was migrated on opening
    migrated_from: int | None = None


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str))
    os.replace(tmp, path)


def new_manifest(kind: str) -> Manifest:
    return Manifest(kind=kind, schema_version=SCHEMA_VERSION,
                    created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def read_manifest(root: Path, *, migrate: bool = False) -> Manifest:
    """The directory's manifest, an older one migrated (written back with ``migrate=True``); newer: RunVersionError."""
    root = Path(root)
    path = root / MANIFEST
    if path.is_file():
        try:
            manifest = Manifest.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            raise RunDirError(f"{path}: not a deploysim run manifest ({exc.error_count()} problems)") from None
        if manifest.schema_version > SCHEMA_VERSION:
            raise RunVersionError(
                f"{root}: written by a newer deploysim (run schema {manifest.schema_version}; this one reads up to "
                f"{SCHEMA_VERSION}); upgrade deploysim to open it")
        if manifest.schema_version == SCHEMA_VERSION:
            return manifest
        return _migrate(root, manifest.kind, manifest.schema_version, migrate)
    if (root / LEGACY_AGENT_CONFIG).is_file():
        return _migrate(root, "agents", 1, migrate)
    if (root / "rollout.jsonl").is_file():
        return _migrate(root, "rollout", 1, migrate)
    if (root / CONFIG).is_file() or (root / "points.parquet").is_file():
        return _migrate(root, "chat", 1, migrate)
    raise RunDirError(f"{root}: not a run directory (no {MANIFEST} or {CONFIG})")


def _migrate(root: Path, kind: str, version: int, write: bool) -> Manifest:
    """Schema 1 -> 2: the manifest is new, and agent runs move config.json to config.yaml."""
    manifest = new_manifest(kind)
    manifest.migrated_from = version
    if write:
        legacy = root / LEGACY_AGENT_CONFIG
        if legacy.is_file():
            text = yaml.safe_dump(orjson.loads(legacy.read_bytes()), sort_keys=False, allow_unicode=True)
            (root / CONFIG).write_text(text)
            legacy.unlink()
        write_json_atomic(root / MANIFEST, manifest.model_dump(exclude_none=True))
    return manifest


def read_config(root: Path) -> dict[str, Any]:
    """The run's saved configuration as a mapping ({} when it has none); any schema."""
    root = Path(root)
    read_manifest(root)  # refuses a newer directory before its config is misread
    legacy = root / LEGACY_AGENT_CONFIG
    if legacy.is_file() and not (root / CONFIG).is_file():
        loaded: Any = orjson.loads(legacy.read_bytes())
    else:
        path = root / CONFIG
        if not path.is_file():
            return {}
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise RunDirError(f"{path}: not valid YAML: {exc}") from None
    return loaded if isinstance(loaded, dict) else {}
