"""Run-directory tables: Arrow schemas derived from the pydantic models, rows both ways, Parquet I/O.

Scalars are columns, a nested model of scalars is flattened, anything else is JSON in ``<field>_json``.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar, Union, get_args, get_origin

import orjson
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from pydantic import BaseModel, TypeAdapter

from deploysim.core.schema import Generation, ReplayPoint, Verdict

BATCH_ROWS = 4096
M = TypeVar("M", bound=BaseModel)
_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


class RunDirError(Exception):
    pass


def _plain(annotation: Any) -> Any:
    """``X | None`` -> X; anything else unchanged."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _has_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_has_model(arg) for arg in get_args(annotation))


def _flat(kind: Any, annotation: Any) -> bool:
    """A required nested model of scalars only (``Usage``) is flattened into its fields."""
    return (isinstance(kind, type) and issubclass(kind, BaseModel) and kind is annotation
            and all(_plain(f.annotation) in _ARROW for f in kind.model_fields.values()))


class Table(Generic[M]):
    """One table of a run directory: its file, its model and the Arrow schema derived from it."""

    def __init__(self, model: type[M], file: str) -> None:
        self.model = model
        self.file = file
        #: (field, kind, detail): kind "scalar", "flat" (detail: sub-fields) or "json" (detail: adapter)
        self._plan: list[tuple[str, str, Any]] = []
        fields: list[pa.Field] = []
        for name, info in model.model_fields.items():
            kind = _plain(info.annotation)
            if kind in _ARROW:
                self._plan.append((name, "scalar", None))
                fields.append(pa.field(name, _ARROW[kind]))
            elif _flat(kind, info.annotation):
                subs = tuple(kind.model_fields)
                self._plan.append((name, "flat", (kind, subs)))
                fields.extend(pa.field(s, _ARROW[_plain(f.annotation)]) for s, f in kind.model_fields.items())
            else:  # plain JSON (dicts, lists of dicts) is written by orjson, models by pydantic
                adapter: TypeAdapter[Any] | None = TypeAdapter(info.annotation) if _has_model(info.annotation) else None
                self._plan.append((name, "json", adapter))
                fields.append(pa.field(f"{name}_json", pa.large_string()))
        self.schema = pa.schema(fields)

    def row(self, obj: M) -> dict[str, Any]:
        """One object as one row of ``schema`` (also the line format of its journal)."""
        out: dict[str, Any] = {}
        for name, kind, detail in self._plan:
            value = getattr(obj, name)
            if kind == "scalar":
                out[name] = value
            elif kind == "flat":
                for sub in detail[1]:
                    out[sub] = getattr(value, sub)
            elif value is None:
                out[f"{name}_json"] = None
            elif detail is None or not value:  # no model inside (or nothing at all): orjson
                out[f"{name}_json"] = orjson.dumps(value, default=str).decode()
            else:
                out[f"{name}_json"] = detail.dump_json(value, exclude_defaults=True, fallback=str).decode()
        return out

    def parse(self, row: dict[str, Any]) -> M:
        """A row (from Parquet or a journal line) back into the model."""
        data: dict[str, Any] = {}
        for name, kind, detail in self._plan:
            if kind == "scalar":
                if name in row and row[name] is not None:
                    data[name] = row[name]
            elif kind == "flat":
                data[name] = {s: row[s] for s in detail[1] if row.get(s) is not None}
            else:
                text = row.get(f"{name}_json")
                if text is not None:
                    data[name] = orjson.loads(text)
        return self.model.model_validate(data)

    def path(self, run_dir: Path) -> Path:
        return Path(run_dir) / self.file

    def read(self, run_dir: Path) -> Iterator[M]:
        """Stream the table's objects from ``run_dir``."""
        for row in iter_parquet(self.path(run_dir)):
            yield self.parse(row)

    def write(self, run_dir: Path, objects: Iterable[M], file: str | None = None) -> int:
        """All of ``objects`` to the table's file (temp name, renamed when complete); returns the count."""
        out = ParquetOut(Path(run_dir) / (file or self.file), self.schema)
        batch = ColumnBatches(out)
        for obj in objects:
            batch.add(self.row(obj))
        return batch.close()


POINTS: Table[ReplayPoint] = Table(ReplayPoint, "points.parquet")
GENERATIONS: Table[Generation] = Table(Generation, "generations.parquet")
VERDICTS: Table[Verdict] = Table(Verdict, "verdicts.parquet")


def iter_parquet(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        raise RunDirError(f"{path}: missing; is this a finished run directory?")
    # pre_buffer=False: with it, every row group read stays allocated until the end (memory ~ file, not batch)
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=BATCH_ROWS):
        yield from batch.to_pylist()


def jsonl_batches(path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """JSONL whose lines are rows of ``schema``, parsed by Arrow in C++, block by block."""
    if not path.exists() or path.stat().st_size == 0:
        return
    reader = pa_json.open_json(
        path,
        read_options=pa_json.ReadOptions(block_size=1 << 20),  # larger blocks: RSS grew with size
        parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )
    for batch in reader:
        yield batch.select(schema.names)


class ParquetOut:
    """Batches to a Parquet file under a temp name, renamed into place when complete."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.tmp = path.with_suffix(".parquet.tmp")
        self.schema = schema
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.count = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            self.writer.write_table(table.cast(self.schema))
            self.count += batch.num_rows

    def close(self) -> int:
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.count


class ColumnBatches:
    """Rows gathered column by column and written to a ParquetOut every ``BATCH_ROWS``."""

    def __init__(self, out: ParquetOut) -> None:
        self.out = out
        self.columns: dict[str, list[Any]] = {name: [] for name in out.schema.names}

    def add(self, row: dict[str, Any]) -> None:
        for name, values in self.columns.items():
            values.append(row[name])
        if len(values) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        schema = self.out.schema
        if self.columns[schema.names[0]]:
            arrays = [pa.array(self.columns[f.name], type=f.type) for f in schema]
            self.out.write(pa.RecordBatch.from_arrays(arrays, schema=schema))
            self.columns = {name: [] for name in schema.names}

    def close(self) -> int:
        self.flush()
        return self.out.close()
