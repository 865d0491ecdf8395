"""Privacy: de-identify records before any provider call, cache write or run-directory write (DESIGN rule 2).

``build_deidentifier(cfg)`` is what the engine calls with ``SimConfig.privacy``::

    mode: surrogate | placeholder | off   realistic fakes (default) / <EMAIL_1> / nothing
    presidio: auto | true | false         names, places, organisations via Presidio (auto: when installed)
    seed: 0                               with $DEPLOYSIM_PRIVACY_KEY, keys the fakes and pseudonyms
    mapping_path: null                    write original -> fake here (JSONL, mode 0600); never otherwise
    entities, phone_regions, locale, id_fields, allow, presidio_entities, presidio_min_score: see docs/privacy.md
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from deploysim.pipeline.config import validation_problems
from deploysim.pipeline.privacy.deidentify import Deidentifier, PrivacyConfig, PrivacyError
from deploysim.core.schema import Record

__all__ = ["Deidentifier", "PrivacyConfig", "PrivacyError", "build_deidentifier", "parse_privacy_config"]


def parse_privacy_config(cfg: dict[str, Any] | PrivacyConfig | None) -> PrivacyConfig:
    if isinstance(cfg, PrivacyConfig):
        return cfg
    try:
        return PrivacyConfig.model_validate(cfg or {})
    except ValidationError as exc:
        raise PrivacyError(validation_problems(exc, prefix="privacy.")) from None


def build_deidentifier(cfg: dict[str, Any] | PrivacyConfig | None) -> Callable[[Record], Record]:
    """The record -> record function for this config; ``mode: off`` gives the identity."""
    config = parse_privacy_config(cfg)
    if config.mode == "off":
        return lambda record: record
    return Deidentifier(config)
