"""deploysim's own record files (written by ``deploysim ingest``): one Record as JSON per row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from deploysim.core.schema import Record, RecordError
from deploysim.pipeline.sources._base import SourceContext

RECORD_COLUMN = "record_json"
#: Where files ingested before ``Record.weight`` existed kept the sampling weight.


class NativeRecords:
    name: str  # the entry-point name, set when registered
    detect_order = 10

    def matches(self, sample: Any) -> bool:
        return isinstance(sample, dict) and RECORD_COLUMN in sample

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        try:
            record = Record.model_validate_json(value[RECORD_COLUMN])
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or RECORD_COLUMN
            raise RecordError(field, first["msg"]) from None
        yield record


def native_row(record: Record) -> dict[str, Any]:
    return {RECORD_COLUMN: record.model_dump_json()}
